"""`Dump.segments`: the physical ranges a dump describes and the state of each."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..dump.base import DumpReader
from ..dump.segtable import SEGMENT_STATES, SegmentTable


def segments_frame(reader: DumpReader) -> pd.DataFrame:
    """start, end (UInt64), pages (Int64), state (category), vaddr, file_offset, source.

    Built column by column from the reader's SegmentTable arrays: no Python object per row
    except the source text."""
    table = reader.segments()
    n = len(table)
    absent = np.zeros(n, dtype=bool)
    return pd.DataFrame({
        "start": _u64(table.start, None, absent),
        "end": _u64(table.end, None, absent),
        "pages": pd.arrays.IntegerArray(table.pages(reader.page_size), absent),
        "state": pd.Categorical.from_codes(table.state.astype(np.int8) - 1, categories=SEGMENT_STATES),
        "vaddr": _u64(table.vaddr, None, absent),
        "file_offset": _u64(table.file_offset, table.file_offset_ok, absent),
        "source": _sources(table),
    }, copy=False)


def _u64(values: np.ndarray | None, ok: np.ndarray | None, absent: np.ndarray) -> pd.arrays.IntegerArray:
    """A UInt64 column, NA where `ok` is False (or everywhere when there are no values);
    `absent` is the frame's shared all-False mask."""
    if values is None:
        return pd.arrays.IntegerArray(np.zeros(len(absent), dtype=np.uint64), ~absent)
    return pd.arrays.IntegerArray(values.astype(np.uint64, copy=False), absent if ok is None else ~ok)


def _sources(table: SegmentTable) -> pd.api.extensions.ExtensionArray:
    """The source column as a "string" array, built by pyarrow when it stores the strings."""
    dtype = pd.StringDtype()
    n = len(table)
    if dtype.storage == "pyarrow":
        import pyarrow as pa
        import pyarrow.compute as pc

        if table.source_index is None:
            arrow = pa.repeat(pa.scalar(table.source, pa.large_string()), n)
        else:
            numbers = pc.cast(pa.array(table.source_index), pa.string())
            arrow = pc.binary_join_element_wise(table.source, numbers, " ")
        return pd.array(arrow, dtype=dtype)
    texts = np.full(n, table.source, dtype=object) if table.source_index is None else \
        np.array([f"{table.source} {i}" for i in table.source_index.tolist()], dtype=object)
    return pd.array(texts, dtype=dtype)
