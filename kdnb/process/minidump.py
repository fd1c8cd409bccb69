"""The Linux minidump container (Breakpad/Crashpad "MDMP"): header, stream directory and the
streams a Linux crash reporter writes, decoded into plain records.

Read: SystemInfo (CPU architecture, OS, the kernel release), MiscInfo (pid, process start),
ThreadList (every thread's registers and stack bytes), ThreadNameList, Exception (Crashpad stores
the Linux signal number as the exception code, si_code as the flags, si_addr as the address and,
for a sent signal, the sender's pid and uid as the first parameters), ModuleList (base, size,
path and the ELF build-id from the CodeView record), MemoryList, and Crashpad's own info stream
(report and client ids). Every count, size and offset is checked against the file's size before
use. Breakpad's Linux text streams (/proc/self/maps, auxv, ...) are not read.
"""

from __future__ import annotations

import struct
import uuid
from dataclasses import dataclass, field
from typing import Callable

from .. import bounds
from ..errors import CorruptDump, FormatError
from .source import MDMP_MAGIC

HEADER = struct.Struct("<4sIIIIIQ")  # signature, version, streams, directory rva, checksum, time, flags
DIRENT = struct.Struct("<III")  # stream type, size, rva
THREAD = struct.Struct("<IIIIQQIIII")  # id, suspend, class, priority, teb, stack (start, size, rva), context
MODULE_SIZE = 108  # MINIDUMP_MODULE: base, size, checksum, time, name rva, version (52), cv, misc, 2 reserved
MODULE_HEAD = struct.Struct("<QIIII")
MEMORY = struct.Struct("<QII")  # start, size, rva
EXCEPTION = struct.Struct("<IIIIQQII15QII")  # tid, pad, code, flags, record, address, n, pad, info, ctx
MISC = struct.Struct("<IIIII")  # size, flags, pid, process create time, user time
SYSINFO = struct.Struct("<HHHBBIIIII")
CONTEXT_AMD64_SIZE = 1232
CV_ELF = b"LEpB"  # MDCVInfoELF ("BpEL" as a little-endian u32): an ELF build-id follows
CRASHPAD_INFO = 0x43500001
STREAMS_MAX = 4096
THREADS_MAX = 1 << 16
MODULES_MAX = 1 << 14
RANGES_MAX = 1 << 20
STRING_MAX = 1 << 16
ARCH_AMD64 = 9
PLATFORM_LINUX = 0x8201
STREAM_NAMES = {3: "ThreadList", 4: "ModuleList", 5: "MemoryList", 6: "Exception", 7: "SystemInfo",
                9: "Memory64List", 15: "MiscInfo", 16: "MemoryInfoList", 24: "ThreadNameList",
                CRASHPAD_INFO: "CrashpadInfo", 0x47670009: "LinuxMaps", 0x47670008: "LinuxAuxv"}
# MDRawContextAMD64 offsets of the general registers (after p1home..p6home, flags, mxcsr, selectors)
CONTEXT_REGS = {"cs": (0x38, "H"), "ds": (0x3A, "H"), "es": (0x3C, "H"), "fs": (0x3E, "H"),
                "gs": (0x40, "H"), "ss": (0x42, "H"), "eflags": (0x44, "I"),
                **{r: (0x78 + 8 * i, "Q") for i, r in enumerate(
                    ("rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi", "r8", "r9", "r10", "r11",
                     "r12", "r13", "r14", "r15", "rip"))}}


@dataclass(frozen=True)
class MdThread:
    """One thread: its id, registers, and where its captured stack bytes are."""

    tid: int
    regs: dict[str, int]
    stack_start: int
    stack_size: int


@dataclass(frozen=True)
class MdException:
    """The signal: number, si_code, si_addr, the sender for a sent one, and the faulting thread's
    registers at the signal."""

    tid: int
    signo: int
    code: int
    addr: int
    params: tuple[int, ...]
    regs: dict[str, int] | None


@dataclass(frozen=True)
class MdModule:
    """One mapped ELF image as the minidump lists it."""

    base: int
    size: int
    path: str
    build_id: str | None


@dataclass(frozen=True)
class MdRange:
    """Captured process memory: [start, start + size) is at file offset `rva`."""

    start: int
    size: int
    rva: int


