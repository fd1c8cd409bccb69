""""Segmentation fault, but no core dumped", reproduced in a lab guest where every setting can be
changed (the nocore scenario): for each case a process crashed under the setting (the kernel's
wait status, logged by the guest as a KDNB-NOCORE line, says whether a core was written) and a
twin waits under the same setting; `coredump_check` on the vmcore must name the reason for each
twin, and pass the control.

Marked `lab`. KDNB_NOCORE_LAB_DIRS=dir1:dir2 checks lab output folders made earlier
(`kdnb lab make nocore --kernel 6.12 -o dir1`) instead of booting the guest."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

import kdnb
from kdnb.analysis.coredump_check import coredump_check
from kdnb.lab.scenarios import NOCORE_HANDLER

pytestmark = pytest.mark.lab

# case -> the one check that must fail for its waiting twin (None: every check passes)
EXPECTED = {"ok": None, "rlimit": "coredump.rlimit", "dir": "coredump.directory",
            "suid": "coredump.suid_dumpable"}
LINE = re.compile(r"KDNB-NOCORE case=(\w+) waiter=(\d+) crasher=(\d+) signal=(\d+) core_dumped=(\d)")


def cases(folder: Path) -> dict[str, dict[str, int]]:
    """The guest's KDNB-NOCORE lines from the first kernel's console."""
    text = (folder / "console.log").read_text(errors="replace")
    return {m[1]: {"waiter": int(m[2]), "crasher": int(m[3]), "signal": int(m[4]), "dumped": int(m[5])}
            for m in LINE.finditer(text)}


def check_nocore(folder: Path) -> None:
    """Every comparison of this module on one nocore lab output folder."""
    found = cases(folder)
    assert set(found) == set(EXPECTED) | {"pipe"}, found
    for case, facts in found.items():
        assert facts["signal"] == 11 and facts["dumped"] == (case == "ok"), (case, facts)
    with kdnb.open(sorted(folder.glob("vmcore.kdump-*"))[0]) as d:
        assert d.coredump_settings.core_pattern == "core"
        for case, failing in EXPECTED.items():
            r = coredump_check(dump=d, pid=found[case]["waiter"])
            assert r.failing() == ([failing] if failing else []), (case, str(r))
        # the piped crash: its process is gone, the kernel's own message names the pipe; kernels
        # before 6.11 print it without the pid
        r = coredump_check(dump=d, pid=found["pipe"]["crasher"])
        log = r["coredump.log"]
        pid_in_log = any(str(found["pipe"]["crasher"]) in line for line in d.coredump_settings.log)
        if pid_in_log:
            assert log.status == "fail" and NOCORE_HANDLER in log.detail, str(r)
        assert any(NOCORE_HANDLER in line for line in d.coredump_settings.log)


def _given() -> list[Path]:
    return [Path(p) for p in os.environ.get("KDNB_NOCORE_LAB_DIRS", "").split(":") if p]


@pytest.mark.skipif(not _given(), reason="KDNB_NOCORE_LAB_DIRS not set")
def test_given_nocore_dumps() -> None:
    for folder in _given():
        check_nocore(folder)


@pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="qemu-system-x86_64 not installed")
@pytest.mark.parametrize("kernel", ["5.10", "6.12", "7.2"])
def test_fresh_nocore_dump(tmp_path: Path, kernel: str) -> None:
    import kdnb.lab

    path = kdnb.lab.make("nocore", kernel=kernel, formats=("kdump-zlib",), out_dir=tmp_path / "out",
                         progress=None)
    check_nocore(path.parent)
