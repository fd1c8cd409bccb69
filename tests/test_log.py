"""The printk log view against makedumpfile's --dump-dmesg output and drgn's records."""

from __future__ import annotations

import re

import pytest

import kdnb
from kdnb.views.log import LEVEL_NAMES, _text, format_dmesg
from tests.conftest import CORPUS, DATA, corpus_dir, oracle

DUMPS = ["k5.10-sysrq", "k5.10-hung_task", "k6.1-sysrq", "k6.1-oops", "k6.12-hung_task",
         "k6.12-hung_task-degraded", "k7.2-panic", "k7.2-softlockup"]
SAMPLES = sorted(p for p in DATA.glob("*") if (p / "dmesg.txt").exists()) if DATA.is_dir() else []


@pytest.mark.corpus
@pytest.mark.parametrize("name", DUMPS)
def test_log_matches_dmesg(name: str) -> None:
    folder = corpus_dir(name)
    with kdnb.open(folder / "vmcore.kdump-zlib") as d:
        log = d.log
    want_lines = (folder / "dmesg.txt").read_text().splitlines()
    caller = re.match(r"^\[[ 0-9.]+\] \[ *[TC]\d+\] ", want_lines[0]) is not None  # makedumpfile 1.7.8
    assert format_dmesg(log, caller=caller) == want_lines
    want = oracle(folder)["log"]
    assert list(log["seq"]) == [r["seq"] for r in want]
    assert list(log["level"]) == [r["level"] for r in want]
    assert [t.value for t in log["time"]] == [r["ts_ns"] for r in want]
    assert str(log["seq"].dtype) == "Int64" and str(log["level"].dtype) == "Int8"
    assert list(log["level_name"].cat.categories) == LEVEL_NAMES
    assert log["caller"].str.match(r"^[TC]\d+$").all()
    assert log.attrs["kdnb"]["release"] == d.vmcoreinfo["OSRELEASE"]


@pytest.mark.parametrize("folder", SAMPLES, ids=lambda p: f"data-{p.name}")
def test_sample_log_matches_dmesg(folder) -> None:
    with kdnb.open(sorted(folder.glob("vmcore.*"))[0]) as d:
        log = d.log
    want_lines = (folder / "dmesg.txt").read_text().splitlines()
    caller = re.match(r"^\[[ 0-9.]+\] \[ *[TC]\d+\] ", want_lines[0]) is not None
    assert format_dmesg(log, caller=caller) == want_lines


def test_text_block_positions() -> None:
    size = 64
    data = bytearray(size)
    data[0:8] = (7).to_bytes(8, "little")
    data[8:13] = b"hello"
    # a block that wrapped: begin near the end of wrap 0, text at the start of the ring
    assert _text(bytes(data), 56, 64 + 16, size, 5) == "hello"
    data[16:24] = (9).to_bytes(8, "little")
    data[24:27] = b"abc"
    assert _text(bytes(data), 64 + 16, 64 + 32, size, 3) == "abc"
    assert _text(bytes(data), 1, 1, size, 0) == ""  # data-less record
    assert _text(bytes(data), 0, 64 * 3, size, 3) is None  # impossible span


def test_corpus_marker_registered() -> None:
    assert CORPUS.name == "corpus"
