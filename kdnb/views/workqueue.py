"""`Dump.workqueues`: worker pools and their work (corelens `wq`, the kernel's
show_workqueue_state()): what every busy worker runs, what waits behind it, and pools that
have made no progress.

One row per work item:

| column | dtype | meaning |
|---|---|---|
| `pool` | Int32 | worker_pool id |
| `cpu` | Int16 | the pool's CPU; NA for an unbound pool |
| `status` | category | running (a busy worker's current work), scheduled (queued on that worker: a flush barrier, a linked item), pending (on the pool's worklist) |
| `workqueue` | string | the workqueue's name (from the pool_workqueue) |
| `function` | string | the work function |
| `work` | UInt64 | the work_struct |
| `pid`, `comm` | Int32, string | the worker running it (running / scheduled items) |
| `stalled` | timedelta | how long the pool has made no progress (jiffies - pool->watchdog_ts), on pools with pending work |
| `worker` | UInt64 | the worker's task_struct |

Pools come from `worker_pool_idr` (per-CPU, BH and unbound pools alike); busy workers from each
pool's `busy_hash`. Every walk is bounded and cycle-checked.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Any

import pandas as pd

from ..errors import KdnbError
from .common import Gaps, fitting, read_or_none
from .runq import crash_clock
from .trees import xarray_entries

if TYPE_CHECKING:  # pragma: no cover
    from ..api import Dump
    from ..kernel.kernel import Kernel

COLUMNS = ["pool", "cpu", "status", "workqueue", "function", "work", "pid", "comm", "stalled", "worker"]
STATUSES = ["running", "scheduled", "pending"]
MAX_POOLS = 1 << 16
MAX_ITEMS = 1 << 16  # work items on one list
WORK_STRUCT_PWQ = 1 << 2  # WORK_STRUCT_PWQ_BIT 2: data holds the pool_workqueue pointer
WORK_STRUCT_FLAG_BITS = 8  # the pwq pointer is aligned past the flag and colour bits
HZ_DEFAULT = 250  # Debian's CONFIG_HZ, when jiffies and the clock do not tell


class _Reader:
    def __init__(self, k: "Kernel", gaps: Gaps) -> None:
        self.k, self.gaps = k, gaps
        p = k.type("struct worker_pool")
        # 7.x renamed watchdog_ts (jiffies of the pool's last progress) to last_progress_ts
        progress = "watchdog_ts" if p.has_member("watchdog_ts") else "last_progress_ts"
        self.pool = k.layout(p, ["cpu", "id", progress, "worklist.next"])
        self.worklist_off = p.offsetof("worklist")
        bh = p.member("busy_hash").type.strip()
        self.busy_off, self.busy_n = p.offsetof("busy_hash"), bh.length or 0
        w = k.type("struct worker")
        self.worker = k.layout(w, ["current_work", "current_func", "current_pwq", "task", "scheduled.next"])
        self.hentry_off = w.offsetof("hentry")
        self.scheduled_off = w.offsetof("scheduled")
        wt = k.type("struct work_struct")
        self.work = k.layout(wt, ["data.counter", "func"])
        self.entry_off = wt.offsetof("entry")
        self.pwq_wq_off = k.type("struct pool_workqueue").offsetof("wq")
        self.wq_name_off = k.type("struct workqueue_struct").offsetof("name")
        self._names: dict[int, str | None] = {}
        self._funcs: dict[int, str | None] = {}

    def func(self, fn: int) -> str | None:
        if fn not in self._funcs:
            try:
                hit = self.k.lookup(fn)
            except KdnbError:
                hit = None
            self._funcs[fn] = (hit.name + (f" [{hit.module}]" if hit.module else "")) if hit else f"{fn:#x}"
        return self._funcs[fn]

    def wq_name(self, pwq: int) -> str | None:
        if pwq not in self._names:
            try:
                wq = self.k.read_u64(pwq + self.pwq_wq_off)
                self._names[pwq] = self.k.read_cstring(wq + self.wq_name_off, 32) if wq else None
            except KdnbError:
                self._names[pwq] = None
        return self._names[pwq]

    def items(self, head: int, first: int, what: str) -> list[tuple[int, int, int]]:
        """(work, data, func) of the work_structs on a list (worklist or worker->scheduled)."""
        out = []
        node, seen = first, set()
        while node != head and len(seen) < MAX_ITEMS:
            if not node or node in seen:
                self.gaps.note(f"{what} at {head:#x}: broken after {len(seen)} items", head)
                break
            seen.add(node)
            work = node - self.entry_off
            data = read_or_none(self.k, work, self.entry_off + 16 + 8, self.gaps, "work_struct")
            if data is None:
                break
            wdata, func = self.work.unpack(data)
            out.append((work, wdata, func))
            node = struct.unpack_from("<Q", data, self.entry_off)[0]
        return out

    def busy_workers(self, pool: int) -> list[tuple[int, tuple]]:
        """(worker, layout values) of the pool's busy workers (busy_hash)."""
        raw = read_or_none(self.k, pool + self.busy_off, 8 * self.busy_n, self.gaps, "busy_hash")
        out: list[tuple[int, tuple]] = []
        if raw is None:
            return out
        for first in struct.unpack(f"<{self.busy_n}Q", raw):
            node, seen = first, set()
            while node and node not in seen and len(seen) < MAX_ITEMS:
                seen.add(node)
                worker = node - self.hentry_off
                data = read_or_none(self.k, worker, max(self.worker.size, self.hentry_off + 8),
                                    self.gaps, "struct worker")
                if data is None:
                    break
                out.append((worker, self.worker.unpack(data)))
                node = struct.unpack_from("<Q", data, self.hentry_off)[0]
        return out


