"""`Dump.segments`: the physical ranges a dump describes and the state of each."""

from __future__ import annotations

import pandas as pd

from ..bounds import U64_MAX
from ..dump.base import DumpReader

SEGMENT_STATES = ["present", "excluded", "truncated", "lost"]


def segments_frame(reader: DumpReader) -> pd.DataFrame:
    """start, end (UInt64), pages (Int64), state (category), vaddr, file_offset, source."""
    segs = reader.segments()
    psz = reader.page_size
    df = pd.DataFrame({
        "start": _u64([s.start for s in segs]),
        "end": _u64([s.end for s in segs]),
        "pages": pd.array([(s.end - s.start + psz - 1) // psz for s in segs], dtype="Int64"),
        "state": pd.Categorical([s.state for s in segs], categories=SEGMENT_STATES),
        "vaddr": _u64([s.vaddr for s in segs]),
        "file_offset": _u64([s.file_offset for s in segs]),
        "source": pd.array([s.source for s in segs], dtype="string"),
    })
    return df


def _u64(values: list[int | None]) -> pd.arrays.IntegerArray:
    """A UInt64 column; a value a header made negative or wider than 64 bits becomes NA."""
    return pd.array([v if v is not None and 0 <= v <= U64_MAX else None for v in values], dtype="UInt64")
