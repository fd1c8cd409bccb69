"""ELF vmcores: /proc/vmcore copies (ELF64/ELF32), makedumpfile -E, QEMU dump-guest-memory."""

from __future__ import annotations

import os

import numpy as np

from ..bounds import count, vmcoreinfo_int
from ..errors import CorruptDump, FormatError, ImplausibleValue
from .base import DumpReader
from .elf_loads import (
    PT_NOTE,
    Loads,
    load_segments,
    overlapping_pairs,
    piece_index,
    plausible_loads,
    read_phdrs,
)
from .notes import (
    NT_AUXV,
    NT_FILE,
    NT_PRPSINFO,
    is_qemu,
    parse_notes,
    parse_vmcoreinfo,
    prstatus_notes,
    vmcoreinfo_note,
)
from .segtable import SegmentTable, checked_add

ELF_FLAG_INCOMPLETE = 0x1  # makedumpfile -E sets e_flags bit 0 when it ran out of space
USER_NOTE_TYPES = {NT_PRPSINFO, NT_AUXV, NT_FILE}
PHDRS_MAX = 1 << 20  # /proc/vmcore has one PT_LOAD per RAM range; makedumpfile -E one per run
NOTES_MAX = 1 << 26  # 64 MiB of notes: 8192 CPUs' PRSTATUS notes need ~3 MiB
OVERLAP_SAMPLES = 8  # pages compared where two PT_LOADs describe the same physical memory


