"""The tasks view's columns: task_struct copies decoded in batches with one numpy structured dtype.

`TaskColumns` keeps the bytes of up to BATCH task_structs, then decodes the members the view needs
(offsets and sizes from BTF) with one `np.frombuffer` into a packed record array, so no Python
object is made per task and field. `tasks_dataframe` turns the records into the view's frame.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ..errors import KdnbError
from ..kernel.objects import decode_cstring, is_char_array, scalar_code
from .common import Gaps, fitting, online_cpus, read_or_none

if TYPE_CHECKING:  # pragma: no cover
    from ..kernel.kernel import Kernel
    from ..kernel.types import Type

BATCH = 1024  # task_struct copies decoded at once (~3 MiB of bytes on 6.1)
STATE_CHARS = ["R", "S", "D", "T", "t", "X", "Z", "P", "I"]
# include/linux/sched.h task state bits (unchanged from 5.14 to 6.12)
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


def task_state_char(state: int, exit_state: int) -> str:
    """The /proc state letter, as fs/proc/array.c's task_state_array[__task_state_index()]."""
    report = (state | exit_state) & TASK_REPORT
    if state & TASK_IDLE == TASK_IDLE:
        report = TASK_REPORT_IDLE
    if state & (TASK_RTLOCK_WAIT | TASK_FROZEN):
        report = TASK_UNINTERRUPTIBLE
    return STATE_CHARS[report.bit_length()]


def _np_format(t: Type, path: str) -> str:
    """numpy format of one task_struct member: a little-endian integer, or bytes for char [N]."""
    if is_char_array(t):
        return f"S{t.strip().size or 0}"
    code = scalar_code(t)
    if code is None or code in "fd":
        raise KdnbError(f"struct task_struct.{path}: {t.strip().kind} member, expected an integer")
    return f"<{'u' if code.isupper() else 'i'}{struct.calcsize(code)}"


class TaskColumns:
    """Members of many task_structs as one record array, filled batch by batch.

    `members` maps a column name to a member path of struct task_struct ("thread_info.cpu").
    `add(data)` takes the first `stride` bytes of one task_struct (at least the members' extent
    and `min_stride`); `records()` returns every one added so far, in order, as a packed
    structured array.
    """

    def __init__(self, task_t: Type, members: dict[str, str], min_stride: int = 0) -> None:
        names, formats, offsets = [], [], []
        for name, path in members.items():
            m = task_t.member(path)
            if m.bit_size:
                raise KdnbError(f"struct task_struct.{path}: bitfield, expected a whole integer")
            names.append(name)
            formats.append(_np_format(m.type, path))
            offsets.append(m.offset)
        self.size = max(o + np.dtype(f).itemsize for o, f in zip(offsets, formats))
        self.stride = max(self.size, min_stride)
        self._raw_dtype = np.dtype({"names": names, "formats": formats, "offsets": offsets,
                                    "itemsize": self.stride})
        self.dtype = np.dtype({"names": names, "formats": formats})  # packed
        self._parts: list[bytes] = []
        self._done: list[np.ndarray] = []

    def add(self, data: bytes) -> None:
        """One more task_struct (its first `stride` bytes)."""
        if len(data) != self.stride:
            raise KdnbError(f"task_struct copy of {len(data)} bytes, expected {self.stride}")
        self._parts.append(data)
        if len(self._parts) == BATCH:
            self._flush()

    def _flush(self) -> None:
        if self._parts:
            raw = np.frombuffer(b"".join(self._parts), dtype=self._raw_dtype)
            self._done.append(raw.astype(self.dtype))
        self._parts = []

    def records(self) -> np.ndarray:
        """Every task added, in order."""
        self._flush()
        if len(self._done) > 1:
            self._done = [np.concatenate(self._done)]
        return self._done[0] if self._done else np.empty(0, dtype=self.dtype)


