"""The tasks view as it was before its columns were decoded with numpy (kdnb/views/tasks.py at
8e02308): one Layout.unpack tuple per task and one Python loop over the rows. Kept only as the
oracle of tests/test_tasks_columns.py, which checks the fast view gives the same frame.

Original docstring: `Dump.tasks`: every thread of every process plus each CPU's idle task.

The process list (`init_task.tasks`) and each thread group's list are walked by hand over the bytes
of each `task_struct`, read once per task with a precomputed layout (no per-field reads). A task
that is not in the dump stops a forward walk; the walk then resumes backwards from the list head
(the lists are doubly linked), and every parent's `children` list is walked too, so a task is
lost only when its own task_struct is missing or every list leading to it is cut.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from kdnb.errors import KdnbError
from kdnb.views.common import Gaps, fitting, online_cpus, read_or_none, read_u64

if TYPE_CHECKING:  # pragma: no cover
    from kdnb.api import Dump
    from kdnb.kernel.kernel import Kernel

STATE_CHARS = ["R", "S", "D", "T", "t", "X", "Z", "P", "I"]
# include/linux/sched.h task state bits (unchanged from 5.14 to 6.12)
TASK_INTERRUPTIBLE = 0x1
TASK_UNINTERRUPTIBLE = 0x2
TASK_REPORT = 0x7F  # INTERRUPTIBLE|UNINTERRUPTIBLE|STOPPED|TRACED|EXIT_DEAD|EXIT_ZOMBIE|PARKED
TASK_NOLOAD = 0x400
TASK_IDLE = TASK_UNINTERRUPTIBLE | TASK_NOLOAD
TASK_REPORT_IDLE = 0x80
TASK_RTLOCK_WAIT = 0x1000
TASK_FROZEN = 0x8000  # since 6.1 (f5d39b020809 "freezer,sched: Rewrite core freezer logic")
PF_KTHREAD = 0x00200000
POLICIES = ["NORMAL", "FIFO", "RR", "BATCH", "ISO", "IDLE", "DEADLINE", "EXT"]
MM_FILEPAGES, MM_ANONPAGES, MM_SHMEMPAGES = 0, 1, 3
MAX_TASKS = 1 << 22

COLUMNS = ["pid", "tgid", "ppid", "comm", "state", "state_raw", "flags", "is_kthread", "cpu",
           "is_current", "prio", "policy", "start_time", "last_run", "utime", "stime", "rss_pages",
           "address"]


def task_state_char(state: int, exit_state: int) -> str:
    """The /proc state letter, as fs/proc/array.c's task_state_array[__task_state_index()]."""
    report = (state | exit_state) & TASK_REPORT
    if state & TASK_IDLE == TASK_IDLE:
        report = TASK_REPORT_IDLE
    if state & (TASK_RTLOCK_WAIT | TASK_FROZEN):
        report = TASK_UNINTERRUPTIBLE
    return STATE_CHARS[report.bit_length()]


