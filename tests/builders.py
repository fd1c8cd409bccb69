"""Small writers of synthetic dumps (ELF64/ELF32, kdump-compressed, flattened, split) from a spec.

Shared by the format tests; broken variants are made by editing the bytes these write.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import lzokay
import snappy
import zstandard

PAGE = 4096
CODEC_FLAGS = {"zlib": 0x1, "lzo": 0x2, "snappy": 0x4, "zstd": 0x20, "raw": 0}
REG_NAMES = ("r15", "r14", "r13", "r12", "rbp", "rbx", "r11", "r10", "r9", "r8", "rax", "rcx",
             "rdx", "rsi", "rdi", "orig_rax", "rip", "cs", "eflags", "rsp", "ss", "fs_base",
             "gs_base", "ds", "es", "fs", "gs")


def page_of(pfn: int) -> bytes:
    """A recognisable page: its pfn repeated, so every page differs."""
    return struct.pack("<Q", pfn ^ 0x5A5A0000) * (PAGE // 8)


@dataclass
class Spec:
    """What a synthetic dump holds."""

    pages: dict[int, bytes]  # pfn -> contents of every page written to the file
    excluded: set[int] = field(default_factory=set)  # RAM pages filtered out
    max_pfn: int = 0
    vmcoreinfo: dict[str, str] = field(default_factory=lambda: {
        "OSRELEASE": "6.1.0-test", "PAGESIZE": "4096", "NUMBER(phys_base)": "-75497472",
        "CRASHTIME": "1795823334"})
    cpus: list[tuple[int, dict[str, int]]] = field(default_factory=lambda: [
        (224, {"rip": 0xFFFFFFFF81000010, "rsp": 0xFFFFC90000003E00}),
        (132, {"rip": 0x401000, "rsp": 0x7FFC0000}),
    ])

    def __post_init__(self) -> None:
        self.max_pfn = max(self.max_pfn, max([*self.pages, *self.excluded], default=0) + 1)


def simple_spec(n: int = 64, holes: tuple[int, ...] = (10, 11), excluded: tuple[int, ...] = (20, 21, 22),
                zero: tuple[int, ...] = (30,)) -> Spec:
    """n page frames: a few holes, a few excluded pages, some zero pages, the rest patterned."""
    pages = {}
    for pfn in range(n):
        if pfn in holes or pfn in excluded:
            continue
        pages[pfn] = bytes(PAGE) if pfn in zero else page_of(pfn)
    return Spec(pages=pages, excluded=set(excluded), max_pfn=n)


def note(name: str, ntype: int, desc: bytes) -> bytes:
    """One ELF note, 4-byte aligned."""
    nm = name.encode() + b"\0"
    pad = lambda b: b + bytes(-len(b) % 4)  # noqa: E731
    return struct.pack("<III", len(nm), len(desc), ntype) + pad(nm) + pad(desc)


def prstatus(pid: int, regs: dict[str, int]) -> bytes:
    """An x86_64 elf_prstatus descriptor (336 bytes)."""
    desc = bytearray(336)
    struct.pack_into("<i", desc, 32, pid)
    struct.pack_into("<27Q", desc, 112, *[regs.get(r, 0) for r in REG_NAMES])
    return bytes(desc)


def notes_blob(spec: Spec, qemu: bool = False) -> bytes:
    """PRSTATUS per CPU then VMCOREINFO (and QEMU notes for a QEMU dump)."""
    blob = b""
    for i, (pid, regs) in enumerate(spec.cpus):
        blob += note("CORE", 1, prstatus(i + 1 if qemu else pid, regs))
        if qemu:
            blob += note("QEMU", 0, bytes(0x1B0))
    if spec.vmcoreinfo is not None:
        text = "".join(f"{k}={v}\n" for k, v in spec.vmcoreinfo.items()).encode()
        blob += note("VMCOREINFO", 0, text)
    return blob


def _runs(pfns: list[int]) -> list[tuple[int, int]]:
    runs: list[tuple[int, int]] = []
    for pfn in sorted(pfns):
        if runs and runs[-1][1] == pfn:
            runs[-1] = (runs[-1][0], pfn + 1)
        else:
            runs.append((pfn, pfn + 1))
    return runs


def write_elf(path: Path, spec: Spec, elfclass: int = 64, qemu: bool = False,
              vaddr_base: int = 0xFFFF888000000000, filtered: bool = True) -> Path:
    """An ELF vmcore; excluded pages become p_memsz > p_filesz tails when `filtered`."""
    notes = notes_blob(spec, qemu)
    loads = []  # (paddr, vaddr, data, memsz)
    for start, end in _runs(list(spec.pages)):
        data = b"".join(spec.pages[p] for p in range(start, end))
        memsz = len(data)
        if filtered:
            tail = end
            while tail in spec.excluded:
                tail += 1
            memsz = (tail - start) * PAGE
        vaddr = start * PAGE if qemu else vaddr_base + start * PAGE
        loads.append((start * PAGE, vaddr & ((1 << elfclass) - 1), data, memsz))
    is64 = elfclass == 64
    ehsize, phsize = (64, 56) if is64 else (52, 32)
    nph = 1 + len(loads)
    off = ehsize + nph * phsize
    phdrs = []
    note_off = off
    off += len(notes)
    body = [notes]
    for paddr, vaddr, data, memsz in loads:
        phdrs.append((1, off, vaddr, paddr, len(data), memsz))
        body.append(data)
        off += len(data)
    ident = b"\x7fELF" + bytes([2 if is64 else 1, 1, 1, 0]) + bytes(8)
    if is64:
        hdr = ident + struct.pack("<HHIQQQIHHHHHH", 4, 62, 1, 0, ehsize, 0, 0, ehsize, phsize,
                                  nph, 0, 0, 0)
        ph = struct.pack("<IIQQQQQQ", 4, 0, note_off, 0, 0, len(notes), len(notes), 0)
        for t, o, v, p, fs, ms in phdrs:
            ph += struct.pack("<IIQQQQQQ", t, 7, o, v, p, fs, ms, 0)
    else:
        hdr = ident + struct.pack("<HHIIIIIHHHHHH", 4, 62, 1, 0, ehsize, 0, 0, ehsize, phsize,
                                  nph, 0, 0, 0)
        ph = struct.pack("<IIIIIIII", 4, note_off, 0, 0, len(notes), len(notes), 0, 0)
        for t, o, v, p, fs, ms in phdrs:
            ph += struct.pack("<IIIIIIII", t, o, v, p, fs, ms, 7, 0)
    path.write_bytes(hdr + ph + b"".join(body))
    return path


def _compress(codec: str, data: bytes) -> bytes:
    if codec == "zlib":
        return zlib.compress(data)
    if codec == "lzo":
        return lzokay.compress(data)
    if codec == "snappy":
        return snappy.compress(data)
    if codec == "zstd":
        return zstandard.ZstdCompressor().compress(data)
    return data


def write_kdump(path: Path, spec: Spec, codecs: tuple[str, ...] = ("zlib",), version: int = 6,
                incomplete_after: int | None = None, split: tuple[int, int] | None = None,
                dump_level: int = 31, flattened: bool = False, qemu: bool = False) -> Path:
    """A kdump-compressed file; pages cycle through `codecs` (mixed compression in one file).

    `incomplete_after=N` writes only the first N pages and sets the incomplete flag;
    `split=(start, end)` writes one part of a split set covering that pfn range.
    """
    bs = PAGE
    lo, hi = split if split else (0, spec.max_pfn)
    notes = notes_blob(spec, qemu)
    vmci = "".join(f"{k}={v}\n" for k, v in spec.vmcoreinfo.items()).encode() \
        if spec.vmcoreinfo is not None else b""
    sub_fixed = 104
    off_notes = bs + sub_fixed
    off_vmci = off_notes + len(notes)
    sub_bytes = sub_fixed + len(notes) + len(vmci)
    sub_blocks = -(-sub_bytes // bs)
    half_blocks = -(-((spec.max_pfn + 7) // 8) // bs)
    bitmap_blocks = 2 * half_blocks
    bm1 = bytearray(half_blocks * bs)
    bm2 = bytearray(half_blocks * bs)
    for pfn in [*spec.pages, *spec.excluded]:
        bm1[pfn >> 3] |= 1 << (pfn & 7)
    present = sorted(p for p in spec.pages if lo <= p < hi)
    for pfn in present:
        bm2[pfn >> 3] |= 1 << (pfn & 7)
    desc_off = bs * (1 + sub_blocks + bitmap_blocks)
    data_off = desc_off + 24 * len(present)
    descs = bytearray()
    data = bytearray()
    zero_desc = None
    status = sum(CODEC_FLAGS[c] for c in set(codecs))
    for i, pfn in enumerate(present):
        if incomplete_after is not None and i >= incomplete_after:
            descs += bytes(24)
            continue
        page = spec.pages[pfn]
        if page == bytes(bs):
            if zero_desc is None:
                zero_desc = struct.pack("<qIIQ", data_off + len(data), bs, 0, 0)
                data += page
            descs += zero_desc
            continue
        codec = codecs[i % len(codecs)]
        comp = _compress(codec, page)
        flags = CODEC_FLAGS[codec]
        if len(comp) >= bs:
            comp, flags = page, 0
        descs += struct.pack("<qIIQ", data_off + len(data), len(comp), flags, 0)
        data += comp
    if incomplete_after is not None:
        status |= 0x8
    uts = b"".join(s.encode().ljust(65, b"\0") for s in
                   ("Linux", "box", spec.vmcoreinfo.get("OSRELEASE", "") if spec.vmcoreinfo
                    else "", "#1 SMP", "x86_64", "(none)"))
    hdr = bytearray(bs)
    hdr[:8] = b"KDUMP   "
    struct.pack_into("<i", hdr, 8, version)
    hdr[12:12 + len(uts)] = uts
    struct.pack_into("<qqIiiIIIIIii", hdr, 408, 1795823334, 0, status, bs, sub_blocks,
                     bitmap_blocks, min(spec.max_pfn, 0xFFFFFFFF), 0, 0, 0, 0, len(spec.cpus))
    sub = bytearray(sub_blocks * bs)
    struct.pack_into("<qiiQQQQQQQQQQQ", sub, 0, -75497472, dump_level, 1 if split else 0, lo, hi,
                     off_vmci, len(vmci), off_notes, len(notes), 0, 0, lo, hi, spec.max_pfn)
    sub[sub_fixed:sub_fixed + len(notes)] = notes
    sub[sub_fixed + len(notes):sub_fixed + len(notes) + len(vmci)] = vmci
    blob = bytes(hdr) + bytes(sub) + bytes(bm1) + bytes(bm2) + bytes(descs) + bytes(data)
    if flattened:
        blob = flatten(blob)
    path.write_bytes(blob)
    return path


def flatten(blob: bytes, chunk: int = 10000) -> bytes:
    """Rewrite a kdump file as makedumpfile's flattened stream (records out of order)."""
    head = bytearray(4096)
    head[:12] = b"makedumpfile"
    struct.pack_into(">qq", head, 16, 1, 1)
    records = [(off, blob[off:off + chunk]) for off in range(0, len(blob), chunk)]
    records = records[1::2] + records[0::2]  # the stream need not be in offset order
    out = bytearray(head)
    for off, data in records:
        out += struct.pack(">qq", off, len(data)) + data
    out += struct.pack(">qq", -1, 0)
    return bytes(out)
