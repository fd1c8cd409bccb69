"""`kdnb.coredump_check()`: why did (or will) a crashing process leave no core?

Each check reads kdnb.analysis.coredump_settings.CoredumpSettings and gives pass, warn, fail
or skip (unknown) with the fix, the way the kdump readiness check does. The kernel facts behind
them (fs/coredump.c): a file pattern needs RLIMIT_CORE of at least one page (ELF's
min_coredump); a pipe ignores RLIMIT_CORE except the value 1 (the kernel's recursion guard),
but systemd-coredump honours the limit it is passed (%c); a process that changed credentials
dumps only as fs.suid_dumpable says, and with 2 only to an absolute path or a pipe;
core_pipe_limit bounds concurrent pipe dumps; coredump_filter picks the memory written.
"""

from __future__ import annotations

import os
import re
import stat
from typing import TYPE_CHECKING, Callable

from .checks import Check, CheckTable, run_check
from .coredump_settings import UNLIMITED, CoredumpSettings, from_dump, from_system, parse_systemd_size
from .coredump_target import check_directory, check_target

if TYPE_CHECKING:  # pragma: no cover
    from ..api import Dump

AREA = "coredump"
MIN_COREDUMP = 4096  # ELF_EXEC_PAGESIZE on x86_64
FILTER_DEFAULT = 0x33
FILTER_BITS = {0: "anonymous private", 1: "anonymous shared", 2: "file-backed private",
               3: "file-backed shared", 4: "ELF headers", 5: "private huge pages",
               6: "shared huge pages", 7: "private DAX", 8: "shared DAX"}


class CoredumpCheck(CheckTable):
    """Core-dump checks and a verdict: will dump, at risk, no core."""

    AREAS = [AREA]
    VERDICTS = ["will dump", "at risk", "no core"]
    EXIT_CODES = {"will dump": 0, "at risk": 1, "no core": 2}
    title = "core-dump check"

    def _decide(self) -> str:
        if any(c.status == "fail" for c in self.items):
            return "no core"
        if any(c.status == "warn" for c in self.items):
            return "at risk"
        return "will dump"


def _limit(n: int | None) -> str:
    return "unknown" if n is None else "unlimited" if n >= UNLIMITED else str(n)


def check_kernel(s: CoredumpSettings) -> Check:
    """CONFIG_COREDUMP: without it no process ever dumps core."""
    if s.config_coredump is None:
        return Check("coredump.kernel", AREA, "skip", "unknown whether the kernel has CONFIG_COREDUMP "
                     "(no kernel config found)")
    if not s.config_coredump:
        return Check("coredump.kernel", AREA, "fail", "the kernel is built without CONFIG_COREDUMP",
                     "no process can dump core on this kernel: rebuild with CONFIG_COREDUMP=y",
                     {"source": s.config_source})
    return Check("coredump.kernel", AREA, "pass", f"CONFIG_COREDUMP=y ({s.config_source})")


def check_pattern(s: CoredumpSettings) -> Check:
    """kernel.core_pattern: empty, a pipe, an absolute or a relative path."""
    pat = s.core_pattern
    ev = {"core_pattern": pat, "core_uses_pid": s.core_uses_pid}
    if pat is None:
        return Check("coredump.pattern", AREA, "skip", "kernel.core_pattern unknown (not readable)")
    if not pat.strip():
        return Check("coredump.pattern", AREA, "fail", "kernel.core_pattern is empty",
                     "set it: sysctl kernel.core_pattern=core (or a pipe to systemd-coredump)", ev)
    if s.is_pipe:
        return Check("coredump.pattern", AREA, "pass", f"cores are piped to {s.handler}",
                     "", ev)
    if pat.startswith("/"):
        return Check("coredump.pattern", AREA, "pass", f"cores are written to {pat}", "", ev)
    where = f" ({s.cwd})" if s.cwd else ""
    return Check("coredump.pattern", AREA, "warn",
                 f"kernel.core_pattern {pat!r} is relative: the core lands in the crashing "
                 f"process's working directory{where}, if it may write there",
                 "daemons (cwd /) and processes in read-only directories leave none; use an "
                 "absolute path or a pipe", ev)


