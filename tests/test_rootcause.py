"""Panic root cause on the corpus dumps, the bundled samples, and synthetic logs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

import kdnb
from kdnb.analysis.panic_log import panic_reason, parse_panic_log
from kdnb.analysis.rootcause import CATEGORIES, EXPLANATIONS, _classify
from tests.conftest import DATA, corpus_dir, ground_truth

CORPUS_EXPECT = {
    "k5.10-sysrq": ("sysrq", "sh", "sysrq_handle_crash", None),
    "k5.10-hung_task": ("hung-task", "kdnb_frozen_wr", "mnt_want_write", None),
    "k7.2-panic": ("panic-call", "kdnb_trigger", "trigger_write", "kdnb_crash"),
    "k7.2-softlockup": ("soft-lockup", "kdnb_trigger", "kdnb_do", "kdnb_crash"),
    "k6.1-sysrq": ("sysrq", "sh", "sysrq_handle_crash", None),
    "k6.1-oops": ("null-deref", "kdnb_trigger", "kdnb_do_oops", "kdnb_crash"),
    "k6.12-hung_task": ("hung-task", "kdnb_frozen_wr", "mnt_want_write", None),
    "k6.12-hung_task-degraded": ("hung-task", "kdnb_frozen_wr", "mnt_want_write", None),
}
SCENARIO_CATEGORY = {
    "sysrq": "sysrq", "oops": "null-deref", "mod_oops": "null-deref", "bug": "bug",
    "panic": "panic-call", "warn": "warn", "softlockup": "soft-lockup", "hung": "hung-task",
    "hung_task": "hung-task", "oom": "oom", "cascade": "soft-lockup", "rcu-stall": "rcu-stall",
    "slab-leak": "sysrq", "io-hang": "io-hang",
}


@pytest.mark.corpus
@pytest.mark.parametrize("name", sorted(CORPUS_EXPECT))
def test_corpus_root_cause(name: str) -> None:
    folder = corpus_dir(name)
    truth = ground_truth(folder)
    category, comm, function, module = CORPUS_EXPECT[name]
    with kdnb.open(folder / "vmcore.kdump-zlib") as d:
        rc = d.root_cause()
    assert rc.category == category
    assert rc.culprit.comm == comm
    assert rc.culprit.function.startswith(function)
    assert rc.culprit.module == module
    if truth["hung_task_reported_blocked"]:
        assert rc.culprit.pid == truth["hung_task_reported_blocked"][0]["pid"]
    else:
        assert rc.culprit.pid == truth["crash_context_cpu_pid_comm"]["pid"]
        assert rc.culprit.cpu == truth["crash_context_cpu_pid_comm"]["cpu"]
    for part in truth["expected_panic_message"].split(" / "):
        assert part in rc.message
    assert len(rc.evidence) >= 2 and set(rc.evidence.columns) >= {"kind", "text", "why"}
    assert rc.chain and rc.chain[-1]["role"] == "end"
    assert category in str(rc) and "<h3>" in rc._repr_html_()
    json.dumps(rc.to_dict(), default=str)


def _sample_dirs() -> list[Path]:
    return sorted(p.parent for p in DATA.glob("*/ground-truth.json"))


@pytest.mark.parametrize("folder", _sample_dirs(), ids=lambda p: f"data-{p.name}")
def test_samples_root_cause(folder: Path) -> None:
    truth = ground_truth(folder)
    dumps = sorted(p for p in folder.glob("vmcore*") if p.is_file())
    with kdnb.open(dumps[0]) as d:
        rc = d.root_cause()
    assert rc.category == SCENARIO_CATEGORY[truth["scenario"]]
    if truth.get("hung_task_reported_blocked"):
        who = truth["hung_task_reported_blocked"][0]
    elif truth.get("module_trigger"):
        who = truth["module_trigger"]
    else:
        who = truth["crash_context_cpu_pid_comm"]
    assert (rc.culprit.pid, rc.culprit.comm) == (who["pid"], who["comm"])
    if truth.get("module_trigger") and rc.category != "sysrq":
        assert rc.culprit.module == "kdnb_crash" and "O" in rc.culprit.module_taints


def _log(lines: list[str]) -> pd.DataFrame:
    return pd.DataFrame({"seq": range(len(lines)), "time": pd.to_timedelta(range(len(lines)), unit="s"),
                         "text": lines})


@pytest.mark.parametrize("lines,category", [
    (["kernel BUG at mm/slub.c:123!", "invalid opcode: 0000 [#1] SMP",
      "CPU: 1 PID: 7 Comm: kworker/1:0 Tainted: G           OE      6.1.0 #1",
      "RIP: 0010:kmem_cache_free+0x1/0x2", "Kernel panic - not syncing: Fatal exception"], "bug"),
    (["WARNING: CPU: 0 PID: 5 at drivers/x.c:1 foo+0x1/0x2 [mod]",
      "Kernel panic - not syncing: kernel: panic_on_warn set ..."], "warn"),
    (["watchdog: BUG: soft lockup - CPU#1 stuck for 22s! [spin:99]",
      "Kernel panic - not syncing: softlockup: hung tasks"], "soft-lockup"),
    (["Kernel panic - not syncing: Out of memory: system-wide panic_on_oom is enabled"], "oom"),
    (["Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000009"], "init-died"),
    (["Kernel panic - not syncing: kdnb_crash: deliberate panic"], "panic-call"),
    (["rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:",
      "Kernel panic - not syncing: RCU Stall"], "rcu-stall"),
    (["BUG: unable to handle page fault for address: ffffc90000000000", "Oops: 0000 [#1] SMP"],
     "page-fault"),
    (["hello", "world"], "unknown"),
])
def test_classify_synthetic_logs(lines: list[str], category: str) -> None:
    assert _classify(parse_panic_log(_log(lines)))[0] == category


def test_every_category_explained() -> None:
    assert set(CATEGORIES) == set(EXPLANATIONS)
    assert all(EXPLANATIONS[c].endswith(".") for c in CATEGORIES)
    assert panic_reason("Fatal exception in interrupt") == "oops-followup"


@pytest.mark.lab
@pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="qemu-system-x86_64 not installed")
def test_cascade_root_is_the_lock_holder(tmp_path: Path) -> None:
    """A real cascade: the hung-task panic is the symptom, the spinning lock holder the root."""
    import kdnb.lab

    path = kdnb.lab.make("cascade", kernel="6.1", out_dir=tmp_path / "out", progress=None)
    with kdnb.open(path) as d:
        rc = d.root_cause()
    assert rc.category == "soft-lockup"
    assert rc.culprit.comm == "kdnb_holder" and rc.culprit.module == "kdnb_crash"
    assert [step["role"] for step in rc.chain] == ["root", "effect", "symptom", "end"]
    assert ("hung-task", rc.alternatives[0][1]) == rc.alternatives[0]
    assert "kdnb_lock" in " ".join(rc.evidence["text"])
