"""Production-size lab dumps (`kdnb lab make scale`) read back with the counts their ground truth
records: the kdnb_scale sleepers' processes and threads, the tmpfs files kdnb_files holds open,
the helper's log lines, and every task's stack.

Marked `lab`. It checks the scale dumps in $KDNB_SCALE_DUMPS (default /work/scale-dumps: the
folders `kdnb lab make scale -o /work/scale-dumps/NAME` writes) and, with
KDNB_SCALE_FRESH=1, makes a small one first (one guest, ~2 minutes under TCG).
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import pytest

import kdnb

pytestmark = pytest.mark.lab

ROOT = Path(os.environ.get("KDNB_SCALE_DUMPS", "/work/scale-dumps"))


def _folders() -> list[Path]:
    return sorted(p.parent for p in ROOT.glob("*/ground-truth.json")
                  if "scale" in json.loads(p.read_text()))


def check_counts(folder: Path) -> None:
    """Every count of the ground truth's "scale" entry, as kdnb reads it from the dump."""
    gt = json.loads((folder / "ground-truth.json").read_text())
    sc = gt["scale"]
    rep = sc["reported"]
    assert rep is not None, "the helper's KDNB-SCALE line never reached the console"
    assert rep["procs"] == sc["requested"]["procs"] and rep["files_open"] == sc["requested"]["files"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with kdnb.open(folder / "vmcore.kdump-zlib") as d:
            t = d.tasks
            sleepers = t[t["comm"] == sc["sleeper_comm"]]
            assert len(sleepers) == rep["tasks"] == rep["procs"] * rep["threads"]
            per_process = sleepers.groupby("tgid").size()
            assert len(per_process) == rep["procs"]
            assert set(per_process) == {rep["threads"]}
            assert t["state"].isna().sum() == 0 and t["address"].is_unique
            owner = t.loc[t["comm"] == sc["files_owner_comm"], "pid"]
            assert len(owner) == 1
            files = d.files(int(owner.iloc[0]))
            in_tmpfs = files[files["path"].str.startswith(sc["tmpfs"] + "/")]
            assert len(in_tmpfs) == rep["files_open"]
            assert in_tmpfs["path"].is_unique and in_tmpfs["inode"].is_unique
            lines = d.log["text"].str.startswith(sc["log_line_text"] + " ")
            assert int(lines.sum()) == rep["loglines"]
            idx = d.log.loc[lines, "text"].str.rsplit(" ", n=1).str[1].astype(int)
            assert sorted(idx) == list(range(rep["loglines"]))
            bt = d.backtraces(states="all")
            reasons = bt.attrs["kdnb"]["stop_reasons"]
            assert len(reasons) >= len(t) - len(d.cpus)
            done = sum(v in ("end of stack", "user mode") for v in reasons.values())
            assert done >= 0.99 * len(reasons), f"{done}/{len(reasons)} stacks complete"


@pytest.mark.skipif(not _folders(), reason=f"no scale dumps under {ROOT}")
@pytest.mark.parametrize("folder", _folders(), ids=lambda p: p.name)
def test_scale_dump_counts(folder: Path) -> None:
    check_counts(folder)


@pytest.mark.skipif(os.environ.get("KDNB_SCALE_FRESH") != "1", reason="KDNB_SCALE_FRESH=1 not set")
def test_fresh_small_scale_dump(tmp_path: Path) -> None:
    from kdnb.lab.run import make
    from kdnb.lab.scale import scenario

    make(scenario(procs=50, threads=3, files=300, log_lines=2000), kernel="6.1", memory="1G",
         out_dir=tmp_path / "k6.1-scale", progress=None)
    check_counts(tmp_path / "k6.1-scale")
