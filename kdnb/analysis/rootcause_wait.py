"""Why a hung task never woke up: its wait object (d.locks) and what stands behind it.

Followed from the task the hung-task detector named: a frozen filesystem (the writer waits in
sb_start_write on the superblock's per-CPU rw-semaphore), a lock owner (running, sleeping, or
itself blocked: the chain is followed), a flush_work() waiting for a work item that never ends,
a completion nobody completes, or a cycle of tasks each waiting for the next (a deadlock).
Without a wait object in memory, a CPU that ran one kernel task for seconds is the suspect.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from ..views.locks import wait_for_cycles
from .panic_log import PanicLog
from .rootcause_model import RESCHED_FUNCS, SPIN_SECONDS, WAIT_FUNCS, Analysis, Culprit
from .rootcause_wait_cpu import busy_cpus

MAX_HOPS = 16  # owners followed from the blocked task
#: Interrupt entry and exit code above a preempted task's own frames.
ENTRY_FUNCS = ("irqentry_", "asm_sysvec_", "sysvec_", "asm_common_interrupt", "common_interrupt",
               "preempt_schedule_irq", "raw_irqentry_exit_cond_resched", "ret_from_intr")
#: Sleeping helpers: a sleeping owner's culprit function is their caller.
SLEEP_FUNCS = ("msleep", "msleep_interruptible", "schedule_timeout", "usleep_range",
               "usleep_range_state", "schedule_hrtimeout", "do_nanosleep", "ssleep")


@dataclass
class WaitCause:
    """What root_cause() takes from the wait analysis."""

    category: str
    culprit: Culprit
    chain: list[dict]
    confidence: float
    why: str = ""


def _where(fn: object) -> str:
    return f" in {fn}" if isinstance(fn, str) and fn else ""


def _waits(an: Analysis, row: pd.Series) -> str:
    """`comm (pid N) waits in FUNC for the KIND at ADDR (BELONGS)` for one d.locks row."""
    belongs = f" ({row['belongs_to']})" if pd.notna(row["belongs_to"]) else ""
    return (f"{row['comm']} (pid {int(row['pid'])}) waits{_where(row['function'])} for the "
            f"{row['kind']} at {int(row['address']):#x}{belongs}")


def _lock_evidence(an: Analysis, row: pd.Series, why: str) -> None:
    owner = f", owned by {row['owner_comm']} (pid {int(row['owner_pid'])}, state " \
            f"{row['owner_state']})" if pd.notna(row["owner_pid"]) else ""
    detail = f"; {row['detail']}" if pd.notna(row["detail"]) else ""
    waited = f"; waiting {row['waited'].total_seconds():.1f} s" if pd.notna(row["waited"]) else ""
    an.add("lock", _waits(an, row) + owner + detail + waited, why, pid=int(row["pid"]))


def _symptom(plog: PanicLog) -> list[dict]:
    steps = [{"role": "symptom", "what": "the hung-task detector reported it"
              + (f": {plog.reports[-1].headline}" if plog.reports else "")}]
    if plog.panic is not None:
        steps.append({"role": "end", "what": plog.panic.headline})
    return steps


def explain_wait(an: Analysis, plog: PanicLog, blocked: Culprit, category: str) -> WaitCause | None:
    """The root of a hung task's wait, or None when memory does not tell more than the log."""
    locks = an.get("locks", lambda: an.dump.locks)
    if locks is not None and len(locks):
        cycles = wait_for_cycles(locks)
        if cycles:
            return _deadlock(an, plog, locks, cycles, blocked)
        if blocked.pid is not None:
            mine = locks[locks["pid"] == blocked.pid]
            if len(mine):
                return _follow(an, plog, locks, mine.iloc[0], blocked, category)
    return _spinning_cpu(an, plog, blocked, category)


