"""`Dump.inflight_io`: block requests in flight on every blk-mq disk (crash `dev -d`, corelens
`inflight-io`).

A blk-mq disk's `request_queue` points at its `blk_mq_tag_set`; the set holds one `blk_mq_tags`
per hardware queue (or one `shared_tags` for all of them), and `tags->rqs[tag]` points at the
request that holds driver tag `tag`. The pointer stays when the request is freed, so a request
counts only while its `state` is not MQ_RQ_IDLE, its own `tag` is that index and its `q` is a
disk's queue. Walking the tag set rather than the hardware contexts avoids their container,
an array before 5.19, an XArray from 5.19 ("blk-mq: manage hctx map via xarray"; 6.1 and 6.12)
and an array again on 7.2 (`queue_hw_ctx` in its BTF). Ages are CLOCK_MONOTONIC at the crash (the timekeeper) minus the request's
`start_time_ns` (allocation) and `io_start_time_ns` (issue to the driver, 0 unless the queue
keeps I/O statistics that need it). The kernel keeps no owner in a request; the first bio's
`bi_private` names one when it is the waiting task (direct I/O sets it to `current`) or a
completion on a task's kernel stack (submit_bio_wait()). `mapping` is the address_space of the
first bio's first page (page cache writeback and reads: the file or block device it belongs to).
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Any

import pandas as pd

from ..errors import KdnbError
from ..kernel.unwind import THREAD_SIZE
from .common import Gaps, enum_values, fitting, read_or_none
from .whatis import compound_head

if TYPE_CHECKING:  # pragma: no cover
    from ..api import Dump
    from ..kernel.kernel import Kernel

MAX_TAGS = 10240  # BLK_MQ_MAX_DEPTH (include/linux/blk-mq.h)
MAX_HW_QUEUES = 4096  # nr_hw_queues is capped at nr_cpu_ids (plus poll/read maps); generous
MAX_BIOS = 1 << 16  # bios merged into one request (max_segments is far below)
KERNEL_MIN = 0xFFFF800000000000  # lowest x86_64 kernel address (5-level paging)
COLUMNS = ["disk", "hw_queue", "tag", "op", "flags", "sector", "bytes", "state", "start_ns",
           "age", "io_start_ns", "io_age", "bios", "pid", "comm", "request", "queue", "task",
           "mapping"]


def inflight_io_frame(dump: "Dump") -> pd.DataFrame:
    """One row per request in flight on a blk-mq disk: disk, hw_queue, tag, op (READ, WRITE,
    FLUSH, ...), flags (SYNC|FUA|...), sector, bytes, state (IN_FLIGHT, COMPLETE), start_ns
    (start_time_ns, CLOCK_MONOTONIC), age (seconds from start_ns to the crash, Float64),
    io_start_ns / io_age (issued to the driver; NA when the kernel did not stamp it), bios,
    pid / comm / task (the waiting task when the first bio names it), request, queue,
    mapping (the address_space of the first page, NA for anonymous or no data pages)."""
    k = dump.kernel
    gaps = Gaps()
    blk = dump.block
    disks = {int(q): str(n) for q, n, p in zip(blk["queue"], blk["name"], blk["partno"])
             if not pd.isna(q) and p == 0}
    rows: list[dict[str, Any]] = []
    try:
        walk = _Walk(k, gaps)
        for tag_set in walk.tag_sets(disks):
            rows += walk.requests(tag_set, disks)
    except KdnbError as exc:
        gaps.note("block request structures", None, exc)
    now = _now(k, gaps) if rows else None
    if any(r["_private"] for r in rows):
        _owners(dump, rows, gaps)
    for r in rows:
        r["age"] = _age(now, r["start_ns"])
        r["io_age"] = _age(now, r["io_start_ns"])
    rows.sort(key=lambda r: (r["disk"], r["hw_queue"] if r["hw_queue"] is not None else -1, r["tag"]))
    df = pd.DataFrame({
        "disk": pd.array([r["disk"] for r in rows], dtype="string"),
        **{c: fitting([r[c] for r in rows], t, c, gaps) for c, t in (
            ("hw_queue", "Int32"), ("tag", "Int32"))},
        **{c: pd.array([r[c] for r in rows], dtype="string") for c in ("op", "flags", "state")},
        **{c: fitting([r[c] for r in rows], t, c, gaps) for c, t in (
            ("sector", "UInt64"), ("bytes", "UInt64"), ("start_ns", "UInt64"))},
        "age": pd.array([r["age"] for r in rows], dtype="Float64"),
        "io_start_ns": fitting([r["io_start_ns"] for r in rows], "UInt64", "io_start_ns", gaps),
        "io_age": pd.array([r["io_age"] for r in rows], dtype="Float64"),
        "bios": fitting([r["bios"] for r in rows], "Int32", "bios", gaps),
        "pid": fitting([r.get("pid") for r in rows], "Int32", "pid", gaps),
        "comm": pd.array([r.get("comm") for r in rows], dtype="string"),
        **{c: fitting([r.get(c) for r in rows], "UInt64", c, gaps)
           for c in ("request", "queue", "task", "mapping")},
    }, columns=COLUMNS)
    return gaps.attach(df, "inflight_io")


class _Walk:
    """Layouts and enums of one kernel's blk-mq structures, and the reads that use them."""

    def __init__(self, k: "Kernel", gaps: Gaps) -> None:
        self.k, self.gaps = k, gaps
        self.queue = k.layout(k.type("struct request_queue"), ["tag_set", "mq_ops"])
        ts = k.type("struct blk_mq_tag_set")
        # 5.16 "blk-mq: Use shared tags for shared sbitmap support": one set->shared_tags
        self.set = k.layout(ts, ["tags", "nr_hw_queues"] + (["shared_tags"] if ts.has_member("shared_tags") else []))
        self.tags = k.layout(k.type("struct blk_mq_tags"), ["nr_tags", "rqs"])
        self.rq = k.layout(k.type("struct request"), [
            "q", "mq_hctx", "cmd_flags", "tag", "__data_len", "__sector", "bio", "start_time_ns",
            "io_start_time_ns", "state"])
        self.hctx = k.layout(k.type("struct blk_mq_hw_ctx"), ["queue_num"])
        self.bio = k.layout(k.type("struct bio"), ["bi_next", "bi_private", "bi_io_vec"])
        self.bv_page = k.type("struct bio_vec").offsetof("bv_page")
        self.page_mapping = k.type("struct page").offsetof("mapping")
        # 6.0's blk_opf_t series ("block: Introduce the type blk_opf_t") renamed enum req_opf req_op
        ops = _enum(k, ("enum req_op", "enum req_opf"))
        self.ops = {v: n.removeprefix("REQ_OP_") for n, v in ops.items() if n != "REQ_OP_LAST"}
        bits = _enum(k, ("enum req_flag_bits",))
        self.op_mask = (1 << bits.get("__REQ_FAILFAST_DEV", 8)) - 1  # REQ_OP_BITS
        self.flags = sorted((v, n.removeprefix("__REQ_")) for n, v in bits.items() if n != "__REQ_NR_BITS")
        states = _enum(k, ("enum mq_rq_state",))
        self.states = {v: n.removeprefix("MQ_RQ_") for n, v in states.items()} or {0: "IDLE", 1: "IN_FLIGHT", 2: "COMPLETE"}
        self.idle = states.get("MQ_RQ_IDLE", 0)

    def tag_sets(self, disks: dict[int, str]) -> list[int]:
        """The distinct tag sets of the disks' queues (bio-based queues have none)."""
        out: list[int] = []
        for queue in disks:
            raw = read_or_none(self.k, queue, self.queue.size, self.gaps, "request_queue")
            if raw is None:
                continue
            tag_set, mq_ops = self.queue.unpack(raw)
            if tag_set and mq_ops and tag_set not in out:
                out.append(tag_set)
        return out

    def requests(self, tag_set: int, disks: dict[int, str]) -> list[dict[str, Any]]:
        """The started requests of one tag set whose queue is one of ``disks``."""
        k, gaps = self.k, self.gaps
        raw = read_or_none(k, tag_set, self.set.size, gaps, "blk_mq_tag_set")
        if raw is None:
            return []
        tags_array, nr_hw, *shared = self.set.unpack(raw)
        if not 0 < nr_hw <= MAX_HW_QUEUES or not _kernel_pointer(tags_array):
            gaps.note(f"blk_mq_tag_set at {tag_set:#x}: nr_hw_queues {nr_hw}, tags {tags_array:#x}", tag_set)
            return []
        arr = read_or_none(k, tags_array, 8 * nr_hw, gaps, "blk_mq_tag_set.tags")
        all_tags = list(struct.unpack(f"<{nr_hw}Q", arr)) if arr else []
        rows: list[dict[str, Any]] = []
        seen: set[int] = set()
        for tags in dict.fromkeys(t for t in all_tags + shared if t):
            for tag, rq in self._tagged(tags):
                if rq not in seen:
                    seen.add(rq)
                    row = self._request(rq, tag, disks)
                    if row is not None:
                        rows.append(row)
        return rows

    def _tagged(self, tags: int) -> list[tuple[int, int]]:
        """(tag, request) for every non-NULL rqs[] slot of one blk_mq_tags."""
        raw = read_or_none(self.k, tags, self.tags.size, self.gaps, "blk_mq_tags")
        if raw is None:
            return []
        nr_tags, rqs = self.tags.unpack(raw)
        if not 0 < nr_tags <= MAX_TAGS or not _kernel_pointer(rqs):
            self.gaps.note(f"blk_mq_tags at {tags:#x}: nr_tags {nr_tags}, rqs {rqs:#x}", tags)
            return []
        arr = read_or_none(self.k, rqs, 8 * nr_tags, self.gaps, "blk_mq_tags.rqs")
        if arr is None:
            return []
        return [(i, p) for i, p in enumerate(struct.unpack(f"<{nr_tags}Q", arr)) if _kernel_pointer(p)]

    def _request(self, rq: int, tag: int, disks: dict[int, str]) -> dict[str, Any] | None:
        raw = read_or_none(self.k, rq, self.rq.size, self.gaps, "request")
        if raw is None:
            return None
        q, hctx, opf, own_tag, length, sector, bio, start, io_start, state = self.rq.unpack(raw)
        if state == self.idle or own_tag != tag or q not in disks:
            return None  # freed (the slot keeps its last request), or retagged, or not a disk's
        hw_queue = None
        if _kernel_pointer(hctx):
            data = read_or_none(self.k, hctx, self.hctx.size, self.gaps, "blk_mq_hw_ctx")
            hw_queue = self.hctx.unpack(data)[0] if data is not None else None
        bios, private, vec = self._bios(bio)
        op = opf & self.op_mask
        return {"disk": disks[q], "hw_queue": hw_queue, "tag": tag, "op": self.ops.get(op, str(op)),
                "flags": "|".join(n for bit, n in self.flags if opf >> bit & 1),
                "sector": sector, "bytes": length, "state": self.states.get(state, str(state)),
                "start_ns": start or None, "io_start_ns": io_start or None, "bios": bios,
                "request": rq, "queue": q, "mapping": self._mapping(vec), "_private": private}

    def _bios(self, bio: int) -> tuple[int | None, int, int]:
        """Length of the request's bio chain (bi_next; None when cut short), the first
        bi_private and bi_io_vec."""
        count, private, vec, seen = 0, 0, 0, set()
        while bio:
            if not _kernel_pointer(bio) or bio in seen or count >= MAX_BIOS:
                self.gaps.note(f"bio chain broken at {bio:#x} after {count} bios", bio)
                return None, private, vec
            raw = read_or_none(self.k, bio, self.bio.size, self.gaps, "bio")
            if raw is None:
                return None, private, vec
            seen.add(bio)
            nxt, priv, iovec = self.bio.unpack(raw)
            private, vec = (priv, iovec) if not count else (private, vec)
            count, bio = count + 1, nxt
        return count, private, vec

    def _mapping(self, vec: int) -> int | None:
        """page->mapping of the head page of a bio_vec's page; None for anonymous pages (low
        bits set) or what cannot be read."""
        if not _kernel_pointer(vec):
            return None
        try:
            page = self.k.read_u64(vec + self.bv_page)
            if not _kernel_pointer(page):
                return None
            head = self.k.read_u64(page + 8)  # compound_head: bit 0 marks a tail page
            if head & 1:
                page = compound_head(page, head)
            mapping = self.k.read_u64(page + self.page_mapping)
        except KdnbError:
            return None
        return mapping if _kernel_pointer(mapping) and not mapping & 3 else None


