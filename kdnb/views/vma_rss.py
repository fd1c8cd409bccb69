"""Resident pages of each VMA (/proc/PID/smaps `Rss:` and `Anonymous:`), from the mm's page tables.

One walk per mm starts at `mm->pgd` and reads each page-table page once, its 512 entries at a
time, descending only where an entry overlaps a VMA; each leaf is then given to its VMA (a huge
leaf to each VMA it overlaps), so the cost is the tables that exist, not the VMAs' sizes. An
entry counts as smaps_pte_entry() counts it: present or PROT_NONE (pte_present), not a special
mapping (_PAGE_SPECIAL: PFN maps such as [vvar]) and not the shared zero page (vm_normal_page()
returns no page for either); a present leaf at PMD or PUD level counts as its 512 or 262144
pages (the part inside the VMA). The split follows the kernel's rss_stat counters (mm_counter()):
anonymous when the folio's `mapping` has PAGE_MAPPING_ANON (bit 0), shmem when its flags have
PG_swapbacked (tmpfs, shmem, the initramfs' rootfs), else file. Swapped-out entries are not
resident and are not counted.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..bounds import vmcoreinfo_int
from ..errors import KdnbError
from ..kernel.pagetable import PAGE_SHIFT, PTE_PFN_MASK
from .common import enum_values
from .whatis import compound_head

if TYPE_CHECKING:  # pragma: no cover
    from ..kernel.kernel import Kernel

_PRESENT, _PSE, _PROTNONE, _SPECIAL = 0x1, 0x80, 0x100, 0x200  # arch/x86/include/asm/pgtable_types.h
PAGE_MAPPING_ANON = 0x1
MAX_TABLE_PAGES = 1 << 18  # page-table pages read for one mm: 1 GiB of tables
MAX_TABLE_VISITS = 1 << 19  # table visits for one mm: twice the table pages it may have
USER_TOP = 1 << 56  # above any 5-level user address
_INDEXES = np.arange(512, dtype=np.int64)  # the entries of a table page


class PageKinds:
    """What a resident page is (0 anon, 1 file, 2 shmem), from its folio's mapping and flags:
    read once per page frame and per head page, for every mm of a view (shared file pages, the
    same binary in 5,000 processes, are looked up once)."""

    def __init__(self, k: "Kernel") -> None:
        self.k = k
        page_t = k.type("struct page")
        self.page_size = page_t.size or 64
        self.mapping_off = page_t.offsetof("mapping")
        self.swapbacked = 1 << enum_values(k, "enum pageflags")["PG_swapbacked"]
        self.vmemmap = k.vmemmap_base
        try:
            self.zero_pfn: int | None = k.vtop(k.symbol("empty_zero_page")) >> PAGE_SHIFT
        except KdnbError:
            self.zero_pfn = None
        self.mask = PTE_PFN_MASK & ~vmcoreinfo_int(k.vmcoreinfo, "NUMBER(sme_mask)", default=0)
        self.of_pfn: dict[int, int] = {}
        self.of_head: dict[int, int] = {}

    def kind(self, pfn: int) -> int:
        """0 anon, 1 file, 2 shmem; KdnbError when its struct page is not in the dump."""
        kind = self.of_pfn.get(pfn)
        if kind is None:
            page = self.vmemmap + pfn * self.page_size
            head_word = self.k.read_u64(page + 8)
            if head_word & 1:
                page = compound_head(page, head_word)
            kind = self.of_head.get(page)
            if kind is None:
                flags = self.k.read_u64(page)
                mapping = self.k.read_u64(page + self.mapping_off)
                kind = 0 if mapping & PAGE_MAPPING_ANON else 2 if flags & self.swapbacked else 1
                self.of_head[page] = kind
            self.of_pfn[pfn] = kind
        return kind


class RssCounter:
    """The resident pages of every VMA of one mm, from one walk of its page tables."""

    def __init__(self, k: "Kernel", pgd_vaddr: int, kinds: PageKinds) -> None:
        self.k = k
        self.kinds = kinds
        self.shifts = (48, 39, 30, 21, 12) if k.pagetable.levels == 5 else (39, 30, 21, 12)
        self.root = k.vtop(pgd_vaddr)
        self.tables: dict[int, np.ndarray] = {}
        self.visits = 0
        # a hostile table (entries aliasing one page) could claim more pages than the machine has
        self.page_budget = 2 * max(int(getattr(k.reader, "max_pfn", 0) or 0), 1 << 18)

    def _table(self, paddr: int) -> np.ndarray:
        table = self.tables.get(paddr)
        if table is None:
            if len(self.tables) >= MAX_TABLE_PAGES:
                raise KdnbError(f"more than {MAX_TABLE_PAGES} page-table pages in one mm")
            table = np.frombuffer(self.k.reader.read_phys(paddr, 4096), dtype="<u8")
            self.tables[paddr] = table
        return table

    def counts(self, ranges: list[tuple[int, int]]) -> list[tuple[int, int, int, int] | KdnbError]:
        """For each [start, end) VMA (they do not overlap): (resident, anon, file, shmem) pages,
        or the KdnbError that leaves it unknown (a page-table page or a struct page not in the
        dump). Raises KdnbError when the tables break a budget (more table pages, visits or
        mapped pages than a real mm can have)."""
        for start, end in ranges:
            if not 0 <= start < end <= USER_TOP:
                raise KdnbError(f"VMA {start:#x}-{end:#x} is not a user range")
        order = sorted(range(len(ranges)), key=lambda i: ranges[i][0])
        for before, after in zip(order, order[1:]):
            if ranges[after][0] < ranges[before][1]:
                raise KdnbError(f"VMAs {ranges[before][0]:#x}-{ranges[before][1]:#x} and "
                                f"{ranges[after][0]:#x}-{ranges[after][1]:#x} overlap")
        walk = _Walk(np.array([ranges[i][0] for i in order], dtype=np.int64),
                     np.array([ranges[i][1] for i in order], dtype=np.int64))
        if len(order):
            self._walk(self.root, 0, 0, walk)
        totals, failed = walk.totals(self.kinds)
        out: dict[int, tuple[int, int, int, int] | KdnbError] = {}
        for pos, i in enumerate(order):
            anon, file, shmem = (int(x) for x in totals[pos])
            out[i] = failed.get(pos) or (anon + file + shmem, anon, file, shmem)
        return [out[i] for i in range(len(ranges))]

    def _walk(self, table_paddr: int, level: int, base: int, walk: "_Walk") -> None:
        """Visit the entries of one table page that overlap a VMA: its leaves at once (numpy
        over the 512 entries), then the lower tables, depth first."""
        shift = self.shifts[level]
        span = 1 << shift
        self.visits += 1
        if self.visits > MAX_TABLE_VISITS:
            raise KdnbError(f"more than {MAX_TABLE_VISITS} page-table visits in one mm")
        lo = base + _INDEXES * span
        try:
            table = self._table(table_paddr)
        except KdnbError as exc:
            walk.fail(base, base + 512 * span, exc)
            return
        used = ((table & np.uint64(_PRESENT | _PROTNONE)) != 0) & walk.overlaps(lo, lo + span)
        if shift == PAGE_SHIFT:
            mapped = used
        elif shift in (21, 30):
            mapped = used & ((table & np.uint64(_PSE)) != 0)
        else:
            mapped = np.zeros(512, dtype=bool)
        leaf = mapped & ((table & np.uint64(_SPECIAL)) == 0)
        pfns = (table[leaf] & np.uint64(self.kinds.mask & ~(span - 1))) >> np.uint64(PAGE_SHIFT)
        starts = lo[leaf]
        if self.kinds.zero_pfn is not None:
            real = pfns != np.uint64(self.kinds.zero_pfn)
            pfns, starts = pfns[real], starts[real]
        if len(pfns):
            self.page_budget -= len(pfns) * (span >> PAGE_SHIFT)
            if self.page_budget < 0:
                raise KdnbError("the page tables map more pages than twice the machine's memory")
            walk.leaves(starts, span, pfns)
        lower = used & ~mapped & ((table & np.uint64(_PRESENT)) != 0)
        if shift != PAGE_SHIFT:
            for index in np.flatnonzero(lower).tolist():
                self._walk(int(table[index]) & self.kinds.mask, level + 1, base + index * span, walk)


class _Walk:
    """The VMAs of one walk (sorted, not overlapping), the leaves found in them and the ranges
    that could not be read."""

    def __init__(self, starts: np.ndarray, ends: np.ndarray) -> None:
        self.starts, self.ends = starts, ends
        self.small: list[tuple[np.ndarray, np.ndarray]] = []  # (VMA index, pfn) of 4 KiB leaves
        self.huge: list[tuple[int, int, int]] = []  # (start, span, pfn) of PMD/PUD leaves
        self.failed: dict[int, KdnbError] = {}

    def overlaps(self, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """Which of the ranges [lo, hi) overlap a VMA."""
        j = np.searchsorted(self.ends, lo, side="right")
        inside = j < len(self.starts)
        out = np.zeros(len(lo), dtype=bool)
        out[inside] = self.starts[j[inside]] < hi[inside]
        return out

    def leaves(self, starts: np.ndarray, span: int, pfns: np.ndarray) -> None:
        """Record present leaves mapping `span` bytes each from `starts`."""
        if span == 1 << PAGE_SHIFT:  # a page lies in one VMA (VMAs are page-aligned) or none
            j = np.searchsorted(self.ends, starts, side="right")
            ok = j < len(self.starts)
            ok[ok] = self.starts[j[ok]] <= starts[ok]
            self.small.append((j[ok], pfns[ok]))
        else:
            self.huge += [(a, span, p) for a, p in zip(starts.tolist(), pfns.tolist())]

    def fail(self, lo: int, hi: int, exc: KdnbError) -> None:
        """The VMAs overlapping [lo, hi) are unknown: their tables there are not in the dump."""
        first = int(np.searchsorted(self.ends, lo, side="right"))
        for j in range(first, len(self.starts)):
            if self.starts[j] >= hi:
                break
            self.failed.setdefault(j, exc)

    def totals(self, kinds: PageKinds) -> tuple[np.ndarray, dict[int, KdnbError]]:
        """(anon, file, shmem) pages per VMA, and the VMAs left unknown with why."""
        totals = np.zeros((len(self.starts), 3), dtype=np.int64)
        for vmas, pfns in self.small:
            for j, pfn in zip(vmas.tolist(), pfns.tolist()):
                try:
                    totals[j, kinds.kind(pfn)] += 1
                except KdnbError as exc:
                    self.failed.setdefault(j, exc)
        for lo, span, pfn in self.huge:
            hi = lo + span
            first = int(np.searchsorted(self.ends, lo, side="right"))
            for j in range(first, len(self.starts)):
                start, end = int(self.starts[j]), int(self.ends[j])
                if start >= hi:
                    break
                try:
                    totals[j, kinds.kind(pfn)] += (min(end, hi) - max(start, lo)) >> PAGE_SHIFT
                except KdnbError as exc:
                    self.failed.setdefault(j, exc)
        return totals, self.failed
