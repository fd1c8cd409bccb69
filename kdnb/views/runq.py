"""`Dump.runq`: each CPU's run queue (crash `runq`, corelens `runq`): the task on the CPU and
every runnable task waiting for it, by scheduling class.

| column | dtype | meaning |
|---|---|---|
| `cpu` | Int16 | the run queue's CPU |
| `sched_class` | category | stop, deadline, rt, fair, idle |
| `current` | bool | the task running on the CPU (rq->curr) |
| `pid` | Int32 | |
| `comm` | category | |
| `state` | category | /proc state letter (from d.tasks) |
| `prio` | Int16 | task->prio |
| `waited` | timedelta | current: how long it has run since it last got the CPU; queued: how long it has waited since it was enqueued (sched_info.last_queued); NA when the kernel did not record it |
| `nr_running` | UInt32 | rq->nr_running |
| `address` | UInt64 | the task_struct |

Queues: `rq->dl.root` (deadline entities; the rq's own fair/ext servers are not tasks and are
skipped), `rq->rt.active.queue[]`, `rq->cfs.tasks_timeline` (walked into group run queues
through `se.my_q`), `rq->stop` when it is queued, `rq->idle` when it runs. The running fair task
is not in the tree (the kernel takes it out while it runs): it is the `current` row.
Times are measured against the crash clock: the largest `rq->clock` of any CPU.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np
import pandas as pd

from ..errors import KdnbError
from .common import Gaps, fitting, online_cpus, read_or_none

if TYPE_CHECKING:  # pragma: no cover
    from ..api import Dump
    from ..kernel.kernel import Kernel

COLUMNS = ["cpu", "sched_class", "current", "pid", "comm", "state", "prio", "waited", "nr_running",
           "address"]
CLASSES = ["stop", "deadline", "rt", "fair", "idle"]
MAX_QUEUED = 1 << 16  # runnable tasks on one CPU
MAX_DEPTH = 64  # rb-tree height / task-group nesting
RT_PRIOS = 100


def crash_clock(dump: "Dump") -> int | None:
    """The crash time in scheduler-clock nanoseconds: the largest rq->clock of any CPU."""
    k = dump.kernel
    try:
        base, off = k.symbol("runqueues"), k.type("struct rq").offsetof("clock")
    except KdnbError:
        return None
    clocks = []
    for cpu in online_cpus(k):
        try:
            clocks.append(k.read_u64(k.per_cpu(base, cpu) + off))
        except KdnbError:
            continue
    return max(clocks) if clocks else None


def rb_inorder(k: "Kernel", root: int, gaps: Gaps, limit: int = MAX_QUEUED) -> Iterator[int]:
    """rb_node addresses of a red-black tree in order (leftmost first); bounded, cycle-checked."""
    seen: set[int] = set()
    stack: list[int] = []
    node = root
    while (stack or node) and len(seen) <= limit:
        while node:
            if node in seen or len(stack) > MAX_DEPTH:
                gaps.note(f"rb-tree at {root:#x}: cycle or too deep at {node:#x}", node)
                return
            seen.add(node)
            stack.append(node)
            data = read_or_none(k, node, 24, gaps, "rb_node")
            node = struct.unpack_from("<Q", data, 16)[0] if data is not None else 0  # rb_left
        if not stack:
            return
        node = stack.pop()
        yield node
        data = read_or_none(k, node, 24, gaps, "rb_node")
        node = struct.unpack_from("<Q", data, 8)[0] if data is not None else 0  # rb_right


class _Queues:
    """Offsets of the scheduler structures of this kernel."""

    def __init__(self, k: "Kernel") -> None:
        self.k = k
        rq = k.type("struct rq")
        self.rq = k.layout(rq, ["clock", "nr_running", "curr", "idle", "stop",
                                "cfs.tasks_timeline.rb_root.rb_node", "dl.root.rb_root.rb_node"])
        self.rt_queue_off = rq.offsetof("rt.active.queue")
        self.servers = [rq.offsetof(m) for m in ("fair_server", "ext_server") if rq.has_member(m)]
        t = k.type("struct task_struct")
        self.se_off, self.rt_off, self.dl_off = (t.offsetof(m) for m in ("se", "rt", "dl"))
        se = k.type("struct sched_entity")
        self.run_node_off = se.offsetof("run_node")
        # CONFIG_FAIR_GROUP_SCHED: a group entity owns a cfs_rq of its own
        self.my_q_off = se.offsetof("my_q") if se.has_member("my_q") else None
        self.cfs_root_off = k.type("struct cfs_rq").offsetof("tasks_timeline.rb_root.rb_node")
        self.dl_node_off = k.type("struct sched_dl_entity").offsetof("rb_node")
        self.rt_list_off = k.type("struct sched_rt_entity").offsetof("run_list")
        self.task = k.layout(t, ["on_rq", "prio", "sched_info.last_queued", "sched_info.last_arrival"])

    def fair(self, root: int, gaps: Gaps, depth: int = 0) -> Iterator[int]:
        """Tasks in a cfs_rq tree, descending into group run queues."""
        for node in rb_inorder(self.k, root, gaps):
            se = node - self.run_node_off
            my_q = 0
            if self.my_q_off is not None:
                data = read_or_none(self.k, se + self.my_q_off, 8, gaps, "sched_entity.my_q")
                my_q = struct.unpack("<Q", data)[0] if data is not None else 0
            if not my_q:
                yield se - self.se_off
            elif depth < MAX_DEPTH:
                data = read_or_none(self.k, my_q + self.cfs_root_off, 8, gaps, "cfs_rq")
                if data is not None:
                    yield from self.fair(struct.unpack("<Q", data)[0], gaps, depth + 1)

    def rt(self, rq: int, gaps: Gaps) -> Iterator[int]:
        """Tasks on the RT priority queues, highest priority first."""
        base = rq + self.rt_queue_off
        data = read_or_none(self.k, base, 16 * RT_PRIOS, gaps, "rt_prio_array")
        if data is None:
            return
        for prio in range(RT_PRIOS):
            head = base + 16 * prio
            if struct.unpack_from("<Q", data, 16 * prio)[0] == head:
                continue
            walk = self.k.list_walk(head, max_entries=MAX_QUEUED)
            for node in walk:
                yield node - self.rt_list_off - self.rt_off
            if walk.error is not None:
                gaps.note(str(walk.error), head)

    def deadline(self, rq: int, root: int, gaps: Gaps) -> Iterator[int]:
        servers = {rq + off for off in self.servers}
        for node in rb_inorder(self.k, root, gaps):
            dl = node - self.dl_node_off
            if dl not in servers:
                yield dl - self.dl_off


def runq_frame(dump: "Dump") -> pd.DataFrame:
    """The run-queue DataFrame (columns: see COLUMNS)."""
    k = dump.kernel
    gaps = Gaps()
    q = _Queues(k)
    now = crash_clock(dump)
    base = k.symbol("runqueues")
    rows: list[dict[str, Any]] = []
    for cpu in online_cpus(k):
        rq = k.per_cpu(base, cpu)
        data = read_or_none(k, rq, q.rq.size, gaps, f"runqueue of cpu {cpu}")
        if data is None:
            continue
        _clock, nr_running, curr, idle, stop, cfs_root, dl_root = q.rq.unpack(data)
        queued: list[tuple[str, int]] = [("stop", stop)] if stop and stop != curr else []
        queued += [("deadline", t) for t in q.deadline(rq, dl_root, gaps)]
        queued += [("rt", t) for t in q.rt(rq, gaps)]
        queued += [("fair", t) for t in q.fair(cfs_root, gaps)]
        cls = "idle" if curr == idle else _class_of(queued, curr, dump)
        for klass, task, is_curr in [(cls, curr, True)] + [(c, t, False) for c, t in queued if t != curr]:
            tdata = read_or_none(k, task, q.task.size, gaps, "task_struct")
            if tdata is None:
                continue
            on_rq, prio, last_queued, last_arrival = q.task.unpack(tdata)
            if klass == "stop" and not on_rq:
                continue  # the stopper thread exists on every CPU; it is queued only when woken
            since = last_arrival if is_curr else last_queued
            waited = now - since if now is not None and since and since <= now else None
            rows.append({"cpu": cpu, "sched_class": klass, "current": is_curr, "prio": prio,
                         "waited": waited, "nr_running": nr_running, "address": task})
    return gaps.attach(_frame(dump, rows, gaps), "runq")


def _class_of(queued: list[tuple[str, int]], curr: int, dump: "Dump") -> str:
    """The class of the running task: by its policy (d.tasks), the stopper by identity."""
    if any(t == curr and c == "stop" for c, t in queued):
        return "stop"
    tasks = dump.tasks
    row = tasks[tasks["address"] == curr]
    policy = str(row["policy"].iloc[0]) if len(row) else "NORMAL"
    return {"DEADLINE": "deadline", "FIFO": "rt", "RR": "rt"}.get(policy, "fair")


def _frame(dump: "Dump", rows: list[dict[str, Any]], gaps: Gaps) -> pd.DataFrame:
    tasks = dump.tasks
    by_addr = {int(a): i for i, a in enumerate(tasks["address"])}
    pids = tasks["pid"].tolist()
    comms = tasks["comm"].tolist()
    states = tasks["state"].tolist()
    idx = [by_addr.get(r["address"]) for r in rows]
    df = pd.DataFrame({
        "cpu": fitting([r["cpu"] for r in rows], "Int16", "cpu", gaps),
        "sched_class": pd.Categorical([r["sched_class"] for r in rows], categories=CLASSES),
        "current": np.array([r["current"] for r in rows], dtype=bool),
        "pid": fitting([pids[i] if i is not None else None for i in idx], "Int32", "pid", gaps),
        "comm": pd.Categorical([comms[i] if i is not None else None for i in idx]),
        "state": pd.Categorical([states[i] if i is not None else None for i in idx],
                                categories=list(tasks["state"].cat.categories)),
        "prio": fitting([r["prio"] for r in rows], "Int16", "prio", gaps),
        "waited": pd.to_timedelta(pd.array([r["waited"] for r in rows], dtype="Int64"), unit="ns"),
        "nr_running": fitting([r["nr_running"] for r in rows], "UInt32", "nr_running", gaps),
        "address": fitting([r["address"] for r in rows], "UInt64", "address", gaps),
    }, columns=COLUMNS)
    return df