def _pools(k: "Kernel", gaps: Gaps) -> list[int]:
    idr = k.symbol("worker_pool_idr")
    head = k.read_u64(idr + k.type("struct idr").offsetof("idr_rt.xa_head"))
    return [entry for _index, entry in xarray_entries(k, head, gaps, MAX_POOLS)]


def _jiffies_and_hz(dump: "Dump") -> tuple[int | None, int]:
    from .timers import infer_hz

    k = dump.kernel
    try:
        jiffies = k.read_u64(k.symbol("jiffies_64"))
    except KdnbError:
        return None, HZ_DEFAULT
    now = crash_clock(dump)
    return jiffies, (infer_hz(jiffies, now) if now else None) or HZ_DEFAULT


def workqueues_frame(dump: "Dump") -> pd.DataFrame:
    """The workqueues DataFrame (columns: see COLUMNS)."""
    k = dump.kernel
    gaps = Gaps()
    r = _Reader(k, gaps)
    jiffies, hz = _jiffies_and_hz(dump)
    rows: list[dict[str, Any]] = []
    for pool in _pools(k, gaps):
        data = read_or_none(k, pool, r.pool.size, gaps, "worker_pool")
        if data is None:
            continue
        cpu, pool_id, watchdog_ts, first = r.pool.unpack(data)
        base = {"pool": pool_id, "cpu": cpu if cpu >= 0 else None}
        for worker, (cur_work, cur_func, pwq, task, sched_first) in r.busy_workers(pool):
            if not cur_work:
                continue
            who = {"worker": task}
            rows.append({**base, **who, "status": "running", "workqueue": r.wq_name(pwq) if pwq else None,
                         "function": r.func(cur_func), "work": cur_work})
            head = worker + r.scheduled_off
            for work, wdata, func in r.items(head, sched_first, "worker->scheduled"):
                rows.append({**base, **who, "status": "scheduled", "work": work,
                             "function": r.func(func), "workqueue": _pwq_name(r, wdata)})
        pending = r.items(pool + r.worklist_off, first, "pool->worklist")
        stalled = None
        if pending and jiffies is not None and 0 <= jiffies - watchdog_ts < 1 << 40:
            stalled = (jiffies - watchdog_ts) * 1_000_000_000 // hz
        for work, wdata, func in pending:
            rows.append({**base, "status": "pending", "work": work, "function": r.func(func),
                         "workqueue": _pwq_name(r, wdata), "stalled": stalled})
    return gaps.attach(_frame(dump, rows, gaps), "workqueues")


def _pwq_name(r: _Reader, data: int) -> str | None:
    if not data & WORK_STRUCT_PWQ:
        return None
    return r.wq_name(data & ~((1 << WORK_STRUCT_FLAG_BITS) - 1))


def _frame(dump: "Dump", rows: list[dict[str, Any]], gaps: Gaps) -> pd.DataFrame:
    tasks = dump.tasks
    by_addr = {int(a): (int(p), str(c)) for a, p, c in zip(tasks["address"], tasks["pid"], tasks["comm"])}
    who = [by_addr.get(r.get("worker") or 0, (None, None)) for r in rows]
    col = {c: [r.get(c) for r in rows] for c in COLUMNS}
    return pd.DataFrame({
        "pool": fitting(col["pool"], "Int32", "pool", gaps),
        "cpu": fitting(col["cpu"], "Int16", "cpu", gaps),
        "status": pd.Categorical(col["status"], categories=STATUSES),
        "workqueue": pd.array(col["workqueue"], dtype="string"),
        "function": pd.array(col["function"], dtype="string"),
        "work": fitting(col["work"], "UInt64", "work", gaps),
        "pid": fitting([w[0] for w in who], "Int32", "pid", gaps),
        "comm": pd.array([w[1] for w in who], dtype="string"),
        "stalled": pd.to_timedelta(pd.array(col["stalled"], dtype="Int64"), unit="ns"),
        "worker": fitting(col["worker"], "UInt64", "worker", gaps),
    }, columns=COLUMNS)


def barrier_worker(dump: "Dump", barrier: int) -> tuple[int, str] | None:
    """(worker task, function it runs) of the busy worker a flush_work() barrier is queued on."""
    wq = dump.workqueues
    hit = wq[(wq["status"] == "scheduled") & (wq["work"] == barrier)]
    if not len(hit):
        return None
    worker = int(hit["worker"].iloc[0])
    running = wq[(wq["status"] == "running") & (wq["worker"] == worker)]
    func = str(running["function"].iloc[0]) if len(running) else "?"
    return worker, func
