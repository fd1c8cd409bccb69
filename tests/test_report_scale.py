"""The report's column-at-a-time paths give what the per-cell paths gave, on every bundled sample
and corpus dump: display text of every column of the views the report shows, DataTables' row data
against itables' own, the timeline cut, and validate/root cause made once per Dump."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest

import kdnb
from kdnb.errors import KdnbError
from kdnb.ui import timeline as timeline_mod
from kdnb.ui.format import (TIMESTAMP_COLUMNS, column_kind, column_text, hex_text, human_size,
                            is_na, seconds, value_text, when, with_labels)
from kdnb.ui.tables import datatable_frame, rows_json

from .conftest import CORPUS
from .test_ui import sample_dumps

itables = pytest.importorskip("itables")

VIEWS = ("tasks", "log", "slab", "modules", "segments", "cpus", "meminfo", "stacks", "mounts", "irqs",
         "sockets")


def _dumps() -> list:
    found = list(sample_dumps())
    found += sorted(CORPUS.glob("*/vmcore.kdump-zlib")) if CORPUS.is_dir() else []
    return found


DUMPS = _dumps()


@pytest.fixture(scope="module", params=DUMPS, ids=lambda p: p.parent.name)
def dump(request):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = kdnb.open(request.param)
        yield d
    d.close()


def _view(d, name: str) -> pd.DataFrame | None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return getattr(d, name)
        except KdnbError:
            return None


def cell_by_cell(column: object, s: pd.Series) -> list[str]:
    """The display text as it was made before, one cell at a time."""
    kind = column_kind(column, s)
    if kind == "hex":
        return [hex_text(v) for v in s]
    if kind == "size":
        return [human_size(v) for v in s]
    if kind == "seconds":
        digits = 6 if str(column).lower() in TIMESTAMP_COLUMNS else 3
        return [seconds(v, digits) for v in s]
    if kind == "datetime":
        return [when(v) for v in s]
    if kind == "number" and pd.api.types.is_float_dtype(s.dtype):
        return ["" if is_na(v) else f"{float(v):.4g}" for v in s]
    return [value_text(v, column) for v in s]


def test_column_text_equals_cell_by_cell(dump):
    compared = 0
    for name in VIEWS:
        df = _view(dump, name)
        if df is None or not len(df):
            continue
        df = with_labels(df)
        for pos, col in enumerate(df.columns):
            s = df.iloc[:, pos]
            assert column_text(col, s) == cell_by_cell(col, s), (name, col)
            compared += len(s)
    assert compared > 1000


def test_column_text_edge_cells():
    s = pd.Series(["  padded ", "two\nlines", "", None, pd.NA, "cr\rhere", "x\u2028y"], dtype=object)
    assert column_text("text", s) == cell_by_cell("text", s)
    big = pd.Series([1, 2**40, None], dtype="Int64")
    assert column_text("count", big) == ["1", "0x10000000000", ""]
    td = pd.Series(pd.to_timedelta([1.5, None, 0.000001], unit="s"))
    assert column_text("time", td) == cell_by_cell("time", td) == ["1.500000", "", "0.000001"]


def _itables_rows(shown: pd.DataFrame) -> list:
    """itables' rows, its NaN sentinels as null and its printed tab (pandas' repr writes \\t)
    as the tab kdnb keeps."""
    from itables.datatables_format import datatables_rows

    rows = json.loads(datatables_rows(shown))
    sentinels = {"___NaN___", "___Infinity___", "___-Infinity___"}
    return [[None if isinstance(v, str) and v in sentinels else
             (v.replace("\\t", "\t") if isinstance(v, str) else v) for v in row] for row in rows]


def test_rows_json_equals_itables(dump):
    """The rows kdnb serialises are itables' own rows of the same display copy (NaN as null)."""
    for name in ("tasks", "log", "slab", "modules"):
        df = _view(dump, name)
        if df is None or not len(df):
            continue
        shown, _ = datatable_frame(df.head(3000))
        shown.insert(len(shown.columns), "_hl", [i % 7 == 0 for i in range(len(shown))],
                     allow_duplicates=True)
        ours = json.loads(rows_json(shown))
        assert ours == _itables_rows(shown), name


def test_rows_json_escapes_markup():
    shown = pd.DataFrame({"text": ["<script>alert(1)</script> & co", None], "n": [1, 2],
                          "k": [0.5, np.nan]})
    text = rows_json(shown)
    assert "<" not in text and ">" not in text
    assert json.loads(text) == [["&lt;script&gt;alert(1)&lt;/script&gt; &amp; co", 1, 0.5],
                                [None, 2, None]]


@pytest.mark.parametrize("max_rows", [1, 3, 8, 25, 60])
def test_timeline_cut_is_the_full_timeline_cut(dump, max_rows):
    """Reading only the log lines that can survive gives the newest rows of the whole timeline,
    the panic row always kept."""
    full = timeline_mod.timeline(dump, window=1e9, max_rows=10**9)
    cut = timeline_mod.timeline(dump, window=1e9, max_rows=max_rows)
    if len(full) <= max_rows:
        pd.testing.assert_frame_equal(cut, full)
        return
    keep = (full.index >= len(full) - max_rows) | (full["source"] == "panic").to_numpy()
    expected = full[keep].reset_index(drop=True)
    # pandas picks the timedelta resolution from the values, so only the values must match
    pd.testing.assert_frame_equal(cut.reset_index(drop=True), expected, check_dtype=False)


def test_validate_and_root_cause_made_once(dump):
    assert dump.validate() is dump.validate()
    assert dump.root_cause() is dump.root_cause()


def test_segments_section_lists_at_most_its_cap(monkeypatch):
    """A fragmented dump's millions of segments are counted in the totals, not all listed."""
    from kdnb.ui import sections_data

    d = quiet_open(DUMPS[0])
    total = len(d.segments)
    assert total > 3
    listed = []
    monkeypatch.setattr(sections_data, "MAX_SEGMENT_ROWS", 3)
    monkeypatch.setattr(sections_data, "table_html", lambda df, **kw: listed.append(df) or "")
    text = sections_data.segments(d)
    assert f"the first 3 of {total} segments" in text
    assert [len(df) for df in listed] == [3]


def quiet_open(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return kdnb.open(path)