def _enum(k: "Kernel", names: tuple[str, ...]) -> dict[str, int]:
    for name in names:
        try:
            return enum_values(k, name)
        except KdnbError:
            continue
    return {}


def _kernel_pointer(value: int) -> bool:
    return KERNEL_MIN <= value < (1 << 64) - 4096


def _now(k: "Kernel", gaps: Gaps) -> int | None:
    from .sys import monotonic_ns
    try:
        return monotonic_ns(k)
    except KdnbError as exc:
        gaps.note("timekeeper (request ages)", None, exc)
        return None


def _age(now: int | None, stamp: int | None) -> float | None:
    return (now - stamp) / 1e9 if now is not None and stamp else None


def _owners(dump: "Dump", rows: list[dict[str, Any]], gaps: Gaps) -> None:
    """Fill pid/comm/task where a request's first bi_private is a task or on a task's stack."""
    k = dump.kernel
    tasks = dump.tasks
    by_task = {int(a): (int(p), str(c)) for a, p, c in zip(tasks["address"], tasks["pid"], tasks["comm"])}
    stacks: dict[int, int] = {}
    off = k.type("struct task_struct").offsetof("stack")
    for r in rows:
        private = r.pop("_private")
        task = private if private in by_task else None
        if task is None and private:
            if not stacks:
                for t in by_task:
                    raw = read_or_none(k, t + off, 8, gaps, "task_struct.stack")
                    if raw is not None:
                        stacks[struct.unpack("<Q", raw)[0] & ~(THREAD_SIZE - 1)] = t
            task = stacks.get(private & ~(THREAD_SIZE - 1))
        if task is not None:
            r["task"], (r["pid"], r["comm"]) = task, by_task[task]


