"""Why a process died, in the shape of the kernel's root cause (kdnb.analysis.rootcause):
category, message, culprit, evidence, chain, confidence, notes.

The signal and si_code say what the CPU or the sender did; the fault address against the
mappings says what was touched; the faulting thread's stack says who did it. glibc's own
message for abort() (assertion failures, heap checks) is read from `__abort_msg` in the core.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pandas as pd

from ..answer import Answer
from ..errors import KdnbError
from .mappings import NULL_PAGE_END
from .signals import SIGABRT, SIGBUS, SIGFPE, SIGILL, SIGSEGV, SIGTRAP, signal_name

if TYPE_CHECKING:  # pragma: no cover
    from .core import Core

EXPLANATIONS = {
    "null-deref": "The program followed a NULL pointer (or a small offset from one): the NULL page "
                  "is never mapped, so the CPU faulted.",
    "stack-overflow": "The stack grew past its limit (RLIMIT_STACK, or a thread's fixed stack), "
                      "usually through runaway recursion or a huge local array.",
    "wild-pointer": "The program touched an address with no mapping behind it: a stale, freed, "
                    "uninitialised or corrupted pointer.",
    "write-to-read-only": "The program wrote to memory mapped read-only (a string literal, code, "
                          "or a protected page).",
    "bad-jump": "The program jumped or called to an address that is not code: a corrupted function "
                "pointer, a smashed return address or a vtable of freed memory.",
    "abort": "The program called abort(): it decided it could not go on.",
    "assertion": "An assert() failed: the program found its own state impossible and aborted.",
    "double-free": "glibc's allocator found a block freed twice and aborted the program.",
    "heap-corruption": "glibc's allocator found its heap metadata damaged (an overflow, a use after "
                       "free or a bad free) and aborted the program.",
    "illegal-instruction": "The CPU met an instruction it cannot execute: a compiler trap "
                           "(__builtin_trap, ud2), code built for a newer CPU, or a jump into data.",
    "bus-error": "The program touched memory that exists in its mappings but cannot be backed: most "
                 "often a mapped file past its end (the file was truncated), or a misaligned access.",
    "arithmetic": "An arithmetic error trapped: integer division by zero or overflow.",
    "breakpoint": "A trap instruction or breakpoint fired with no debugger attached.",
    "killed": "Another process (or the process itself) sent it a fatal signal.",
    "general-protection": "The CPU refused an access without a page fault: a non-canonical "
                          "(corrupted) pointer, or a privileged instruction.",
    "snapshot": "The core was taken from a live process (gdb's gcore), not by a crash.",
    "unknown": "kdnb found no decisive sign of why the process died.",
}
CATEGORIES = list(EXPLANATIONS)
# glibc's abort machinery: a culprit is the first frame outside it
ABORT_FUNCS = ("raise", "gsignal", "abort", "__pthread_kill", "pthread_kill", "__assert_fail",
               "__assert_fail_base", "__assert_perror_fail", "__libc_message", "malloc_printerr",
               "_int_free", "_int_malloc", "_int_realloc", "free", "__libc_free", "malloc",
               "__libc_malloc", "realloc", "__libc_realloc", "__fortify_fail", "__chk_fail",
               "__stack_chk_fail", "__GI_", "_IO_", "__libc_start", "__pthread_kill_implementation",
               "__pthread_kill_internal", "tcache_", "unlink_chunk", "__malloc_assert")
HEAP_WORDS = ("free()", "malloc()", "realloc()", "corrupted", "tcache", "chunk", "double free",
              "unaligned", "invalid pointer", "malloc_consolidate")
ABORT_MSG_MAX = 4096
STACK_POINTER_SLACK = 4096  # a fault this close to rsp is the stack itself failing to grow
EVIDENCE_COLUMNS = ["kind", "tid", "text", "why"]


@dataclass
class ProcessCulprit:
    """Who and where: the thread and the frame the root cause points at."""

    pid: int | None = None
    comm: str | None = None
    tid: int | None = None
    function: str | None = None
    image: str | None = None
    pc: int | None = None
    level: int | None = None

    def __str__(self) -> str:
        parts = [f"{self.comm or '?'} (pid {self.pid if self.pid is not None else '?'}"
                 + (f", thread {self.tid})" if self.tid is not None and self.tid != self.pid else ")")]
        if self.function or self.pc is not None:
            where = self.function or (f"{self.pc:#x}" if self.pc is not None else "?")
            parts.append(f"in {where}" + (f" [{self.image}]" if self.image else "")
                         + (f" (frame #{self.level})" if self.level else ""))
        return ", ".join(parts)


class ProcessRootCause(Answer):
    """The answer to "why did this process die?" (kdnb.answer.Answer with the process categories)."""

    EXPLANATIONS = EXPLANATIONS


def abort_message(core: "Core") -> str | None:
    """glibc's last abort() message (`__abort_msg`: assertion text, heap check), or None."""
    try:
        ptr = struct.unpack("<Q", core.read(core.symbol("__abort_msg"), 8))[0]
        if not ptr:
            return None
        size = struct.unpack("<I", core.read(ptr, 4))[0]  # struct abort_msg_s { size; msg[]; }
        text = core.read(ptr + 4, min(max(size - 4, 0), ABORT_MSG_MAX))
    except KdnbError:
        return None
    return text.split(b"\0", 1)[0].decode("utf-8", "replace").strip() or None


