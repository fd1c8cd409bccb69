"""Busy CPUs at the crash: which kernel task each non-idle CPU ran, and for how long."""

from __future__ import annotations

import pandas as pd

from .panic_log import PanicLog
from .rootcause_model import IDLE_FUNCS, Analysis, Culprit


def busy_cpus(an: Analysis, plog: PanicLog) -> list[dict]:
    """CPUs other than the panic one that were in kernel code, not idle, at the crash: the task
    on each (culprit), `seconds` since it last got the CPU (to the crash's log time), once per
    analysis."""
    return an.get("busy CPUs", lambda: _busy_cpus(an, plog))


def _busy_cpus(an: Analysis, plog: PanicLog) -> list[dict]:
    dump = an.dump
    cpus = an.get("CPU registers", lambda: dump.cpus)
    tasks = an.get("tasks", lambda: dump.tasks)
    if cpus is None or tasks is None or not len(cpus):
        return []
    panic_cpu = plog.panic.cpu if plog.panic is not None else None
    crash_time = plog.panic.time if plog.panic is not None else \
        (plog.reports[-1].time if plog.reports else None)
    busy = []
    for row in cpus.itertuples():
        cpu = int(row.cpu)
        if cpu == panic_cpu or int(row.cs) & 3:  # the panic CPU, or a CPU in user mode
            continue
        sym = an.get(f"CPU {cpu} pc", lambda r=row: dump.kernel.lookup(int(r.rip)))
        if sym is None or sym.name in IDLE_FUNCS:
            continue
        cur = tasks[(tasks["cpu"] == cpu) & tasks["is_current"]]
        if not len(cur) or int(cur["pid"].iloc[0]) == 0:
            continue
        task = cur.iloc[0]
        seconds = None
        if crash_time is not None and pd.notna(task.get("last_run")):
            seconds = (crash_time - task["last_run"]).total_seconds()
        busy.append({"culprit": Culprit(pid=int(task["pid"]), comm=str(task["comm"]), cpu=cpu,
                                        function=f"{sym.name}+{sym.offset:#x}", module=sym.module),
                     "busy": True, "seconds": seconds, "task_address": int(task["address"]),
                     "state": str(task["state"]), "on_cpu": True})
    return busy