class _TaskReader:
    """Reads task_structs with one layout; knows the member differences between kernels."""

    def __init__(self, kernel: Kernel, gaps: Gaps) -> None:
        self.k = kernel
        self.gaps = gaps
        t = kernel.type("struct task_struct")
        self.type = t
        # 5.14 2f064a59a11f renamed task_struct.state to __state
        state = "__state" if t.has_member("__state") else "state"
        # 5.16 bcf9033e5449 moved task_struct.cpu into thread_info on x86
        cpu = "thread_info.cpu" if t.has_member("thread_info.cpu") else "cpu"
        # 6.7 8e1f385104ac dropped thread_group; thread_node/signal->thread_head exist since 3.14
        sig_t = kernel.type("struct signal_struct")
        self.thread_head_off = sig_t.offsetof("thread_head") if sig_t.has_member("thread_head") else None
        thread_link = "thread_node" if self.thread_head_off is not None else "thread_group"
        fields = ["pid", "tgid", "comm", state, "exit_state", "flags", cpu, "prio", "policy",
                  "start_time", "sched_info.last_arrival", "utime", "stime", "mm", "real_parent",
                  "tasks.next", "tasks.prev", "signal", f"{thread_link}.next", f"{thread_link}.prev", "children.next", "children.prev",
                  "sibling.next", "sibling.prev"]
        # 6.2 f1a7941243c1 replaced the SPLIT_RSS_COUNTING per-task cache (task->rss_stat)
        self.task_rss = t.has_member("rss_stat.count")
        if self.task_rss:
            self.nr_task_rss = t.member("rss_stat.count").type.strip().length
            fields += [f"rss_stat.count[{i}]" for i in range(self.nr_task_rss)]
        self.layout = kernel.layout(t, fields)
        self.size = self.layout.size
        self.tasks_off = t.offsetof("tasks")
        self.thread_off = t.offsetof(thread_link)
        self.tgid_off = t.offsetof("tgid")
        self.children_off = t.offsetof("children")
        self.sibling_off = t.offsetof("sibling")
        self.rows: dict[int, tuple] = {}
        self.failed: set[int] = set()
        self.order: list[int] = []

    def read(self, address: int) -> tuple | None:
        """The layout values of the task at `address` (cached), or None when unreadable."""
        row = self.rows.get(address)
        if row is not None or address in self.failed:
            return row
        data = read_or_none(self.k, address, self.size, self.gaps, "task_struct")
        if data is None:
            self.failed.add(address)
            return None
        row = self.layout.unpack(data)
        self.rows[address] = row
        self.order.append(address)
        return row

    # tuple positions of the layout fields
    PID, TGID, COMM, STATE, EXIT, FLAGS, CPU, PRIO, POLICY, START, ARRIVAL, UTIME, STIME, MM, \
        PARENT, NEXT, PREV, SIGNAL, THREAD_NEXT, THREAD_PREV, CHILD_NEXT, CHILD_PREV, \
        SIB_NEXT, SIB_PREV = range(24)
    FIRST_RSS = 24


def _walk_ring(r: _TaskReader, head: int, first_next: int, first_prev: int, link_off: int,
               next_idx: int, prev_idx: int, what: str) -> list[int]:
    """Tasks on a list_head ring whose head is not a task (init_task.tasks, a children list):
    forwards from the head, then backwards from it when a task on the way is not in the dump."""
    found: list[int] = []
    seen: set[int] = set()
    for first, idx in ((first_next, next_idx), (first_prev, prev_idx)):
        node = first
        while node != head and node not in seen and len(seen) < MAX_TASKS:
            if node == 0:
                r.gaps.note(f"NULL pointer in {what} after {len(seen)} tasks")
                break
            seen.add(node)
            task = node - link_off
            row = r.read(task)
            if row is None:
                break
            found.append(task)
            node = row[idx]
        else:
            if node != head and idx == next_idx:
                r.gaps.note(f"{what}: cycle at {node:#x} after {len(seen)} tasks", node)
            return found
    return found


def _walk_processes(r: _TaskReader, init_task: int) -> list[int]:
    """Thread-group leaders on init_task.tasks."""
    init = r.read(init_task)
    if init is None:
        return []
    return _walk_ring(r, init_task + r.tasks_off, init[r.NEXT], init[r.PREV], r.tasks_off,
                      r.NEXT, r.PREV, "the task list")


def _walk_children(r: _TaskReader) -> None:
    """Leaders reachable only through parents' children lists (past holes in init_task.tasks),
    and their threads. On a complete dump every task is already known: no reads are made."""
    pending = list(r.order)
    done: set[int] = set()
    while pending:
        a = pending.pop()
        if a in done:
            continue
        done.add(a)
        row = r.rows[a]
        before = len(r.order)
        _walk_ring(r, a + r.children_off, row[r.CHILD_NEXT], row[r.CHILD_PREV], r.sibling_off,
                   r.SIB_NEXT, r.SIB_PREV, f"children of task {a:#x}")
        for leader in r.order[before:]:
            _walk_threads(r, leader)
        pending.extend(r.order[before:])


def _walk_threads(r: _TaskReader, leader: int) -> None:
    """Every thread of the leader's group (signal->thread_head, or the thread_group ring).

    Walks forwards from the leader; when the list head (in signal_struct) is unreadable, walks
    backwards from the leader to the head, which covers the rest of the ring.
    """
    row = r.rows[leader]
    head = None
    if r.thread_head_off is not None and row[r.SIGNAL]:
        head = row[r.SIGNAL] + r.thread_head_off
    start = leader + r.thread_off
    seen = {start}
    for direction in (r.THREAD_NEXT, r.THREAD_PREV):
        node = row[direction]
        while node not in seen and len(seen) < MAX_TASKS:
            if node == 0:
                r.gaps.note(f"NULL pointer in the thread list of task {leader:#x}")
                return
            if node == head:
                if direction == r.THREAD_PREV:
                    return  # both halves of the ring seen
                try:
                    node = read_u64(r.k, head)
                except KdnbError:
                    break  # the head's signal_struct is not in the dump: go backwards
                continue
            seen.add(node)
            trow = r.read(node - r.thread_off)
            if trow is None:
                break
            node = trow[direction]
        else:
            return  # back at the leader: the ring is complete
    r.gaps.note(f"thread list of task {leader:#x} is cut on both sides", leader)