@dataclass
class MinidumpStreams:
    """Everything decoded from one minidump; `problems` lists what could not be."""

    path: str
    size: int
    time: int
    streams: list[tuple[int, int, int]] = field(default_factory=list)
    threads: list[MdThread] = field(default_factory=list)
    thread_names: dict[int, str] = field(default_factory=dict)
    exception: MdException | None = None
    modules: list[MdModule] = field(default_factory=list)
    ranges: list[MdRange] = field(default_factory=list)
    pid: int | None = None
    process_start: int | None = None
    system: dict[str, object] = field(default_factory=dict)
    crashpad: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


class _Reader:
    """Bounded reads of the file's bytes by rva."""

    def __init__(self, pread: Callable[[int, int], bytes], size: int, path: str) -> None:
        self.pread, self.size, self.path = pread, size, path

    def at(self, rva: int, size: int, what: str) -> bytes:
        if rva < 0 or size < 0 or rva + size > self.size:
            raise CorruptDump(f"{self.path}: {what} at offset {rva:#x} (+{size}) ends past the end of "
                              f"the {self.size}-byte file")
        return self.pread(size, rva)

    def unpack(self, st: struct.Struct, rva: int, what: str) -> tuple:
        return st.unpack(self.at(rva, st.size, what))

    def string(self, rva: int, what: str) -> str:
        (length,) = struct.unpack("<I", self.at(rva, 4, what))
        length = bounds.in_range(length, f"{what} length", 0, STRING_MAX, self.path)
        return self.at(rva + 4, length, what).decode("utf-16-le", "replace")


def context_regs(raw: bytes) -> dict[str, int]:
    """The general registers of an MDRawContextAMD64."""
    return {r: struct.unpack_from("<" + f, raw, off)[0] for r, (off, f) in CONTEXT_REGS.items()}


def parse(pread: Callable[[int, int], bytes], size: int, path: str) -> MinidumpStreams:
    """Decode a minidump of `size` bytes read through `pread(size, offset)` (a FormatError if
    it is not one)."""
    rd = _Reader(pread, size, path)
    head = pread(HEADER.size, 0)
    if len(head) < HEADER.size or head[:4] != MDMP_MAGIC:
        raise FormatError(f"{path}: not a minidump (no MDMP signature)")
    _sig, version, count, dir_rva, _ck, stamp, _flags = HEADER.unpack(head)
    if version & 0xFFFF != 0xA793:
        raise FormatError(f"{path}: minidump version {version & 0xFFFF:#x}, not 0xa793")
    count = bounds.count(count, "minidump stream count", STREAMS_MAX, path)
    out = MinidumpStreams(path, size, stamp)
    for i in range(count):
        out.streams.append(rd.unpack(DIRENT, dir_rva + i * DIRENT.size, f"stream directory entry {i}"))
    decoders = {3: _threads, 4: _modules, 5: _memory, 6: _exception, 7: _system, 15: _misc,
                24: _thread_names, CRASHPAD_INFO: _crashpad}
    for kind, size, rva in out.streams:
        decode = decoders.get(kind)
        if decode is None:
            continue
        try:
            decode(rd, rva, size, out)
        except (CorruptDump, struct.error) as exc:
            out.problems.append(f"{STREAM_NAMES.get(kind, hex(kind))} stream: {exc}")
    if out.system and out.system.get("arch") != ARCH_AMD64:
        raise FormatError(f"{path}: a minidump of CPU architecture {out.system.get('arch')}; kdnb "
                          f"reads x86_64 ({ARCH_AMD64})")
    if not out.threads:
        raise FormatError(f"{path}: a minidump without a readable thread list")
    return out


def _context(rd: _Reader, size: int, rva: int, what: str) -> dict[str, int]:
    if size < CONTEXT_AMD64_SIZE:
        raise CorruptDump(f"{rd.path}: {what} context is {size} bytes, an x86_64 one is "
                          f"{CONTEXT_AMD64_SIZE}")
    return context_regs(rd.at(rva, CONTEXT_AMD64_SIZE, what))


def _list_count(rd: _Reader, rva: int, size: int, entry: int, limit: int, what: str) -> int:
    (n,) = struct.unpack("<I", rd.at(rva, 4, what))
    n = bounds.count(n, f"{what} count", limit, rd.path)
    if 4 + n * entry > size:
        raise CorruptDump(f"{rd.path}: {what} count {n} needs {4 + n * entry} bytes, the stream has {size}")
    return n


