"""Split kdump sets (`makedumpfile --split`): several files, each covering a pfn range."""

from __future__ import annotations

import bisect

import numpy as np

from ..errors import CorruptDump
from .base import DumpReader
from .kdump import KdumpDump
from .segtable import SegmentTable, from_page_codes


class SplitDump(DumpReader):
    """The parts of a split dump read as one physical memory."""

    format = "kdump-split"

    def __init__(self, parts: list[KdumpDump]) -> None:
        super().__init__(parts[0].path)
        parts = sorted(parts, key=lambda p: p.start_pfn)
        for a, b in zip(parts, parts[1:]):
            if a.end_pfn > b.start_pfn:
                raise CorruptDump(f"split parts {a.path} and {b.path} overlap "
                                  f"(pfn {a.end_pfn:#x} > {b.start_pfn:#x})")
        self.parts = parts
        self.paths = [p.path for p in parts]
        first = parts[0]
        self.page_size = first.page_size
        self.vmcoreinfo = first.vmcoreinfo
        self.vmcoreinfo_raw = first.vmcoreinfo_raw
        self.notes = first.notes
        self.max_pfn = max(p.max_pfn for p in parts)
        self.problems = [f"{p.path}: {msg}" for p in parts for msg in p.problems]
        gaps = [(a.end_pfn, b.start_pfn) for a, b in zip(parts, parts[1:]) if a.end_pfn < b.start_pfn]
        if parts[0].start_pfn > 0:
            gaps.insert(0, (0, parts[0].start_pfn))
        if parts[-1].end_pfn < self.max_pfn:
            gaps.append((parts[-1].end_pfn, self.max_pfn))
        for lo, hi in gaps:
            self.problems.append(f"no part covers pfns {lo:#x}-{hi:#x}: a split file is missing")
        self.incomplete = any(p.incomplete for p in parts)
        self.header = {
            **first.header,
            "format": self.format,
            "parts": [{"path": p.path, "start_pfn": p.start_pfn, "end_pfn": p.end_pfn}
                      for p in parts],
            "present_pages": sum(p.header["present_pages"] for p in parts),
            "file_size": sum(p.header["file_size"] for p in parts),
            "incomplete": self.incomplete,
            "problems": self.problems,
        }
        self._starts = [p.start_pfn for p in parts]

    def _part(self, pfn: int) -> KdumpDump | None:
        i = bisect.bisect_right(self._starts, pfn) - 1
        if i >= 0 and pfn < self.parts[i].end_pfn:
            return self.parts[i]
        return None

    def _load_page(self, pfn: int) -> bytes:
        part = self._part(pfn)
        if part is None:
            raise self._missing(pfn * self.page_size, "no file of the split set covers it")
        return part.read_page(pfn)

    def segments(self) -> SegmentTable:
        codes = np.zeros(self.max_pfn, dtype=np.uint8)
        for part in self.parts:
            lo, hi = part.start_pfn, min(part.end_pfn, self.max_pfn)
            states = part.page_states()[lo:hi]  # a part's bitmap may end before its range does
            codes[lo:lo + len(states)] = states
        return from_page_codes(codes, self.page_size)

    def close(self) -> None:
        super().close()
        for part in self.parts:
            part.close()
