"""`Dump.segments`: the physical ranges a dump describes and the state of each."""

from __future__ import annotations

import pandas as pd

from ..dump.base import DumpReader

SEGMENT_STATES = ["present", "excluded", "truncated", "lost"]


def segments_frame(reader: DumpReader) -> pd.DataFrame:
    """start, end (UInt64), pages (Int64), state (category), vaddr, file_offset, source."""
    segs = reader.segments()
    psz = reader.page_size
    df = pd.DataFrame({
        "start": pd.array([s.start for s in segs], dtype="UInt64"),
        "end": pd.array([s.end for s in segs], dtype="UInt64"),
        "pages": pd.array([(s.end - s.start + psz - 1) // psz for s in segs], dtype="Int64"),
        "state": pd.Categorical([s.state for s in segs], categories=SEGMENT_STATES),
        "vaddr": pd.array([s.vaddr for s in segs], dtype="UInt64"),
        "file_offset": pd.array([s.file_offset for s in segs], dtype="UInt64"),
        "source": pd.array([s.source for s in segs], dtype="string"),
    })
    return df