def _deadlock(an: Analysis, plog: PanicLog, locks: pd.DataFrame, cycles: list, blocked: Culprit) -> WaitCause:
    cycle = next((c for c in cycles if any(pid == blocked.pid for pid, _ in c)), cycles[0])
    rows = []
    for pid, lock in cycle:
        r = locks[(locks["pid"] == pid) & (locks["address"] == lock)].iloc[0]
        rows.append(r)
        _lock_evidence(an, r, "a member of the wait-for cycle")
    parts = [f"{r['comm']} (pid {int(r['pid'])}) waits for {r['kind']} {int(r['address']):#x}"
             + (f" ({r['belongs_to']})" if pd.notna(r["belongs_to"]) else "")
             + f" held by {r['owner_comm']} (pid {int(r['owner_pid'])})" for r in rows]
    first = next((r for r in rows if int(r["pid"]) == blocked.pid), rows[0])
    c = Culprit(pid=int(first["pid"]), comm=str(first["comm"]), cpu=blocked.cpu)
    fn = first["function"]
    if pd.notna(fn):
        c.function, _, mod = str(fn).partition(" [")
        c.module = mod.rstrip("]") or None
    chain = [{"role": "root", "what": f"deadlock of {len(rows)} tasks: " + "; ".join(parts)}]
    chain += [{"role": "effect", "what": _waits(an, r)} for r in rows]
    return WaitCause("deadlock", c, chain + _symptom(plog), 0.9,
                     "the blocked tasks wait for each other in a cycle")


def _follow(an: Analysis, plog: PanicLog, locks: pd.DataFrame, row: pd.Series, blocked: Culprit,
            category: str) -> WaitCause:
    """From the blocked task's wait to the owner at the end of the chain."""
    _lock_evidence(an, row, "the object the blocked task waits on")
    steps = [row]
    while pd.notna(steps[-1]["owner_pid"]) and len(steps) < MAX_HOPS:
        nxt = locks[locks["pid"] == steps[-1]["owner_pid"]]
        if not len(nxt):
            break
        steps.append(nxt.iloc[0])
        _lock_evidence(an, nxt.iloc[0], "the owner is itself blocked")
    last = steps[-1]
    effects = [{"role": "effect", "what": _waits(an, r) + (f" held by {r['owner_comm']} (pid "
                f"{int(r['owner_pid'])})" if pd.notna(r["owner_pid"]) else "")} for r in steps]
    effects.reverse()
    detail = str(last["detail"]) if pd.notna(last["detail"]) else ""
    if last["kind"] == "percpu-rwsem" and detail.startswith("frozen"):
        mount = str(last["belongs_to"]).rsplit(" of ", 1)[-1].removeprefix("the superblock of ")
        path = mount.split(" (")[0]
        holder = "fsfreeze" if "userspace" in detail else "a filesystem freeze"
        root = (f"{path} frozen ({holder}); the writer waits in sb_start_write/percpu_down_read"
                f"{_where(last['function'])}: {mount}, {detail}")
        an.add("mount", f"{mount}: {detail}", "a frozen filesystem blocks every writer until it is thawed")
        return WaitCause(category, blocked, [{"role": "root", "what": root}] + effects[1:] + _symptom(plog),
                         0.9, "the filesystem is frozen")
    if pd.isna(last["owner_pid"]):
        obj = f"the {last['kind']} at {int(last['address']):#x}" + \
            (f" ({last['belongs_to']})" if pd.notna(last["belongs_to"]) else "")
        if last["kind"] == "completion":
            what = f"nothing completes {obj} that {last['comm']} (pid {int(last['pid'])}) waits for ({detail})"
        else:
            what = f"nothing will wake {last['comm']} (pid {int(last['pid'])}): {obj} records no owner" \
                + (f" ({detail})" if detail else "")
        return WaitCause(category, blocked, [{"role": "root", "what": what}] + effects[1:] + _symptom(plog),
                         0.6, "the wait object has no owner")
    owner = _owner(an, plog, int(last["owner"]))
    if owner is None:
        return WaitCause(category, blocked, effects + _symptom(plog), 0.6)
    oc = owner["culprit"]
    if owner.get("on_cpu"):
        held = f" for {owner['seconds']:.1f} s" if owner.get("seconds") is not None else ""
        root = f"{oc.comm} (pid {oc.pid}) keeps CPU {oc.cpu} busy in kernel mode at {oc.function}{held}"
    elif owner["busy"]:
        root = f"{oc.comm} (pid {oc.pid}) loops in kernel mode at {oc.function}, only yielding the CPU"
    else:
        root = f"{oc.comm} (pid {oc.pid}) sleeps (state {owner['state']}) at {oc.function}"
    if last["kind"] == "completion" and "work item" in detail:
        root += f", running a work item ({detail.removeprefix('waits for work item ').removesuffix(' to finish')}) that never finishes"
    an.add("task", root + (f" [{oc.module}]" if oc.module else ""), "the task the blocked one waits behind",
           cpu=oc.cpu, pid=oc.pid)
    new_category = "soft-lockup" if owner["busy"] else category
    return WaitCause(new_category, oc, [{"role": "root", "what": root}] + effects + _symptom(plog),
                     0.85, "the lock owner it waits behind is the cause")


