"""The `kdnb` command as a person meets it: --version, `info` on a truncated real dump, warnings
as one plain line, readiness wording that matches its FAILs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from kdnb import __version__, cli

from .conftest import CORPUS
from .test_ui import sample_dumps


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"kdnb {__version__}"


@pytest.fixture
def truncated(tmp_path) -> Path:
    dumps = [p for p in sample_dumps() if "kdump" in p.name and "flat" not in p.name]
    if not dumps:
        pytest.skip("no kdump-compressed sample")
    data = dumps[0].read_bytes()
    cut = tmp_path / "vmcore.cut"
    cut.write_bytes(data[: len(data) // 3])
    return cut


def test_info_reports_truncation_and_the_incomplete_flag(truncated, capsys):
    assert cli.main(["info", str(truncated)]) == 0
    out = capsys.readouterr().out
    m = re.search(r"^truncated:\s+YES: (\d+) pages \(([\d.]+ \w+)\) lie past the end of the file", out, re.M)
    assert m and int(m.group(1)) > 0, out
    pages = re.search(r"^pages:.*truncated (\d+)", out, re.M)
    assert pages and pages.group(1) == m.group(1)
    assert re.search(r"^incomplete:\s+not set", out, re.M)


def test_info_on_a_whole_sample_says_not_truncated(capsys):
    assert cli.main(["info", str(sample_dumps()[0])]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^truncated:\s+no$", out, re.M)


def test_warnings_are_one_plain_line(capsys):
    dump = CORPUS / "k6.12-hung_task-degraded" / "vmcore.kdump-zlib"
    if not dump.exists():
        pytest.skip("degraded corpus dump absent")
    assert cli.main(["ps", str(dump)]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err and all(line.startswith("kdnb: ") for line in err), err
    assert any("incomplete" in line for line in err)
    assert not any(re.search(r"\.py:\d+", line) or "Warning:" in line for line in err), err


def test_readiness_with_fails_says_not_ready(tmp_path, capsys):
    assert cli.main(["readiness", "--root", str(tmp_path)]) == 2
    head = capsys.readouterr().out.splitlines()[0]
    assert "NOT READY" in head and "AT RISK" not in head and " fail" in head
