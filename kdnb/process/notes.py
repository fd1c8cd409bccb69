"""The notes of an x86_64 process core: NT_PRSTATUS (one per thread), NT_PRPSINFO, NT_SIGINFO,
NT_FILE and NT_AUXV, decoded from the layouts in include/uapi/linux/elfcore.h,
include/linux/elfcore.h, include/uapi/asm-generic/siginfo.h and fs/binfmt_elf.c.

Every count or size taken from a note passes `kdnb.bounds` first; a note too short for its
layout is reported as a problem and skipped, never read past its end.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from .. import bounds
from ..dump.notes import PR_REG_NAMES, Note
from ..errors import ImplausibleValue
from .signals import FAULT_SIGNALS, sent_by_process

NT_PRSTATUS = 1
NT_FPREGSET = 2
NT_PRPSINFO = 3
NT_AUXV = 6
NT_SIGINFO = 0x53494749  # "SIGI"
NT_FILE = 0x46494C45  # "FILE"
NT_X86_XSTATE = 0x202
PROCESS_NOTE_TYPES = frozenset({NT_PRPSINFO, NT_AUXV, NT_SIGINFO, NT_FILE})

PRSTATUS = struct.Struct("<3ih2xQQ4i8q")  # elf_siginfo, cursig, sigpend, sighold, pids, 4 timevals
PRSTATUS_REGS_OFFSET = 112
PRSTATUS_SIZE = PRSTATUS_REGS_OFFSET + 8 * len(PR_REG_NAMES)
PRPSINFO = struct.Struct("<4b4xQ2I4i16s80s")  # state, sname, zomb, nice, flag, uid, gid, pids
SIGINFO_SIZE = 128
NT_FILE_MAX_ENTRIES = 1 << 22  # the kernel caps VMAs at vm.max_map_count (65530 by default)
AUXV_MAX_ENTRIES = 4096  # AT_VECTOR_SIZE is ~ 50 on x86_64

AT_NAMES = {
    0: "AT_NULL", 1: "AT_IGNORE", 2: "AT_EXECFD", 3: "AT_PHDR", 4: "AT_PHENT", 5: "AT_PHNUM",
    6: "AT_PAGESZ", 7: "AT_BASE", 8: "AT_FLAGS", 9: "AT_ENTRY", 10: "AT_NOTELF", 11: "AT_UID",
    12: "AT_EUID", 13: "AT_GID", 14: "AT_EGID", 15: "AT_PLATFORM", 16: "AT_HWCAP", 17: "AT_CLKTCK",
    23: "AT_SECURE", 24: "AT_BASE_PLATFORM", 25: "AT_RANDOM", 26: "AT_HWCAP2", 27: "AT_RSEQ_FEATURE_SIZE",
    28: "AT_RSEQ_ALIGN", 29: "AT_HWCAP3", 30: "AT_HWCAP4", 31: "AT_EXECFN", 32: "AT_SYSINFO",
    33: "AT_SYSINFO_EHDR", 47: "AT_L1I_CACHESIZE", 51: "AT_MINSIGSTKSZ",
}
STATE_NAMES = {"R": "running", "S": "sleeping", "D": "disk sleep", "T": "stopped", "t": "tracing stop",
               "Z": "zombie", "X": "dead", "I": "idle"}


@dataclass(frozen=True)
class PrStatus:
    """One thread's NT_PRSTATUS: its tid, the signal, pids and registers."""

    tid: int
    signo: int  # pr_info.si_signo (gdb fills it; the kernel leaves it 0 and sets cursig)
    cursig: int
    sigpend: int
    sighold: int
    ppid: int
    pgrp: int
    sid: int
    utime: float
    stime: float
    regs: dict[str, int]


@dataclass(frozen=True)
class PrPsInfo:
    """NT_PRPSINFO: the process as `ps` would show it at the time of the dump."""

    pid: int
    ppid: int
    pgrp: int
    sid: int
    uid: int
    gid: int
    state: str
    nice: int
    flags: int
    comm: str
    args: str  # the first 80 bytes of the command line, arguments separated by spaces


@dataclass(frozen=True)
class SigInfo:
    """NT_SIGINFO: the signal that killed the process and where it came from."""

    signo: int
    errno: int
    code: int
    addr: int | None = None  # fault signals raised by the kernel (si_code > 0)
    sender_pid: int | None = None  # kill(), tkill(), sigqueue()
    sender_uid: int | None = None
    addr_lsb: int | None = None  # BUS_MCEERR_*: the poisoned range's least significant bit
    pkey: int | None = None  # SEGV_PKUERR
    raw: bytes = field(default=b"", repr=False)


@dataclass(frozen=True)
class FileMapping:
    """One NT_FILE entry: a file-backed mapping at [start, end) from byte `offset` of `path`."""

    start: int
    end: int
    offset: int
    path: str


