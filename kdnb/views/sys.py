"""`Dump.sys_info` / `Dump.sys`: the crash-time system summary (crash `sys`)."""

from __future__ import annotations

import re
import struct
from typing import TYPE_CHECKING, Any

import pandas as pd

from ..bounds import vmcoreinfo_int
from ..errors import CorruptStructure, KdnbError
from .common import cpumask, taint_letters

if TYPE_CHECKING:  # pragma: no cover
    from ..api import Dump
    from ..kernel.kernel import Kernel

FSHIFT = 11  # include/linux/sched/loadavg.h: avenrun is fixed point with 11 fraction bits
PANIC_CPU_INVALID = -1
PANIC_RE = re.compile(r"Kernel panic - not syncing")
DIE_RE = re.compile(r"[0-9a-f]{4} \[#\d+\]")  # die(): "Oops: 0002 [#1] PREEMPT SMP NOPTI"
HEAD_RE = re.compile(r"^(BUG: |kernel BUG at |Unable to handle |general protection fault)")


def sys_info(dump: "Dump") -> dict[str, Any]:
    """release, version, machine, nodename, cpus, memory, boot_time, crash_time, uptime,
    load_avg_1/5/15, tasks, panic_message, panic_cpu, tainted (see the issue)."""
    k = dump.kernel
    info: dict[str, Any] = {}
    problems: list[str] = []
    uts = k.utsname()
    info["release"] = uts.get("release") or dump.vmcoreinfo.get("OSRELEASE", "")
    info["version"] = uts.get("version", "")
    info["machine"] = uts.get("machine", "")
    info["nodename"] = uts.get("nodename", "")
    info["cpus"] = _try(problems, "cpus", lambda: len(cpumask(k, "__cpu_online_mask")) or None)
    pages = _try(problems, "memory", lambda: struct.unpack("<q", k.read(k.symbol("_totalram_pages"), 8))[0])
    info["memory"] = pages * dump.page_size if pages is not None else None
    crashtime = _try(problems, "CRASHTIME", lambda: vmcoreinfo_int(dump.vmcoreinfo, "CRASHTIME", dump.path, -1))
    tk = _try(problems, "timekeeper", lambda: _clock(_timekeeping(k)))
    uptime, wall = tk if tk else (None, None)
    info["boot_time"] = wall - uptime if tk else None
    info["crash_time"] = pd.Timestamp(crashtime, unit="s", tz="UTC") \
        if crashtime is not None and crashtime >= 0 else wall
    info["uptime"] = uptime
    load = _try(problems, "avenrun", lambda: struct.unpack("<3Q", k.read(k.symbol("avenrun"), 24)))
    for name, v in zip(("load_avg_1", "load_avg_5", "load_avg_15"), load or (None,) * 3):
        info[name] = round(v / (1 << FSHIFT), 2) if v is not None else None
    info["tasks"] = _try(problems, "tasks", lambda: len(dump.tasks))
    info["panic_message"] = _try(problems, "panic message", lambda: panic_message(dump.log["text"]))
    cpu = _try(problems, "panic_cpu", lambda: struct.unpack("<i", k.read(k.symbol("panic_cpu"), 4))[0])
    info["panic_cpu"] = cpu if cpu is not None and cpu != PANIC_CPU_INVALID else None
    mask = _try(problems, "tainted_mask", lambda: k.read_u64(k.symbol("tainted_mask")))
    info["tainted"] = taint_letters(mask) if mask is not None else None
    if problems:
        info["problems"] = problems
    return info


def _try(problems: list[str], what: str, fn: Any) -> Any:
    try:
        return fn()
    except (KdnbError, KeyError, ValueError, struct.error) as exc:
        problems.append(f"{what}: {exc}")
        return None


