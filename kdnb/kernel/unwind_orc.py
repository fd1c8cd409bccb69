"""The kernel's ORC unwind tables, read from the dump: layout detection, decoding, lookup.

x86_64 kernels built with CONFIG_UNWINDER_ORC carry two parallel arrays: `.orc_unwind_ip`
(`__start_orc_unwind_ip`..`__stop_orc_unwind_ip`, s32 offsets relative to each slot's own address)
and `.orc_unwind` (`__start_orc_unwind`.., 6-byte `struct orc_entry`). Each loaded module has its
own pair in `struct module` -> `arch.orc_unwind_ip` / `arch.orc_unwind` / `arch.num_orcs`. Both
are sorted by ip in memory (vmlinux at build time by sorttable, modules at load time), so an ip's
entry is the last one whose ip is <= it.

The tables are read once into numpy arrays and normalised to one representation (the 6.3+ type
numbering plus an explicit `signal` flag), so the unwinder does not care which layout it came from.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Callable, NamedTuple

import numpy as np

from ..errors import KdnbError

if TYPE_CHECKING:  # pragma: no cover
    from .kernel import Kernel
    from .types import Type

# ORC_REG_* (arch/x86/include/asm/orc_types.h; unchanged since ORC was added in 4.14)
REG_UNDEFINED = 0
REG_PREV_SP = 1
REG_DX = 2
REG_DI = 3
REG_BP = 4
REG_SP = 5
REG_R10 = 6
REG_R13 = 7
REG_BP_INDIRECT = 8
REG_SP_INDIRECT = 9
REG_NAMES = {0: "undef", 1: "prev_sp", 2: "dx", 3: "di", 4: "bp", 5: "sp", 6: "r10", 7: "r13",
             8: "bp(ind)", 9: "sp(ind)", 15: "unknown"}

# Normalised ORC types: the numbering of Linux >= 6.3. Commit fb799447ae29 ("x86,objtool: Split
# UNWIND_HINT_EMPTY in two", v6.3) replaced the `end` bit by ORC_TYPE_UNDEFINED/END_OF_STACK and
# renumbered CALL/REGS/REGS_PARTIAL from 0/1/2 to 2/3/4 (type grew from 2 to 3 bits).
TYPE_UNDEFINED = 0
TYPE_END_OF_STACK = 1
TYPE_CALL = 2
TYPE_REGS = 3
TYPE_REGS_PARTIAL = 4
TYPE_NAMES = {0: "undefined", 1: "end", 2: "call", 3: "regs", 4: "regs_partial"}
_OLD_TYPE_OFFSET = 2  # pre-6.3 CALL=0, REGS=1, REGS_PARTIAL=2

ORC_ENTRY_SIZE = 6
MAX_ORC_ENTRIES = 4_000_000

# Register numbering. BTF does not describe it. From 4.14 to 6.x it is the ORC_REG_* list above;
# the 7.2 kernels in the corpus number the registers differently (SP 3, PREV_SP 8, SP_INDIRECT 9,
# BP_INDIRECT 10; UNDEFINED, DX, BP, R10 and R13 kept; established from the entries of the 6.12
# and 7.2 vmlinux tables, function by function). Which one a table uses is told from the table
# itself: nearly every entry of C code is a CALL frame based on SP, with BP saved at PREV_SP.
REG_UNKNOWN = 15
CLASSIC_REGS = tuple(range(16))
RENUMBERED_REGS = tuple({0: REG_UNDEFINED, 2: REG_DX, 3: REG_SP, 4: REG_BP, 6: REG_R10, 7: REG_R13,
                         8: REG_PREV_SP, 9: REG_SP_INDIRECT, 10: REG_BP_INDIRECT}.get(r, REG_UNKNOWN)
                        for r in range(16))
_NUMBERINGS = {(REG_SP, REG_PREV_SP): CLASSIC_REGS, (3, 8): RENUMBERED_REGS}


@dataclass(frozen=True)
class OrcLayout:
    """Where the bitfields of `struct orc_entry` sit in its third 16-bit word.

    `fields` maps a bitfield name to (shift, width) within that little-endian u16. `end` present
    means the pre-6.3 encoding (types 0..2 and an end-of-stack bit); `signal` present means the
    entry says whether the ip is exact (commit ffb1b4a41016, "x86/unwind/orc: Add 'signal' field
    to ORC metadata", v6.3) — before that the unwinder derived it from the type (regs => signal).
    """

    fields: dict[str, tuple[int, int]]
    size: int = ORC_ENTRY_SIZE
    regs: tuple[int, ...] = CLASSIC_REGS  # raw register number -> REG_*

    @property
    def has_end(self) -> bool:
        return "end" in self.fields

    @property
    def has_signal(self) -> bool:
        return "signal" in self.fields

    @property
    def name(self) -> str:
        return "6.3+" if not self.has_end else ("6.3-rc" if self.has_signal else "pre-6.3")


# Linux 4.14 .. 6.2 (e.g. Debian's 6.1): sp_reg:4 bp_reg:4 type:2 end:1
LAYOUT_PRE_6_3 = OrcLayout({"sp_reg": (0, 4), "bp_reg": (4, 4), "type": (8, 2), "end": (10, 1)})
# Linux >= 6.3 (e.g. 6.12): sp_reg:4 bp_reg:4 type:3 signal:1
LAYOUT_6_3 = OrcLayout({"sp_reg": (0, 4), "bp_reg": (4, 4), "type": (8, 3), "signal": (11, 1)})


def with_numbering(layout: OrcLayout, sample: bytes) -> OrcLayout:
    """`layout` with the register numbering that `sample` (raw entries of C code) uses; raises
    KdnbError when it fits no known numbering."""
    raw = decode_entries(sample, replace(layout, regs=CLASSIC_REGS))
    calls = raw.type == TYPE_CALL
    if not calls.any():
        raise KdnbError("ORC: no CALL entries to tell the register numbering from")
    sp = int(np.bincount(raw.sp_reg[calls], minlength=16).argmax())
    saved = raw.bp_reg[calls & (raw.bp_reg != REG_UNDEFINED) & (raw.bp_reg != REG_BP)]
    prev_sp = int(np.bincount(saved, minlength=16).argmax()) if len(saved) else REG_PREV_SP
    regs = _NUMBERINGS.get((sp, prev_sp))
    if regs is None:
        raise KdnbError(f"ORC: unknown register numbering (SP frames use {sp}, saved BP {prev_sp})")
    return replace(layout, regs=regs)


def layout_from_btf(orc_type: "Type") -> OrcLayout:
    """The entry layout from BTF's `struct orc_entry` (member names, bit offsets and widths)."""
    members = {m.name: m for m in orc_type.members}
    for need in ("sp_offset", "bp_offset", "sp_reg", "bp_reg", "type"):
        if need not in members:
            raise KdnbError(f"struct orc_entry has no member {need!r}: unknown ORC layout")
    if members["sp_offset"].bit_offset != 0 or members["bp_offset"].bit_offset != 16:
        raise KdnbError("struct orc_entry: unexpected sp_offset/bp_offset position")
    fields: dict[str, tuple[int, int]] = {}
    for name in ("sp_reg", "bp_reg", "type", "signal", "end"):
        m = members.get(name)
        if m is None:
            continue
        if not m.bit_size or not 32 <= m.bit_offset < 48:
            raise KdnbError(f"struct orc_entry.{name}: unexpected bitfield at bit {m.bit_offset}")
        fields[name] = (m.bit_offset - 32, m.bit_size)
    return OrcLayout(fields, orc_type.size or ORC_ENTRY_SIZE)


class OrcEntries(NamedTuple):
    """Decoded ORC entries (parallel arrays, normalised types)."""

    sp_offset: np.ndarray  # int16
    bp_offset: np.ndarray  # int16
    sp_reg: np.ndarray  # uint8
    bp_reg: np.ndarray  # uint8
    type: np.ndarray  # uint8, TYPE_*
    signal: np.ndarray  # bool


_RAW = np.dtype([("sp_offset", "<i2"), ("bp_offset", "<i2"), ("bits", "<u2")])


def decode_entries(raw: bytes, layout: OrcLayout) -> OrcEntries:
    """Decode packed `struct orc_entry` records of either layout into normalised arrays."""
    if layout.size != ORC_ENTRY_SIZE:
        raise KdnbError(f"struct orc_entry is {layout.size} bytes, expected {ORC_ENTRY_SIZE}")
    n = len(raw) // ORC_ENTRY_SIZE
    rec = np.frombuffer(raw, dtype=_RAW, count=n)
    bits = rec["bits"].astype(np.uint16)

    def get(name: str) -> np.ndarray:
        shift, width = layout.fields[name]
        return ((bits >> shift) & ((1 << width) - 1)).astype(np.uint8)

    regs = np.array(layout.regs, dtype=np.uint8)
    sp_reg, bp_reg, raw_type = regs[get("sp_reg") & 15], regs[get("bp_reg") & 15], get("type")
    if layout.has_end:
        # pre-6.3: sp_reg UNDEFINED ends the unwind (end=1) or is a blind spot (end=0)
        end = get("end").astype(bool)
        type_ = np.where(sp_reg == REG_UNDEFINED,
                         np.where(end, TYPE_END_OF_STACK, TYPE_UNDEFINED),
                         raw_type + _OLD_TYPE_OFFSET).astype(np.uint8)
    else:
        type_ = raw_type
    if layout.has_signal:
        signal = get("signal").astype(bool)
    else:  # pre-ffb1b4a41016: the unwinder set signal for regs frames, cleared it for calls
        signal = (type_ == TYPE_REGS) | (type_ == TYPE_REGS_PARTIAL)
    return OrcEntries(rec["sp_offset"].copy(), rec["bp_offset"].copy(), sp_reg, bp_reg, type_, signal)


def decode_ips(raw: bytes, table_address: int) -> np.ndarray:
    """Absolute ips of an `.orc_unwind_ip` table: `&table[i] + table[i]` (uint64, wrapping)."""
    rel = np.frombuffer(raw, dtype="<i4", count=len(raw) // 4)
    slots = np.uint64(table_address) + np.arange(len(rel), dtype=np.uint64) * np.uint64(4)
    return slots + rel.astype(np.int64).astype(np.uint64)


class OrcEntry(NamedTuple):
    """One normalised ORC entry."""

    sp_reg: int
    sp_offset: int
    bp_reg: int
    bp_offset: int
    type: int
    signal: bool

    def __str__(self) -> str:
        return (f"type:{TYPE_NAMES.get(self.type, self.type)} sp:{REG_NAMES.get(self.sp_reg, self.sp_reg)}"
                f"{self.sp_offset:+d} bp:{REG_NAMES.get(self.bp_reg, self.bp_reg)}{self.bp_offset:+d}"
                f" signal:{int(self.signal)}")


# The kernel's guess when an ip has no ORC entry (orc_fp_entry): a frame-pointer frame.
FP_ENTRY = OrcEntry(REG_BP, 16, REG_PREV_SP, -16, TYPE_CALL, False)


ENTRY_BLOCK = 2048  # entries decoded per lazy read (12 KiB)


class OrcTable:
    """One ORC table (vmlinux or a module) covering text [start, end).

    `ips` is the whole (sorted) ip array; `entries` either the decoded entries, or None with
    `fetch(first, count) -> bytes` to decode them block by block on demand (the vmlinux table has
    ~400k entries; a backtrace touches a few hundred).
    """

    def __init__(self, name: str | None, start: int, end: int, ips: np.ndarray,
                 entries: OrcEntries | None, fetch: Callable[[int, int], bytes] | None = None,
                 layout: OrcLayout | None = None) -> None:
        self.name = name
        self.start = start
        self.end = end
        self.ips = ips
        self.entries = entries
        self._fetch = fetch
        self._layout = layout
        self._blocks: dict[int, OrcEntries] = {}
        if len(ips) > 1 and bool(np.any(ips[1:] < ips[:-1])):
            if self.entries is None:  # unsorted in memory: decode everything, then sort
                assert fetch is not None and layout is not None
                self.entries = decode_entries(fetch(0, len(ips)), layout)
            # like the kernel's orc_sort_cmp: for equal ips the weak (undefined) entry goes first,
            # so the lookup (last entry <= ip) picks the real one
            order = np.lexsort((self.entries.type != TYPE_UNDEFINED, ips))
            self.ips = ips[order]
            self.entries = OrcEntries(*(a[order] for a in self.entries))

    def __len__(self) -> int:
        return len(self.ips)

    def __repr__(self) -> str:
        return f"<OrcTable {self.name or 'vmlinux'} {self.start:#x}-{self.end:#x} {len(self)} entries>"

    def entry(self, k: int) -> OrcEntry:
        """Entry number `k`."""
        e = self.entries
        if e is None:
            block = k // ENTRY_BLOCK
            e = self._blocks.get(block)
            if e is None:
                first = block * ENTRY_BLOCK
                count = min(ENTRY_BLOCK, len(self.ips) - first)
                assert self._fetch is not None and self._layout is not None
                e = self._blocks[block] = decode_entries(self._fetch(first, count), self._layout)
            k -= block * ENTRY_BLOCK
        return OrcEntry(int(e.sp_reg[k]), int(e.sp_offset[k]), int(e.bp_reg[k]), int(e.bp_offset[k]),
                        int(e.type[k]), bool(e.signal[k]))

    def find(self, ip: int) -> OrcEntry | None:
        """The entry for `ip` (the last whose ip is <= it), or None."""
        if not self.start <= ip < self.end:
            return None
        k = int(np.searchsorted(self.ips, np.uint64(ip), side="right")) - 1
        if k < 0:
            return None
        return self.entry(k)


class OrcTables:
    """vmlinux's ORC table plus every loaded module's; `find(ip)` picks the right one."""

    def __init__(self, tables: list[OrcTable], layout: OrcLayout, problems: list[str] | None = None) -> None:
        self.tables = sorted(tables, key=lambda t: t.start)
        self.layout = layout
        self.problems = problems or []
        self._starts = [t.start for t in self.tables]

    def find(self, ip: int) -> OrcEntry | None:
        """The ORC entry for a text address, None when no table covers it."""
        import bisect

        i = bisect.bisect_right(self._starts, ip) - 1
        if i < 0:
            return None
        return self.tables[i].find(ip)

    def __len__(self) -> int:
        return sum(len(t) for t in self.tables)

    def __repr__(self) -> str:
        return f"<OrcTables {self.layout.name} {len(self.tables)} tables, {len(self)} entries>"


def _symbol(kernel: "Kernel", name: str) -> int | None:
    try:
        return kernel.symbol(name)
    except KdnbError:
        return None


def read_orc_tables(kernel: "Kernel", modules: bool = True) -> OrcTables:
    """Read vmlinux's and (optionally) every loaded module's ORC tables from the dump.

    Raises KdnbError when the kernel has no ORC tables (not built with CONFIG_UNWINDER_ORC).
    Module problems are collected in `problems`, not raised.
    """
    try:
        layout = layout_from_btf(kernel.type("struct orc_entry"))
    except KdnbError:
        # no BTF description: assume the newest layout (the unwinder reports odd entries)
        layout = LAYOUT_6_3
    ip_start = _symbol(kernel, "__start_orc_unwind_ip")
    ip_stop = _symbol(kernel, "__stop_orc_unwind_ip")
    orc_start = _symbol(kernel, "__start_orc_unwind")
    if ip_start is None or ip_stop is None or orc_start is None:
        raise KdnbError("kernel has no ORC tables (__start_orc_unwind_ip missing)")
    n = (ip_stop - ip_start) // 4
    if not 0 < n <= MAX_ORC_ENTRIES:
        raise KdnbError(f"implausible ORC table size {n}")
    ips = decode_ips(kernel.read(ip_start, 4 * n), ip_start)

    def fetch(first: int, count: int) -> bytes:
        return kernel.read(orc_start + ORC_ENTRY_SIZE * first, ORC_ENTRY_SIZE * count)

    middle = max(0, n // 2 - ENTRY_BLOCK // 2)
    layout = with_numbering(layout, fetch(middle, min(ENTRY_BLOCK, n - middle)))

    stext = _symbol(kernel, "_stext")
    etext = _symbol(kernel, "_etext")
    lo = min(int(ips.min()), stext) if stext is not None else int(ips.min())
    hi = max(int(ips.max()) + 1, etext or 0)
    for name in ("_einittext", "__irqentry_text_end", "__entry_text_end"):
        v = _symbol(kernel, name)
        if v is not None and v < 0xFFFFFFFFC0000000:
            hi = max(hi, v)
    tables = [OrcTable(None, lo, hi, ips, None, fetch, layout)]
    problems: list[str] = []
    if modules:
        tables += _module_tables(kernel, layout, problems)
    return OrcTables(tables, layout, problems)


def _module_tables(kernel: "Kernel", layout: OrcLayout, problems: list[str]) -> list[OrcTable]:
    try:
        mod_t = kernel.type("struct module")
        infos = kernel.modules
        off_num = mod_t.offsetof("arch.num_orcs")
        off_ip = mod_t.offsetof("arch.orc_unwind_ip")
        off_orc = mod_t.offsetof("arch.orc_unwind")
        text = _module_text_fields(mod_t)
    except KdnbError as exc:
        problems.append(f"module ORC tables unavailable: {exc}")
        return []
    out: list[OrcTable] = []
    need = max(off_num + 4, off_ip + 8, off_orc + 8, *(o + 8 for o in text))
    for info in infos:
        try:
            raw = kernel.read(info.address, need)
            num = int.from_bytes(raw[off_num:off_num + 4], "little")
            ip_addr = int.from_bytes(raw[off_ip:off_ip + 8], "little")
            orc_addr = int.from_bytes(raw[off_orc:off_orc + 8], "little")
            if num == 0 or not ip_addr or not orc_addr:
                continue
            if num > MAX_ORC_ENTRIES:
                raise KdnbError(f"implausible num_orcs {num}")
            ips = decode_ips(kernel.read(ip_addr, 4 * num), ip_addr)
            entries = decode_entries(kernel.read(orc_addr, ORC_ENTRY_SIZE * num), layout)
            base = int.from_bytes(raw[text[0]:text[0] + 8], "little")
            size = int.from_bytes(raw[text[1]:text[1] + 4 if text[2] == 4 else text[1] + 8], "little")
            if base and 0 < size < 1 << 30:
                # the table also lists the module's init text, freed (and maybe reused) since load
                lo, hi = base, base + size
                keep = (ips >= np.uint64(lo)) & (ips < np.uint64(hi))
                ips, entries = ips[keep], OrcEntries(*(a[keep] for a in entries))
            else:
                lo, hi = int(ips.min()), int(ips.max()) + 1
            if len(ips):
                out.append(OrcTable(info.name, lo, hi, ips, entries))
        except KdnbError as exc:
            problems.append(f"module {info.name}: ORC table unreadable ({exc})")
    return out


def _module_text_fields(mod_t: "Type") -> tuple[int, int, int]:
    """Offsets of the module's core text base and size (and the size's width in bytes).

    Commit ac3b43283923 ("module: replace module_layout with module_memory", v6.4) replaced
    `core_layout.{base,text_size}` by `mem[MOD_TEXT].{base,size}` (MOD_TEXT == 0).
    """
    if mod_t.has_member("mem"):
        m = mod_t.member("mem[0].size")
        return mod_t.offsetof("mem[0].base"), m.offset, m.type.size or 4
    m = mod_t.member("core_layout.text_size")
    return mod_t.offsetof("core_layout.base"), m.offset, m.type.size or 4