def check_handler(s: CoredumpSettings) -> Check:
    """A pipe's handler: installed, executable, and configured to keep cores."""
    if s.core_pattern is None:
        return Check("coredump.handler", AREA, "skip", "core_pattern unknown: the handler too")
    if not s.is_pipe:
        return Check("coredump.handler", AREA, "pass", "no pipe handler (core_pattern is a path)")
    handler = s.handler
    ev: dict = {"handler": handler}
    if s.tree is not None and handler:
        path = s.tree.path(handler)
        if not os.path.exists(path):
            return Check("coredump.handler", AREA, "fail",
                         f"core_pattern pipes to {handler}, which does not exist",
                         "every core is lost (the kernel logs 'Core dump to |... pipe failed'): "
                         "install the handler or change kernel.core_pattern", ev)
        if not os.access(path, os.X_OK):
            return Check("coredump.handler", AREA, "fail", f"the handler {handler} is not executable",
                         f"chmod +x {handler}", ev)
    if s.systemd is not None:
        ev.update(s.systemd)
        storage = s.systemd.get("Storage", "external").lower()
        size_max = parse_systemd_size(s.systemd.get("ProcessSizeMax", "32G"))
        if storage == "none":
            return Check("coredump.handler", AREA, "fail", "systemd-coredump has Storage=none: "
                         "only the journal entry is kept, no core", "set Storage=external in "
                         "/etc/systemd/coredump.conf", ev)
        if size_max == 0:
            return Check("coredump.handler", AREA, "fail", "systemd-coredump has ProcessSizeMax=0: "
                         "no core is processed", "raise ProcessSizeMax= in coredump.conf", ev)
        return Check("coredump.handler", AREA, "pass",
                     f"systemd-coredump keeps cores (Storage={storage}, ProcessSizeMax="
                     f"{s.systemd.get('ProcessSizeMax')}): `coredumpctl list`", "", ev)
    if s.apport_enabled is False:
        return Check("coredump.handler", AREA, "fail", "apport is disabled (/etc/default/apport "
                     "enabled=0): the pipe drops every core", "set enabled=1, or point "
                     "core_pattern elsewhere", ev)
    if "apport" in os.path.basename(handler):
        return Check("coredump.handler", AREA, "warn", "apport keeps cores only of programs from "
                     "packages (/var/crash/*.crash)", "unpackaged programs leave no core unless "
                     "apport is told to keep them (~/.config/apport/settings: unpackaged=true)", ev)
    return Check("coredump.handler", AREA, "pass", f"the handler {handler} is installed", "", ev)


def check_rlimit(s: CoredumpSettings) -> Check:
    """RLIMIT_CORE as the pattern kind treats it."""
    ev = {"rlimit_core": _limit(s.rlimit_core), "of": s.limits_of}
    n = s.rlimit_core
    if n is None:
        return Check("coredump.rlimit", AREA, "skip", f"RLIMIT_CORE of {s.limits_of or 'the process'} "
                     "unknown", "", ev)
    if s.is_pipe:
        if n == 1:
            return Check("coredump.rlimit", AREA, "fail", "RLIMIT_CORE is 1, which the kernel "
                         "reserves to stop recursive pipe dumps ('Aborting core')",
                         "raise the limit (ulimit -c unlimited)", ev)
        if n == 0 and s.systemd is not None:
            return Check("coredump.rlimit", AREA, "fail", f"RLIMIT_CORE of {s.limits_of} is 0: "
                         "systemd-coredump honours it and stores no core",
                         "ulimit -c unlimited, or LimitCORE=infinity in the service", ev)
        return Check("coredump.rlimit", AREA, "pass", f"RLIMIT_CORE {_limit(n)} (a pipe handler "
                     "receives the core whatever the limit)", "", ev)
    if n < MIN_COREDUMP:
        return Check("coredump.rlimit", AREA, "fail", f"RLIMIT_CORE of {s.limits_of} is {n} "
                     f"(`ulimit -c` {n // 1024 if n else 0}): the kernel writes no core below one page",
                     "run `ulimit -c unlimited` before the program, or LimitCORE=infinity / "
                     "limits.conf `* soft core unlimited`", ev)
    if n < UNLIMITED:
        return Check("coredump.rlimit", AREA, "warn", f"RLIMIT_CORE is {n} bytes: a larger core is "
                     "cut short", "ulimit -c unlimited", ev)
    return Check("coredump.rlimit", AREA, "pass", "RLIMIT_CORE is unlimited", "", ev)


