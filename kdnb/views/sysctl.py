"""`Dump.sysctl` and `Dump.cmdline`: the kernel command line and the sysctls that decide what a
crash does (panic_on_*, hung_task_*, softlockup_panic, kptr_restrict, core_pattern, ...), read from
the kernel variables behind /proc/sys.

BTF describes no global variables, so each sysctl names its variable and C type here (the same on
every kernel from 5.10 to 7.2 unless noted); a variable smaller than its type (the distance to the
next kallsyms symbol) is refused rather than read past its end.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, NamedTuple

import pandas as pd

from ..errors import KdnbError, SymbolNotFound
from .common import Gaps, fitting

if TYPE_CHECKING:  # pragma: no cover
    from ..api import Dump
    from ..kernel.kernel import Kernel

COMMAND_LINE_MAX = 1 << 16  # COMMAND_LINE_SIZE is 2048 on x86_64; bootconfig may append more
CORENAME_MAX_SIZE = 128
COLUMNS = ["name", "value", "number", "symbol", "address"]


class Sysctl(NamedTuple):
    """A sysctl and the kernel variable /proc/sys reads for it."""

    name: str
    symbol: str
    ctype: str  # int, uint, long, ulong, bool, int[4], char[128]


SYSCTLS = [
    Sysctl("kernel.panic", "panic_timeout", "int"),
    Sysctl("kernel.panic_on_oops", "panic_on_oops", "int"),
    Sysctl("kernel.panic_on_warn", "panic_on_warn", "int"),
    Sysctl("kernel.panic_print", "panic_print", "ulong"),
    Sysctl("kernel.panic_on_rcu_stall", "sysctl_panic_on_rcu_stall", "int"),
    Sysctl("kernel.hung_task_panic", "sysctl_hung_task_panic", "uint"),
    Sysctl("kernel.hung_task_timeout_secs", "sysctl_hung_task_timeout_secs", "ulong"),
    Sysctl("kernel.hung_task_check_interval_secs", "sysctl_hung_task_check_interval_secs", "ulong"),
    Sysctl("kernel.hung_task_warnings", "sysctl_hung_task_warnings", "int"),
    Sysctl("kernel.softlockup_panic", "softlockup_panic", "int"),
    Sysctl("kernel.hardlockup_panic", "hardlockup_panic", "int"),
    Sysctl("kernel.watchdog_thresh", "watchdog_thresh", "int"),
    Sysctl("kernel.unknown_nmi_panic", "unknown_nmi_panic", "int"),
    Sysctl("kernel.panic_on_unrecovered_nmi", "panic_on_unrecovered_nmi", "int"),
    Sysctl("kernel.panic_on_io_nmi", "panic_on_io_nmi", "int"),
    Sysctl("kernel.kptr_restrict", "kptr_restrict", "int"),
    Sysctl("kernel.dmesg_restrict", "dmesg_restrict", "int"),
    Sysctl("kernel.core_pattern", "core_pattern", f"char[{CORENAME_MAX_SIZE}]"),
    Sysctl("kernel.core_uses_pid", "core_uses_pid", "int"),
    Sysctl("kernel.core_pipe_limit", "core_pipe_limit", "uint"),
    Sysctl("fs.suid_dumpable", "suid_dumpable", "int"),
    Sysctl("kernel.sysrq", "sysrq_enabled", "int"),
    Sysctl("kernel.printk", "console_printk", "int[4]"),
    Sysctl("kernel.tainted", "tainted_mask", "ulong"),
    Sysctl("kernel.pid_max", "pid_max", "int"),
    Sysctl("kernel.threads-max", "max_threads", "int"),
    Sysctl("kernel.randomize_va_space", "randomize_va_space", "int"),
    Sysctl("vm.panic_on_oom", "sysctl_panic_on_oom", "int"),
    Sysctl("vm.oom_kill_allocating_task", "sysctl_oom_kill_allocating_task", "int"),
    Sysctl("vm.overcommit_memory", "sysctl_overcommit_memory", "int"),
    Sysctl("vm.overcommit_ratio", "sysctl_overcommit_ratio", "int"),
    Sysctl("vm.overcommit_kbytes", "sysctl_overcommit_kbytes", "ulong"),
    Sysctl("vm.min_free_kbytes", "min_free_kbytes", "int"),
    Sysctl("vm.swappiness", "vm_swappiness", "int"),
]
_SCALARS = {"int": ("<i", 4), "uint": ("<I", 4), "long": ("<q", 8), "ulong": ("<Q", 8), "bool": ("<?", 1)}


def cmdline(dump: "Dump") -> str:
    """The kernel command line (`saved_command_line`, what /proc/cmdline shows)."""
    k = dump.kernel
    return k.read_cstring(k.read_u64(k.symbol("saved_command_line")), COMMAND_LINE_MAX)


def _address(k: "Kernel", s: Sysctl) -> int:
    """Where the variable is: its symbol, or (pid_max since 6.14, 7863dcc72d0f "pid: allow
    pid_max to be set per pid namespace") the initial pid namespace's member."""
    try:
        return k.symbol(s.symbol)
    except SymbolNotFound:
        if s.symbol != "pid_max":
            raise
        ns = k.type("struct pid_namespace")
        if not ns.has_member("pid_max"):
            raise
        return k.symbol("init_pid_ns") + ns.offsetof("pid_max")


def _read(k: "Kernel", s: Sysctl, addr: int) -> tuple[str, int | None]:
    """(the value as /proc/sys prints it, the number when it is one)."""
    if s.ctype.startswith("char["):
        return k.read_cstring(addr, CORENAME_MAX_SIZE), None
    if s.ctype == "int[4]":
        values = struct.unpack("<4i", k.read(addr, 16))
        return "\t".join(map(str, values)), None
    code, width = _SCALARS[s.ctype]
    hit = k.lookup(addr)
    if hit is not None and hit.address == addr and hit.size and hit.size < width:
        raise KdnbError(f"{s.symbol} is {hit.size} bytes, too small for a {s.ctype}")
    (value,) = struct.unpack(code, k.read(addr, width))
    return str(int(value)), int(value)


def sysctl_frame(dump: "Dump") -> pd.DataFrame:
    """One row per sysctl in SYSCTLS: name (`kernel.panic_on_oops`), value (a string, as
    /proc/sys shows it), number (Int64, NA for strings and vectors), symbol, address (UInt64).
    A sysctl this kernel lacks has NA values and is listed in attrs["kdnb"]["absent"]."""
    k = dump.kernel
    gaps = Gaps()
    rows: list[tuple[str, str | None, int | None, str, int | None]] = []
    absent: list[str] = []
    for s in SYSCTLS:
        addr = None
        try:
            addr = _address(k, s)
            value, number = _read(k, s, addr)
        except SymbolNotFound:
            absent.append(s.name)
            value, number = None, None
        except (KdnbError, struct.error) as exc:
            gaps.note(f"{s.name} ({s.symbol})", addr, exc)
            value, number = None, None
        rows.append((s.name, value, number, s.symbol, addr))
    df = pd.DataFrame({
        "name": pd.array([r[0] for r in rows], dtype="string"),
        "value": pd.array([r[1] for r in rows], dtype="string"),
        "number": fitting([r[2] for r in rows], "Int64", "number", gaps),
        "symbol": pd.array([r[3] for r in rows], dtype="string"),
        "address": fitting([r[4] for r in rows], "UInt64", "address", gaps),
    }, columns=COLUMNS)
    if absent:
        df.attrs["kdnb"] = {"absent": absent}
    return gaps.attach(df, "sysctl")
