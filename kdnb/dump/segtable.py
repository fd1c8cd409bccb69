"""The segment table: a dump's physical ranges and their states as numpy columns.

A dump split into millions of runs (single-page segments alternating present and excluded, an
ELF with one PT_LOAD per page) keeps one row per run in arrays, never one Python object per run.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from ..bounds import U64_MAX

# state codes of page_states() and of SegmentTable.state; 0 (a hole) is never a row
STATE_NAMES = ("hole", "present", "excluded", "truncated", "lost")
SEGMENT_STATES = list(STATE_NAMES[1:])


@dataclass(frozen=True)
class Segment:
    """A run of consecutive physical pages in one state (one row of a SegmentTable)."""

    start: int  # first physical address
    end: int  # one past the last physical address
    state: str  # present, excluded, truncated, lost
    vaddr: int | None = None
    file_offset: int | None = None
    source: str = ""


@dataclass(frozen=True)
class SegmentTable:
    """Rows in physical-range order of the reader; uint64 columns, a validity mask for the
    optional ones (None: no row has a value), the source either one text for every row or a
    prefix and a per-row number ("PT_LOAD" and the load's index)."""

    start: np.ndarray  # uint64
    end: np.ndarray  # uint64
    state: np.ndarray  # uint8 code into STATE_NAMES (1..4)
    vaddr: np.ndarray | None = None  # uint64 (every value fits: ELF loads are checked)
    file_offset: np.ndarray | None = None  # uint64
    file_offset_ok: np.ndarray | None = None  # bool
    source: str = ""
    source_index: np.ndarray | None = None  # int64: the source is f"{source} {index}"

    def __len__(self) -> int:
        return len(self.start)

    def __iter__(self) -> Iterator[Segment]:
        return (self[i] for i in range(len(self)))

    def __getitem__(self, i: int) -> Segment:
        """Row `i` as a Segment."""
        return Segment(int(self.start[i]), int(self.end[i]), STATE_NAMES[int(self.state[i])],
                       _optional(self.vaddr, None, i),
                       _optional(self.file_offset, self.file_offset_ok, i), self.source_of(i))

    def source_of(self, i: int) -> str:
        """The source text of row `i`."""
        return self.source if self.source_index is None else f"{self.source} {int(self.source_index[i])}"

    def pages(self, page_size: int) -> np.ndarray:
        """Pages per row (a partial page counts as one), int64."""
        pages = self.end - self.start
        pages += np.uint64(page_size - 1)
        pages //= np.uint64(page_size)
        return pages.view(np.int64)  # below 2**52

    def pages_by_state(self, page_size: int) -> dict[str, int]:
        """Total pages of each state (every state named, 0 when absent)."""
        pages = self.pages(page_size)
        return {name: int(pages[self.state == code].sum()) for code, name in enumerate(STATE_NAMES)
                if code}

    def ranges(self, state: str) -> Ranges:
        """The (start, end) ranges of the rows in `state`."""
        keep = self.state == STATE_NAMES.index(state)
        return Ranges(self.start[keep], self.end[keep])

    def select(self, keep: np.ndarray) -> SegmentTable:
        """The rows where boolean `keep` is set."""
        def pick(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a[keep]

        return SegmentTable(self.start[keep], self.end[keep], self.state[keep], pick(self.vaddr),
                            pick(self.file_offset), pick(self.file_offset_ok),
                            self.source, pick(self.source_index))


@dataclass(frozen=True)
class Ranges:
    """A sequence of (start, end) physical ranges kept as two arrays."""

    start: np.ndarray
    end: np.ndarray

    def __len__(self) -> int:
        return len(self.start)

    def __bool__(self) -> bool:
        return len(self.start) > 0

    def __getitem__(self, i: int | slice) -> tuple[int, int] | list[tuple[int, int]]:
        if isinstance(i, slice):
            return list(zip(self.start[i].tolist(), self.end[i].tolist()))
        return int(self.start[i]), int(self.end[i])

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return zip(self.start.tolist(), self.end.tolist())


def from_page_codes(codes: np.ndarray, page_size: int, source: str = "bitmap") -> SegmentTable:
    """Merge consecutive page frames of one state code into rows (holes dropped)."""
    if len(codes) == 0:
        empty = np.zeros(0, dtype=np.uint64)
        return SegmentTable(empty, empty, np.zeros(0, dtype=np.uint8), source=source)
    change = np.flatnonzero(codes[1:] != codes[:-1]) + 1
    starts = np.empty(len(change) + 1, dtype=np.uint64)
    starts[0] = 0
    starts[1:] = change
    del change
    state = codes[starts]
    keep = state != 0
    ends = np.empty_like(starts)
    ends[:-1] = starts[1:]
    ends[-1] = len(codes)
    psz = np.uint64(page_size)
    return SegmentTable(starts[keep] * psz, ends[keep] * psz, state[keep], source=source)


def checked_add(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """a + b in uint64 and where the sum fits in 64 bits (a header made it wider: NA)."""
    return a + b, b <= np.uint64(U64_MAX) - a


def _optional(values: np.ndarray | None, ok: np.ndarray | None, i: int) -> int | None:
    if values is None or (ok is not None and not ok[i]):
        return None
    return int(values[i])


__all__ = ["Segment", "SegmentTable", "Ranges", "STATE_NAMES", "SEGMENT_STATES", "from_page_codes",
           "checked_add"]
