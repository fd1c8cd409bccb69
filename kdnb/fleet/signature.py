"""Crash titles and signatures: which dumps show the same bug.

A title names the kind of crash and the guilty frame, the first frame of the culprit's stack that
is not generic code: "BUG: kernel NULL pointer dereference in kdnb_do [kdnb_crash]", "INFO: task
hung in mnt_want_write". Function names are normalised (compiler clone suffixes such as
`.isra.0`, `.constprop.3`, `.part.1`, `.cold` are dropped, as are offsets), panic messages lose
their addresses and numbers. Nothing in a title depends on KASLR, the build, the CPU or the pid,
so the signature, a hash of the title, is the same for the same bug on every machine and kernel
build of the same code. Two dumps are one bucket when their signatures are equal.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable

from ..analysis.rootcause_model import PANIC_FUNCS, RESCHED_FUNCS, WAIT_FUNCS

#: Bumped whenever a rule below changes: cached rows of another version are recomputed.
SIGNATURE_VERSION = 1

# Frames that are never the guilty one, by prefix, with the reason. A crash "in memcpy" or
# "in _raw_spin_lock" says where the CPU was, not whose bug it is: the caller is guilty.
GENERIC_FRAMES: dict[str, str] = {
    **{f: "scheduler and sleeping-lock primitives (a blocked task waits here)"
       for f in WAIT_FUNCS + RESCHED_FUNCS},
    **{f: "the panic, BUG() and WARN() machinery itself" for f in PANIC_FUNCS},
    "_raw_spin_": "spinlock primitives", "_raw_read_": "rwlock primitives",
    "_raw_write_": "rwlock primitives", "queued_spin_lock_slowpath": "spinlock slow path",
    "native_queued_spin_lock_slowpath": "spinlock slow path", "do_raw_spin_": "spinlock debug",
    "lock_acquire": "lockdep", "__lock_acquire": "lockdep", "lock_release": "lockdep",
    "memcpy": "string and memory helpers", "__memcpy": "string and memory helpers",
    "memset": "string and memory helpers", "__memset": "string and memory helpers",
    "memmove": "string and memory helpers", "memcmp": "string and memory helpers",
    "strlen": "string and memory helpers", "strnlen": "string and memory helpers",
    "strcpy": "string and memory helpers", "strncpy": "string and memory helpers",
    "strscpy": "string and memory helpers", "strcmp": "string and memory helpers",
    "copy_user_": "user-copy helpers", "_copy_to_user": "user-copy helpers",
    "_copy_from_user": "user-copy helpers", "rep_movs_alternative": "user-copy helpers",
    "__x86_indirect_thunk": "retpoline thunks", "__x86_return_thunk": "return thunks",
    "kasan_": "sanitizer reporting", "__kasan_": "sanitizer reporting",
    "__asan_": "sanitizer reporting", "__ubsan_handle": "sanitizer reporting",
    "__list_add_valid": "list debugging checks", "__list_del_entry_valid": "list debugging checks",
    "refcount_warn_saturate": "refcount checks", "asm_exc_": "exception entry code",
    "exc_page_fault": "exception entry code", "page_fault_oops": "the fault report",
    "kernelmode_fixup_or_oops": "the fault report", "__bad_area_nosemaphore": "the fault report",
    "bad_area_nosemaphore": "the fault report", "no_context": "the fault report",
    "watchdog_timer_fn": "the lockup detector", "__hrtimer_run_queues": "timer interrupt",
    "hrtimer_interrupt": "timer interrupt", "sysvec_apic_timer_interrupt": "timer interrupt",
}
_GENERIC = tuple(GENERIC_FRAMES)
_CLONE_SUFFIX = re.compile(r"(\.(isra|constprop|part|cold|lto_priv|llvm|localalias)(\.\w+)?"
                           r"|\.\d+)+$")
_OFFSET = re.compile(r"\+0x[0-9a-f]+(/0x[0-9a-f]+)?$")
_FRAME_TEXT = re.compile(r"^(?P<func>[\w.$]+)\+0x[0-9a-f]+/0x[0-9a-f]+( \[(?P<module>[^\]]+)\])?")
_ADDRESS = re.compile(r"\b(0x[0-9a-fA-F]+|[0-9a-fA-F]{8,})\b")
_NUMBER = re.compile(r"\b\d+\b")

# Title templates per root-cause category ({in} becomes " in FUNC [module]" when known).
TITLES: dict[str, str] = {
    "null-deref": "BUG: kernel NULL pointer dereference{in}",
    "page-fault": "BUG: unable to handle kernel paging request{in}",
    "bug": "kernel BUG{in}",
    "warn": "WARNING{in}",
    "soft-lockup": "BUG: soft lockup{in}",
    "hard-lockup": "watchdog: hard LOCKUP{in}",
    "rcu-stall": "INFO: rcu detected stall{in}",
    "hung-task": "INFO: task hung{in}",
    "deadlock": "possible deadlock{in}",
    "io-hang": "INFO: task hung on block I/O{in}",
    "oom": "Out of memory{in}",
    "mce": "machine check exception",
    "init-died": "Attempted to kill init",
    "sysrq": "sysrq triggered crash",
    "panic-call": "kernel panic: {msg}",
    "unknown": "unknown crash{in}",
}


def normalise_function(name: str | None) -> str | None:
    """`trigger_write.cold+0x16/0x20` -> `trigger_write`; None for no name."""
    if not name or name in ("<NA>", "None", "nan", "?"):
        return None
    name = _OFFSET.sub("", name.strip())
    name = _CLONE_SUFFIX.sub("", name)
    return name or None


def is_generic(function: str) -> bool:
    """Whether a (normalised) function is on the skip list of generic frames."""
    return function.startswith(_GENERIC)


def parse_frame(text: str) -> tuple[str, str | None] | None:
    """(function, module) of a printed `func+off/size [mod]` frame; None if it is not one."""
    m = _FRAME_TEXT.match(text.strip())
    if m is None:
        return None
    func = normalise_function(m["func"])
    return (func, m["module"]) if func else None


def guilty_frame(culprit: tuple[str | None, str | None],
                 trace: Iterable[tuple[str, str | None]]) -> tuple[str | None, str | None]:
    """The first non-generic frame: the root cause's culprit, else the printed call trace."""
    func = normalise_function(culprit[0])
    if func and not is_generic(func):
        return func, culprit[1]
    for f, mod in trace:
        f = normalise_function(f)
        if f and not is_generic(f):
            return f, mod
    return (func, culprit[1]) if func else (None, None)


