"""x86_64 kernel virtual-to-physical translation: 4- and 5-level page tables, huge pages, KASLR."""

from __future__ import annotations

import struct
from typing import Callable

from ..bounds import vmcoreinfo_int
from ..errors import FaultError, KdnbError, PageNotInDump

START_KERNEL_MAP = 0xFFFFFFFF80000000  # __START_KERNEL_map: the kernel text mapping
PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT
PAGE_MASK = ~(PAGE_SIZE - 1) & 0xFFFFFFFFFFFFFFFF
PTE_PFN_MASK = 0x000FFFFFFFFFF000  # physical address bits 12..51 of an entry
_PRESENT = 0x1
_PSE = 0x80  # a leaf at PUD (1 GiB) or PMD (2 MiB) level
_U64 = struct.Struct("<Q")

# (name, shift) from the top level down; 5-level paging adds the P4D under PGD.
_LEVELS_4 = (("pgd", 39), ("pud", 30), ("pmd", 21), ("pte", 12))
_LEVELS_5 = (("pgd", 48), ("p4d", 39), ("pud", 30), ("pmd", 21), ("pte", 12))


class PageTable:
    """Translate kernel virtual addresses of one dump, caching each page's translation.

    The root is `SYMBOL(init_top_pgt)` (alias `swapper_pg_dir`), itself found through the kernel text
    mapping (`paddr = vaddr - __START_KERNEL_map + phys_base`). Once `page_offset` is set (the value
    of `page_offset_base`), direct-map addresses translate arithmetically.
    """

    def __init__(self, read_phys: Callable[[int, int], bytes], vmcoreinfo: dict[str, str],
                 path: str = "") -> None:
        self._read_phys = read_phys
        self.phys_base = vmcoreinfo_int(vmcoreinfo, "NUMBER(phys_base)", path, 0)
        self.kernel_offset = vmcoreinfo_int(vmcoreinfo, "KERNELOFFSET", path, 0)
        self.levels = 5 if vmcoreinfo_int(vmcoreinfo, "NUMBER(pgtable_l5_enabled)", path, 0) else 4
        sme_mask = vmcoreinfo_int(vmcoreinfo, "NUMBER(sme_mask)", path, 0)
        self._entry_mask = PTE_PFN_MASK & ~sme_mask
        key = "SYMBOL(init_top_pgt)" if "SYMBOL(init_top_pgt)" in vmcoreinfo else "SYMBOL(swapper_pg_dir)"
        if key not in vmcoreinfo:
            raise KdnbError("VMCOREINFO lacks SYMBOL(init_top_pgt) and SYMBOL(swapper_pg_dir)")
        self.root_vaddr = vmcoreinfo_int(vmcoreinfo, key, path)
        self.root_paddr = self.kernel_text_paddr(self.root_vaddr)
        max_bits = vmcoreinfo_int(vmcoreinfo, "NUMBER(MAX_PHYSMEM_BITS)", path,
                                  52 if self.levels == 5 else 46)
        self._direct_span = 1 << max_bits
        self.page_offset: int | None = None
        self._pages: dict[int, int] = {}  # virtual page number -> physical page address
        self._huge: dict[tuple[int, int], int] = {}  # (shift, vaddr >> shift) -> physical base
        self._level_names = _LEVELS_5 if self.levels == 5 else _LEVELS_4

    def kernel_text_paddr(self, vaddr: int) -> int:
        """Physical address of `vaddr` by the kernel text mapping formula (no table walk)."""
        return vaddr - START_KERNEL_MAP + self.phys_base

    def set_page_offset(self, page_offset: int, span: int | None = None) -> None:
        """Enable the direct-map fast path (PAGE_OFFSET, the value of `page_offset_base`) for
        `span` bytes (the kernel's `max_pfn` pages: with KASLR, vmalloc and vmemmap may begin
        well within 2^MAX_PHYSMEM_BITS of PAGE_OFFSET, as on 5.10)."""
        self.page_offset = page_offset
        if span is not None:
            self._direct_span = min(self._direct_span, span)

    def translate(self, vaddr: int) -> int:
        """Physical address of kernel virtual address `vaddr`; raises FaultError."""
        vpn = vaddr >> PAGE_SHIFT
        base = self._pages.get(vpn)
        if base is None:
            base = self._page(vaddr)
            self._pages[vpn] = base
        return base | (vaddr & (PAGE_SIZE - 1))

    def _page(self, vaddr: int) -> int:
        po = self.page_offset
        if po is not None and po <= vaddr < po + self._direct_span:
            return (vaddr - po) & PAGE_MASK
        for shift in (21, 30):
            base = self._huge.get((shift, vaddr >> shift))
            if base is not None:
                return base | (vaddr & ((1 << shift) - 1) & PAGE_MASK)
        paddr, shift = self._walk(vaddr)
        if shift > PAGE_SHIFT:
            self._huge[(shift, vaddr >> shift)] = paddr & ~((1 << shift) - 1)
        return paddr & PAGE_MASK

    def walk(self, vaddr: int) -> int:
        """Walk the page tables for `vaddr` (no cache); raises FaultError naming the level."""
        return self._walk(vaddr)[0]

    def _walk(self, vaddr: int) -> tuple[int, int]:
        """Physical address of `vaddr` and the shift of the page size mapping it."""
        vaddr &= 0xFFFFFFFFFFFFFFFF
        table = self.root_paddr
        mask = self._entry_mask
        for name, shift in self._level_names:
            index = (vaddr >> shift) & 0x1FF
            try:
                raw = self._read_phys(table + index * 8, 8)
            except KdnbError as exc:
                raise FaultError(vaddr, name, f"page table page {table:#x} unreadable ({exc})") from exc
            (entry,) = _U64.unpack(raw)
            if not entry & _PRESENT:
                raise FaultError(vaddr, name, f"entry {entry:#x}")
            if shift in (30, 21) and entry & _PSE:
                size = 1 << shift
                return (entry & mask & ~(size - 1)) | (vaddr & (size - 1)), shift
            table = entry & mask
        return table | (vaddr & (PAGE_SIZE - 1)), PAGE_SHIFT

    def read(self, vaddr: int, size: int) -> bytes:
        """Read `size` bytes of kernel virtual memory, page by page.

        A PageNotInDump raised here carries `.vaddr`, the virtual address that was missing.
        """
        if size <= 0:
            return b""
        po = self.page_offset
        if po is not None and po <= vaddr and vaddr + size <= po + self._direct_span:
            return self._read_run(vaddr, vaddr - po, size)  # the direct map: one physical run
        off = vaddr & (PAGE_SIZE - 1)
        if off + size <= PAGE_SIZE:
            return self._read_run(vaddr, self.translate(vaddr), size)
        parts = []
        run_vaddr, run_start = vaddr, self.translate(vaddr)  # contiguous pages: one read
        run_len = 0
        while size > 0:
            chunk = min(size, PAGE_SIZE - (vaddr & (PAGE_SIZE - 1)))
            paddr = self.translate(vaddr)
            if paddr != run_start + run_len:
                parts.append(self._read_run(run_vaddr, run_start, run_len))
                run_vaddr, run_start, run_len = vaddr, paddr, 0
            run_len += chunk
            vaddr += chunk
            size -= chunk
        parts.append(self._read_run(run_vaddr, run_start, run_len))
        return b"".join(parts)

    def _read_run(self, vaddr: int, paddr: int, size: int) -> bytes:
        try:
            return self._read_phys(paddr, size)
        except PageNotInDump as exc:
            exc.vaddr = vaddr + max(0, exc.paddr - paddr)
            raise