def _clock(tk: dict[str, int]) -> tuple[pd.Timedelta, pd.Timestamp]:
    """Uptime and wall clock as pandas values; a timekeeper out of pandas' range is corrupt."""
    try:
        return pd.Timedelta(tk["uptime_ns"], unit="ns"), pd.Timestamp(tk["wall_ns"], unit="ns", tz="UTC")
    except (OverflowError, ValueError) as exc:
        raise CorruptStructure(f"timekeeper clocks out of range (uptime {tk['uptime_ns']} ns, "
                               f"wall {tk['wall_ns']} ns): {exc}") from None


def _timekeeping(k: "Kernel") -> dict[str, int]:
    """Uptime and wall clock at the last timer tick from the timekeeper.

    `tk_core` is an anonymous `struct { seqcount_raw_spinlock_t seq; struct timekeeper timekeeper; }`
    (BTF has no type for it): the timekeeper follows the seqcount, 8-byte aligned. The copy in
    `shadow_timekeeper` (<= 6.12) is the fallback. A candidate is accepted when its wall and
    monotonic clocks agree with wall_to_monotonic.
    """
    t = k.type("struct timekeeper")
    fields = ["tkr_mono.base", "tkr_mono.xtime_nsec", "tkr_mono.shift", "xtime_sec", "ktime_sec",
              "wall_to_monotonic.tv_sec", "offs_boot"]
    layout = k.layout(t, fields)
    candidates = []
    try:  # 6.13 ("timekeeping: Define a struct type for tk_core"): struct tk_data; 6.17 made
        # it the array timekeeper_data[] (auxiliary clocks) with tk_core its first element
        inner = k.type("struct tk_data").offsetof("timekeeper")
        for name in ("tk_core", "timekeeper_data"):
            try:
                candidates.append(k.symbol(name) + inner)
            except KdnbError:
                continue
    except KdnbError:
        pass
    try:
        seq = k.type("seqcount_raw_spinlock_t").size or 4
        candidates.append(k.symbol("tk_core") + ((seq + 7) & ~7))
    except KdnbError:
        pass
    try:
        candidates.append(k.symbol("shadow_timekeeper"))
    except KdnbError:
        pass
    for addr in candidates:
        base, xnsec, shift, xtime_sec, ktime_sec, w2m_sec, offs_boot = layout.unpack(k.read(addr, layout.size))
        if not xtime_sec or abs(xtime_sec + w2m_sec - ktime_sec) > 2 or shift > 63:
            continue
        uptime = base + offs_boot
        wall = xtime_sec * 1_000_000_000 + (xnsec >> shift)
        return {"uptime_ns": uptime, "wall_ns": wall, "monotonic_ns": base + (xnsec >> shift)}
    raise KdnbError("timekeeper not found (tk_core / shadow_timekeeper inconsistent)")


def monotonic_ns(k: "Kernel") -> int:
    """CLOCK_MONOTONIC (ktime_get_ns()) at the timekeeper's last update before the crash:
    tkr_mono.base plus its shifted nanoseconds; KdnbError when no timekeeper is consistent."""
    return _timekeeping(k)["monotonic_ns"]


def panic_message(texts: "pd.Series | list[str]") -> str | None:
    """The panic line of a kernel log: the first "Kernel panic - not syncing" record, or (when the
    kernel kexec'ed from oops_end() before panic()) the Oops/BUG lines joined by " / "."""
    lines = [str(t) for t in texts]
    for text in lines:
        for line in text.split("\n"):
            if PANIC_RE.search(line):
                return line.strip()
    for i, text in enumerate(lines):
        first = text.split("\n", 1)[0].strip()
        if first.startswith("Oops: ") or DIE_RE.search(first) and ": " in first:
            heads = []
            for prev in lines[max(0, i - 4):i]:
                p = prev.split("\n", 1)[0].strip()
                if HEAD_RE.match(p):
                    heads.append(p)
            return " / ".join([*heads[-1:], first])
    for text in lines:
        first = text.split("\n", 1)[0].strip()
        if HEAD_RE.match(first):
            return first
    return None
