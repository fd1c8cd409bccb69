"""ELF vmcores: /proc/vmcore copies (ELF64/ELF32), makedumpfile -E, QEMU dump-guest-memory."""

from __future__ import annotations

import bisect
import os
from dataclasses import dataclass

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

from ..bounds import MAX_PHYSMEM_BITS, U64_MAX, count, vmcoreinfo_int
from ..errors import CorruptDump, FormatError, ImplausibleValue
from .base import DumpReader, Segment
from .notes import NT_AUXV, NT_FILE, NT_PRPSINFO, is_qemu, parse_notes, parse_vmcoreinfo, \
    prstatus_notes, vmcoreinfo_note

ELF_FLAG_INCOMPLETE = 0x1  # makedumpfile -E sets e_flags bit 0 when it ran out of space
USER_NOTE_TYPES = {NT_PRPSINFO, NT_AUXV, NT_FILE}
PHDRS_MAX = 1 << 20  # /proc/vmcore has one PT_LOAD per RAM range; makedumpfile -E one per run
NOTES_MAX = 1 << 26  # 64 MiB of notes: 8192 CPUs' PRSTATUS notes need ~3 MiB
PHYS_LIMIT = 1 << MAX_PHYSMEM_BITS
OVERLAP_SAMPLES = 8  # pages compared where two PT_LOADs describe the same physical memory


