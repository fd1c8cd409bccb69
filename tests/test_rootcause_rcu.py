"""RCU stalls in the root cause: the stall report's lines (both the self-detected form and the
one printed by another CPU) and, on lab rcu-stall dumps in $KDNB_LAB_DUMPS, the CPU and task
named against what the crash module printed in the guest."""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

import pandas as pd
import pytest

import kdnb
from kdnb.analysis.panic_log import Report
from kdnb.analysis.rootcause_rcu import stall_parties

LAB = Path(os.environ.get("KDNB_LAB_DUMPS", "/nonexistent"))
SPINS = re.compile(r"kdnb_crash: (\S+)\[(\d+)\] spins in an RCU read-side section on CPU (\d+)")


def _report(lines: list[str]) -> Report:
    return Report("rcu-stall", 0, pd.Timedelta(0), lines[0], {}, list(enumerate(lines)))


def test_self_detected_lines() -> None:
    r = _report(["rcu: INFO: rcu_preempt self-detected stall on CPU",
                 "rcu: \t1-....: (701 ticks this GP) idle=a1bc/1/0x4000000000000000 softirq=1034/1034 fqs=358",
                 "rcu: \t(t=750 jiffies g=1197 q=23 ncpus=2)"])
    assert stall_parties(r) == ([1], [])


def test_detected_by_another_cpu_lines() -> None:
    r = _report(["rcu: INFO: rcu_sched detected stalls on CPUs/tasks:",
                 "rcu: \t3-...!: (0 ticks this GP) idle=5a4/1/0x4000000000000000 softirq=7/7 fqs=0",
                 "rcu: \t12-...0: (1 GPs behind) idle=0ec/0/0x1 softirq=0/0 fqs=2",
                 "rcu: \tTasks blocked on level-0 rcu_node (CPUs 0-15): P4242/1:b..l P77/2:b..l",
                 "\t(detected by 0, t=5252 jiffies, g=1193, q=8 ncpus=16)"])
    assert stall_parties(r) == ([3, 12], [4242, 77])


LAB_RCU = sorted(p for p in LAB.glob("k*-rcu-stall") if list(p.glob("vmcore.*")))


@pytest.mark.skipif(not LAB_RCU, reason="set KDNB_LAB_DUMPS to a folder with k<series>-rcu-stall dumps")
@pytest.mark.parametrize("folder", LAB_RCU, ids=lambda p: p.name)
def test_lab_rcu_stall(folder: Path) -> None:
    (comm, pid, cpu), = SPINS.findall((folder / "console.log").read_text(errors="replace"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with kdnb.open(sorted(folder.glob("vmcore.*"))[0]) as d:
            rc, state = d.root_cause(), d.cpu_state
    assert rc.category == "rcu-stall"
    assert (rc.culprit.comm, rc.culprit.pid, rc.culprit.cpu) == (comm, int(pid), int(cpu))
    # kdnb_spin_forever, or kdnb_do where 7.2's gcc-16 inlined it
    assert rc.culprit.module == "kdnb_crash" and rc.culprit.function.startswith(("kdnb_spin_forever", "kdnb_do+"))
    on_cpu = state[state["cpu"] == int(cpu)].iloc[0]
    assert int(on_cpu["pid"]) == int(pid) and not on_cpu["idle"]
    root = rc.chain[0]["what"]
    assert root.startswith(f"CPU {cpu} held up RCU grace periods: {comm} (pid {pid})")
    assert rc.chain[-1] == {"role": "end", "what": "Kernel panic - not syncing: RCU Stall"}
