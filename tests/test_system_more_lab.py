"""Sockets, interface counters, per-VMA RSS, the x86 interrupt rows and the OOM context against
the /proc snapshot and the log of fresh lab dumps (the kdnb_sockets workload process holds unix,
TCP, TCP6 and UDP sockets with unread data; the snapshot has /proc/net/{unix,tcp,tcp6,udp,udp6},
/proc/net/dev, /proc/interrupts and each workload process's smaps).

Equal: the sockets (by inode: path, state, addresses, ports, queues), per-VMA Rss and Anonymous
of the idle workload processes. At least the snapshot's: interface and interrupt counters.
Marked `lab`; KDNB_SYSTEM_LAB_DIRS=dir1:dir2 checks folders made earlier
(`kdnb lab make sysrq --kernel 6.12 -o dir1`, `kdnb lab make oom --kernel 6.1 -o dir2`,
`kdnb lab make oom-kill --kernel 5.10 -o dir3`)."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest

import kdnb
from tests.test_system_more import check_arch_irqs, check_counters, check_smaps, check_sockets

pytestmark = pytest.mark.lab

def check_oom(d: kdnb.Dump, folder: Path) -> None:
    gt = json.loads((folder / "ground-truth.json").read_text())
    hog = next(w["pid"] for w in gt["workload_processes"] if w["comm"] == "kdnb_hog")
    ctx = d.oom
    header = next(line for line in gt["observed_crash_lines_console"] if "invoked oom-killer" in line)
    m = re.search(r"gfp_mask=(0x[0-9a-f]+)\(([^)]*)\), order=(\d+)", header)
    assert (ctx.invoker_pid, ctx.invoker_comm) == (gt["crash_context_cpu_pid_comm"]["pid"], "kdnb_hog")
    assert (ctx.gfp_mask, "|".join(ctx.gfp_flags), ctx.order) == (int(m[1], 16), m[2], int(m[3]))
    assert ctx.constraint == "CONSTRAINT_NONE" and ctx.panic == gt["expected_panic_message"].split(": ", 1)[1]
    v = ctx.victim
    assert v["pid"] == hog and not ctx.victim_killed
    # the log prints the approximate rss counter; the dump's per-CPU sum may be ahead by batches
    assert 0 <= v["rss_pages_memory"] - v["rss_pages"] <= 64 * d.kernel.nr_cpu_ids
    z = ctx.zones
    assert (z["free"] == z["log_free"]).all() and (z["min"] + z["boost"] == z["log_min"]).all()
    assert z["below_min"].any()
    ev = d.root_cause().evidence
    assert ev["text"].str.contains(f"victim kdnb_hog \\(pid {hog}\\)").any()
    assert ev["text"].str.contains("gfp_mask=").any()
    from kdnb.ui import sections_data

    text = sections_data.memory(d)  # the report's memory section shows the OOM context
    assert "OOM context" in text and f"kdnb_hog (pid {hog}, uid 0)" in text


def check_oom_kill(d: kdnb.Dump, folder: Path) -> None:
    """The killer chose and killed the hog, then a sysrq crash: the context is the OOM's, the
    root cause the sysrq's; the victim's memory is freed by the crash (zones above min)."""
    gt = json.loads((folder / "ground-truth.json").read_text())
    hog = next(w["pid"] for w in gt["workload_processes"] if w["comm"] == "kdnb_hog")
    killed = re.search(r"Killed process (\d+) \((\S+)\) total-vm:(\d+)kB, anon-rss:(\d+)kB",
                       (folder / "dmesg.txt").read_text())
    ctx = d.oom
    assert ctx.victim_killed and ctx.constraint == "CONSTRAINT_NONE" and ctx.panic is None
    assert (ctx.victim["pid"], ctx.victim["comm"]) == (hog, "kdnb_hog") == (int(killed[1]), killed[2])
    assert ctx.victim["rss_anon_pages"] == int(killed[4]) // 4
    assert hog not in set(d.tasks["pid"])  # killed and reaped before the crash
    assert not ctx.zones["below_min"].any()
    assert d.root_cause().category == "sysrq"


def check_folder(folder: Path) -> None:
    snap = folder / "snapshot"
    workload = {c: int(p) for c, p in (line.split() for line in (snap / "workload.txt").read_text().splitlines())}
    with kdnb.open(sorted(folder.glob("vmcore.kdump-*"))[0]) as d:
        check_sockets(d, snap, workload["kdnb_sockets"])
        check_counters(d, snap)
        check_arch_irqs(d, snap)
        for comm, pid in workload.items():
            check_smaps(d, snap, comm, pid)
        scenario = json.loads((folder / "ground-truth.json").read_text())["scenario"]
        if scenario == "oom":
            check_oom(d, folder)
        elif scenario == "oom-kill":
            check_oom_kill(d, folder)
        else:
            assert d.oom is None


def _given() -> list[Path]:
    return [Path(p) for p in os.environ.get("KDNB_SYSTEM_LAB_DIRS", "").split(":") if p]


@pytest.mark.skipif(not _given(), reason="KDNB_SYSTEM_LAB_DIRS not set")
def test_given_lab_dumps() -> None:
    for folder in _given():
        check_folder(folder)


@pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="qemu-system-x86_64 not installed")
@pytest.mark.parametrize("kernel,scenario", [("6.12", "sysrq"), ("5.10", "sysrq"), ("6.12", "oom"),
                                             ("6.1", "oom"), ("6.12", "oom-kill"), ("5.10", "oom-kill")])
def test_fresh_lab_dump(tmp_path: Path, kernel: str, scenario: str) -> None:
    import kdnb.lab

    path = kdnb.lab.make(scenario, kernel=kernel, formats=("kdump-zlib",), out_dir=tmp_path / "out",
                         progress=None)
    check_folder(path.parent)
