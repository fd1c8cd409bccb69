"""The root cause's log pass over undecoded records (parse_panic_records) finds the reports the
DataFrame pass (parse_panic_log of Dump.log) finds: on every bundled sample and corpus dump, on
the production-size lab dumps, and on hand-made records that try to fool the byte search."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import kdnb
from kdnb.analysis.panic_log import PanicLog, parse_panic_log, parse_panic_records
from kdnb.samples import samples
from kdnb.views.log import _frame, _text_array
from kdnb.views.log_records import LogRecords, read_log_records
from tests.conftest import CORPUS

DUMPS = [*(str(p) for p in samples()["path"]), *sorted(str(p) for p in CORPUS.glob("*/vmcore.kdump-zlib"))]
SCALE = sorted(str(p) for p in Path(os.environ.get("KDNB_SCALE_DUMPS", "/work/scale-dumps"))
               .glob("*/vmcore.kdump-zlib"))


def _shape(plog: PanicLog) -> list:
    """Everything a PanicLog holds, NaT made comparable."""
    def one(r):
        return None if r is None else (r.category, r.seq, str(r.time), r.headline, r.fields, r.lines, r.cpu,
                                       r.pid, r.comm, r.tainted, r.rip, r.rip_module, r.user_mode, r.trace)
    return [[one(r) for r in plog.reports], one(plog.panic)]


def _both(path: str) -> tuple[PanicLog, PanicLog]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with kdnb.open(path) as d:
            records = read_log_records(d.kernel.read, d.kernel.log_vmcoreinfo(), d.path)
            return parse_panic_log(d.log), parse_panic_records(records)


@pytest.mark.parametrize("path", DUMPS, ids=lambda p: p.split("/")[-2])
def test_records_pass_equals_frame_pass(path: str) -> None:
    want, got = _both(path)
    assert want.reports or want.panic is not None  # every sample has a crash report
    assert _shape(got) == _shape(want)


@pytest.mark.lab
@pytest.mark.parametrize("path", SCALE, ids=lambda p: p.split("/")[-2])
def test_records_pass_equals_frame_pass_at_scale(path: str) -> None:
    want, got = _both(path)
    assert want.panic is not None
    assert _shape(got) == _shape(want)


def _records(texts: list[bytes], gap: bytes = b"\0" * 8, ts: list[int] | None = None) -> LogRecords:
    """Records laid out in a blob as a ring holds them: an 8-byte block id before each text."""
    blob, first, last = b"", [], []
    for t in texts:
        blob += gap
        first.append(len(blob))
        blob += t
        last.append(len(blob))
    n = len(texts)
    u = lambda v, dt: np.array(v, dtype=dt)
    return LogRecords(u(range(n), np.uint64), u(ts or [i * 1000 for i in range(n)], np.uint64),
                      u([6] * n, np.uint8), u([0] * n, np.uint8), u([1] * n, np.uint32),
                      u([b""] * n, "S16"), u([b""] * n, "S48"), u(first, np.int64), u(last, np.int64),
                      blob, [])


def _check(records: LogRecords) -> PanicLog:
    frame = _frame(records, records.texts(), [])
    got, want = parse_panic_records(records), parse_panic_log(frame)
    assert _shape(got) == _shape(want)
    return got


def test_records_pass_on_tricky_records() -> None:
    texts = [b"boot line", b"note: \xff\xfe INFO: task a:1 blocked for more than 5 seconds.",
             b"second line\nBUG: kernel NULL pointer dereference, address: 0",  # not a first line
             b"Kernel panic - not syncing: ", b"sysrq: Trigger a crash\nCPU: 0 PID: 7 Comm: sh",
             b"\xe2\x82BUG: soft lockup - CPU#1 stuck for 22s! [a:1]", b"",
             b"Kernel panic - not syncing: sysrq triggered crash"]
    got = _check(_records(texts))
    assert [(r.category, r.seq) for r in got.reports] == [("sysrq", 4), ("soft-lockup", 5)]
    assert got.panic.seq == 7 and got.reports[0].pid == 7
    # a needle made of one record's end and the next record's start is no headline
    split = _records([b"boot", b"x BUG", b": soft lockup - CPU#1 stuck for 2s! [a:1]"], gap=b"")
    assert _check(split) == PanicLog([], None)
    assert _check(_records([b"nothing here", b"at all"])) == PanicLog([], None)
    assert _check(_records([])) == PanicLog([], None)
    late = _check(_records([b"sysrq: Trigger a crash"], ts=[1 << 63]))
    assert late.reports[0].time is pd.NaT


def test_records_pass_on_overlapping_blocks() -> None:
    """A corrupt ring whose descriptors share a text block: every record still counts."""
    records = _records([b"sysrq: Trigger a crash", b"tail"])
    records.first[1], records.last[1] = records.first[0], records.last[0]
    got = _check(records)
    assert [r.seq for r in got.reports] == [0, 1]


def test_root_cause_same_with_log_read_first() -> None:
    path = DUMPS[0]
    with kdnb.open(path) as d:
        fresh = d.root_cause().to_dict()
        assert "log" not in vars(d)  # the records pass did not frame the log
    with kdnb.open(path) as d:
        assert len(d.log) > 0
        assert d.root_cause().to_dict() == fresh


def test_text_array_equals_per_record_decoding() -> None:
    """Dump.log's one-gather text column against each record decoded alone: in ring order, after
    a wrap (blob order is not seq order), with empty and NUL texts, and the fallbacks: bytes that
    are valid UTF-8 only joined to the next record's, and overlapping blocks."""
    def same(records: LogRecords) -> bool:
        got = _text_array(records)
        return list(got) == records.texts() and (isinstance(got, list) or str(got.dtype) == "string")

    plain = _records([b"a", b"", "caf\u00e9 \u2603".encode(), b"\0\0\0", b"last\nline"])
    assert same(plain) and not isinstance(_text_array(plain), list)
    wrapped = _records([b"one", b"two", b"three", b"four"])
    wrapped.first, wrapped.last = np.roll(wrapped.first, 2), np.roll(wrapped.last, 2)
    assert same(wrapped) and list(_text_array(wrapped)) == ["three", "four", "one", "two"]
    split = _records([b"ab\xc3", b"\xa9x"], gap=b"")  # valid only as one string
    assert same(split) and list(_text_array(split)) == ["ab\ufffd", "\ufffdx"]
    overlapping = _records([b"shared", b"x"])
    overlapping.first[1], overlapping.last[1] = overlapping.first[0] + 2, overlapping.last[0]
    assert same(overlapping) and isinstance(_text_array(overlapping), list)
    assert same(_records([])) and same(_records([b"", b""]))


def test_text_array_follows_pandas_string_storage() -> None:
    records = _records([b"one", b"two"])
    with pd.option_context("mode.string_storage", "python"):
        assert isinstance(_text_array(records), list)
        assert _frame(records, _text_array(records), [])["text"].dtype == pd.StringDtype()