def check_fsize(s: CoredumpSettings) -> Check:
    """RLIMIT_FSIZE caps a core file like any file the process writes."""
    ev = {"rlimit_fsize": _limit(s.rlimit_fsize)}
    if s.rlimit_fsize is None:
        return Check("coredump.fsize", AREA, "skip", "RLIMIT_FSIZE unknown", "", ev)
    if s.rlimit_fsize < UNLIMITED and not s.is_pipe:
        status = "fail" if s.rlimit_fsize < MIN_COREDUMP else "warn"
        return Check("coredump.fsize", AREA, status, f"RLIMIT_FSIZE is {s.rlimit_fsize} bytes: the "
                     "core file is cut at that size", "ulimit -f unlimited", ev)
    return Check("coredump.fsize", AREA, "pass", f"RLIMIT_FSIZE {_limit(s.rlimit_fsize)}", "", ev)


def check_pipe_limit(s: CoredumpSettings) -> Check:
    """kernel.core_pipe_limit: concurrent pipe dumps past it are dropped."""
    ev = {"core_pipe_limit": s.core_pipe_limit}
    if not s.is_pipe:
        return Check("coredump.pipe_limit", AREA, "pass", "core_pipe_limit does not apply (no pipe)",
                     "", ev)
    if s.core_pipe_limit:
        return Check("coredump.pipe_limit", AREA, "warn", f"kernel.core_pipe_limit is "
                     f"{s.core_pipe_limit}: when more processes crash at once the rest leave no "
                     "core ('over core_pipe_limit')", "0 removes the bound", ev)
    return Check("coredump.pipe_limit", AREA, "pass", "kernel.core_pipe_limit is 0 (no bound)", "", ev)


def _exe_privilege(s: CoredumpSettings) -> str | None:
    """'set-uid', 'set-gid' or 'file capabilities' when the executable carries them."""
    if not s.exe or s.tree is None:
        return None
    path = s.tree.path(s.exe)
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    if mode & stat.S_ISUID:
        return "set-uid"
    if mode & stat.S_ISGID:
        return "set-gid"
    try:
        os.getxattr(path, "security.capability")
        return "file capabilities"
    except OSError:
        return None


def check_suid(s: CoredumpSettings) -> Check:
    """Processes that changed credentials dump only as fs.suid_dumpable allows."""
    v = s.suid_dumpable
    ev = {"suid_dumpable": v, "dumpable": s.dumpable, "uids": s.uids, "exe": s.exe}
    priv = _exe_privilege(s)
    changed = s.privileged_change or s.dumpable in (0, 2) or priv is not None
    what = (f"the process's own dumpable flag is {s.dumpable}" if s.dumpable is not None and
            s.dumpable != 1 else f"{s.exe} is {priv}" if priv else
            f"the process runs with changed credentials (uids {s.uids})" if s.privileged_change
            else "")
    if s.dumpable == 0:
        return Check("coredump.suid_dumpable", AREA, "fail", f"{what} (set-uid exec, credential "
                     "change or prctl(PR_SET_DUMPABLE, 0)): it dumps no core",
                     "fs.suid_dumpable=2 with an absolute core_pattern or a pipe, or keep the "
                     "process dumpable", ev)
    if v is None:
        return Check("coredump.suid_dumpable", AREA, "skip", "fs.suid_dumpable unknown", "", ev)
    if changed and v == 0:
        return Check("coredump.suid_dumpable", AREA, "fail", f"{what} and fs.suid_dumpable is 0: "
                     "no core", "sysctl fs.suid_dumpable=2 with an absolute core_pattern or a pipe", ev)
    if changed and v == 2 and s.core_pattern and not s.core_pattern.startswith(("|", "/")):
        return Check("coredump.suid_dumpable", AREA, "fail", f"{what}; fs.suid_dumpable is 2 but "
                     "core_pattern is relative, which the kernel refuses for such processes",
                     "use an absolute core_pattern or a pipe", ev)
    if v == 0:
        return Check("coredump.suid_dumpable", AREA, "pass" if changed is False and s.uids else "warn",
                     "fs.suid_dumpable is 0: set-uid and capability programs leave no core",
                     "fs.suid_dumpable=2 (root-owned cores) to get them", ev)
    if v == 1:
        return Check("coredump.suid_dumpable", AREA, "warn", "fs.suid_dumpable is 1 (debug): cores "
                     "of set-uid programs belong to the user and may leak secrets",
                     "use 2 with a root-only core_pattern", ev)
    return Check("coredump.suid_dumpable", AREA, "pass", f"fs.suid_dumpable is {v}", "", ev)


