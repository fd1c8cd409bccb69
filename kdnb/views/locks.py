"""`Dump.locks`: what blocked tasks wait on (corelens `lock`): mutexes, rw-semaphores, per-CPU
rw-semaphores (a frozen superblock's `sb_writers`), semaphores, completions and wait queues, with
the owner where the kernel records one, and the wait-for graph built from them.

One row per waiting task:

| column | dtype | meaning |
|---|---|---|
| `kind` | category | mutex, rwsem, percpu-rwsem, semaphore, completion, waitqueue |
| `address` | UInt64 | the lock / completion / wait-queue head |
| `belongs_to` | string | what holds it: a symbol (`kdnb_lock [kdnb_crash]`), a superblock's `s_writers` (with its mount), a flush_work barrier |
| `owner_pid`, `owner_comm`, `owner_state` | Int32, string, string | the owner task (mutex owner, rwsem writer or last reader, the worker a flush waits for) |
| `detail` | string | lock state: readers, frozen level and holder, completion count |
| `pid`, `comm`, `state` | Int32, string, string | the waiting task |
| `waited` | timedelta | since the waiter last got a CPU (it went to sleep soon after), against the crash clock |
| `function` | string | where the waiter called the primitive from (`mnt_want_write+0x8f`) |
| `task`, `owner` | UInt64 | task_structs of waiter and owner |

How a wait is found: the waiter's stack (from the shared stack walk) names the primitive
(`__mutex_lock`, `rwsem_down_write_slowpath`, `percpu_rwsem_wait`, `__down_common`,
`__wait_for_common`); the kernel queues a waiter record on the waiting task's own stack whose
`task` field is that task. The record is found by scanning the stack, its list ring is walked
(bounded): every other waiter lives on its own task's stack, the one node that does not is the
lock's list head. On 7.x a mutex / rwsem / semaphore has `first_waiter` (a pointer) instead of a
list head: the lock is then the pointer on the waiter's stack whose `first_waiter` is in the ring.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Any, NamedTuple

import pandas as pd

from ..errors import KdnbError
from .common import Gaps, fitting
from .stackwalk import Stack, collect_stacks, context
from .stacks import PRIMITIVES, SCHEDULER

if TYPE_CHECKING:  # pragma: no cover
    from ..api import Dump
    from ..kernel.kernel import Kernel

COLUMNS = ["kind", "address", "belongs_to", "owner_pid", "owner_comm", "owner_state", "detail",
           "pid", "comm", "state", "waited", "function", "task", "owner"]
KINDS = ["mutex", "rwsem", "percpu-rwsem", "semaphore", "completion", "waitqueue"]
KERNEL_SPACE = 0xFFFF800000000000
MAX_WAITERS = 1 << 14  # waiters on one lock
OWNER_FLAGS = 7  # MUTEX_FLAGS / RWSEM_OWNER_FLAGS_MASK: low bits of ->owner
RWSEM_READER_OWNED = 1
RWSEM_READER_SHIFT = 8


class Spec(NamedTuple):
    """A wait primitive: the lock type, the waiter record the kernel puts on the stack."""

    lock: str
    head: str  # the lock's waiter list head (or first_waiter pointer on 7.x)
    waiter: str
    link: str  # the waiter's list_head member
    task: str  # the waiter's task member


SPECS = {
    "mutex": Spec("struct mutex", "wait_list", "struct mutex_waiter", "list", "task"),
    "rwsem": Spec("struct rw_semaphore", "wait_list", "struct rwsem_waiter", "list", "task"),
    "percpu-rwsem": Spec("struct percpu_rw_semaphore", "waiters.head", "struct wait_queue_entry",
                         "entry", "private"),
    "semaphore": Spec("struct semaphore", "wait_list", "struct semaphore_waiter", "list", "task"),
    "completion": Spec("struct completion", "wait.task_list", "struct swait_queue", "task_list", "task"),
    "waitqueue": Spec("struct wait_queue_head", "head", "struct wait_queue_entry", "entry", "private"),
}
class _Wait(NamedTuple):
    kind: str
    lock: int
    stack: Stack
    function: str | None


class _Finder:
    """Finds the object each blocked task waits on, from its stack."""

    def __init__(self, dump: "Dump", gaps: Gaps) -> None:
        self.k: "Kernel" = dump.kernel
        self.ctx = context(dump)
        self.gaps = gaps
        self.owner_of_stack = {base: task for task, base in self.ctx.stack_base.items()}
        self.thread_size = self.ctx.unwinder.thread_size
        self.specs: dict[str, tuple[Spec, int, int, int, bool]] = {}
        for kind, spec in SPECS.items():
            try:
                lock_t, wait_t = self.k.type(spec.lock), self.k.type(spec.waiter)
                # 7.x: mutex/rwsem/semaphore point at their first waiter instead of a list head
                first = not lock_t.has_member(spec.head) and lock_t.has_member("first_waiter")
                head = lock_t.offsetof("first_waiter" if first else spec.head)
                self.specs[kind] = (spec, head, wait_t.offsetof(spec.link), wait_t.offsetof(spec.task), first)
            except KdnbError:
                continue

    def _is_waiter(self, node: int, link_off: int, task_off: int) -> bool:
        """A waiter record: on some task's stack, its task field being that task."""
        task = self.owner_of_stack.get(node & ~(self.thread_size - 1))
        if task is None:
            return False
        try:
            return self.k.read_u64(node - link_off + task_off) == task
        except KdnbError:
            return False

    def find(self, st: Stack) -> _Wait | None:
        names = [self.ctx.symbolize(f.pc, f.exact, f.kind == "user")[0] for f in st.bt.frames]
        names = [n if isinstance(n, str) else "" for n in names]
        kind, at = next(((PRIMITIVES[n], i) for i, n in enumerate(names) if n in PRIMITIVES), (None, -1))
        if kind is None:
            if st.state != "D":
                return None
            kind = "waitqueue"
        if kind not in self.specs or st.address is None:
            return None
        caller = next((i for i in range(max(at, 0), len(names))
                       if names[i] not in PRIMITIVES and names[i] not in SCHEDULER), None)
        function = None
        if caller is not None:
            f = st.bt.frames[caller]
            text = self.ctx.symbolize(f.pc, f.exact, False)[3]  # func+0x1a/0x40 [mod]
            name, _, rest = text.partition("/")
            function = name + rest[rest.find(" "):] if " " in rest else name
        lock = self._lock(st, kind)
        return _Wait(kind, lock, st, function) if lock is not None else None

    def _lock(self, st: Stack, kind: str) -> int | None:
        spec, head_off, link_off, task_off, first = self.specs[kind]
        base = self.ctx.stack_base.get(st.address)
        if base is None:
            return None
        try:
            data = self.ctx.unwinder.mem.read(base, self.thread_size)
        except KdnbError as exc:
            self.gaps.note(f"stack of pid {st.pid}", base, exc)
            return None
        low = (st.bt.frames[0].sp - base) if st.bt.frames else 0
        words = struct.unpack(f"<{self.thread_size // 8}Q", data)
        for i in range(max(low, 0) // 8, len(words)):
            if words[i] != st.address:
                continue
            node = base + 8 * i - task_off + link_off
            ring = self._ring(node, link_off, task_off)
            if ring is None:
                continue
            nodes, head = ring
            if not first and head is not None:
                return head - head_off
            if first:
                waiters = {n - link_off for n in nodes}
                for w in words:
                    if w >= KERNEL_SPACE and not base <= w < base + self.thread_size:
                        try:
                            if self.k.read_u64(w + head_off) in waiters:
                                return w
                        except KdnbError:
                            continue
        return None

    def _ring(self, node: int, link_off: int, task_off: int) -> tuple[list[int], int | None] | None:
        """(waiter nodes, the head node or None) of the list ring through `node`, or None when
        `node` is not a well-linked list node."""
        nodes = [node]
        seen = {node}
        head = None
        cur = node
        try:
            if self.k.read_u64(self.k.read_u64(node) + 8) != node:
                return None
            while len(seen) < MAX_WAITERS:
                cur = self.k.read_u64(cur)
                if cur == node:
                    return nodes, head
                if cur in seen or cur < KERNEL_SPACE:
                    return None
                seen.add(cur)
                if self._is_waiter(cur, link_off, task_off):
                    nodes.append(cur)
                elif head is None:
                    head = cur
                else:
                    return None  # two nodes that are no waiters: not a wait list
        except KdnbError:
            return None
        return None


def locks_frame(dump: "Dump") -> pd.DataFrame:
    """The locks DataFrame (columns: see COLUMNS)."""
    from .lock_owners import Env, describe

    gaps = Gaps()
    stacks = [st for st in collect_stacks(dump, states="all", cpus="all") if st.source == "task"]
    finder = _Finder(dump, gaps)
    waits = [w for w in (finder.find(st) for st in stacks) if w is not None]
    env = Env(dump)
    rows = [describe(env, w.kind, w.lock, w.stack, w.function, gaps) for w in waits]
    return gaps.attach(_frame(rows, gaps), "locks")


def _frame(rows: list[dict[str, Any]], gaps: Gaps) -> pd.DataFrame:
    col = {c: [r.get(c) for r in rows] for c in COLUMNS}
    return pd.DataFrame({
        "kind": pd.Categorical(col["kind"], categories=KINDS),
        "address": fitting(col["address"], "UInt64", "address", gaps),
        "belongs_to": pd.array(col["belongs_to"], dtype="string"),
        "owner_pid": fitting(col["owner_pid"], "Int32", "owner_pid", gaps),
        "owner_comm": pd.array(col["owner_comm"], dtype="string"),
        "owner_state": pd.array(col["owner_state"], dtype="string"),
        "detail": pd.array(col["detail"], dtype="string"),
        "pid": fitting(col["pid"], "Int32", "pid", gaps),
        "comm": pd.array(col["comm"], dtype="string"),
        "state": pd.array(col["state"], dtype="string"),
        "waited": pd.to_timedelta(pd.array(col["waited"], dtype="Int64"), unit="ns"),
        "function": pd.array(col["function"], dtype="string"),
        "task": fitting(col["task"], "UInt64", "task", gaps),
        "owner": fitting(col["owner"], "UInt64", "owner", gaps),
    }, columns=COLUMNS)


def wait_for_edges(locks: pd.DataFrame) -> list[tuple[int, int, int]]:
    """The wait-for graph: (waiting pid, owner pid, lock address) for every wait with an owner."""
    known = locks.dropna(subset=["owner_pid", "pid"])
    return [(int(r.pid), int(r.owner_pid), int(r.address)) for r in known.itertuples()
            if int(r.pid) != int(r.owner_pid)]


def wait_for_cycles(locks: pd.DataFrame) -> list[list[tuple[int, int]]]:
    """Cycles of the wait-for graph (deadlocks): each a list of (pid, lock it waits on), every
    pid owning the lock the previous one waits for; each cycle once, starting at its lowest pid."""
    edges: dict[int, list[tuple[int, int]]] = {}
    for pid, owner, lock in wait_for_edges(locks):
        edges.setdefault(pid, []).append((owner, lock))
    cycles: list[list[tuple[int, int]]] = []
    seen_cycles: set[frozenset[int]] = set()

    def visit(path: list[tuple[int, int]], on_path: set[int]) -> None:
        pid = path[-1][0]
        for owner, lock in edges.get(pid, []):
            step = path[:-1] + [(pid, lock)]
            if owner == step[0][0]:
                key = frozenset(p for p, _ in step)
                if key not in seen_cycles:
                    seen_cycles.add(key)
                    start = min(range(len(step)), key=lambda i: step[i][0])
                    cycles.append(step[start:] + step[:start])
            elif owner not in on_path and len(step) < 64:
                visit(step + [(owner, 0)], on_path | {owner})

    for pid in sorted(edges):
        visit([(pid, 0)], {pid})
    return cycles