def _threads(rd: _Reader, rva: int, size: int, out: MinidumpStreams) -> None:
    for i in range(_list_count(rd, rva, size, THREAD.size, THREADS_MAX, "ThreadList")):
        tid, _s, _c, _p, _teb, start, ssize, _srva, csize, crva = \
            rd.unpack(THREAD, rva + 4 + i * THREAD.size, f"thread {i}")
        out.threads.append(MdThread(tid, _context(rd, csize, crva, f"thread {tid}"), start, ssize))


def _thread_names(rd: _Reader, rva: int, size: int, out: MinidumpStreams) -> None:
    entry = struct.Struct("<IQ")
    for i in range(_list_count(rd, rva, size, entry.size, THREADS_MAX, "ThreadNameList")):
        tid, name_rva = rd.unpack(entry, rva + 4 + i * entry.size, f"thread name {i}")
        out.thread_names[tid] = rd.string(name_rva, f"thread {tid} name")


def _exception(rd: _Reader, rva: int, size: int, out: MinidumpStreams) -> None:
    f = rd.unpack(EXCEPTION, rva, "Exception stream")
    tid, signo, flags, addr, nparams = f[0], f[2], f[3], f[5], f[6]
    params = f[8:8 + min(nparams, 15)]
    csize, crva = f[-2], f[-1]
    regs = _context(rd, csize, crva, "exception") if csize else None
    code = flags - (1 << 32) if flags & 0x80000000 else flags  # si_code is a signed int
    out.exception = MdException(tid, signo, code, addr, tuple(params), regs)


def _modules(rd: _Reader, rva: int, size: int, out: MinidumpStreams) -> None:
    for i in range(_list_count(rd, rva, size, MODULE_SIZE, MODULES_MAX, "ModuleList")):
        at = rva + 4 + i * MODULE_SIZE
        base, msize, _ck, _t, name_rva = rd.unpack(MODULE_HEAD, at, f"module {i}")
        cv_size, cv_rva = struct.unpack("<II", rd.at(at + 76, 8, f"module {i} CodeView record"))
        build_id = None
        if 4 < cv_size <= 4 + 64:
            cv = rd.at(cv_rva, cv_size, f"module {i} CodeView record")
            if cv[:4] == CV_ELF:
                build_id = cv[4:].hex()
        out.modules.append(MdModule(base, msize, rd.string(name_rva, f"module {i} name"), build_id))


def _memory(rd: _Reader, rva: int, size: int, out: MinidumpStreams) -> None:
    for i in range(_list_count(rd, rva, size, MEMORY.size, RANGES_MAX, "MemoryList")):
        start, msize, mrva = rd.unpack(MEMORY, rva + 4 + i * MEMORY.size, f"memory range {i}")
        if mrva + msize > rd.size:
            out.problems.append(f"memory range {i} at {start:#x} (+{msize}) ends past the end of the "
                                "file: left out")
            continue
        out.ranges.append(MdRange(start, msize, mrva))
    out.ranges.sort(key=lambda r: r.start)


def _misc(rd: _Reader, rva: int, size: int, out: MinidumpStreams) -> None:
    _size, flags, pid, created, _user = rd.unpack(MISC, rva, "MiscInfo stream")
    if flags & 1:  # MINIDUMP_MISC1_PROCESS_ID
        out.pid = pid
    if flags & 2:  # MINIDUMP_MISC1_PROCESS_TIMES
        out.process_start = created


def _system(rd: _Reader, rva: int, size: int, out: MinidumpStreams) -> None:
    arch, _level, _rev, ncpu, _ptype, major, minor, build, platform, csd_rva = \
        rd.unpack(SYSINFO, rva, "SystemInfo stream")
    csd = rd.string(csd_rva, "SystemInfo version string") if csd_rva else ""
    out.system = {"arch": arch, "cpus": ncpu, "platform": platform,
                  "os": "Linux" if platform == PLATFORM_LINUX else f"platform {platform:#x}",
                  # Crashpad splits the release: 6.18.44 in the numbers, "-fc-v1045 #1 SMP ..." after
                  "release": f"{major}.{minor}.{build}{csd.split(' ', 1)[0]}" if csd.startswith("-")
                  else f"{major}.{minor}.{build}", "version": csd}


def _crashpad(rd: _Reader, rva: int, size: int, out: MinidumpStreams) -> None:
    raw = rd.at(rva, 36, "CrashpadInfo stream")
    out.crashpad = {"report_id": str(uuid.UUID(bytes_le=raw[4:20])),
                    "client_id": str(uuid.UUID(bytes_le=raw[20:36]))}