class Rss:
    """Resident pages of mms: file + anon + shmem counters (mm_struct.rss_stat).

    `add(mm)` reads one mm's counters (per-CPU ones are summed at once, so their gaps are noted in
    read order); `pages_of()` decodes the rest in one numpy pass and gives every mm's total.
    """

    def __init__(self, k: Kernel, gaps: Gaps) -> None:
        self.k = k
        self.gaps = gaps
        m = k.type("struct mm_struct").member("rss_stat")
        self.off = m.offset
        rt = m.type.strip()
        self.size = rt.size
        # 6.2 f1a7941243c1: `struct percpu_counter rss_stat[NR_MM_COUNTERS]` (was struct mm_rss_stat)
        self.percpu = rt.kind == "array"
        if self.percpu:
            pc = rt.target.strip()
            self.stride = pc.size
            self.count_off = pc.offsetof("count")
            self.counters_off = pc.offsetof("counters")
            self.cpus = online_cpus(k)
        self._pages: dict[int, int | None] = {}
        self._stats: dict[int, bytes] = {}  # mm_rss_stat bytes, decoded by pages_of()

    def add(self, mm: int) -> None:
        """Read the counters of the mm at `mm` (None, a gap noted, when unreadable)."""
        data = read_or_none(self.k, mm + self.off, self.size, self.gaps, "mm_struct.rss_stat")
        if data is None:
            self._pages[mm] = None
        elif not self.percpu:
            self._stats[mm] = data
        else:
            try:
                self._pages[mm] = sum(self._percpu(data, i)
                                      for i in (MM_FILEPAGES, MM_ANONPAGES, MM_SHMEMPAGES))
            except KdnbError as exc:
                self.gaps.note(f"per-CPU rss counters of mm {mm:#x}", mm, exc)
                self._pages[mm] = None

    def pages_of(self) -> dict[int, int | None]:
        """file + anon + shmem pages of every mm added (summed as Python integers)."""
        if self._stats:
            counts = np.frombuffer(b"".join(self._stats.values()), dtype="<i8").reshape(len(self._stats), -1)
            picked = counts[:, [MM_FILEPAGES, MM_ANONPAGES, MM_SHMEMPAGES]].tolist()
            self._pages.update(zip(self._stats, (a + b + c for a, b, c in picked)))
            self._stats = {}
        return self._pages

    def _percpu(self, data: bytes, i: int) -> int:
        """Counter `i` of a struct percpu_counter array: its count plus every online CPU's delta."""
        base = i * self.stride
        (count,) = struct.unpack_from("<q", data, base + self.count_off)
        (counters,) = struct.unpack_from("<Q", data, base + self.counters_off)
        if counters:
            offs = self.k.per_cpu_offsets
            for cpu in self.cpus:
                addr = (counters + int(offs[cpu])) & 0xFFFFFFFFFFFFFFFF
                count += struct.unpack("<i", self.k.read(addr, 4))[0]
        return count


def fit(values: np.ndarray, dtype: str, column: str, gaps: Gaps) -> pd.arrays.IntegerArray:
    """`values` as a nullable integer array of `dtype`; a value that does not fit becomes NA and is
    noted in `gaps` (as `common.fitting` does for lists)."""
    target = pd.api.types.pandas_dtype(dtype).numpy_dtype
    have, want = np.iinfo(values.dtype), np.iinfo(target)
    bad = np.zeros(len(values), dtype=bool)
    if have.min < want.min:
        bad |= values < want.min
    if have.max > want.max:
        bad |= values > want.max
    if bad.any():
        gaps.note(f"{column}: {int(bad.sum())} value(s) that do not fit {dtype} read as NA")
        values = np.where(bad, 0, values)
    return pd.arrays.IntegerArray(values.astype(target), bad)


def _by_value(values: np.ndarray, name: Callable[[Any], str]) -> np.ndarray:
    """name(v) for each element, computed once per distinct value (an object array)."""
    uniq, first, inverse = np.unique(values, return_index=True, return_inverse=True)
    names = np.empty(len(uniq), dtype=object)
    names[:] = [name(v) for v in values[first].tolist()]
    return names[inverse.reshape(-1)]


def _ns(values: np.ndarray) -> pd.Series:
    return pd.to_timedelta(values.astype(np.uint64).astype(np.int64), unit="ns")  # u64 nanoseconds


