"""RCU stalls: which CPU or task held up the grace period, from the stall report's lines and
what that CPU was doing at the crash (d.cpu_state).

The report is printed either by the stalled CPU itself ("self-detected stall on CPU", its own
CPU:/RIP: lines follow) or by another CPU ("detected stalls on CPUs/tasks:"), whose lines then
name the detector, not the culprit. Both list each stalled CPU as ``\\t<cpu>-<flags>: (<n>
ticks this GP) ...`` and, for preempted readers, ``Tasks blocked on level-N rcu_node (CPUs
a-b): P<pid>/<n>:b..l`` (kernel/rcu/tree_stall.h).
"""

from __future__ import annotations

import re

import pandas as pd

from .panic_log import Report
from .rootcause_model import Analysis, Culprit

STALLED_CPU = re.compile(r"^(?:rcu:\s*)?\t?\s*(\d+)-[.\w!]*:\s*\(")
BLOCKED = re.compile(r"Tasks blocked on level-\d+ rcu_node.*?:(.*)")
TASK = re.compile(r"\bP(\d+)\b")
MAX_NAMED = 64  # a stall report names at most NR_CPUS CPUs; keep the first few


def stall_parties(report: Report) -> tuple[list[int], list[int]]:
    """(stalled CPUs, blocked reader pids) the lines of one RCU stall report name, in order."""
    cpus: list[int] = []
    pids: list[int] = []
    for _seq, text in report.lines:
        m = STALLED_CPU.match(text)
        if m and int(m.group(1)) not in cpus and len(cpus) < MAX_NAMED:
            cpus.append(int(m.group(1)))
        b = BLOCKED.search(text)
        if b:
            pids += [int(p) for p in TASK.findall(b.group(1)) if int(p) not in pids][:MAX_NAMED]
    return cpus, pids


def explain_rcu_stall(an: Analysis, report: Report | None, culprit: Culprit) -> tuple[Culprit, list[dict]] | None:
    """The culprit and chain of an RCU stall, or None when the report names nobody."""
    if report is None:
        return None
    cpus, pids = stall_parties(report)
    state = an.get("CPU state", lambda: an.dump.cpu_state)
    tasks = an.get("tasks", lambda: an.dump.tasks)
    if pids and tasks is not None:
        row = tasks[tasks["pid"] == pids[0]]
        if len(row):
            t = row.iloc[0]
            c = Culprit(pid=pids[0], comm=str(t["comm"]),
                        cpu=None if pd.isna(t["cpu"]) else int(t["cpu"]))
            what = (f"{c.comm} (pid {c.pid}) was preempted inside an RCU read-side critical "
                    f"section and blocks the grace period (state {t['state']})")
            return c, [{"role": "root", "what": what}, {"role": "symptom", "what": report.headline}]
    if not cpus or state is None:
        return None
    row = state[state["cpu"] == cpus[0]]
    if not len(row):
        return None
    s = row.iloc[0]
    where = s["interrupted"] if s["context"] in ("irq", "nmi") and pd.notna(s["interrupted"]) else s["function"]
    c = Culprit(pid=int(s["pid"]), comm=str(s["comm"]), cpu=cpus[0])
    same = culprit.pid == c.pid and culprit.function
    c.function = culprit.function if same else (None if pd.isna(where) else str(where).split(" [")[0])
    c.module = culprit.module if same else _module_of(an, c.function)
    running = s["running_for"]
    took = f", on the CPU for {running.total_seconds():.1f} s" if pd.notna(running) else ""
    what = (f"CPU {c.cpu} held up RCU grace periods: {c.comm} (pid {c.pid}) loops in "
            f"{c.function or '?'} without a quiescent state (preempt count {int(s['preempt_count']):#x}"
            f"{took})")
    others = [f"CPU {cpu}" for cpu in cpus[1:]]
    chain = [{"role": "root", "what": what}]
    if others:
        chain.append({"role": "also", "what": "also stalled: " + ", ".join(others)})
    chain.append({"role": "symptom", "what": report.headline})
    return c, chain


def _module_of(an: Analysis, function: str | None) -> str | None:
    """The module of ``func+0x..`` (None for the kernel's own code or an unknown name)."""
    if not function:
        return None
    k = an.dump.kernel
    hit = an.get(f"symbol {function}", lambda: k.lookup(k.symbol(function.split("+")[0])))
    return hit.module if hit is not None else None
