"""What every dump reader provides: physical memory, notes, VMCOREINFO, segments."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable

from ..errors import PageNotInDump
from .segtable import SegmentTable

PAGE_CACHE_PAGES = 4096  # decompressed pages kept (16 MiB of 4 KiB pages)


@dataclass
class PageCache:
    """A bounded LRU cache of decoded pages keyed by page frame number."""

    capacity: int = PAGE_CACHE_PAGES
    _pages: OrderedDict = field(default_factory=OrderedDict)

    def get(self, pfn: int, load: Callable[[int], bytes]) -> bytes:
        """Return page `pfn`, calling `load(pfn)` on a miss."""
        pages = self._pages
        data = pages.get(pfn)
        if data is not None:
            pages.move_to_end(pfn)
            return data
        data = load(pfn)
        pages[pfn] = data
        if len(pages) > self.capacity:
            pages.popitem(last=False)
        return data

    def get_run(self, first: int, n: int, load: Callable[[list[int]], list[bytes]]) -> list[bytes]:
        """Pages first .. first + n - 1, calling `load(missing pfns)` once for the misses."""
        pages = self._pages
        out: list = []
        missing: list[int] = []
        for pfn in range(first, first + n):
            data = pages.get(pfn)
            if data is None:
                missing.append(pfn)
            else:
                pages.move_to_end(pfn)
            out.append(data)
        if missing:
            for pfn, data in zip(missing, load(missing)):
                out[pfn - first] = data
                pages[pfn] = data
            while len(pages) > self.capacity:
                pages.popitem(last=False)
        return out

    def clear(self) -> None:
        """Drop every cached page."""
        self._pages.clear()


class DumpReader:
    """Base class of the format readers.

    Subclasses fill the attributes in their constructor and implement `_load_page`
    (page-granular formats) or override `read_phys` (ELF, which is contiguous).
    """

    format: str = "unknown"

    def __init__(self, path: str) -> None:
        self.path = path
        self.header: dict = {}
        self.vmcoreinfo: dict[str, str] = {}
        self.vmcoreinfo_raw: bytes = b""
        self.notes: list = []  # list[notes.Note]
        self.page_size: int = 4096
        self.max_pfn: int = 0  # one past the highest page frame the dump describes
        self.warnings: list[str] = []
        self._cache = PageCache()

    # -- memory ---------------------------------------------------------------------
    def _load_page(self, pfn: int) -> bytes:
        """Return the decoded bytes of page `pfn` or raise PageNotInDump."""
        raise NotImplementedError

    def _load_pages(self, pfns: list[int]) -> list[bytes]:
        """The decoded bytes of pages `pfns` (ascending), or the error of the first that fails:
        formats that can read neighbouring pages in one go override this."""
        return [self._load_page(pfn) for pfn in pfns]

    def read_page(self, pfn: int) -> bytes:
        """One whole page, through the LRU cache."""
        return self._cache.get(pfn, self._load_page)

    def read_pages(self, first: int, n: int) -> list[bytes]:
        """Pages first .. first + n - 1, through the LRU cache; the missing ones are loaded
        together (one file read per run of neighbouring pages, where the format allows)."""
        return self._cache.get_run(first, n, self._load_pages)

    def read_phys(self, paddr: int, size: int) -> bytes:
        """Read `size` bytes of physical memory at `paddr`, across page boundaries."""
        if size <= 0:
            return b""
        psz = self.page_size
        pfn, off = divmod(paddr, psz)
        if off + size <= psz:
            return self.read_page(pfn)[off:off + size]
        n = (off + size + psz - 1) // psz
        parts = self.read_pages(pfn, n)
        parts[0] = parts[0][off:]
        parts[-1] = parts[-1][:off + size - (n - 1) * psz]
        return b"".join(parts)

    def is_present(self, paddr: int) -> bool:
        """True when the page holding `paddr` can be read."""
        try:
            self.read_page(paddr // self.page_size)
        except PageNotInDump:
            return False
        return True

    def segments(self) -> SegmentTable:
        """Physical ranges and their state, consecutive pages of one state merged (numpy
        columns; iterating gives Segment rows)."""
        raise NotImplementedError

    def close(self) -> None:
        """Release the files."""
        self._cache.clear()

    def _missing(self, paddr: int, reason: str) -> PageNotInDump:
        return PageNotInDump(paddr, reason, self.path)
