"""A process core's ELF layout and memory: the program headers (PT_NOTE, one PT_LOAD per
mapping), the note bytes, and reads of process memory by virtual address.

Linux writes a PT_LOAD for every mapping; `p_filesz` is 0 for one whose bytes coredump_filter
left out (file-backed text, by default), else equal to `p_memsz`. gdb's gcore writes the same
shape. Every header number passes `kdnb.bounds` before it sizes a read.
"""

from __future__ import annotations

import bisect
import struct
from dataclasses import dataclass

from .. import bounds
from ..dump.notes import Note, parse_notes
from ..errors import CorruptDump, FormatError, KdnbError
from .source import CoreSource

EHDR = struct.Struct("<16sHHIQQQIHHHHHH")
PHDR = struct.Struct("<IIQQQQQQ")
SHDR0_INFO = 44  # sh_info of section 0 holds the phdr count when e_phnum is PN_XNUM
PN_XNUM = 0xFFFF
PT_LOAD, PT_NOTE = 1, 4
PF_X, PF_W, PF_R = 1, 2, 4
PHNUM_MAX = 1 << 24  # vm.max_map_count is 65530 by default; nobody runs 16 M mappings
NOTES_MAX = 1 << 28  # 256 MiB: 100 000 threads' notes (each ~ 3 KiB with XSTATE)
READ_MAX = 1 << 30
USER_SPACE_END = 1 << 57  # x86_64 with 5-level paging (the vsyscall page sits above, handled)
VSYSCALL = 0xFFFFFFFFFF600000


class NotInCore(KdnbError):
    """An address of the process whose bytes the core does not hold (names why)."""

    def __init__(self, vaddr: int, reason: str, path: str = "") -> None:
        self.vaddr = vaddr
        self.reason = reason
        where = f"{path}: " if path else ""
        super().__init__(f"{where}address {vaddr:#x} is not in the core ({reason})")


@dataclass(frozen=True)
class Load:
    """One PT_LOAD: a mapping at [vaddr, vaddr + memsz), its bytes at `offset` when dumped."""

    index: int
    vaddr: int
    memsz: int
    offset: int
    filesz: int
    flags: int

    @property
    def end(self) -> int:
        return self.vaddr + self.memsz

    @property
    def perms(self) -> str:
        """`r-x` style permissions from p_flags."""
        f = self.flags
        return ("r" if f & PF_R else "-") + ("w" if f & PF_W else "-") + ("x" if f & PF_X else "-")


