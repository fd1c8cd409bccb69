"""The tasks view, decoded in numpy batches (views/tasks_columns.py), gives exactly the frame the
per-task Python path gave (tests/tasks_plain.py): every column, dtype, attrs and warning, on every
bundled sample, the corpus and damaged (truncated) dumps."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import kdnb
from kdnb.errors import PageNotInDump
from kdnb.samples import samples
from kdnb.views import tasks_columns
from kdnb.views.common import Gaps
from kdnb.views.tasks import tasks_frame
from tests import tasks_plain
from tests.conftest import CORPUS
from tests.test_scale_lab import _folders as scale_folders

DUMPS = [*(str(p) for p in samples()["path"]), *sorted(str(p) for p in CORPUS.glob("*/vmcore.kdump-zlib"))]


def _both(d: kdnb.Dump) -> tuple[tuple, tuple]:
    out = []
    for fn in (tasks_frame, tasks_plain.tasks_frame):
        with warnings.catch_warnings(record=True) as rec:
            warnings.simplefilter("always")
            try:
                out.append((fn(d), [str(w.message) for w in rec]))
            except kdnb.KdnbError as exc:
                out.append((None, [type(exc).__name__, str(exc)]))
    return out[0], out[1]


def _same(d: kdnb.Dump) -> pd.DataFrame | None:
    (new, new_warn), (old, old_warn) = _both(d)
    assert new_warn == old_warn
    if old is None:
        assert new is None
        return None
    pd.testing.assert_frame_equal(new, old, check_exact=True)
    assert new.attrs == old.attrs
    return new


@pytest.mark.parametrize("path", DUMPS, ids=lambda p: p.split("/")[-2])
def test_tasks_frame_equals_the_per_task_path(path: str) -> None:
    with kdnb.open(path) as d:
        df = _same(d)
    assert df is not None and len(df) > 0 and df["comm"].notna().all()


@pytest.mark.lab
@pytest.mark.parametrize("folder", scale_folders(), ids=lambda p: p.name)
def test_tasks_frame_equals_on_scale_dumps(folder: Path) -> None:
    """The production-size lab dumps ($KDNB_SCALE_DUMPS, up to 30,063 tasks): same frame."""
    with kdnb.open(folder / "vmcore.kdump-zlib") as d:
        df = _same(d)
    assert df is not None and len(df) > 100


@pytest.mark.parametrize("fraction", [0.3, 0.5, 0.7, 0.85, 0.95])
def test_tasks_frame_equals_on_truncated_dumps(tmp_path: Path, fraction: float) -> None:
    """A dump cut short loses task_structs, mm_structs and whole list runs: the flagged partial
    frame (rows, NA cells, gap notes in order) is the per-task path's."""
    sources = [p for p in DUMPS if "corpus" in p][:2] or DUMPS[:1]
    for src in sources:
        cut = tmp_path / f"cut-{Path(src).parent.name}"
        with open(src, "rb") as f:
            cut.write_bytes(f.read(int(os.path.getsize(src) * fraction)))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            d = kdnb.open(cut)
        with d:
            _same(d)


def _holes(d: kdnb.Dump, seed: int, every: int) -> None:
    """Make every `every`-th page (by a seeded hash of its number) of the dump unreadable: tasks,
    parents, mm_structs and runqueues go missing in the middle of the lists."""
    read = d.kernel.read

    def holey(vaddr: int, size: int) -> bytes:
        for page in range(vaddr >> 12, ((vaddr + max(size, 1) - 1) >> 12) + 1):
            if hash((seed, page)) % every == 0:
                exc = PageNotInDump(page << 12, "a hole made by the test")
                exc.vaddr = page << 12
                raise exc
        return read(vaddr, size)

    d.kernel.read = holey  # type: ignore[method-assign]


@pytest.mark.parametrize("seed", range(6))
def test_tasks_frame_equals_with_holes(seed: int) -> None:
    """Partial rows (NA ppid / rss_pages), walks resumed backwards and through children lists,
    and the gap notes in their order are the per-task path's."""
    flagged = 0
    for path in DUMPS[:3]:
        with kdnb.open(path) as d:
            d.kernel.symbol("init_task")  # symbols and BTF before the holes
            d.kernel.type("struct task_struct")
            _holes(d, seed, 5 + 4 * seed)
            df = _same(d)
        flagged += df is not None and "incomplete" in df.attrs["kdnb"]
    assert flagged


def test_tasks_frame_with_a_small_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    """Many batches (and a part-filled last one) join in walk order."""
    monkeypatch.setattr(tasks_columns, "BATCH", 7)
    with kdnb.open(DUMPS[0]) as d:
        _same(d)


def test_fit_out_of_range_values_are_na_and_noted() -> None:
    g = Gaps()
    got = tasks_columns.fit(np.array([5, -1, 70000, 2], dtype="<i8"), "UInt16", "cpu", g)
    assert got.tolist() == [5, pd.NA, pd.NA, 2] and str(got.dtype) == "UInt16"
    assert g.reasons == ["cpu: 2 value(s) that do not fit UInt16 read as NA"]
    g = Gaps()
    got = tasks_columns.fit(np.array([1 << 63, 3], dtype="<u8"), "Int64", "x", g)
    assert got.tolist() == [pd.NA, 3] and g.reasons == ["x: 1 value(s) that do not fit Int64 read as NA"]
    g = Gaps()
    assert tasks_columns.fit(np.array([7], dtype="<u4"), "UInt32", "flags", g).tolist() == [7] and not g