def _runqueues(k: Kernel, gaps: Gaps) -> list[tuple[int, int, int]]:
    """(cpu, rq->curr, rq->idle) for each online CPU."""
    rq_t = k.type("struct rq")
    layout = k.layout(rq_t, ["curr", "idle"])
    base = k.symbol("runqueues")
    out = []
    for cpu in online_cpus(k):
        addr = k.per_cpu(base, cpu)
        data = read_or_none(k, addr, layout.size, gaps, f"runqueue of cpu {cpu}")
        if data is not None:
            curr, idle = layout.unpack(data)
            out.append((cpu, curr, idle))
    return out


class _Rss:
    """Resident pages of an mm: file + anon + shmem counters (mm_struct.rss_stat)."""

    def __init__(self, k: Kernel, gaps: Gaps) -> None:
        self.k = k
        self.gaps = gaps
        mm_t = k.type("struct mm_struct")
        m = mm_t.member("rss_stat")
        self.off = m.offset
        rt = m.type.strip()
        # 6.2 f1a7941243c1: `struct percpu_counter rss_stat[NR_MM_COUNTERS]` (was struct mm_rss_stat)
        self.percpu = rt.kind == "array"
        if self.percpu:
            pc = rt.target.strip()
            self.stride = pc.size
            self.count_off = pc.offsetof("count")
            self.counters_off = pc.offsetof("counters")
            self.size = rt.size
            self.cpus = online_cpus(k)
        else:
            self.size = rt.size
        self.cache: dict[int, int | None] = {}

    def pages(self, mm: int) -> int | None:
        if mm in self.cache:
            return self.cache[mm]
        value = None
        data = read_or_none(self.k, mm + self.off, self.size, self.gaps, "mm_struct.rss_stat")
        if data is not None:
            try:
                value = sum(self._counter(data, i) for i in (MM_FILEPAGES, MM_ANONPAGES, MM_SHMEMPAGES))
            except KdnbError as exc:
                self.gaps.note(f"per-CPU rss counters of mm {mm:#x}", mm, exc)
        self.cache[mm] = value
        return value

    def _counter(self, data: bytes, i: int) -> int:
        if not self.percpu:
            return struct.unpack_from("<q", data, 8 * i)[0]
        base = i * self.stride
        (count,) = struct.unpack_from("<q", data, base + self.count_off)
        (counters,) = struct.unpack_from("<Q", data, base + self.counters_off)
        if counters:
            offs = self.k.per_cpu_offsets
            for cpu in self.cpus:
                addr = (counters + int(offs[cpu])) & 0xFFFFFFFFFFFFFFFF
                count += struct.unpack("<i", self.k.read(addr, 4))[0]
        return count


def tasks_frame(dump: Dump) -> pd.DataFrame:
    """The tasks DataFrame (columns: see COLUMNS and the issue)."""
    k = dump.kernel
    gaps = Gaps()
    r = _TaskReader(k, gaps)
    init_task = k.symbol("init_task")
    rqs = _runqueues(k, gaps)
    leaders = _walk_processes(r, init_task)
    for leader in leaders:
        _walk_threads(r, leader)
    _walk_children(r)
    # current and idle tasks are always listed, even when a hole hid them from the lists
    for _cpu, curr, idle in rqs:
        for t in (idle, curr):
            if t:
                r.read(t)
    current = {curr for _cpu, curr, _idle in rqs if curr}
    idle_tasks = {idle for _cpu, _curr, idle in rqs if idle}
    addresses = [a for a in r.order if a != init_task or init_task in idle_tasks]
    df = _frame(k, r, addresses, current, gaps)
    # what the walk found, for capture validation: processes on init_task.tasks itself (the
    # rest came through children lists), task_structs that could not be read, CPUs seen
    df.attrs["kdnb"] = {**df.attrs.get("kdnb", {}), "walk": {
        "list": "init_task.tasks", "entries": len(leaders), "unreadable": len(r.failed),
        "cpus": [cpu for cpu, _curr, _idle in rqs]}}
    return gaps.attach(df, "tasks")