class CoreMemory:
    """The headers, notes and PT_LOADs of an x86_64 ELF process core, and reads by address."""

    UNMAPPED = "not mapped in the process"  # why an address outside every load has no bytes

    def __init__(self, source: CoreSource) -> None:
        self.source = source
        self.path = source.path
        self.problems: list[str] = []
        ehdr = source.pread(EHDR.size, 0)
        if len(ehdr) < EHDR.size or not ehdr.startswith(b"\x7fELF"):
            raise FormatError(f"{self.path}: not an ELF file")
        ident, e_type, machine, _ver, _entry, phoff, shoff, _flags, _ehsize, phentsize, phnum, \
            _shentsize, _shnum, _shstrndx = EHDR.unpack(ehdr)
        if ident[4] != 2 or ident[5] != 1:
            raise FormatError(f"{self.path}: a 32-bit or big-endian ELF core; kdnb reads x86_64 cores")
        if e_type != 4:
            raise FormatError(f"{self.path}: ELF type {e_type}, not a core (ET_CORE)")
        if machine != 62:
            raise FormatError(f"{self.path}: an ELF core of machine {machine}; kdnb reads x86_64 (62)")
        if phnum == PN_XNUM:  # more than 65534 mappings: the count is in section header 0
            raw = source.pread(4, bounds.in_range(shoff, "e_shoff", 64, source.size - 64, self.path)
                               + SHDR0_INFO)
            phnum = struct.unpack("<I", raw)[0] if len(raw) == 4 else 0
        bounds.count(phnum, "e_phnum", PHNUM_MAX, self.path)
        if phentsize < PHDR.size and phnum:
            raise CorruptDump(f"{self.path}: e_phentsize {phentsize} is smaller than an ELF64 phdr")
        table = source.pread(phnum * phentsize, phoff)
        if len(table) < phnum * phentsize:
            raise CorruptDump(f"{self.path}: the program headers end past the end of the file")
        self.machine = machine
        self.loads: list[Load] = []
        blob = b""
        for i in range(phnum):
            p_type, p_flags, off, vaddr, _paddr, filesz, memsz, _align = \
                PHDR.unpack_from(table, i * phentsize)
            if p_type == PT_NOTE:
                size = bounds.in_range(filesz, "PT_NOTE p_filesz", 0, NOTES_MAX - len(blob), self.path)
                part = source.pread(size, off)
                if len(part) < size:
                    self.problems.append(f"PT_NOTE {i} ends past the end of the file")
                blob += part
            elif p_type == PT_LOAD:
                why = _implausible(vaddr, memsz, filesz)
                if why:
                    self.problems.append(f"PT_LOAD {i} ignored: {why}")
                    continue
                self.loads.append(Load(len(self.loads), vaddr, memsz, off, filesz, p_flags))
        self.notes: list[Note] = parse_notes(blob, self.problems)
        self.loads.sort(key=lambda ld: ld.vaddr)
        self._starts = [ld.vaddr for ld in self.loads]
        expected = max((ld.offset + ld.filesz for ld in self.loads), default=0)
        self.truncated = source.size < expected
        if self.truncated:
            self.problems.append(f"core is {source.size} bytes but its PT_LOADs need {expected}: "
                                 "truncated (RLIMIT_CORE, a full disk or ProcessSizeMax=)")

    def load_at(self, addr: int) -> Load | None:
        """The PT_LOAD whose range holds `addr`, or None."""
        i = bisect.bisect_right(self._starts, addr) - 1
        if i >= 0 and addr < self.loads[i].end:
            return self.loads[i]
        return None

    def present(self, addr: int) -> bool:
        """Whether the core holds the byte at `addr`."""
        ld = self.load_at(addr)
        return ld is not None and addr - ld.vaddr < ld.filesz and \
            ld.offset + addr - ld.vaddr < self.source.size

    def read(self, addr: int, size: int) -> bytes:
        """`size` bytes of process memory at `addr`; NotInCore names the first missing byte."""
        bounds.in_range(size, "read size", 0, READ_MAX, self.path)
        out = []
        while size > 0:
            ld = self.load_at(addr)
            if ld is None:
                raise NotInCore(addr, self.UNMAPPED, self.path)
            rel = addr - ld.vaddr
            if rel >= ld.filesz:
                raise NotInCore(addr, f"mapped ({ld.perms}) but its bytes were not dumped "
                                "(coredump_filter leaves file-backed mappings out)", self.path)
            n = min(size, ld.filesz - rel)
            data = self.source.pread(n, ld.offset + rel)
            if len(data) < n:
                raise NotInCore(addr + len(data), "past the end of a truncated core", self.path)
            out.append(data)
            addr += n
            size -= n
        return out[0] if len(out) == 1 else b"".join(out)

    def u64(self, addr: int) -> int:
        """One little-endian 64-bit word of process memory."""
        return struct.unpack("<Q", self.read(addr, 8))[0]


def _implausible(vaddr: int, memsz: int, filesz: int) -> str:
    """Why a PT_LOAD cannot be a mapping of an x86_64 process, or ""."""
    if filesz > memsz:
        return f"p_filesz {filesz:#x} > p_memsz {memsz:#x}"
    if vaddr + memsz > bounds.U64_MAX + 1:
        return f"p_vaddr {vaddr:#x} + p_memsz {memsz:#x} wraps the address space"
    if vaddr + memsz > USER_SPACE_END and vaddr != VSYSCALL:
        return f"p_vaddr {vaddr:#x} is not a user-space address"
    return ""
