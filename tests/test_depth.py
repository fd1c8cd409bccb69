"""Root-cause depth views on the bundled samples and the corpus: d.stacks, d.locks, d.mounts,
d.runq, d.cpu_state, d.workqueues, d.whatis, the wait-for graph and the hung-task root cause."""

from __future__ import annotations

import warnings
from pathlib import Path

import pandas as pd
import pytest

import kdnb
from kdnb.views.locks import wait_for_cycles, wait_for_edges
from tests.conftest import DATA, corpus_dir, ground_truth, oracle

SAMPLES = sorted(p for p in DATA.glob("*") if (p / "ground-truth.json").exists())


def _open(folder: Path) -> kdnb.Dump:
    dump = sorted(p for p in folder.glob("vmcore*") if p.is_file())[0]
    return kdnb.open(dump)


@pytest.fixture(scope="module", params=SAMPLES, ids=lambda p: p.name)
def sample(request):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with _open(request.param) as d:
            yield d, ground_truth(request.param)


def test_stacks_cover_every_task_once(sample) -> None:
    d, truth = sample
    s, tasks = d.stacks, d.tasks
    assert int(s["count"].sum()) == len(tasks)
    members = [(p, c) for pids, cpus in zip(s["pids"], s["cpus"]) for p, c in zip(pids, cpus)]
    assert len(members) == len(tasks)
    assert (s["count"].diff().dropna() <= 0).all()  # most common chain first
    assert s["count"].iloc[0] > 1 and list(s.columns)[:3] == ["count", "top", "frames"]
    # the workload's sleeper (pause) and FIFO reader (pipe_read) are in the chains that name them
    comms = {c: top for top, cs in zip(s["top"], s["comms"]) for c in cs}
    assert comms["kdnb_fifo_rd"] in ("pipe_read", "wait_for_partner")  # reading, or opening the FIFO
    blocked = truth.get("hung_task_reported_blocked") or []
    for b in blocked:
        row = s[[b["pid"] in pids for pids in s["pids"]]].iloc[0]
        want = "fsync" if truth.get("io_hang") else "kdnb_do"  # io-hang: waits in fsync for vdb
        assert want in row["chain"] and "D" in row["states"]


def test_runq_and_cpu_state(sample) -> None:
    d, truth = sample
    rq, cs, tasks = d.runq, d.cpu_state, d.tasks
    cur = rq[rq["current"]]
    assert sorted(cur["cpu"]) == sorted(int(c) for c in d.cpus["cpu"])
    running = set(int(p) for p in tasks[tasks["is_current"]]["pid"])
    assert set(int(p) for p in cur["pid"]) == running
    ctx = truth["crash_context_cpu_pid_comm"]
    panic = cs[cs["panic"]].iloc[0]
    assert (int(panic["cpu"]), int(panic["pid"]), panic["comm"]) == (ctx["cpu"], ctx["pid"], ctx["comm"])
    other = cs[~cs["panic"]]
    assert set(other["comm"]) == {"kdnb_spin_cpu1"}  # the busy loop pinned to CPU 1
    assert set(other["context"]) <= {"task", "irq", "softirq"}  # the crash NMI taken off


def test_mounts_and_locks(sample) -> None:
    d, truth = sample
    m = d.mounts
    visible = set(m[~m["internal"]]["path"])
    assert {"/proc", "/sys", "/dev"} <= visible
    assert (m["frozen"] == "unfrozen").all()
    locks = d.locks
    blocked = truth.get("hung_task_reported_blocked") or []
    assert sorted(int(p) for p in locks["pid"]) == sorted(b["pid"] for b in blocked)
    for b in blocked:  # kdnb_hung waits for a completion nothing completes
        row = locks[locks["pid"] == b["pid"]].iloc[0]
        if truth.get("io_hang"):  # kdnb_io waits for a page's writeback: a hashed page waitqueue
            assert row["kind"] == "waitqueue" and "wait_table" in row["belongs_to"]
        else:
            assert row["kind"] == "completion" and row["detail"] == "done 0" and pd.isna(row["owner_pid"])
        assert row["waited"] > pd.Timedelta(seconds=5)


def test_whatis(sample) -> None:
    d, _truth = sample
    jiffies = d.symbol("jiffies_64")
    w = d.whatis(jiffies + 2)
    assert (w.kind, w.details["symbol"], w.details["offset"]) == ("symbol", "jiffies_64", 2)
    task = d.tasks[d.tasks["comm"] == "kdnb_sleeper"].iloc[0]
    w = d.whatis(int(task["address"]) + 16)
    assert w.kind == "task" and w.details["pid"] == int(task["pid"])
    assert "task_struct of pid" in str(w) and len(w.frame()) == 1
    cache = d.slab[d.slab["name"] == "task_struct"]
    if len(cache):  # a task_struct is an object of its cache... when the cache is not merged
        w = d.whatis(int(d.slab["address"].iloc[0]))
        assert w.kind == "slab" and w.details["cache_name"] == "kmem_cache"
    assert d.whatis(0x1000).kind == "unknown"