@dataclass(frozen=True)
class _Load:
    index: int
    paddr: int
    vaddr: int
    offset: int
    filesz: int
    memsz: int


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
        self.file_size = os.fstat(self._file.fileno()).st_size
        try:
            elf = ELFFile(self._file)
            ehdr = elf.header
            room = max(0, self.file_size - ehdr["e_phoff"]) // max(ehdr["e_phentsize"], 1)
            nph = count(elf.num_segments(), "ELF program header count", min(room, PHDRS_MAX), self.path)
            phdrs = [elf.get_segment(i).header for i in range(nph)]
        except ImplausibleValue:
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

        note_blob = b""
        problems: list[str] = []
        loads: list[_Load] = []
        n_loads = 0
        for ph in phdrs:
            if ph["p_type"] == "PT_NOTE":
                end = ph["p_offset"] + ph["p_filesz"]
                if end > self.file_size:
                    problems.append(f"PT_NOTE ends at {end:#x}, past the end of the file "
                                    f"({self.file_size:#x})")
                size = min(end, self.file_size, ph["p_offset"] + NOTES_MAX - len(note_blob)) - ph["p_offset"]
                if size < ph["p_filesz"] and end <= self.file_size:
                    problems.append(f"PT_NOTE of {ph['p_filesz']:#x} bytes: only the first "
                                    f"{NOTES_MAX:#x} bytes of notes are read")
                note_blob += os.pread(self._fd, max(size, 0), ph["p_offset"])
            elif ph["p_type"] == "PT_LOAD":
                load = _Load(n_loads, ph["p_paddr"], ph["p_vaddr"], ph["p_offset"],
                             ph["p_filesz"], ph["p_memsz"])
                n_loads += 1
                why = _implausible(load)
                if why:
                    problems.append(f"PT_LOAD {load.index} ignored: {why}")
                else:
                    loads.append(load)
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
        self._build_index()
        problems.extend(self._overlaps())
        expected = max((ld.offset + ld.filesz for ld in loads), default=0)
        truncated = self.file_size < expected
        if truncated:
            problems.append(f"file is {self.file_size} bytes but its PT_LOADs need {expected}")
        self.format = "qemu-elf" if qemu else ("elf64" if self.elfclass == 64 else "elf32")
        self.max_pfn = max((ld.paddr + ld.memsz for ld in loads), default=0) // self.page_size
        self.problems = problems
        self.header = {
            "format": self.format,
            "elf_class": self.elfclass,
            "machine": ehdr["e_machine"],
            "e_flags": ehdr["e_flags"],
            "incomplete": bool(ehdr["e_flags"] & ELF_FLAG_INCOMPLETE),
            "filtered": any(ld.memsz > ld.filesz for ld in loads),
            "truncated": truncated,
            "file_size": self.file_size,
            "expected_size": expected,
            "pt_loads": n_loads,
            "nr_cpus": len(prstatus_notes(self.notes)),
            "qemu": qemu,
            "compression": "none",
            "phys_base": _phys_base(self.vmcoreinfo, problems),
            "problems": problems,
        }

    def _build_index(self) -> None:
        """Disjoint physical pieces (start, end, file offset or -1 for excluded, load)."""
        pieces: list[tuple[int, int, int, _Load]] = []
        for ld in sorted(self._loads, key=lambda x: (x.paddr, -x.filesz)):
            present_end = ld.paddr + ld.filesz
            parts = [(ld.paddr, present_end, ld.offset), (present_end, ld.paddr + ld.memsz, -1)]
            for start, end, off in parts:
                if pieces and start < pieces[-1][1]:  # overlaps an earlier load: keep the first
                    if off >= 0:
                        off += pieces[-1][1] - start
                    start = pieces[-1][1]
                if start < end:
                    pieces.append((start, end, off, ld))
        self._pieces = pieces
        self._starts = [p[0] for p in pieces]

    def read_page(self, pfn: int) -> bytes:
        psz = self.page_size
        return self.read_phys(pfn * psz, psz)

    def read_phys(self, paddr: int, size: int) -> bytes:
        out = []
        while size > 0:
            i = bisect.bisect_right(self._starts, paddr) - 1
            if i < 0 or paddr >= self._pieces[i][1]:
                raise self._missing(paddr, "a hole: not in any PT_LOAD")
            start, end, off, _ = self._pieces[i]
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
        reach: _Load | None = None  # the load reaching furthest so far, by paddr order
        for ld in sorted(self._loads, key=lambda x: (x.paddr, -x.filesz)):
            if reach is not None and ld.paddr < reach.paddr + reach.filesz and ld.filesz:
                lo, hi = ld.paddr, min(ld.paddr + ld.filesz, reach.paddr + reach.filesz)
                if not self._same_bytes(reach, ld, lo, hi):
                    problems.append(f"PT_LOAD {ld.index} overlaps PT_LOAD {reach.index} at "
                                    f"physical {lo:#x}-{hi:#x} with different contents "
                                    f"(PT_LOAD {reach.index} is read there)")
            if reach is None or ld.paddr + ld.filesz > reach.paddr + reach.filesz:
                reach = ld
        return problems

    def _same_bytes(self, a: _Load, b: _Load, lo: int, hi: int) -> bool:
        """Whether a few evenly spread pages of [lo, hi) read the same through both loads."""
        psz = self.page_size
        step = max(psz, (hi - lo) // OVERLAP_SAMPLES)
        for paddr in range(lo, hi, step):
            n = min(psz, hi - paddr)
            if os.pread(self._fd, n, a.offset + paddr - a.paddr) != \
                    os.pread(self._fd, n, b.offset + paddr - b.paddr):
                return False
        return True

    def segments(self) -> list[Segment]:
        segs = []
        for ld in self._loads:
            src = f"PT_LOAD {ld.index}"
            present_end = ld.paddr + ld.filesz
            avail = max(0, min(ld.filesz, self.file_size - ld.offset))
            if avail:
                segs.append(Segment(ld.paddr, ld.paddr + avail, "present", ld.vaddr, ld.offset, src))
            if avail < ld.filesz:
                segs.append(Segment(ld.paddr + avail, present_end, "truncated",
                                    ld.vaddr + avail, ld.offset + avail, src))
            if ld.memsz > ld.filesz:
                segs.append(Segment(present_end, ld.paddr + ld.memsz, "excluded",
                                    ld.vaddr + ld.filesz, None, src))
        return segs

    def close(self) -> None:
        super().close()
        self._file.close()


def _implausible(ld: _Load) -> str:
    """Why a PT_LOAD cannot describe physical memory, or "" when it can."""
    if ld.filesz > ld.memsz:
        return f"p_filesz {ld.filesz:#x} > p_memsz {ld.memsz:#x}"
    if ld.paddr + ld.memsz > PHYS_LIMIT:
        return f"p_paddr {ld.paddr:#x} + p_memsz {ld.memsz:#x} is past the {MAX_PHYSMEM_BITS}-bit physical limit"
    if ld.vaddr + ld.memsz > U64_MAX + 1:
        return f"p_vaddr {ld.vaddr:#x} + p_memsz {ld.memsz:#x} wraps the address space"
    return ""


def _phys_base(vmcoreinfo: dict[str, str], problems: list[str]) -> int | None:
    try:
        return vmcoreinfo_int(vmcoreinfo, "NUMBER(phys_base)") if "NUMBER(phys_base)" in vmcoreinfo else None
    except ImplausibleValue as exc:
        problems.append(str(exc))
        return None

