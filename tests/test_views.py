"""The tasks, slab, modules, sys and meminfo views against drgn's answers (oracle-drgn.json), the
ground truth of each capture and the guest's /proc snapshot; plus unit tests of their pure parts."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pandas as pd
import pytest

import kdnb
from kdnb.views.common import Gaps, IncompleteViewWarning, taint_letters
from kdnb.views.sys import panic_message
from kdnb.views.tasks import STATE_CHARS, task_state_char
from tests.conftest import DATA, corpus_dir, ground_truth, oracle

COMPLETE = ["k5.10-sysrq", "k5.10-hung_task", "k6.1-sysrq", "k6.1-oops", "k6.12-hung_task",
            "k7.2-panic", "k7.2-softlockup"]
DEGRADED = "k6.12-hung_task-degraded"
DUMPS = COMPLETE + [DEGRADED]
SAMPLES = sorted(p.parent.name for p in DATA.glob("*/ground-truth.json"))

_open: dict[str, kdnb.Dump] = {}


def _dump(folder: Path) -> kdnb.Dump:
    """One Dump per folder for the whole session (views are cached properties)."""
    key = str(folder)
    if key not in _open:
        vmcores = sorted(folder.glob("vmcore.kdump-*")) or sorted(folder.glob("vmcore*"))
        if not vmcores:
            pytest.skip(f"no vmcore in {folder}")
        _open[key] = kdnb.open(vmcores[0])
    return _open[key]


def _quiet(fn):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", IncompleteViewWarning)
        return fn()


def _folders() -> list:
    return [pytest.param(("corpus", n), id=n, marks=pytest.mark.corpus) for n in DUMPS] + \
        [pytest.param(("data", n), id=f"data-{n}") for n in SAMPLES]


def _folder(where: tuple[str, str]) -> Path:
    kind, name = where
    return corpus_dir(name) if kind == "corpus" else DATA / name


# -- unit tests -------------------------------------------------------------------------------
def test_task_state_letters() -> None:
    assert task_state_char(0, 0) == "R"
    assert task_state_char(0x1, 0) == "S"
    assert task_state_char(0x2001, 0) == "S"  # 6.1 TASK_INTERRUPTIBLE | TASK_FREEZABLE (8193)
    assert task_state_char(0x2, 0) == "D"
    assert task_state_char(0x402, 0) == "I"  # TASK_IDLE
    assert task_state_char(0x2402, 0) == "I"  # freezable idle
    assert task_state_char(0x4, 0) == "T"
    assert task_state_char(0x8, 0) == "t"
    assert task_state_char(0x0, 0x20) == "Z"
    assert task_state_char(0x80, 0x10) == "X"  # TASK_DEAD with EXIT_DEAD
    assert task_state_char(0x40, 0) == "P"
    assert task_state_char(0x8000, 0) == "D"  # TASK_FROZEN reports as uninterruptible
    assert STATE_CHARS == list("RSDTtXZPI")


def test_taint_letters() -> None:
    assert taint_letters(0) == ""
    assert taint_letters(12288) == "OE"
    assert taint_letters(1 | 1 << 9) == "PW"


def test_panic_message_rules() -> None:
    log = ["sysrq: Trigger a crash", "Kernel panic - not syncing: sysrq triggered crash",
           "Kernel panic - not syncing: again"]
    assert panic_message(log) == "Kernel panic - not syncing: sysrq triggered crash"
    oops = ["x", "BUG: kernel NULL pointer dereference, address: 0000000000000000",
            "#PF: supervisor write access in kernel mode", "#PF: error_code(0x0002) - not-present page",
            "Oops: 0002 [#1] PREEMPT SMP NOPTI", "CPU: 0 PID: 1 Comm: x"]
    assert panic_message(oops) == ("BUG: kernel NULL pointer dereference, address: 0000000000000000"
                                   " / Oops: 0002 [#1] PREEMPT SMP NOPTI")
    bug = ["kernel BUG at drivers/x.c:10!", "invalid opcode: 0000 [#1] PREEMPT SMP NOPTI"]
    assert panic_message(bug) == "kernel BUG at drivers/x.c:10! / invalid opcode: 0000 [#1] PREEMPT SMP NOPTI"
    assert panic_message(["nothing here"]) is None


def test_gaps_attach_warns_once() -> None:
    g = Gaps()
    df = pd.DataFrame({"a": [1]})
    assert g.attach(df, "x").attrs == {}
    g.note("task_struct at 0x10", 0x10, RuntimeError("gone"))
    g.note("task_struct at 0x20", 0x20)
    with pytest.warns(IncompleteViewWarning) as rec:
        g.attach(df, "tasks")
    assert len(rec) == 1
    inc = df.attrs["kdnb"]["incomplete"]
    assert inc["addresses"] == [0x10, 0x20] and "gone" in inc["reason"]


# -- corpus and samples -----------------------------------------------------------------------
COLUMN_DTYPES = {
    "tasks": {"pid": "Int32", "tgid": "Int32", "ppid": "Int32", "comm": "category", "state": "category",
              "state_raw": "UInt32", "flags": "UInt32", "is_kthread": "bool", "cpu": "Int16",
              "is_current": "bool", "prio": "Int16", "policy": "category", "start_time": "timedelta64[ns]",
              "last_run": "timedelta64[ns]", "utime": "timedelta64[ns]", "stime": "timedelta64[ns]",
              "rss_pages": "Int64", "address": "UInt64"},
    "slab": {"name": "string", "object_size": "Int32", "size": "Int32", "objs_per_slab": "Int32",
             "order": "Int16", "num_slabs": "Int64", "num_objs": "Int64", "active_objs": "Int64",
             "free_objs": "Int64", "total_bytes": "Int64", "active_bytes": "Int64", "address": "UInt64"},
    "modules": {"name": "string", "state": "category", "base": "UInt64", "size": "Int64",
                "refcount": "Int32", "taints": "string", "symbols": "Int32", "address": "UInt64"},
}


@pytest.mark.parametrize("where", _folders())
def test_columns_and_dtypes(where) -> None:
    d = _dump(_folder(where))
    for view, want in COLUMN_DTYPES.items():
        df = _quiet(lambda: getattr(d, view))
        assert list(df.columns) == list(want), view
        got = {c: str(t) for c, t in df.dtypes.items()}
        assert got == {c: ("string" if t == "string" and got[c].startswith("string") else t)
                       for c, t in want.items()}, view
        assert df.attrs["kdnb"]["release"] == d.vmcoreinfo["OSRELEASE"]
    assert list(d.tasks["state"].cat.categories) == list("RSDTtXZPI")
    mi = d.meminfo
    assert list(mi.index)[:10] == ["total", "free", "used", "buffers", "cached", "slab_reclaimable",
                              "slab_unreclaimable", "kernel_stack", "page_tables", "anon"]
    assert mi.loc["total", "pages"] == mi.loc["free", "pages"] + mi.loc["used", "pages"]
    assert (mi["pages"] >= 0).all()


@pytest.mark.corpus
@pytest.mark.parametrize("name", COMPLETE)
def test_tasks_equal_drgn(name: str) -> None:
    folder = corpus_dir(name)
    tasks = _dump(folder).tasks
    want = oracle(folder)["tasks"]
    mine = tasks[tasks["pid"] != 0]
    assert set(zip(mine["pid"], mine["comm"])) == {(t["pid"], t["comm"]) for t in want}
    by_addr = tasks.set_index("address")
    for t in want:
        row = by_addr.loc[t["address"]]
        assert (row["pid"], row["ppid"], row["state"], row["cpu"]) == \
            (t["pid"], t["ppid"], t["state"], t["cpu"]), t
    assert "incomplete" not in tasks.attrs["kdnb"]


@pytest.mark.corpus
def test_tasks_degraded_dump() -> None:
    folder = corpus_dir(DEGRADED)
    d = _dump(folder)
    d.__dict__.pop("tasks", None)
    with pytest.warns(IncompleteViewWarning):
        tasks = d.tasks
    inc = tasks.attrs["kdnb"]["incomplete"]
    assert inc["addresses"] and "not in the dump" in inc["reason"]
    want = oracle(folder)["tasks"]
    found = set(zip(tasks["pid"], tasks["comm"]))
    assert {(t["pid"], t["comm"]) for t in want} <= found
    assert len(tasks[tasks["pid"] != 0]) > len(want)  # the backwards walk recovers more than drgn


@pytest.mark.parametrize("where", _folders())
def test_tasks_ground_truth(where) -> None:
    folder = _folder(where)
    gt = ground_truth(folder)
    tasks = _quiet(lambda: _dump(folder).tasks)
    idle = tasks[tasks["pid"] == 0]
    assert sorted(idle["cpu"]) == list(range(gt["vcpus"]))
    assert idle["comm"].astype(str).tolist() == [f"swapper/{c}" for c in sorted(idle["cpu"])]
    assert (tasks.loc[tasks["is_kthread"], "rss_pages"].isna()).all()
    user = tasks[~tasks["is_kthread"]]
    assert user["rss_pages"].notna().all() and (user["rss_pages"] > 0).all()
    by_pid = tasks.drop_duplicates("pid").set_index("pid")
    degraded = where[1] == DEGRADED
    snapshot = {t["pid"]: t for t in gt["tasks_at_snapshot"]}
    for w in gt["workload_processes"]:
        if w["pid"] not in by_pid.index and degraded:
            continue  # its task_struct page was excluded from this capture
        row = by_pid.loc[w["pid"]]
        assert row["comm"] == w["comm"]
        snap = snapshot.get(w["pid"])
        if snap:
            assert row["ppid"] == snap["ppid"]
            if w["comm"] != "kdnb_spin_cpu1":
                assert row["state"] == snap["state"], w
    ctx = gt["crash_context_cpu_pid_comm"]
    cur = tasks[tasks["is_current"] & (tasks["cpu"] == ctx["cpu"])]
    assert cur["pid"].tolist() == [ctx["pid"]] and cur["comm"].tolist() == [ctx["comm"]]
    assert tasks["is_current"].sum() <= gt["vcpus"]


@pytest.mark.corpus
@pytest.mark.parametrize("name", DUMPS)
def test_slab_equals_drgn(name: str) -> None:
    folder = corpus_dir(name)
    slab = _quiet(lambda: _dump(folder).slab).set_index("name")
    want = oracle(folder)["slab"]
    for c in want:
        row = slab.loc[c["name"]]
        assert (row["num_slabs"], row["num_objs"], row["active_objs"], row["free_objs"]) == \
            (c["num_slabs"], c["num_objs"], c["active_objs"], c["free_objs"]), c
        assert (row["object_size"], row["size"]) == (c["object_size"], c["size"])
    if name in COMPLETE:
        assert len(slab) == len(want) and slab["active_objs"].notna().all()
        assert "incomplete" not in slab.attrs["kdnb"]
    else:
        assert len(slab) >= len(want) and slab.attrs["kdnb"]["incomplete"]["addresses"]
    assert (slab["active_objs"].dropna() >= 0).all()
    full = slab.dropna()
    assert (full["active_bytes"] <= full["total_bytes"]).all()


@pytest.mark.parametrize("where", _folders())
def test_slab_kdnb_obj_cache(where) -> None:
    folder = _folder(where)
    gt = ground_truth(folder)
    if not gt.get("slabinfo_kdnb_obj"):
        pytest.skip("no kdnb_obj cache in this scenario")
    slab = _quiet(lambda: _dump(folder).slab).set_index("name")
    live = gt.get("live_objects", 16) + (gt.get("leaked_objects") or 0)
    fields = gt["slabinfo_kdnb_obj"].split()
    assert slab.loc["kdnb_obj", "active_objs"] == live
    assert slab.loc["kdnb_obj", "num_objs"] == int(fields[2])
    assert slab.loc["kdnb_obj", "objs_per_slab"] == int(fields[4])


@pytest.mark.parametrize("where", _folders())
def test_modules_equal_proc_modules(where) -> None:
    folder = _folder(where)
    mods = _quiet(lambda: _dump(folder).modules)
    lines = [ln.split() for ln in (folder / "snapshot" / "modules.txt").read_text().splitlines() if ln]
    assert mods["name"].tolist() == [ln[0] for ln in lines]
    for (_, row), ln in zip(mods.iterrows(), lines):
        # name size refcount deps state base [(taints)]; the refcount may change before the crash
        assert (row["size"], row["state"], row["base"]) == (int(ln[1]), ln[4].lower(), int(ln[5], 16))
        taints = re.search(r"\((\w+)\)", " ".join(ln))
        assert row["taints"] == (taints.group(1) if taints else "")
        assert row["symbols"] > 0
    if (folder / "oracle-drgn.json").exists():
        assert mods["name"].tolist() == [m["name"] for m in oracle(folder)["modules"]]


@pytest.mark.parametrize("where", _folders())
def test_sys_info(where) -> None:
    folder = _folder(where)
    gt = ground_truth(folder)
    d = _dump(folder)
    info = _quiet(lambda: d.sys_info)
    assert info["release"] == gt["kernel_release"]
    assert info["cpus"] == gt["vcpus"]
    for part in gt["expected_panic_message"].split(" / "):
        assert part in info["panic_message"]
    if gt.get("observed_panic_message_vmcore_dmesg"):
        assert info["panic_message"] == gt["observed_panic_message_vmcore_dmesg"]
    assert info["panic_cpu"] == gt["crash_context_cpu_pid_comm"]["cpu"]
    before = taint_letters(int(gt["tainted_before_crash"]))
    # the crash itself may add D (die), L (soft lockup) or W (warning) to the taints before it
    assert set(before) <= set(info["tainted"]) and set(info["tainted"]) - set(before) <= set("DLW")
    assert info["machine"] == "x86_64" and info["version"].startswith("#")
    total_kb = int((folder / "snapshot" / "meminfo.txt").read_text().split()[1])
    assert info["memory"] == total_kb * 1024
    assert info["crash_time"] == pd.Timestamp(int(gt["vmcoreinfo"]["CRASHTIME"]), unit="s", tz="UTC") \
        if "CRASHTIME" in gt.get("vmcoreinfo", {}) else info["crash_time"] is not None
    assert pd.Timedelta(seconds=1) < info["uptime"] < pd.Timedelta(minutes=10)
    assert 0 <= info["load_avg_1"] < 100
    assert info["tasks"] == len(d.tasks)
    one = _quiet(lambda: d.sys)
    assert len(one) == 1 and one.loc[0, "release"] == gt["kernel_release"]
    mi = d.meminfo
    assert mi.loc["total", "bytes"] == info["memory"]


def test_values_that_do_not_fit_their_column_are_na_and_flagged() -> None:
    from kdnb.views.common import fitting
    gaps = Gaps()
    col = fitting([120, 1 << 40, None, -5], "Int16", "prio", gaps)
    assert col.tolist()[0] == 120 and col.isna().tolist() == [False, True, True, False]
    assert gaps and "prio" in gaps.reasons[0]
    assert fitting([1, 2], "UInt64", "address").tolist() == [1, 2]
