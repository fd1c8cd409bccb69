"""Resident pages of each VMA (/proc/PID/smaps `Rss:` and `Anonymous:`), from the mm's page tables.

The walk starts at `mm->pgd` and reads each page-table page once (512 entries) for the part of
the table that overlaps the VMA, so its cost is the tables that exist, not the VMA's size. An
entry counts as smaps_pte_entry() counts it: present or PROT_NONE (pte_present), not a special
mapping (_PAGE_SPECIAL: PFN maps such as [vvar]) and not the shared zero page (vm_normal_page()
returns no page for either); a present leaf at PMD or PUD level counts as its 512 or 262144
pages (the part inside the VMA). The split follows the kernel's rss_stat counters (mm_counter()):
anonymous when the folio's `mapping` has PAGE_MAPPING_ANON (bit 0), shmem when its flags have
PG_swapbacked (tmpfs, shmem, the initramfs' rootfs), else file. Swapped-out entries are not
resident and are not counted.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

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
MAX_TABLE_VISITS = 1 << 19  # table visits for one mm: each table once per VMA it serves, twice over
USER_TOP = 1 << 56  # above any 5-level user address
_TABLE = struct.Struct("<512Q")


class RssCounter:
    """Counts the resident pages of address ranges of one mm (`count(start, end, shmem)`)."""

    def __init__(self, k: "Kernel", pgd_vaddr: int) -> None:
        self.k = k
        info = k.vmcoreinfo
        self.mask = PTE_PFN_MASK & ~vmcoreinfo_int(info, "NUMBER(sme_mask)", default=0)
        self.shifts = (48, 39, 30, 21, 12) if k.pagetable.levels == 5 else (39, 30, 21, 12)
        self.root = k.vtop(pgd_vaddr)
        page_t = k.type("struct page")
        self.page_size = page_t.size or 64
        self.mapping_off = page_t.offsetof("mapping")
        self.swapbacked = 1 << enum_values(k, "enum pageflags")["PG_swapbacked"]
        self.vmemmap = k.vmemmap_base
        try:
            self.zero_pfn = k.vtop(k.symbol("empty_zero_page")) >> PAGE_SHIFT
        except KdnbError:
            self.zero_pfn = None
        self.tables: dict[int, tuple[int, ...]] = {}
        self.kinds: dict[int, int] = {}
        self.visits = 0
        # a hostile table (entries aliasing one page) could claim more pages than the machine has
        self.page_budget = 2 * max(int(getattr(k.reader, "max_pfn", 0) or 0), 1 << 18)

    def _table(self, paddr: int) -> tuple[int, ...]:
        table = self.tables.get(paddr)
        if table is None:
            if len(self.tables) >= MAX_TABLE_PAGES:
                raise KdnbError(f"more than {MAX_TABLE_PAGES} page-table pages in one mm")
            table = _TABLE.unpack(self.k.reader.read_phys(paddr, 4096))
            self.tables[paddr] = table
        return table

    def count(self, start: int, end: int) -> tuple[int, int, int, int]:
        """(resident, anon, file, shmem) pages of [start, end); KdnbError when a page-table page
        or a struct page is not in the dump."""
        if not 0 <= start < end <= USER_TOP:
            raise KdnbError(f"VMA {start:#x}-{end:#x} is not a user range")
        totals = [0, 0, 0]  # anon, file, shmem
        self._walk(self.root, 0, start, end, 0, totals)
        return sum(totals), totals[0], totals[1], totals[2]

    def _walk(self, table_paddr: int, level: int, start: int, end: int, base: int,
              totals: list[int]) -> None:
        shift = self.shifts[level]
        span = 1 << shift
        self.visits += 1
        if self.visits > MAX_TABLE_VISITS:
            raise KdnbError(f"more than {MAX_TABLE_VISITS} page-table visits in one mm")
        table = self._table(table_paddr)
        first = max(start, base)
        for index in range((first - base) >> shift, min(512, ((end - 1 - base) >> shift) + 1)):
            entry = table[index]
            if not entry & (_PRESENT | _PROTNONE):
                continue
            lo = base + index * span
            if shift == PAGE_SHIFT or (shift in (21, 30) and entry & _PSE):
                if entry & _SPECIAL:
                    continue
                pfn = (entry & self.mask & ~(span - 1)) >> PAGE_SHIFT
                if pfn == self.zero_pfn:
                    continue
                pages = (min(end, lo + span) - max(start, lo)) >> PAGE_SHIFT
                self.page_budget -= pages
                if self.page_budget < 0:
                    raise KdnbError("the page tables map more pages than twice the machine's memory")
                totals[self._kind(pfn)] += pages
            elif entry & _PRESENT:
                self._walk(entry & self.mask, level + 1, start, end, lo, totals)

    def _kind(self, pfn: int) -> int:
        """0 anon, 1 file, 2 shmem, from the folio's mapping and flags (read once per head page)."""
        page = self.vmemmap + pfn * self.page_size
        head_word = self.k.read_u64(page + 8)
        if head_word & 1:
            page = compound_head(page, head_word)
        kind = self.kinds.get(page)
        if kind is None:
            flags = self.k.read_u64(page)
            mapping = self.k.read_u64(page + self.mapping_off)
            kind = 0 if mapping & PAGE_MAPPING_ANON else 2 if flags & self.swapbacked else 1
            self.kinds[page] = kind
        return kind