def inflight_by_disk(block: pd.DataFrame, inflight: pd.DataFrame) -> pd.DataFrame:
    """crash `dev -d`: one row per whole disk of `block` (d.block) with its requests in flight
    from `inflight` (d.inflight_io): name, major, disk, queue, total, reads, writes, other
    (flushes, discards, ...) and oldest (the largest age in seconds, NA when none)."""
    disks = block[block["partno"] == 0]
    ops = inflight.groupby("disk")["op"]
    count = {op: inflight[inflight["op"] == op].groupby("disk").size() for op in ("READ", "WRITE")}
    total = ops.size()
    oldest = inflight.groupby("disk")["age"].max()
    names = disks["name"].astype(str)
    out = pd.DataFrame({
        "name": disks["name"].array, "major": disks["major"].array,
        "disk": disks["disk"].array, "queue": disks["queue"].array,
        "total": pd.array([int(total.get(n, 0)) for n in names], dtype="Int32"),
        "reads": pd.array([int(count["READ"].get(n, 0)) for n in names], dtype="Int32"),
        "writes": pd.array([int(count["WRITE"].get(n, 0)) for n in names], dtype="Int32"),
        "oldest": pd.array([oldest.get(n, pd.NA) for n in names], dtype="Float64"),
    })
    out.insert(7, "other", out["total"] - out["reads"] - out["writes"])
    return out.reset_index(drop=True)
