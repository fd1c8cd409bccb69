"""`kdnb report CORE`, `kdnb info CORE`, `kdnb why CORE` and `kdnb validate CORE` on the real
process cores in data/cores, checked against gdb's view of each core (NAME.json)."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

import pytest

from kdnb.cli import main as kdnb_main
from kdnb.samples import CORES_DIR, sample_core


def truth(name: str) -> dict:
    return json.loads((CORES_DIR / f"{name}.json").read_text())


def visible(page: str) -> str:
    return html.unescape(re.sub(r"<style>.*?</style>|<[^>]+>", " ", page, flags=re.S))


@pytest.mark.parametrize("name", ["threads", "abort", "stack"])
def test_report_of_a_core(name: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "core.html"
    assert kdnb_main(["report", str(sample_core(name)), "-o", str(out)]) == 0
    assert "answer" in capsys.readouterr().err  # progress lines
    text = visible(out.read_text())
    gdb = truth(name)
    assert gdb["category"] in text
    heads = ["Answer", "Process and signal", "Stack of the faulting thread", "Other threads",
             "Evidence", "Mapped images", "Mappings", "Auxiliary vector", "The core file"]
    positions = [text.index(h) for h in heads]
    assert positions == sorted(positions)
    assert f"faulting thread {gdb['current_lwp']}" in text
    assert "<NA>" not in text and "nan" not in text.split()
    assert not re.search(r"\b4[0-9]{6}\b", text), "a code address printed in decimal"
    for frame in gdb["backtraces"][str(gdb["current_lwp"])][:3]:
        assert f"{frame['pc']:#x}" in text and frame["function"] in text


def test_info_why_validate_on_a_core(capsys: pytest.CaptureFixture) -> None:
    core = str(sample_core("null"))
    assert kdnb_main(["info", core]) == 0
    out = capsys.readouterr().out
    assert "process core" in out and "SEGV_MAPERR" in out
    assert kdnb_main(["why", core]) == 0
    assert "null-deref" in capsys.readouterr().out
    assert kdnb_main(["validate", core]) != 0  # a process core is not a kernel dump
    assert "not a dump" in capsys.readouterr().out.lower()