def normalise_message(text: str) -> str:
    """A panic message without addresses and numbers ("ADDR", "NUM")."""
    text = text.strip().removeprefix("Kernel panic - not syncing: ")
    return _NUMBER.sub("NUM", _ADDRESS.sub("ADDR", text)).strip()


def title(category: str, function: str | None, module: str | None, message: str = "") -> str:
    """The syzbot-style title of a crash of `category` whose guilty frame is `function`."""
    where = f" in {function}" + (f" [{module}]" if module else "") if function else ""
    if category == "oom":
        if "panic_on_oom" in message:
            return "Out of memory: panic_on_oom"
        if "deadlocked on memory" in message:
            return "Out of memory: system is deadlocked on memory"
    if category == "page-fault" and "general protection fault" in message:
        return f"general protection fault{where}"
    if category == "panic-call":
        panic = next((p for p in message.split(" / ") if "Kernel panic" in p), message)
        return TITLES["panic-call"].format(msg=normalise_message(panic) or "unknown reason")
    return TITLES.get(category, TITLES["unknown"]).format(**{"in": where})


def signature(text: str) -> str:
    """A stable 16-hex-digit hash of a title."""
    return hashlib.sha256(f"v{SIGNATURE_VERSION}:{text}".encode()).hexdigest()[:16]


def frame_chain(trace: Iterable[tuple[str, str | None]], depth: int = 3) -> str:
    """The first `depth` non-generic frames as `func@module` joined by `;` (for display)."""
    out: list[str] = []
    for f, mod in trace:
        f = normalise_function(f)
        if f and not is_generic(f) and (not out or out[-1].split("@")[0] != f):
            out.append(f"{f}@{mod}" if mod else f)
        if len(out) == depth:
            break
    return ";".join(out)
