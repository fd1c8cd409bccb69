"""`Dump.tasks`: every thread of every process plus each CPU's idle task (crash `ps`).

The process list (`init_task.tasks`) and each thread group's list are walked by hand over the bytes
of each `task_struct`, read once per task: the walk unpacks only the list pointers, and the columns
are decoded in batches with numpy (tasks_columns.py), not field by field in Python. A task
that is not in the dump stops a forward walk; the walk then resumes backwards from the list head
(the lists are doubly linked), and every parent's `children` list is walked too, so a task is
lost only when its own task_struct is missing or every list leading to it is cut.
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ..errors import KdnbError
from .common import Gaps, online_cpus, read_or_none, read_u64
from .tasks_columns import (
    MM_ANONPAGES,
    MM_FILEPAGES,
    MM_SHMEMPAGES,
    STATE_CHARS,
    TaskColumns,
    task_state_char,
    tasks_dataframe,
)

if TYPE_CHECKING:  # pragma: no cover
    from ..api import Dump
    from ..kernel.kernel import Kernel

__all__ = ["COLUMNS", "STATE_CHARS", "task_state_char", "tasks_frame"]
MAX_TASKS = 1 << 22
NLINKS = 9  # list pointers kept per task (_TaskReader.NEXT ... SIB_PREV)

COLUMNS = ["pid", "tgid", "ppid", "comm", "state", "state_raw", "flags", "is_kthread", "cpu",
           "is_current", "prio", "policy", "start_time", "last_run", "utime", "stime", "rss_pages",
           "address"]


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
        members = {"pid": "pid", "tgid": "tgid", "comm": "comm", "state": state,
                   "exit_state": "exit_state", "flags": "flags", "cpu": cpu, "prio": "prio",
                   "policy": "policy", "start_time": "start_time",
                   "last_run": "sched_info.last_arrival", "utime": "utime", "stime": "stime",
                   "mm": "mm", "real_parent": "real_parent"}
        # 6.2 f1a7941243c1 replaced the SPLIT_RSS_COUNTING per-task cache (task->rss_stat)
        self.rss_fields: list[str] = []
        if t.has_member("rss_stat.count"):
            nr = t.member("rss_stat.count").type.strip().length
            members.update({f"rss{i}": f"rss_stat.count[{i}]" for i in range(nr)})
            self.rss_fields = [f"rss{i}" for i in (MM_FILEPAGES, MM_ANONPAGES, MM_SHMEMPAGES) if i < nr]
        # the walk's pointers, unpacked per task (tuple positions: NEXT ... SIB_PREV below)
        self.links = kernel.layout(t, ["tasks.next", "tasks.prev", "signal", f"{thread_link}.next",
                                       f"{thread_link}.prev", "children.next", "children.prev",
                                       "sibling.next", "sibling.prev"])
        self.columns = TaskColumns(t, members, min_stride=self.links.size)
        self.size = self.columns.stride  # bytes read per task: the members and the links
        self.tasks_off = t.offsetof("tasks")
        self.thread_off = t.offsetof(thread_link)
        self.tgid_off = t.offsetof("tgid")
        self.children_off = t.offsetof("children")
        self.sibling_off = t.offsetof("sibling")
        self._index: dict[int, int] = {}  # task address -> its position in `order`
        self._links = array("Q")  # the list pointers of every task read, NLINKS per task
        self.failed: set[int] = set()
        self.order: list[int] = []

    def read(self, address: int) -> Sequence[int] | None:
        """The list pointers of the task at `address` (cached), or None when unreadable; its
        columns go to `self.columns`."""
        i = self._index.get(address)
        if i is not None:
            return self._links[i * NLINKS:(i + 1) * NLINKS]
        if address in self.failed:
            return None
        data = read_or_none(self.k, address, self.size, self.gaps, "task_struct")
        if data is None:
            self.failed.add(address)
            return None
        row = self.links.unpack(data)
        self._index[address] = len(self.order)
        self.order.append(address)
        self._links.extend(row)
        self.columns.add(data)
        return row

    def row(self, address: int) -> Sequence[int]:
        """The list pointers of a task already read."""
        i = self._index[address]
        return self._links[i * NLINKS:(i + 1) * NLINKS]

    # tuple positions of the link fields
    NEXT, PREV, SIGNAL, THREAD_NEXT, THREAD_PREV, CHILD_NEXT, CHILD_PREV, SIB_NEXT, SIB_PREV = range(NLINKS)


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
        row = r.row(a)
        if row[r.CHILD_NEXT] == a + r.children_off:
            continue  # no children
        before = len(r.order)
        _walk_ring(r, a + r.children_off, row[r.CHILD_NEXT], row[r.CHILD_PREV], r.sibling_off,
                   r.SIB_NEXT, r.SIB_PREV, f"children of task {a:#x}")
        for leader in r.order[before:]:
            _walk_threads(r, leader)
        pending.extend(r.order[before:])


def _walk_threads(r: _TaskReader, leader: int) -> None:
    """Every thread of the leader's group (signal->thread_head, or the thread_group ring).

    Walks forwards from the leader; at the list head (in signal_struct) the walk is done when the
    leader is the head's first entry (leader->prev is the head: the common case, no read of the
    head), else it goes on from head->next; when the head is unreadable, it walks backwards from
    the leader to the head, which covers the rest of the ring.
    """
    row = r.row(leader)
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
                if direction == r.THREAD_PREV or row[r.THREAD_PREV] == head:
                    return  # both halves of the ring seen, or the leader is the head's first entry
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
    keep = np.array([a != init_task or init_task in idle_tasks for a in r.order], dtype=bool)
    df = tasks_dataframe(k, r.columns.records(), r.order, keep, current, r.tgid_off, r.rss_fields,
                         gaps)
    # what the walk found, for capture validation: processes on init_task.tasks itself (the
    # rest came through children lists), task_structs that could not be read, CPUs seen
    df.attrs["kdnb"] = {**df.attrs.get("kdnb", {}), "walk": {
        "list": "init_task.tasks", "entries": len(leaders), "unreadable": len(r.failed),
        "cpus": [cpu for cpu, _curr, _idle in rqs]}}
    return gaps.attach(df, "tasks")