def _culprit_frame(frames: pd.DataFrame, skip_abort: bool) -> pd.Series | None:
    for _, row in frames.iterrows():
        fn = row["function"] if isinstance(row["function"], str) else ""
        if skip_abort and (fn.split(".")[0] in ABORT_FUNCS or fn.startswith(("__GI_", "_IO_"))):
            continue
        return row
    return frames.iloc[0] if len(frames) else None


def root_cause(core: "Core") -> ProcessRootCause:
    """Classify a process core: category, message, culprit frame, evidence."""
    sig = core.signal
    proc = core.process
    tid = core.faulting_tid
    rows: list[dict] = []

    def add(kind: str, text: str, why: str) -> None:
        rows.append({"kind": kind, "tid": tid, "text": text, "why": why})

    add("signal", str(sig), f"from {sig.source}")
    if core.journal is not None:
        j = core.journal.facts
        add("process", f"{j['cmdline'] or proc['comm']} in {j['unit'] or j['user_unit'] or j['slice'] or 'no unit'}"
            f" (cwd {j['cwd']})", "systemd-coredump's journal entry")
    try:
        frames = core.backtrace(tid)
    except KdnbError as exc:
        frames = pd.DataFrame(columns=["level", "pc", "function", "image", "how"])
        add("stack", f"no backtrace: {exc}", "the culprit frame is unknown")
    regs = core.threads.set_index("tid").loc[tid]
    rip, rsp = int(regs["rip"]), int(regs["rsp"])
    abort_msg = abort_message(core) if sig.signo == SIGABRT else None
    category, message, skip, confidence = _classify(core, sig, rip, rsp, frames, abort_msg, add)
    row = _culprit_frame(frames.iloc[1:] if category == "bad-jump" else frames, skip)
    culprit = ProcessCulprit(proc["pid"], proc["comm"], tid)
    if row is not None:
        culprit.function = row["function"] if isinstance(row["function"], str) else None
        culprit.image = row["image"] if isinstance(row["image"], str) else None
        culprit.pc, culprit.level = int(row["pc"]), int(row["level"])
        add("frame", f"#{culprit.level} {culprit.function or '??'} at {culprit.pc:#x} "
            f"({culprit.image or 'no image'}; found by {row['how']})", "the culprit frame")
    stop = frames.attrs.get("kdnb", {}).get("stop")
    notes = [f"backtrace: {stop}"] if stop else []
    if core.header["truncated"]:
        notes.append("the core is truncated: some memory is missing")
    missing = core.images[core.images["status"] != "found"]
    for _, img in missing[~missing["status"].isin(["in core", "not in minidump"])].iterrows():
        notes.append(f"{img['path']}: {img['status']} (symbols and CFI of this image unavailable; "
                     "pass binaries=)")
    chain = [{"role": "symptom", "what": f"{proc['comm']} killed by {sig.name}"},
             {"role": "root", "what": message}]
    ev = pd.DataFrame(rows, columns=EVIDENCE_COLUMNS)
    ev["tid"] = ev["tid"].astype("Int32")
    return ProcessRootCause(category, message, culprit, ev, chain, confidence, notes=notes)


