"""The scale scenario's knobs, its guest script, its ground truth, and its helper run on this host."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from kdnb.errors import KdnbError
from kdnb.lab import scenarios
from kdnb.lab.cli import add_subparser
from kdnb.lab.formats import parse_formats
from kdnb.lab.guest import first_init
from kdnb.lab.scale import LIMITS, SCALE_DIR, facts, log_buf_len, scenario

MODULE = Path(scenarios.__file__).resolve().parent / "module"


def test_knobs_shape_the_scenario() -> None:
    sc = scenario(procs=5000, threads=2, files=20000, log_lines=50000)
    assert sc.knobs == {"procs": 5000, "threads": 2, "files": 20000, "log_lines": 50000}
    assert sc.helpers == ("kdnb_scale",)
    assert "printk.devkmsg=on" in sc.cmdline
    assert f"log_buf_len={log_buf_len(50000)}" in sc.cmdline
    assert any(s.startswith(f"kdnb_scale 5000 2 20000 50000 {SCALE_DIR}") for s in sc.steps)
    assert scenarios.get(sc) is sc
    script = first_init(sc, parse_formats(("kdump-zlib",)))
    mount = script.index(f"mount -t tmpfs -o nr_inodes=0 scale {SCALE_DIR}")
    run = script.index("\nkdnb_scale 5000 2 20000 50000 ")
    assert script.index("step crash") < mount < run < script.index("kdnb_as kdnb_trigger", run)


def test_log_buf_len_holds_the_lines() -> None:
    assert log_buf_len(0) == 1 << 20
    for n in (1, 5000, 50000, LIMITS["log_lines"]):
        size = log_buf_len(n)
        assert size & (size - 1) == 0 and size >= (n + 4096) * 128
    assert log_buf_len(50000) < log_buf_len(200000)


@pytest.mark.parametrize("knob,value", [("procs", -1), ("procs", LIMITS["procs"] + 1),
                                         ("threads", 0), ("files", 1.5), ("log_lines", "9")])
def test_bad_knobs_are_refused(knob: str, value: object) -> None:
    with pytest.raises(KdnbError, match=knob):
        scenario(**{knob: value})


def test_facts_read_the_helper_line() -> None:
    console = ["[   30.1] KDNB-SCALE procs=7 threads=2 tasks=14 files=9 files_open=9 loglines=100",
               "noise"]
    f = facts({"procs": 7, "threads": 2, "files": 9, "log_lines": 100}, console)
    assert f["reported"] == {"procs": 7, "threads": 2, "tasks": 14, "files": 9, "files_open": 9,
                             "loglines": 100}
    assert facts({"procs": 7}, ["nothing"])["reported"] is None


def test_cli_builds_scale(monkeypatch: pytest.MonkeyPatch) -> None:
    import argparse

    from kdnb.lab import run

    seen = {}
    monkeypatch.setattr(run, "make", lambda sc, **kw: seen.setdefault("sc", sc) and Path("/x"))
    parser = argparse.ArgumentParser()
    add_subparser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["lab", "make", "scale", "--procs", "12", "--threads", "3",
                              "--files", "4", "--log-lines", "5"])
    assert args.func(args) == 0
    assert seen["sc"].knobs == {"procs": 12, "threads": 3, "files": 4, "log_lines": 5}
    args = parser.parse_args(["lab", "make", "sysrq"])
    args.func(args)
    assert seen["sc"].knobs == {"procs": 12, "threads": 3, "files": 4, "log_lines": 5}


@pytest.mark.skipif(shutil.which("gcc") is None, reason="no gcc")
def test_helper_runs_here(tmp_path: Path) -> None:
    """kdnb_scale built as the lab builds it, run on this host without log lines (no /dev/kmsg
    writes); its process group (which this test starts) is killed at the end."""
    exe = tmp_path / "kdnb_scale"
    subprocess.run(["gcc", "-static", "-O2", "-o", str(exe), str(MODULE / "kdnb_scale.c")],
                   check=True, capture_output=True)
    files = tmp_path / "fs"
    files.mkdir()
    proc = subprocess.Popen([str(exe), "4", "3", "25", "0", str(files)], stdout=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        assert proc.wait(timeout=60) == 0  # the sleepers keep stdout open: read one line
        out = proc.stdout.readline()
        group = proc.pid
        assert out.strip() == "KDNB-SCALE procs=4 threads=3 tasks=12 files=25 files_open=25 loglines=0"
        assert len(list(files.iterdir())) == 25
        comms = {}
        for p in Path("/proc").iterdir():
            if p.name.isdigit():
                try:
                    if os.getpgid(int(p.name)) == group:
                        comm = (p / "comm").read_text().strip()
                        comms[comm] = comms.get(comm, 0) + len(list((p / "task").iterdir()))
                except (OSError, ProcessLookupError):
                    continue
        assert comms == {"kdnb_scale": 12, "kdnb_files": 1}
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.stdout.close()
