"""The crash-style commands, checked for content (in-process, on the bundled samples)."""

from __future__ import annotations

import csv
import io
import json
import warnings
from pathlib import Path

import pytest

from kdnb.cli import EXIT_ERROR, main
from tests.conftest import DATA, ground_truth

HUNG = DATA / "k5.10-hung"  # kdnb_hung blocked on a completion; the module's symbols resolve
OOPS = DATA / "k6.1-oops"


def _dump(folder: Path) -> str:
    return str(sorted(p for p in folder.glob("vmcore*") if p.is_file())[0])


def run(capsys, *argv: str) -> tuple[int, str, str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rc = main(list(argv))
    out = capsys.readouterr()
    return rc, out.out, out.err


@pytest.fixture(scope="module")
def truth() -> dict:
    return ground_truth(HUNG)


def test_ps(capsys, truth) -> None:
    rc, out, _ = run(capsys, "ps", _dump(HUNG))
    lines = out.splitlines()
    assert rc == 0 and lines[0].split() == ["PID", "PPID", "CPU", "TASK", "ST", "RSS", "COMM"]
    blocked = truth["hung_task_reported_blocked"][0]
    row = next(line.split() for line in lines if line.endswith(" kdnb_hung"))
    assert row[0] == str(blocked["pid"]) and row[4] == "D"
    assert sum(line.startswith(">") for line in lines) == 2  # one running task per CPU
    rc, out, _ = run(capsys, "ps", "-s", "D", _dump(HUNG))
    assert [line.split()[-1] for line in out.splitlines()[1:]] == ["kdnb_hung"]


def test_bt_grouped_and_by_pid(capsys, truth) -> None:
    rc, out, _ = run(capsys, "bt", _dump(HUNG))
    assert rc == 0 and out.startswith("== ")
    groups = [line for line in out.splitlines() if line.startswith("== ")]
    assert any(" [D] in kdnb_do: pids " in g for g in groups)
    assert "  #0  __schedule+" in out
    pid = str(truth["hung_task_reported_blocked"][0]["pid"])
    rc, out, _ = run(capsys, "bt", pid, "1", _dump(HUNG))
    assert rc == 0 and f"PID: {pid}  COMMAND: kdnb_hung  STATE: D" in out
    assert "PID: 1  COMMAND: init" in out and "kdnb_do+" in out
    rc, out, _ = run(capsys, "bt", "--json", pid, _dump(HUNG))
    frames = json.loads(out)
    assert frames[0]["pid"] == int(pid) and any(f["text"].startswith("kdnb_do+") for f in frames)


def test_log_filters(capsys) -> None:
    rc, out, _ = run(capsys, "log", "-l", "err", _dump(HUNG))
    assert rc == 0 and "<emerg> Kernel panic - not syncing: hung_task: blocked tasks" in out
    assert "<info>" not in out
    rc, out, _ = run(capsys, "log", "-g", "blocked for more than", _dump(HUNG))
    assert len(out.splitlines()) == 1 and "INFO: task kdnb_hung" in out


def test_runq_kmem_mod_mount(capsys) -> None:
    rc, out, _ = run(capsys, "runq", _dump(OOPS))
    assert rc == 0 and "CPU 0 (panic CPU): nr_running" in out and "CURRENT [    fair]" in out
    assert "kdnb_spin_cpu1" in out
    rc, out, _ = run(capsys, "kmem", "-s", _dump(OOPS))
    assert rc == 0 and "task_struct" in out and "KiB" in out
    rc, out, _ = run(capsys, "kmem", _dump(OOPS))  # the system-state view still answers kmem
    assert rc == 0 and "MemTotal" in out
    rc, out, _ = run(capsys, "mod", "--csv", _dump(OOPS))
    rows = list(csv.DictReader(io.StringIO(out)))
    mod = next(r for r in rows if r["name"] == "kdnb_crash")
    assert mod["taints"] == "OE" and mod["address"].startswith("0xffffffffc")
    rc, out, _ = run(capsys, "mount", _dump(OOPS))
    assert rc == 0 and "/proc" in out and "sockfs" not in out
    rc, out, _ = run(capsys, "mount", "-a", _dump(OOPS))
    assert "sockfs" in out


def test_locks_and_whatis(capsys, truth) -> None:
    rc, out, _ = run(capsys, "locks", _dump(HUNG))
    assert rc == 0
    row = out.splitlines()[1].split()
    assert row[:4] == ["completion", row[1], "kdnb_never", "[kdnb_crash]"]
    rc, out, _ = run(capsys, "locks", "--json", _dump(HUNG))
    lock = json.loads(out)[0]
    assert lock["pid"] == truth["hung_task_reported_blocked"][0]["pid"] and lock["waited"] > 5
    rc, out, _ = run(capsys, "whatis", lock["address"], _dump(HUNG))
    assert rc == 0 and out.startswith(f"{lock['address']}: symbol: kdnb_never+0x0")
    rc, out, _ = run(capsys, "whatis", "--json", lock["address"], _dump(HUNG))
    assert json.loads(out)[0]["symbol"] == "kdnb_never"


def test_bad_input_is_one_line(capsys) -> None:
    for argv in (("bt", "999999", _dump(HUNG)), ("log", "-l", "loud", _dump(HUNG)),
                 ("whatis", "zz", _dump(HUNG)), ("ps", "/nonexistent/vmcore")):
        rc, out, err = run(capsys, *argv)
        assert rc == EXIT_ERROR and len(err.strip().splitlines()) == 1 and err.startswith("kdnb: ")


def test_shell(capsys) -> None:
    pytest.importorskip("IPython")
    rc, out, _ = run(capsys, "shell", "--dry-run", _dump(HUNG))
    assert rc == 0 and out.startswith("d = kdnb.open(")
