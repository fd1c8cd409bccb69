"""Owners and state of the wait objects `d.locks` found: one row per waiting task.

Where the kernel records an owner: a mutex's `owner` (the task, flag bits in the low 3 bits), an
rw-semaphore's `owner` (the writer, or with RWSEM_READER_OWNED the last reader to take it) and
`count` (readers << 8 | writer bit), a 7.x semaphore's `last_holder`. A per-CPU rw-semaphore has
no owner; when it is one of a superblock's `s_writers.rw_sem[]` the superblock's freeze state is
the answer (a frozen filesystem blocks every writer in sb_start_write). A completion inside a
`struct wq_barrier` is a flush_work() waiting for a work item: its owner is the worker that runs
the item (kdnb.views.workqueue).
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Any

import pandas as pd

from ..errors import KdnbError
from .common import Gaps
from .mounts import FREEZE_LEVELS, rw_sem_owner
from .runq import crash_clock
from .stackwalk import Stack, context

if TYPE_CHECKING:  # pragma: no cover
    from ..api import Dump

OWNER_FLAGS = 7  # MUTEX_FLAGS / RWSEM_OWNER_FLAGS_MASK
RWSEM_READER_OWNED = 1
RWSEM_WRITER_LOCKED = 1
RWSEM_READER_SHIFT = 8
FREEZE_NAMES = ["", "SB_FREEZE_WRITE", "SB_FREEZE_PAGEFAULT", "SB_FREEZE_FS"]


class Env:
    """What every row needs, computed once: task rows by address, the crash clock."""

    def __init__(self, dump: "Dump") -> None:
        self.dump = dump
        tasks = dump.tasks
        self.index = {int(a): i for i, a in enumerate(tasks["address"])}
        self.pid, self.comm = tasks["pid"].tolist(), tasks["comm"].tolist()
        self.state, self.last_run = tasks["state"].tolist(), tasks["last_run"].tolist()
        self.now = crash_clock(dump)

    def task(self, address: int | None) -> dict[str, Any]:
        """pid, comm, state, last_run of a task_struct address ({} when unknown)."""
        i = self.index.get(address) if address else None
        if i is None:
            return {}
        return {"pid": int(self.pid[i]), "comm": str(self.comm[i]), "state": str(self.state[i]),
                "last_run": self.last_run[i]}


def _symbol(dump: "Dump", address: int) -> str | None:
    """`name [module]` (or `name+0x10`) when `address` is inside a global or module variable."""
    try:
        hit = dump.kernel.lookup(address)
    except KdnbError:
        return None
    if hit is None or (hit.size and hit.size > 0 and address >= hit.address + hit.size) \
            or hit.name.startswith(("__start_", "__stop_")):  # section markers, not variables
        return None
    mod = f" [{hit.module}]" if hit.module else ""
    return f"{hit.name}{f'+{hit.offset:#x}' if hit.offset else ''}{mod}"


def _mount_of(dump: "Dump", sb: int) -> str:
    m = dump.mounts
    rows = m[(m["superblock"] == sb) & ~m["internal"]]
    if not len(rows):
        rows = m[m["superblock"] == sb]
    if not len(rows):
        return f"superblock {sb:#x}"
    r = rows.iloc[0]
    return f"{r['path']} ({r['fstype']} on {r['device']})"


def _u64(data: bytes, off: int) -> int:
    return struct.unpack_from("<Q", data, off)[0]


def describe(env: Env, kind: str, lock: int, st: Stack, function: str | None,
             gaps: Gaps) -> dict[str, Any]:
    """The d.locks row of one waiting task."""
    dump = env.dump
    k = dump.kernel
    row: dict[str, Any] = {"kind": kind, "address": lock, "function": function, "task": st.address,
                           "pid": st.pid, "comm": st.comm, "state": st.state}
    waiter = env.task(st.address)
    now = env.now
    if now is not None and waiter.get("last_run") is not None and pd.notna(waiter["last_run"]):
        ran = int(waiter["last_run"].value)
        row["waited"] = now - ran if 0 < ran <= now else None
    owner, detail, belongs = None, None, _symbol(dump, lock)
    try:
        if kind in ("mutex", "rwsem", "semaphore", "percpu-rwsem", "completion"):
            t = k.type({"mutex": "struct mutex", "rwsem": "struct rw_semaphore",
                        "semaphore": "struct semaphore", "percpu-rwsem": "struct percpu_rw_semaphore",
                        "completion": "struct completion"}[kind])
            data = k.read(lock, t.size or 0)
        if kind == "mutex":
            owner = _u64(data, t.offsetof("owner")) & ~OWNER_FLAGS
            detail = "unlocked" if not owner else None
        elif kind == "rwsem":
            raw = _u64(data, t.offsetof("owner"))
            count = _u64(data, t.offsetof("count"))
            readers = count >> RWSEM_READER_SHIFT
            if count & RWSEM_WRITER_LOCKED:
                detail = "write-locked"
            elif readers:
                detail = f"read-locked by {readers} reader(s)" + \
                    (", owner is the last reader" if raw & RWSEM_READER_OWNED else "")
            owner = raw & ~OWNER_FLAGS
        elif kind == "semaphore":
            count = struct.unpack_from("<i", data, t.offsetof("count"))[0]
            detail = f"count {count}"
            if t.has_member("last_holder"):  # 7.x, CONFIG_DETECT_HUNG_TASK_BLOCKER
                owner = _u64(data, t.offsetof("last_holder")) & ~OWNER_FLAGS
        elif kind == "percpu-rwsem":
            block = struct.unpack_from("<i", data, t.offsetof("block"))[0]
            owner = _u64(data, t.offsetof("writer.task"))
            detail = "blocked by a writer" if block else None
            sb = rw_sem_owner(dump, lock)
            if sb is not None:
                belongs, detail = _frozen(dump, sb[0], sb[1])
        elif kind == "completion":
            done = struct.unpack_from("<I", data, t.offsetof("done"))[0]
            detail = f"done {done}"
            barrier = _barrier(dump, lock)
            if barrier is not None:
                belongs, owner, detail = barrier
    except KdnbError as exc:
        gaps.note(f"{kind} at {lock:#x}", lock, exc)
    if belongs is None:
        belongs = _on_stack(env, lock)
    row["belongs_to"], row["detail"] = belongs, detail
    info = env.task(owner)
    if owner and info:
        row.update(owner=owner, owner_pid=info["pid"], owner_comm=info["comm"], owner_state=info["state"])
    return row


def _frozen(dump: "Dump", sb: int, level: int) -> tuple[str, str]:
    m = dump.mounts
    rows = m[m["superblock"] == sb]
    name = FREEZE_NAMES[level] if 0 < level < len(FREEZE_NAMES) else f"level {level}"
    belongs = f"s_writers.rw_sem[{name}] of the superblock of {_mount_of(dump, sb)}"
    if not len(rows):
        return belongs, "superblock not on super_blocks"
    frozen, by = rows["frozen"].iloc[0], rows["frozen_by"].iloc[0]
    if pd.isna(frozen) or frozen == "unfrozen":
        return belongs, "filesystem not frozen"
    holder = f" by {by}" if pd.notna(by) else ""
    holder += " (FIFREEZE: fsfreeze or an ioctl)" if by == "userspace" else ""
    return belongs, f"frozen{holder}: freeze level {frozen} ({FREEZE_LEVELS.index(frozen)})"


def _barrier(dump: "Dump", completion: int) -> tuple[str, int | None, str] | None:
    """(belongs_to, owner, detail) when the completion is a flush_work() barrier's."""
    k = dump.kernel
    try:
        bt = k.type("struct wq_barrier")
        barrier = completion - bt.offsetof("done")
        func = k.read_u64(barrier + bt.offsetof("work.func"))
        hit = k.lookup(func)
    except KdnbError:
        return None
    if hit is None or hit.name != "wq_barrier_func" or hit.offset:
        return None
    from .workqueue import barrier_worker

    worker = barrier_worker(dump, barrier)
    if worker is None:
        return "a flush_work() barrier", None, "the flushed work item is not running"
    task, func = worker
    return "a flush_work() barrier", task, f"waits for work item {func} to finish"


def _on_stack(env: Env, address: int) -> str | None:
    ctx = context(env.dump)
    base = address & ~(ctx.unwinder.thread_size - 1)
    for task, stack in ctx.stack_base.items():
        if stack == base:
            info = env.task(task)
            return f"the stack of pid {info.get('pid', '?')}"
    return None