def _owner(an: Analysis, plog: PanicLog, address: int) -> dict | None:
    """The owner task: on a CPU (busy), else where its own stack says it is."""
    for b in busy_cpus(an, plog):
        if b["task_address"] == address:
            return b
    tasks = an.get("tasks", lambda: an.dump.tasks)
    row = tasks[tasks["address"] == address] if tasks is not None else []
    if not len(row):
        return None
    task = row.iloc[0]
    pid = int(task["pid"])
    c = Culprit(pid=pid, comm=str(task["comm"]), cpu=int(task["cpu"]) if pd.notna(task["cpu"]) else None)
    bt = an.get(f"backtrace of pid {pid}", lambda: an.dump.backtrace(pid=pid))
    if bt is not None:
        for fr in bt.itertuples():
            fn = str(fr.function)
            if fr.kind in ("interrupt", "exception"):  # preempted there: that is where it was
                fn = fn if pd.notna(fr.function) else ""
            elif fn.startswith(ENTRY_FUNCS):
                continue
            if fn and not fn.startswith(WAIT_FUNCS + RESCHED_FUNCS) and fn not in SLEEP_FUNCS:
                c.function = f"{fn}+{int(fr.offset):#x}" if pd.notna(fr.offset) else fn
                c.module = None if pd.isna(fr.module) else str(fr.module)
                break
    state = str(task["state"])
    return {"culprit": c, "busy": state == "R", "seconds": None, "state": state, "on_cpu": False}


def _spinning_cpu(an: Analysis, plog: PanicLog, blocked: Culprit, category: str) -> WaitCause | None:
    """No wait object found: a CPU that ran one kernel task for seconds is what blocks it."""
    long_runs = [b for b in busy_cpus(an, plog) if b["seconds"] is not None and b["seconds"] >= SPIN_SECONDS]
    if not long_runs:
        return None
    b = max(long_runs, key=lambda x: x["seconds"])
    c = b["culprit"]
    root = f"{c.comm} (pid {c.pid}) keeps CPU {c.cpu} busy in kernel mode at {c.function} for {b['seconds']:.1f} s"
    an.add("task", f"{c.comm} (pid {c.pid}, state {b['state']}) is at {c.function}"
           + (f" [{c.module}]" if c.module else "") + f" on CPU {c.cpu}, running for {b['seconds']:.1f} s "
           "since it last arrived on the CPU", "the task the blocked one waits behind", cpu=c.cpu, pid=c.pid)
    effect = {"role": "effect", "what": f"{blocked.comm} (pid {blocked.pid}) cannot make progress "
              "while that CPU never schedules"}
    return WaitCause("soft-lockup", c, [{"role": "root", "what": root}, effect] + _symptom(plog), 0.6,
                     "the busy task that blocks it is the cause")