class ElfDump(DumpReader):
    """A vmcore in ELF form; memory is read from the file with pread (no mapping, so a huge
    sparse file costs no address space)."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self._file = open(path, "rb")
        try:
            self._open()
        except BaseException:
            self._file.close()
            raise

    def _open(self) -> None:
        # pyelftools loads with the first ELF dump (~50 ms): a kdump-format open does without it
        from elftools.common.exceptions import ELFError
        from elftools.elf.elffile import ELFFile

        self.file_size = os.fstat(self._file.fileno()).st_size
        try:
            elf = ELFFile(self._file)
            ehdr = elf.header
            room = max(0, self.file_size - ehdr["e_phoff"]) // max(ehdr["e_phentsize"], 1)
            nph = count(elf.num_segments(), "ELF program header count", min(room, PHDRS_MAX), self.path)
            ph = read_phdrs(self._file.fileno(), self.path, elf.elfclass, elf.little_endian,
                            ehdr["e_phoff"], ehdr["e_phentsize"], nph)
        except (ImplausibleValue, CorruptDump):
            raise
        except (ELFError, ValueError, OSError) as exc:
            raise CorruptDump(f"{self.path}: ELF headers unreadable ({exc})") from exc
        except Exception as exc:  # pyelftools raises construct errors on short reads
            raise CorruptDump(f"{self.path}: ELF headers end early or are malformed "
                              f"({type(exc).__name__}: {exc})") from exc
        if ehdr["e_type"] != "ET_CORE":
            raise FormatError(f"{self.path}: an ELF {ehdr['e_type']} file, not a core dump "
                              "(is this a vmlinux or a module? pass it as vmlinux=)")
        self.elfclass = elf.elfclass
        self._fd = self._file.fileno()

        loads, load_problems = plausible_loads(ph)
        note_blob, note_problems = self._read_notes(ph)
        problems = [msg for _, msg in sorted(note_problems + load_problems, key=lambda p: p[0])]
        self.notes = parse_notes(note_blob, problems)
        raw = vmcoreinfo_note(self.notes)
        if raw is not None:
            self.vmcoreinfo_raw = raw
            self.vmcoreinfo = parse_vmcoreinfo(raw)
        qemu = is_qemu(self.notes)
        if not loads and not self.notes:
            raise FormatError(f"{self.path}: an ELF core with neither memory segments nor notes")
        if raw is None and not qemu and any(n.type in USER_NOTE_TYPES for n in self.notes):
            raise FormatError(f"{self.path}: a userspace process core dump (it has process "
                              "notes and no VMCOREINFO); kdnb.open() reads it as a process core (kdnb report CORE)")
        try:
            self.page_size = vmcoreinfo_int(self.vmcoreinfo, "PAGESIZE", self.path, 4096)
        except ImplausibleValue as exc:
            problems.append(f"{exc}; x86_64 pages of 4096 bytes assumed")
        self._loads = loads
        self._index = piece_index(loads)
        self._last = (0, 0, -1)  # (start, end, offset) of the piece read last
        problems.extend(self._overlaps())
        expected = _expected_size(loads)
        truncated = self.file_size < expected
        if truncated:
            problems.append(f"file is {self.file_size} bytes but its PT_LOADs need {expected}")
        self.format = "qemu-elf" if qemu else ("elf64" if self.elfclass == 64 else "elf32")
        self.max_pfn = int((loads.paddr + loads.memsz).max(initial=0)) // self.page_size
        self.problems = problems
        self.header = {
            "format": self.format,
            "elf_class": self.elfclass,
            "machine": ehdr["e_machine"],
            "e_flags": ehdr["e_flags"],
            "incomplete": bool(ehdr["e_flags"] & ELF_FLAG_INCOMPLETE),
            "filtered": bool((loads.memsz > loads.filesz).any()),
            "truncated": truncated,
            "file_size": self.file_size,
            "expected_size": expected,
            "pt_loads": int((ph["type"] == 1).sum()),
            "nr_cpus": len(prstatus_notes(self.notes)),
            "qemu": qemu,
            "compression": "none",
            "phys_base": _phys_base(self.vmcoreinfo, problems),
            "problems": problems,
        }

    def _read_notes(self, ph: dict[str, np.ndarray]) -> tuple[bytes, list[tuple[int, str]]]:
        """The PT_NOTE contents (up to NOTES_MAX bytes) and (header number, problem) pairs."""
        blob = b""
        problems: list[tuple[int, str]] = []
        for row in np.flatnonzero(ph["type"] == PT_NOTE).tolist():
            offset, filesz = int(ph["offset"][row]), int(ph["filesz"][row])
            end = offset + filesz
            if end > self.file_size:
                problems.append((row, f"PT_NOTE ends at {end:#x}, past the end of the file "
                                      f"({self.file_size:#x})"))
            size = min(end, self.file_size, offset + NOTES_MAX - len(blob)) - offset
            if size < filesz and end <= self.file_size:
                problems.append((row, f"PT_NOTE of {filesz:#x} bytes: only the first "
                                      f"{NOTES_MAX:#x} bytes of notes are read"))
            blob += os.pread(self._fd, max(size, 0), offset)
        return blob, problems

    def read_page(self, pfn: int) -> bytes:
        psz = self.page_size
        return self.read_phys(pfn * psz, psz)

    def read_phys(self, paddr: int, size: int) -> bytes:
        out = []
        while size > 0:
            start, end, off = self._last
            if not start <= paddr < end:
                piece = self._index.find(paddr)
                if piece is None:
                    raise self._missing(paddr, "a hole: not in any PT_LOAD")
                start, end, off = self._last = piece
            n = min(size, end - paddr)
            if off < 0:  # past p_filesz: zero by ELF rules (makedumpfile -E drops zero pages so)
                out.append(bytes(n))
                paddr += n
                size -= n
                continue
            foff = off + (paddr - start)
            if foff + n > self.file_size:
                if foff >= self.file_size:
                    raise self._missing(paddr, "beyond the end of a truncated file")
                n = self.file_size - foff
            out.append(os.pread(self._fd, n, foff))
            paddr += n
            size -= n
        return out[0] if len(out) == 1 else b"".join(out)

    def _overlaps(self) -> list[str]:
        """Problems where two PT_LOADs give different bytes for the same physical memory.

        /proc/vmcore repeats the kernel text range (its text-mapping PT_LOAD and a direct-map
        PT_LOAD describe the same pages): that overlap is fine when the contents agree."""
        problems: list[str] = []
        ld = self._loads
        for row, earlier, lo, hi in overlapping_pairs(ld):
            if not self._same_bytes(earlier, row, lo, hi):
                a, b = int(ld.index[row]), int(ld.index[earlier])
                problems.append(f"PT_LOAD {a} overlaps PT_LOAD {b} at physical {lo:#x}-{hi:#x} "
                                f"with different contents (PT_LOAD {b} is read there)")
        return problems

    def _same_bytes(self, a: int, b: int, lo: int, hi: int) -> bool:
        """Whether a few evenly spread pages of [lo, hi) read the same through loads a and b."""
        psz = self.page_size
        ld = self._loads
        base_a = int(ld.offset[a]) - int(ld.paddr[a])
        base_b = int(ld.offset[b]) - int(ld.paddr[b])
        step = max(psz, (hi - lo) // OVERLAP_SAMPLES)
        for paddr in range(lo, hi, step):
            n = min(psz, hi - paddr)
            if os.pread(self._fd, n, base_a + paddr) != os.pread(self._fd, n, base_b + paddr):
                return False
        return True

    def segments(self) -> SegmentTable:
        return load_segments(self._loads, self.file_size)

    def close(self) -> None:
        super().close()
        self._file.close()


def _expected_size(loads: Loads) -> int:
    """The file size the PT_LOADs need: the furthest p_offset + p_filesz."""
    ends, fits = checked_add(loads.offset, loads.filesz)
    expected = int(ends[fits].max(initial=0))
    for row in np.flatnonzero(~fits).tolist():  # a header placed it past 2**64
        expected = max(expected, int(loads.offset[row]) + int(loads.filesz[row]))
    return expected


def _phys_base(vmcoreinfo: dict[str, str], problems: list[str]) -> int | None:
    try:
        return vmcoreinfo_int(vmcoreinfo, "NUMBER(phys_base)") if "NUMBER(phys_base)" in vmcoreinfo else None
    except ImplausibleValue as exc:
        problems.append(str(exc))
        return None

