"""I/O hangs: a hung task that waits in the block layer for a request a disk never completes.

The task's stack says it waits for block I/O (io_schedule under folio_wait_writeback,
submit_bio_wait, blk_mq_get_tag, rq_qos_wait, ...); d.inflight_io says which disk has requests
in flight and for how long. The disk is the one whose request names the task (its first bio's
bi_private), else the one whose request carries a page of a file the task has open (the
request's page->mapping is the file's f_mapping: the writeback the task waits for), else the one
the task has open (a block device in d.files), else the only disk with requests in flight.
The answer names the disk and the task's request (else the disk's oldest) with its age.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd

from ..errors import KdnbError
from .rootcause_model import RESCHED_FUNCS, WAIT_FUNCS, Analysis, Culprit

if TYPE_CHECKING:  # pragma: no cover
    from .panic_log import PanicLog
    from .rootcause_wait import WaitCause

#: Block-layer and page-cache functions a task waiting for block I/O sleeps in (the first
#: frames below the scheduler); the last of them before the caller's own code is named.
IO_WAIT_FUNCS = ("io_schedule", "blk_io_schedule", "folio_wait_bit", "folio_wait_writeback",
                 "folio_wait_locked", "__folio_lock", "wait_on_page_bit", "wait_on_page_writeback",
                 "__lock_page", "__wait_on_buffer", "bit_wait_io", "out_of_line_wait_on_bit",
                 "submit_bio_wait", "wait_for_completion_io", "blk_execute_rq", "blk_mq_get_tag",
                 "__blk_mq_alloc_request", "blk_mq_alloc_request", "rq_qos_wait", "wbt_wait",
                 "__rq_qos_throttle", "blk_mq_freeze_queue_wait", "__blkdev_direct_IO",
                 "blkdev_direct_IO", "iomap_dio_rw", "__iomap_dio_rw", "jbd2_log_wait_commit",
                 "sync_dirty_buffer", "__sync_dirty_buffer")
MAX_ROWS = 8  # requests of the disk shown as evidence
#: Callers whose frame ends the wait (what the task was doing), never named as the waiter.
STOP = ("do_syscall_64", "entry_SYSCALL", "ret_from_fork", "kthread")


def io_wait_function(frames: list[str]) -> str | None:
    """The block-layer function a stack (innermost first) waits in, or None when it does not
    wait for block I/O: the outermost of its first IO_WAIT_FUNCS frames."""
    found = None
    for fn in frames:
        if fn.startswith(IO_WAIT_FUNCS):
            found = fn
        elif fn.startswith(STOP) or not fn.startswith(WAIT_FUNCS + RESCHED_FUNCS):
            break
    return found


def explain_io(an: Analysis, plog: "PanicLog", blocked: Culprit) -> "WaitCause | None":
    """The disk a hung task's block I/O waits on, or None when the task is not waiting for
    block I/O or no disk has a request in flight."""
    from .rootcause_wait import WaitCause, _symptom

    if blocked.pid is None:
        return None
    pid = blocked.pid
    bt = an.get(f"backtrace of pid {pid}", lambda: an.dump.backtrace(pid=pid))
    frames = [str(f) for f in bt["function"] if pd.notna(f)] if bt is not None else []
    where = io_wait_function(frames)
    io = an.get("requests in flight", lambda: an.dump.inflight_io)
    if io is None or not len(io):
        return None
    mine = io[io["pid"] == pid]
    if where is None and not len(mine):
        return None
    disk, how, path, mapping = _disk(an, io, mine, pid)
    if disk is None:
        return None
    on_disk = io[io["disk"] == disk].sort_values("age", ascending=False, na_position="last")
    named = mine if len(mine) else on_disk[on_disk["mapping"] == mapping] if how == "page" else on_disk
    rq = named.iloc[0].to_dict()
    for r in on_disk.head(MAX_ROWS).to_dict("records"):
        an.add("io", f"{disk}: {_request(r)} (tag {r['tag']}, hw queue {_na(r['hw_queue'])}, state "
               f"{r['state']}, {_na(r['bios'])} bio(s), request {int(r['request']):#x})",
               "a request in flight at the crash", pid=None if pd.isna(r["pid"]) else int(r["pid"]))
    others = sorted(set(io["disk"]) - {disk})
    if others:
        an.add("io", "requests in flight on other disks too: " + ", ".join(
            f"{d} ({int((io['disk'] == d).sum())})" for d in others), "the rest of d.inflight_io")
    waiter = f"{blocked.comm} (pid {pid})"
    where_text = f" in {where}" if where else ""
    more = f" ({len(on_disk)} requests in flight there)" if len(on_disk) > 1 else ""
    link = {"owner": f"{waiter} waits for it{where_text}",
            "page": f"{waiter} waits for it{where_text} (it writes back a page of {path}, which "
                    f"{blocked.comm} has open)" if rq["op"] == "WRITE" else
                    f"{waiter} waits for it{where_text} (it carries a page of {path}, which "
                    f"{blocked.comm} has open)",
            "open": f"{waiter}, which has {path} open, waits{where_text}",
            "only": f"{waiter} waits{where_text} ({disk} is the only disk with requests in flight)"}[how]
    root = f"{disk}: {_request(rq)}{more}; {link}"
    c = Culprit(pid=pid, comm=blocked.comm, cpu=blocked.cpu, function=where or blocked.function)
    an.add("task", f"{waiter} sleeps (state D){where_text} for block I/O on {disk}",
           "the blocked task and the disk it waits on", pid=pid)
    confidence = {"owner": 0.9, "page": 0.9, "open": 0.8, "only": 0.6}[how]
    chain = [{"role": "root", "what": root},
             {"role": "effect", "what": f"{waiter} sleeps in D state{where_text} until {disk} "
                                        "completes the request"}]
    return WaitCause("io-hang", c, chain + _symptom(plog), confidence,
                     f"the task waits for block I/O that {disk} never completed")


def _disk(an: Analysis, io: pd.DataFrame, mine: pd.DataFrame,
          pid: int) -> tuple[str | None, str, str, int | None]:
    """The disk the task waits on, how it is linked to it, the file and its address_space:
    "owner" (a request's bio names the task), "page" (a request carries a page of a file the
    task has open), "open" (the task has the disk open), "only" (the only busy disk)."""
    if len(mine):
        return str(mine.iloc[0]["disk"]), "owner", "", None
    busy = list(dict.fromkeys(str(d) for d in io["disk"]))
    files = an.get(f"open files of pid {pid}", lambda: an.dump.files(pid))
    if files is not None and len(files):
        mappings = an.get(f"file mappings of pid {pid}", lambda: _mappings(an, files)) or {}
        for disk, mapping in zip(io["disk"], io["mapping"]):
            if pd.notna(mapping) and int(mapping) in mappings:
                return str(disk), "page", mappings[int(mapping)], int(mapping)
        opened = {str(p).rsplit("/", 1)[-1] for p, t in zip(files["path"], files["type"])
                  if str(t) == "block" and pd.notna(p)}
        hit = [d for d in busy if d in opened]
        if hit:
            return hit[0], "open", f"/dev/{hit[0]}", None
    if len(busy) == 1:
        return busy[0], "only", "", None
    return None, "", "", None


def _mappings(an: Analysis, files: pd.DataFrame) -> dict[int, str]:
    """f_mapping (the page cache a file's I/O goes through) -> path, of a task's open files."""
    k = an.dump.kernel
    off = k.type("struct file").offsetof("f_mapping")
    out: dict[int, str] = {}
    for path, file in zip(files["path"], files["file"]):
        try:
            if pd.notna(file):
                out.setdefault(k.read_u64(int(file) + off), str(path))
        except KdnbError:  # one unreadable struct file: the others still link
            continue
    out.pop(0, None)
    return out


def _request(r: dict) -> str:
    """`a WRITE of 4096 bytes at sector 128 has been in flight for 7.3 s` for one d.inflight_io row."""
    age, op = r["age"], str(r["op"])
    article = "an" if op[:1] in "AEIOU" else "a"
    return (f"{article} {op} of {_na(r['bytes'])} bytes at sector {_na(r['sector'])} "
            + (f"has been in flight for {age:.1f} s" if pd.notna(age) else "is in flight (age unknown)"))


def _na(v: object) -> str:
    return "?" if pd.isna(v) else str(int(v))
