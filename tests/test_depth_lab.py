"""The lock scenarios in real guests: the wait-for graph and the root cause against what the
crash module printed in the guest (lock addresses, holders). Slow: marked `lab`."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

import kdnb

pytestmark = [pytest.mark.lab,
              pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="no QEMU")]
HOLDS = re.compile(r"kdnb_crash: (\S+)\[(\d+)\] holds (\w+) \(([0-9a-f]+)\)")


def _make(scenario: str, tmp_path: Path) -> tuple[Path, list[tuple[str, int, str, int]]]:
    import kdnb.lab

    path = kdnb.lab.make(scenario, kernel="6.12", out_dir=tmp_path / scenario, progress=None)
    console = (path.parent / "console.log").read_text(errors="replace")
    return path, [(m[1], int(m[2]), m[3], int(m[4], 16)) for m in HOLDS.findall(console)]


def test_deadlock_cycle(tmp_path: Path) -> None:
    path, holds = _make("deadlock", tmp_path)
    with kdnb.open(path) as d:
        rc, locks = d.root_cause(), d.locks
    assert rc.category == "deadlock" and rc.culprit.module == "kdnb_crash"
    owner_of = {addr: pid for _comm, pid, _name, addr in holds}
    assert len(owner_of) == 2
    for row in locks.itertuples():
        assert owner_of[int(row.address)] == int(row.owner_pid) != int(row.pid)
    assert {pid for _c, pid, _n, _a in holds} == {rc.culprit.pid} | set(int(p) for p in locks["owner_pid"])


def test_rwsem_reader_is_the_root(tmp_path: Path) -> None:
    path, holds = _make("rwsem", tmp_path)
    (comm, pid, name, addr), = holds
    with kdnb.open(path) as d:
        rc, locks = d.root_cause(), d.locks
    row = locks[locks["address"] == addr].iloc[0]
    assert row["kind"] == "rwsem" and int(row["owner_pid"]) == pid and "reader" in row["detail"]
    assert (rc.category, rc.culprit.pid, rc.culprit.comm) == ("hung-task", pid, comm)


def test_wq_stall_names_the_work_item(tmp_path: Path) -> None:
    path, _holds = _make("wq-stall", tmp_path)
    with kdnb.open(path) as d:
        rc, wq = d.root_cause(), d.workqueues
    running = wq[wq["function"] == "kdnb_wq_fn [kdnb_crash]"].iloc[0]
    assert running["status"] == "running"
    assert rc.culprit.pid == int(running["pid"]) and rc.culprit.function.startswith("kdnb_wq_fn")
    assert "never finishes" in rc.chain[0]["what"]