def check_filter(s: CoredumpSettings) -> Check:
    """/proc/PID/coredump_filter: which memory goes into the core."""
    f = s.coredump_filter
    if f is None:
        return Check("coredump.filter", AREA, "skip", "coredump_filter unknown")
    kept = [name for bit, name in FILTER_BITS.items() if f >> bit & 1]
    ev = {"coredump_filter": f"{f:#x}", "kept": kept}
    if not f & 0x3:
        return Check("coredump.filter", AREA, "warn", f"coredump_filter is {f:#x}: the core will "
                     "hold no anonymous memory (heap, stacks)", f"echo {FILTER_DEFAULT:#x} > "
                     "/proc/PID/coredump_filter (or coredump_filter= on the kernel command line)", ev)
    return Check("coredump.filter", AREA, "pass", f"coredump_filter {f:#x} keeps {', '.join(kept)}",
                 "", ev)


def check_log(s: CoredumpSettings) -> Check:
    """The kernel's own coredump messages (6.11+ names the reason)."""
    if s.log is None:
        return Check("coredump.log", AREA, "skip", "the kernel log could not be read")
    if not s.log:
        return Check("coredump.log", AREA, "pass", "no coredump messages in the kernel log")
    if s.pid is None:
        return Check("coredump.log", AREA, "warn", f"the kernel logged earlier: {s.log[-1].strip()}",
                     "the line names why that process's core was not written", {"lines": s.log[-10:]})
    mine = [line for line in s.log if re.search(rf"\b{s.pid}\b", line)]
    if mine:
        return Check("coredump.log", AREA, "fail", f"the kernel logged: {mine[-1].strip()}",
                     "the line names why the core was not written", {"lines": mine[-10:]})
    return Check("coredump.log", AREA, "pass", f"no coredump messages about pid {s.pid}", "",
                 {"other_lines": len(s.log)})


CHECKS: list[tuple[str, Callable[[CoredumpSettings], Check]]] = [
    ("coredump.kernel", check_kernel), ("coredump.pattern", check_pattern),
    ("coredump.handler", check_handler), ("coredump.rlimit", check_rlimit),
    ("coredump.fsize", check_fsize), ("coredump.pipe_limit", check_pipe_limit),
    ("coredump.suid_dumpable", check_suid), ("coredump.filter", check_filter),
    ("coredump.directory", check_directory), ("coredump.target", check_target),
    ("coredump.log", check_log),
]


def run_checks(s: CoredumpSettings) -> list[Check]:
    """Every core-dump check on one set of settings (a failing check becomes a skip row)."""
    items: list[Check] = []
    for cid, fn in CHECKS:
        run_check(items, cid, AREA, lambda fn=fn: fn(s))
    return items


def coredump_check(pid: int | None = None, root: str = "/", dump: "Dump | None" = None) -> CoredumpCheck:
    """Why a crashing process would leave no core: on this machine (or a tree laid out like
    `/`) for `pid` or for what the calling shell starts; or, with `dump`, from a vmcore's kernel
    memory (for `pid`, a task in the dump)."""
    s = from_dump(dump, pid) if dump is not None else from_system(root, pid)
    who = f", pid {s.pid}" + (f" ({s.comm})" if s.comm else "") if s.pid is not None else ""
    return CoredumpCheck(run_checks(s), subject=f"{s.source}{who}")
