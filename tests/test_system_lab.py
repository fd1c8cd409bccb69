"""The system-state views against the /proc snapshot a fresh lab dump records (maps, fd, fdinfo,
zoneinfo, partitions, net/dev, interrupts, sysctls), on every kernel series: values the idle guest
cannot change between the snapshot and the crash must be equal.

Marked `lab` (each dump boots two kernels in QEMU). KDNB_SYSTEM_LAB_DIRS=dir1:dir2 checks lab
output folders made earlier instead (`kdnb lab make sysrq --kernel 6.12 -o dir1`)."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest

import kdnb
from tests.test_system import _at_least_the_snapshot, _same_as_snapshot, workload

pytestmark = pytest.mark.lab


def maps_line(r) -> str:
    """A VMA as /proc/PID/maps prints it (blanks collapsed)."""
    path = "" if pd.isna(r.path) else r.path
    return " ".join(f"{r.start:08x}-{r.end:08x} {r.perms} {r.offset:08x} {r.dev} {r.inode} {path}".split())


def check_against_snapshot(folder: Path) -> None:
    """Every comparison of this module on one lab output folder."""
    snap = folder / "snapshot"
    with kdnb.open(sorted(folder.glob("vmcore.kdump-*"))[0]) as d:
        assert d.cmdline == (snap / "cmdline.txt").read_text().removesuffix("\n")
        _same_as_snapshot(d.sysctl, snap / "sysctl.txt")
        _at_least_the_snapshot(d.irqs, snap / "interrupts.txt")
        for comm, pid in workload(folder).items():
            maps = [" ".join(line.split()) for line in (snap / f"maps-{comm}.txt").read_text().splitlines()]
            assert [maps_line(r) for r in d.vmas(pid).itertuples()] == maps, comm
            files = d.files(pid).set_index("fd")
            targets = dict(re.findall(r" (\d+) -> (.*)$", (snap / f"fd-{comm}.txt").read_text(), re.M))
            assert {int(fd): t for fd, t in targets.items()} == files["path"].to_dict(), comm
            for block in (snap / f"fdinfo-{comm}.txt").read_text().split("fd: ")[1:]:
                fd, *rest = block.splitlines()
                info = dict(line.split(":\t") for line in rest if ":\t" in line)
                row = files.loc[int(fd)]
                want = {"pos": int(info["pos"]), "flags": int(info["flags"], 8),
                        "mnt_id": int(info["mnt_id"]), "inode": int(info.get("ino", row["inode"]))}
                assert {c: row[c] for c in want} == want, (comm, fd)  # 5.10's fdinfo has no ino
        zones = d.zones.set_index(["node", "zone"])
        for node, zone, body in re.findall(r"Node (\d+), zone\s+(\S+)\n(.*?)(?=\nNode |\Z)",
                                            (snap / "zoneinfo.txt").read_text(), re.S):
            for key in ("spanned", "present", "managed"):
                m = re.search(rf"^\s+{key}\s+(\d+)", body, re.M)
                if m:
                    assert zones.loc[(int(node), zone), key] == int(m.group(1)), (zone, key)
        blk = d.block.set_index("name")
        for major, minor, kib, name in re.findall(r"^\s*(\d+)\s+(\d+)\s+(\d+)\s+(\S+)$",
                                                  (snap / "partitions.txt").read_text(), re.M):
            if name in blk.index:  # 5.10 keeps bdevs only for open devices
                assert (blk.loc[name, "major"], blk.loc[name, "minor"], blk.loc[name, "sectors"]) == \
                    (int(major), int(minor), 2 * int(kib))
        names = re.findall(r"^\s*(\S+):", (snap / "net-dev.txt").read_text(), re.M)
        assert set(d.net["name"]) == set(names)


def _given() -> list[Path]:
    return [Path(p) for p in os.environ.get("KDNB_SYSTEM_LAB_DIRS", "").split(":") if p]


@pytest.mark.skipif(not _given(), reason="KDNB_SYSTEM_LAB_DIRS not set")
def test_given_lab_dumps() -> None:
    for folder in _given():
        check_against_snapshot(folder)


@pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="qemu-system-x86_64 not installed")
@pytest.mark.parametrize("kernel", ["5.10", "6.1", "6.12", "7.2"])
def test_fresh_lab_dump(tmp_path: Path, kernel: str) -> None:
    import kdnb.lab

    path = kdnb.lab.make("sysrq", kernel=kernel, formats=("kdump-zlib",), out_dir=tmp_path / "out",
                         progress=None)
    check_against_snapshot(path.parent)