def _classify(core: "Core", sig, rip: int, rsp: int, frames: pd.DataFrame, abort_msg: str | None,
              add) -> tuple[str, str, bool, float]:
    """(category, message, skip glibc's abort frames for the culprit, confidence)."""
    funcs = [f for f in frames["function"].tolist() if isinstance(f, str)] if len(frames) else []
    addr = sig.addr
    if addr is not None:
        add("address", core.explain(addr), "the fault address against the mappings")
    if sig.signo == SIGSEGV and sig.code == 0x80:
        return "general-protection", "general protection fault (the kernel reports no address: " \
            "a non-canonical pointer or a privileged instruction)", False, 0.7
    if core.fault_signal and sig.signo == SIGSEGV and addr is not None:
        where = core.explain(addr)
        if "stack overflow" in where:
            depth = _recursion(funcs)
            if depth:
                add("stack", f"{depth[1]} appears {depth[0]} times in {len(frames)} frames",
                    "runaway recursion")
            return "stack-overflow", f"stack overflow at {addr:#x}: {where}", False, 0.9
        if abs(addr - rsp) < STACK_POINTER_SLACK:  # no mapping said so (a minidump lists none)
            add("registers", f"rsp = {rsp:#x}, {rsp - addr:+d} bytes from the fault address",
                "a push, call or frame write where the stack could not grow")
            return "stack-overflow", f"stack overflow at {addr:#x}: the fault is at the stack pointer", \
                False, 0.8
        if addr == rip:
            add("registers", f"rip = {rip:#x} equals the fault address", "the CPU faulted fetching an instruction")
            return "bad-jump", f"jumped to {addr:#x}, which is not code ({where})", False, 0.85
        if addr < NULL_PAGE_END:
            return "null-deref", f"NULL pointer dereference: access at {addr:#x} by " \
                f"{funcs[0] if funcs else f'{rip:#x}'}", False, 0.9
        if sig.code == 2:
            return "write-to-read-only", f"access denied at {addr:#x} ({where})", False, 0.8
        return "wild-pointer", f"access to unmapped address {addr:#x} ({where})", False, 0.7
    if sig.signo == SIGABRT:
        if abort_msg:
            add("message", abort_msg, "glibc's __abort_msg in the core")
        text = abort_msg or ""
        if "Assertion" in text or any(f.startswith("__assert_fail") for f in funcs):
            return "assertion", text or "assert() failed", True, 0.95
        if "double free" in text:
            return "double-free", text, True, 0.95
        if any(w in text for w in HEAP_WORDS) or "malloc_printerr" in funcs:
            return "heap-corruption", text or "glibc's malloc detected a corrupted heap", True, 0.9
        if "abort" in funcs:
            return "abort", text or "abort() called", True, 0.85
    if sig.signo == SIGILL and core.fault_signal:
        try:
            code = core_text(core, rip, 2)
            if code == b"\x0f\x0b":
                add("instruction", f"ud2 at {rip:#x}", "a compiler-generated trap (__builtin_trap, "
                    "unreachable code)")
        except KdnbError:
            pass
        return "illegal-instruction", f"illegal instruction at {rip:#x} ({sig.code_name})", False, 0.85
    if sig.signo == SIGBUS and core.fault_signal:
        where = core.explain(addr) if addr is not None else "?"
        return "bus-error", f"bus error at {addr:#x} ({sig.code_name}: {sig.meaning}; {where})", False, 0.85
    if sig.signo == SIGFPE and core.fault_signal:
        return "arithmetic", f"{sig.meaning} at {rip:#x}", False, 0.9
    if sig.signo == SIGTRAP:
        return "breakpoint", f"trap at {rip:#x} ({sig.code_name})", False, 0.7
    if sig.sender_pid is not None:
        own = sig.sender_pid == core.process["pid"]
        who = "itself" if own else f"pid {sig.sender_pid} (uid {sig.sender_uid})"
        return "killed", f"killed by signal {sig.signo} ({signal_name(sig.signo)}) from {who}", own, 0.8
    if sig.code == 0x80 and sig.signo == 19:
        return "snapshot", "a gcore snapshot of a live process (SIGSTOP from the kernel)", False, 0.6
    return "unknown", f"{sig}", False, 0.3


def _recursion(funcs: list[str]) -> tuple[int, str] | None:
    """(count, function) of the most repeated function when it dominates the stack."""
    if len(funcs) < 32:
        return None
    best = max(set(funcs), key=funcs.count)
    n = funcs.count(best)
    return (n, best) if n * 2 > len(funcs) else None


def core_text(core: "Core", addr: int, size: int) -> bytes:
    """Code bytes at an address: from the core, else from the image's file on disk."""
    try:
        return core.read(addr, size)
    except KdnbError:
        pass
    image, _sym = core.lookup(addr)
    if image is None or not image.file:
        raise KdnbError(f"no bytes for {addr:#x}: not in the core and no file on disk")
    from elftools.elf.elffile import ELFFile

    with open(image.file, "rb") as f:
        for seg in ELFFile(f).iter_segments():
            lo = seg["p_vaddr"] + image.bias
            if seg["p_type"] == "PT_LOAD" and lo <= addr < lo + seg["p_filesz"]:
                f.seek(seg["p_offset"] + addr - lo)
                return f.read(size)
    raise KdnbError(f"no bytes for {addr:#x} in {image.file}")