def _frame(k: Kernel, r: _TaskReader, addresses: list[int], current: set[int],
           gaps: Gaps) -> pd.DataFrame:
    rows = r.rows
    R = _TaskReader
    tgid_of = {a: row[R.TGID] for a, row in rows.items()}
    rss = _Rss(k, gaps)
    # SPLIT_RSS_COUNTING (<= 6.1): each thread caches deltas not yet folded into the mm counters
    pending: dict[int, int] = {}
    if r.task_rss:
        for a in addresses:
            row = rows[a]
            if row[R.MM]:
                delta = sum(row[R.FIRST_RSS + i] for i in (MM_FILEPAGES, MM_ANONPAGES, MM_SHMEMPAGES)
                            if i < r.nr_task_rss)
                pending[row[R.MM]] = pending.get(row[R.MM], 0) + delta
    out: dict[str, list[Any]] = {c: [] for c in COLUMNS}
    for a in addresses:
        row = rows[a]
        parent = row[R.PARENT]
        ppid = tgid_of.get(parent)
        if ppid is None and parent:
            data = read_or_none(k, parent + r.tgid_off, 4, gaps, "parent task_struct")
            ppid = struct.unpack("<i", data)[0] if data is not None else None
        if row[R.PID] == 0 or parent == a:
            ppid = 0
        flags = row[R.FLAGS]
        kthread = bool(flags & PF_KTHREAD)
        mm = row[R.MM]
        pages = None
        if mm and not kthread:
            pages = rss.pages(mm)
            if pages is not None:
                pages = max(pages + pending.get(mm, 0), 0)
        policy = row[R.POLICY]
        out["pid"].append(row[R.PID])
        out["tgid"].append(row[R.TGID])
        out["ppid"].append(ppid)
        out["comm"].append(row[R.COMM])
        out["state"].append(task_state_char(row[R.STATE], row[R.EXIT]))
        out["state_raw"].append(row[R.STATE])
        out["flags"].append(flags)
        out["is_kthread"].append(kthread)
        out["cpu"].append(row[R.CPU])
        out["is_current"].append(a in current)
        out["prio"].append(row[R.PRIO])
        out["policy"].append(POLICIES[policy] if policy < len(POLICIES) else str(policy))
        out["start_time"].append(row[R.START])
        out["last_run"].append(row[R.ARRIVAL])
        out["utime"].append(row[R.UTIME])
        out["stime"].append(row[R.STIME])
        out["rss_pages"].append(pages)
        out["address"].append(a)
    df = pd.DataFrame({
        "pid": fitting(out["pid"], "Int32", "pid", gaps),
        "tgid": fitting(out["tgid"], "Int32", "tgid", gaps),
        "ppid": fitting(out["ppid"], "Int32", "ppid", gaps),
        "comm": pd.Categorical(out["comm"]),
        "state": pd.Categorical(out["state"], categories=STATE_CHARS),
        "state_raw": fitting(out["state_raw"], "UInt32", "state_raw", gaps),
        "flags": fitting(out["flags"], "UInt32", "flags", gaps),
        "is_kthread": np.array(out["is_kthread"], dtype=bool),
        "cpu": fitting(out["cpu"], "Int16", "cpu", gaps),
        "is_current": np.array(out["is_current"], dtype=bool),
        "prio": fitting(out["prio"], "Int16", "prio", gaps),
        "policy": pd.Categorical(out["policy"], categories=sorted(set(POLICIES) | set(out["policy"]),
                                                                  key=_policy_order)),
        "start_time": _ns(out["start_time"]),
        "last_run": _ns(out["last_run"]),
        "utime": _ns(out["utime"]),
        "stime": _ns(out["stime"]),
        "rss_pages": fitting(out["rss_pages"], "Int64", "rss_pages", gaps),
        "address": fitting(out["address"], "UInt64", "address", gaps),
    })
    df = df.sort_values(["pid", "cpu"], kind="stable").reset_index(drop=True)
    return df


def _policy_order(name: str) -> tuple[int, str]:
    return (POLICIES.index(name), "") if name in POLICIES else (len(POLICIES), name)


def _ns(values: list[int]) -> pd.Series:
    arr = np.array(values, dtype=np.uint64).astype(np.int64)  # u64 nanoseconds
    return pd.to_timedelta(arr, unit="ns")