def test_wait_for_cycles_synthetic() -> None:
    locks = pd.DataFrame({"pid": pd.array([1, 2, 3, 4], dtype="Int32"),
                          "owner_pid": pd.array([2, 1, 1, pd.NA], dtype="Int32"),
                          "address": pd.array([0xA, 0xB, 0xB, 0xC], dtype="UInt64")})
    assert wait_for_edges(locks) == [(1, 2, 0xA), (2, 1, 0xB), (3, 1, 0xB)]
    assert wait_for_cycles(locks) == [[(1, 0xA), (2, 0xB)]]
    assert wait_for_cycles(locks.iloc[2:]) == []


# -- the corpus ---------------------------------------------------------------------------------
@pytest.mark.corpus
@pytest.mark.parametrize("name", ["k6.12-hung_task", "k5.10-hung_task"])
def test_frozen_filesystem_named(name: str) -> None:
    folder = corpus_dir(name)
    truth, drgn = ground_truth(folder), oracle(folder)
    pid = truth["hung_task_reported_blocked"][0]["pid"]
    with kdnb.open(folder / "vmcore.kdump-zlib") as d:
        m = d.mounts
        scratch = m[m["path"] == "/scratch"].iloc[0]
        assert (scratch["fstype"], scratch["frozen"], scratch["device"]) == ("ext4", "complete", "/dev/vdc")
        if name.startswith("k6.12"):  # 6.6+ records who froze it
            assert scratch["frozen_by"] == "userspace"
        row = d.locks[d.locks["pid"] == pid].iloc[0]
        assert row["kind"] == "percpu-rwsem" and "/scratch" in row["belongs_to"]
        assert "SB_FREEZE_WRITE" in row["belongs_to"] and row["function"].startswith("mnt_want_write")
        rc = d.root_cause()
        assert rc.category == "hung-task" and rc.culprit.pid == pid
        assert rc.chain[0]["role"] == "root" and rc.chain[0]["what"].startswith("/scratch frozen (")
        assert "sb_start_write" in rc.chain[0]["what"]
        # the grouped chain of the writer is drgn's D-state stack without its inlined frames
        s = d.stacks
        chain = list(s[[pid in p for p in s["pids"]]].iloc[0]["functions"])
        chain = chain[:chain.index("do_syscall_64") + 1]  # drgn names the entry code differently
        it = iter(drgn["d_state_stacks"][str(pid)])
        assert all(f in it for f in chain)  # a subsequence: drgn adds the inlined frames


@pytest.mark.corpus
def test_softlockup_cpu_and_workqueue() -> None:
    folder = corpus_dir("k7.2-softlockup")
    with kdnb.open(folder / "vmcore.kdump-zlib") as d:
        cs = d.cpu_state
        cpu0 = cs[cs["cpu"] == 0].iloc[0]
        assert cpu0["comm"] == "kdnb_trigger" and cpu0["panic"] and cpu0["context"] == "irq"
        assert cpu0["interrupted"].startswith("kdnb_do_softlockup")
        assert cpu0["running_for"] > pd.Timedelta(seconds=5)
        rq = d.runq
        queued = rq[(rq["cpu"] == 0) & ~rq["current"]]
        assert len(queued) >= 2 and (queued["waited"] > pd.Timedelta(seconds=5)).all()
        wq = d.workqueues
        stalled = wq[(wq["cpu"] == 0) & (wq["status"] == "pending")]
        assert len(stalled) and (stalled["stalled"] > pd.Timedelta(seconds=5)).all()


def test_compound_head_encodings() -> None:
    from kdnb.views.whatis import compound_head

    vmemmap = 0xFFFFFABE00000000
    head = vmemmap + 0x2618 * 64
    assert compound_head(head + 64, head + 1) == head  # the head's address + 1 (to 6.x)
    for tail in range(1, 4):  # 7.x: a mask of the 4 x 64-byte struct pages of an order-2 page
        assert compound_head(head + tail * 64, (~0xFF & (1 << 64) - 1) | 1) == head
    big = vmemmap + (1 << 24) * 3  # an order-18 (1 GiB) folio: 2^18 struct pages
    assert compound_head(big + 12345 * 64, (~((1 << 24) - 1) & (1 << 64) - 1) | 1) == big