def tasks_dataframe(k: Kernel, records: np.ndarray, order: Sequence[int], keep: np.ndarray,
                    current: set[int], tgid_off: int, rss_fields: Sequence[str],
                    gaps: Gaps) -> pd.DataFrame:
    """The tasks frame from the records of every task read (`records`, at addresses `order`), of which
    the view lists those where `keep` is set."""
    everyone = np.array(order, dtype=np.uint64)
    rec, addr = records[keep], everyone[keep]
    parent, mm, flags = rec["real_parent"], rec["mm"], rec["flags"]
    kthread = (flags & PF_KTHREAD) != 0
    # ppid: the parent's tgid, from the tasks read (init_task included) or read from the parent
    by_addr = np.argsort(everyone, kind="stable")
    known = everyone[by_addr]
    pos = np.minimum(np.searchsorted(known, parent), max(len(known) - 1, 0))
    found = known[pos] == parent if len(known) else np.zeros(len(addr), dtype=bool)
    ppid: list[int | None] = [None] * len(addr)
    if len(known):
        tgids = records["tgid"][by_addr][pos].tolist()
        for i in np.flatnonzero(found).tolist():
            ppid[i] = tgids[i]
    # reads in task order, as a per-task walk makes them (gap notes keep that order): a parent
    # not among the tasks read, then the rss counters of each distinct user mm
    user = (mm != 0) & ~kthread
    mms, first_of_mm, mm_index = np.unique(mm[user], return_index=True, return_inverse=True)
    first_task = np.flatnonzero(user)[first_of_mm]
    events = sorted([(i, 0) for i in np.flatnonzero(~found & (parent != 0)).tolist()]
                    + [(i, 1) for i in first_task.tolist()])
    rss = Rss(k, gaps)
    for i, kind in events:
        if kind == 0:
            data = read_or_none(k, int(parent[i]) + tgid_off, 4, gaps, "parent task_struct")
            ppid[i] = struct.unpack("<i", data)[0] if data is not None else None
        else:
            rss.add(int(mm[i]))
    pages_of = rss.pages_of()
    for i in np.flatnonzero((rec["pid"] == 0) | (parent == addr)).tolist():
        ppid[i] = 0
    rss_pages = _rss_pages(rec, mm, user, mms, mm_index, pages_of, rss_fields)
    policies = _by_value(rec["policy"], lambda p: POLICIES[p] if p < len(POLICIES) else str(p))
    states = _by_value(np.stack([rec["state"].astype(np.int64), rec["exit_state"].astype(np.int64)],
                                axis=1).view([("s", "<i8"), ("e", "<i8")]).reshape(-1),
                       lambda se: task_state_char(*se))
    df = pd.DataFrame({
        "pid": fit(rec["pid"], "Int32", "pid", gaps),
        "tgid": fit(rec["tgid"], "Int32", "tgid", gaps),
        "ppid": fitting(ppid, "Int32", "ppid", gaps),
        "comm": pd.Categorical(_by_value(rec["comm"], decode_cstring)),
        "state": pd.Categorical(states, categories=STATE_CHARS),
        "state_raw": fit(rec["state"], "UInt32", "state_raw", gaps),
        "flags": fit(flags, "UInt32", "flags", gaps),
        "is_kthread": kthread,
        "cpu": fit(rec["cpu"], "Int16", "cpu", gaps),
        "is_current": np.isin(addr, np.array(sorted(current), dtype=np.uint64)),
        "prio": fit(rec["prio"], "Int16", "prio", gaps),
        "policy": pd.Categorical(policies, categories=sorted(set(POLICIES) | set(policies.tolist()),
                                                             key=_policy_order)),
        "start_time": _ns(rec["start_time"]),
        "last_run": _ns(rec["last_run"]),
        "utime": _ns(rec["utime"]),
        "stime": _ns(rec["stime"]),
        "rss_pages": fitting(rss_pages, "Int64", "rss_pages", gaps),
        "address": fit(addr, "UInt64", "address", gaps),
    })
    return df.sort_values(["pid", "cpu"], kind="stable").reset_index(drop=True)


def _rss_pages(rec: np.ndarray, mm: np.ndarray, user: np.ndarray, mms: np.ndarray,
               mm_index: np.ndarray, pages_of: dict[int, int | None],
               rss_fields: Sequence[str]) -> list[int | None]:
    """Resident pages of each user task's mm, plus the deltas every thread of that mm still caches
    (SPLIT_RSS_COUNTING, <= 6.1: the `rss_fields` of task_struct.rss_stat.count); None elsewhere."""
    pending: dict[int, int] = {}
    if rss_fields:
        delta = sum(rec[f].astype(np.int64) for f in rss_fields)
        has_mm = mm != 0
        owners, owner_index = np.unique(mm[has_mm], return_inverse=True)
        sums = np.zeros(len(owners), dtype=np.int64)
        np.add.at(sums, owner_index.reshape(-1), delta[has_mm])
        pending = dict(zip(owners.tolist(), sums.tolist()))
    per_mm: list[int | None] = []
    for m in mms.tolist():
        value = pages_of[m]
        per_mm.append(None if value is None else max(value + pending.get(m, 0), 0))
    out: list[int | None] = [None] * len(rec)
    for i, j in zip(np.flatnonzero(user).tolist(), mm_index.reshape(-1).tolist()):
        out[i] = per_mm[j]
    return out


def _policy_order(name: str) -> tuple[int, str]:
    return (POLICIES.index(name), "") if name in POLICIES else (len(POLICIES), name)