@dataclass
class ProcessNotes:
    """Every note of a process core, decoded; `problems` lists what could not be."""

    threads: list[PrStatus] = field(default_factory=list)
    psinfo: PrPsInfo | None = None
    siginfo: SigInfo | None = None
    files: list[FileMapping] = field(default_factory=list)
    auxv: list[tuple[int, int]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def _cstr(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")


def decode_prstatus(desc: bytes) -> PrStatus | None:
    """A thread's NT_PRSTATUS, or None when the note is shorter than the x86_64 layout."""
    if len(desc) < PRSTATUS_SIZE:
        return None
    (signo, _code, _errno, cursig, sigpend, sighold, pid, ppid, pgrp, sid,
     ut_s, ut_us, st_s, st_us, *_children) = PRSTATUS.unpack_from(desc, 0)
    regs = struct.unpack_from(f"<{len(PR_REG_NAMES)}Q", desc, PRSTATUS_REGS_OFFSET)
    return PrStatus(pid, signo, cursig, sigpend, sighold, ppid, pgrp, sid,
                    ut_s + ut_us / 1e6, st_s + st_us / 1e6, dict(zip(PR_REG_NAMES, regs)))


def decode_prpsinfo(desc: bytes) -> PrPsInfo | None:
    """NT_PRPSINFO, or None when the note is shorter than the x86_64 layout."""
    if len(desc) < PRPSINFO.size:
        return None
    state, sname, _zomb, nice, flags, uid, gid, pid, ppid, pgrp, sid, fname, psargs = \
        PRPSINFO.unpack_from(desc, 0)
    letter = chr(sname & 0x7F) if 0x20 < (sname & 0x7F) < 0x7F else "?"
    return PrPsInfo(pid, ppid, pgrp, sid, uid, gid, letter, nice, flags, _cstr(fname),
                    _cstr(psargs).strip())


def decode_siginfo(desc: bytes) -> SigInfo | None:
    """NT_SIGINFO (a siginfo_t), or None when the note is shorter than 16 bytes.

    Which union member is valid follows the kernel's rule: a non-positive si_code (or a
    signal not raised by a fault) carries the sender's pid and uid; a fault signal raised
    by the kernel (si_code > 0) carries the fault address."""
    if len(desc) < 16:
        return None
    signo, errno, code = struct.unpack_from("<3i", desc, 0)
    raw = bytes(desc[:SIGINFO_SIZE])
    if len(desc) < 24:
        return SigInfo(signo, errno, code, raw=raw)
    if sent_by_process(code):
        pid, uid = struct.unpack_from("<iI", desc, 16)
        return SigInfo(signo, errno, code, sender_pid=pid, sender_uid=uid, raw=raw)
    if signo in FAULT_SIGNALS and code > 0:
        addr = struct.unpack_from("<Q", desc, 16)[0]
        lsb = struct.unpack_from("<h", desc, 24)[0] if signo == 7 and code in (4, 5) else None
        pkey = struct.unpack_from("<I", desc, 32)[0] if signo == 11 and code == 4 and len(desc) >= 36 else None
        return SigInfo(signo, errno, code, addr=addr, addr_lsb=lsb, pkey=pkey, raw=raw)
    return SigInfo(signo, errno, code, raw=raw)


def decode_nt_file(desc: bytes, path: str = "") -> list[FileMapping]:
    """NT_FILE: count and page size, then (start, end, page offset) triples, then the names."""
    if len(desc) < 16:
        raise ImplausibleValue("NT_FILE size", len(desc), "shorter than its header", path)
    n, page_size = struct.unpack_from("<QQ", desc, 0)
    bounds.count(n, "NT_FILE count", min(NT_FILE_MAX_ENTRIES, (len(desc) - 16) // 24), path)
    bounds.power_of_two(page_size, "NT_FILE page size", 1, 1 << 21, path)  # gdb writes 1
    triples = struct.unpack_from(f"<{3 * n}Q", desc, 16)
    names = desc[16 + 24 * n:].split(b"\0")
    out = []
    for i in range(n):
        start, end, pgoff = triples[3 * i:3 * i + 3]
        if end < start:
            raise ImplausibleValue(f"NT_FILE entry {i} end", end, f"before its start {start:#x}", path)
        name = names[i].decode("utf-8", "replace") if i < len(names) else ""
        out.append(FileMapping(start, end, bounds.in_range(pgoff * page_size, f"NT_FILE entry {i} offset",
                                                           0, bounds.U64_MAX, path), name))
    return out


def decode_auxv(desc: bytes) -> list[tuple[int, int]]:
    """NT_AUXV as (type, value) pairs up to AT_NULL."""
    n = min(len(desc) // 16, AUXV_MAX_ENTRIES)
    out = []
    for i in range(n):
        key, value = struct.unpack_from("<QQ", desc, 16 * i)
        if key == 0:
            break
        out.append((key, value))
    return out


def decode_notes(notes: list[Note], path: str = "") -> ProcessNotes:
    """Sort a process core's notes into threads, process, signal, files and auxv."""
    out = ProcessNotes()
    for note in notes:
        if note.name not in ("CORE", "LINUX"):
            continue
        try:
            if note.type == NT_PRSTATUS:
                st = decode_prstatus(note.desc)
                if st is None:
                    out.problems.append(f"NT_PRSTATUS at {note.offset:#x}: {len(note.desc)} bytes, "
                                        f"x86_64 needs {PRSTATUS_SIZE}")
                else:
                    out.threads.append(st)
            elif note.type == NT_PRPSINFO and out.psinfo is None:
                out.psinfo = decode_prpsinfo(note.desc)
            elif note.type == NT_SIGINFO and out.siginfo is None:
                out.siginfo = decode_siginfo(note.desc)
            elif note.type == NT_FILE and not out.files:
                out.files = decode_nt_file(note.desc, path)
            elif note.type == NT_AUXV and not out.auxv:
                out.auxv = decode_auxv(note.desc)
        except ImplausibleValue as exc:
            out.problems.append(str(exc))
    return out
