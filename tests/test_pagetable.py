"""x86_64 page-table walks on synthetic physical memory: 4/5 levels, 1 GiB/2 MiB pages, sme_mask."""

from __future__ import annotations

import struct

import pytest

from kdnb.errors import FaultError, PageNotInDump
from kdnb.kernel.pagetable import START_KERNEL_MAP, PageTable

P, PSE = 0x1, 0x80


class PhysMem:
    """Sparse physical memory of 4 KiB pages."""

    def __init__(self) -> None:
        self.pages: dict[int, bytearray] = {}

    def page(self, paddr: int) -> bytearray:
        return self.pages.setdefault(paddr >> 12, bytearray(4096))

    def set_entry(self, table: int, index: int, value: int) -> None:
        struct.pack_into("<Q", self.page(table), index * 8, value)

    def read(self, paddr: int, size: int) -> bytes:
        out = b""
        while size > 0:
            page = self.pages.get(paddr >> 12)
            if page is None:
                raise PageNotInDump(paddr, "hole")
            chunk = min(size, 4096 - (paddr & 4095))
            out += bytes(page[paddr & 4095:(paddr & 4095) + chunk])
            paddr += chunk
            size -= chunk
        return out


def idx(vaddr: int, shift: int) -> int:
    return (vaddr >> shift) & 0x1FF


def build(levels: int, sme_mask: int = 0) -> tuple[PhysMem, PageTable, dict[str, int]]:
    mem = PhysMem()
    phys_base = -0x1000000
    root_v = START_KERNEL_MAP + 0x2000000  # root table lives in the kernel image
    root = root_v - START_KERNEL_MAP + phys_base
    shifts = [48, 39, 30, 21, 12] if levels == 5 else [39, 30, 21, 12]
    va4k = 0xFFFFC90000123000  # a 4 KiB page (vmalloc-like)
    va2m = 0xFFFFC90040200000  # a 2 MiB page
    va1g = 0xFFFF888040000000  # a 1 GiB page
    next_table = [0x100000]

    def table() -> int:
        next_table[0] += 0x1000
        mem.page(next_table[0])
        return next_table[0]

    def map_(vaddr: int, paddr: int, leaf_shift: int) -> None:
        t = root
        for shift in shifts:
            if shift == leaf_shift:
                flag = PSE if shift in (30, 21) else 0
                mem.set_entry(t, idx(vaddr, shift), paddr | sme_mask | P | flag)
                return
            cur = struct.unpack_from("<Q", mem.page(t), idx(vaddr, shift) * 8)[0]
            if not cur & P:
                cur = table() | sme_mask | P
                mem.set_entry(t, idx(vaddr, shift), cur)
            t = cur & 0x000FFFFFFFFFF000 & ~sme_mask

    mem.page(root)
    map_(va4k, 0x5000, 12)
    map_(va2m, 0x40000000, 21)
    map_(va1g, 0x80000000, 30)
    mem.page(0x5000)[0x10:0x15] = b"hello"
    mem.page(0x6000)[0:3] = b"abc"
    map_(va4k + 0x1000, 0x6000, 12)
    info = {"SYMBOL(init_top_pgt)": f"{root_v:x}", "NUMBER(phys_base)": str(phys_base),
            "NUMBER(pgtable_l5_enabled)": "1" if levels == 5 else "0", "KERNELOFFSET": "0",
            "NUMBER(sme_mask)": str(sme_mask)}
    return mem, PageTable(mem.read, info), {"4k": va4k, "2m": va2m, "1g": va1g}


@pytest.mark.parametrize("levels", [4, 5])
@pytest.mark.parametrize("sme_mask", [0, 1 << 47])
def test_translate(levels: int, sme_mask: int) -> None:
    mem, pt, va = build(levels, sme_mask)
    assert pt.levels == levels
    assert pt.translate(va["4k"] + 0x10) == 0x5010
    assert pt.translate(va["2m"] + 0x1234) == 0x40001234
    assert pt.translate(va["1g"] + 0x12345678) == 0x92345678
    assert pt.read(va["4k"] + 0x10, 5) == b"hello"
    assert pt.read(va["4k"] + 0xFFE, 5) == b"\0\0abc"  # across two non-contiguous pages


@pytest.mark.parametrize("levels", [4, 5])
def test_fault_names_level(levels: int) -> None:
    mem, pt, va = build(levels)
    with pytest.raises(FaultError) as e:
        pt.translate(va["4k"] + 0x2000)  # same PMD, empty PTE
    assert e.value.level == "pte" and e.value.vaddr == va["4k"] + 0x2000
    with pytest.raises(FaultError) as e:
        pt.translate(0xFFFFFE0000000000)
    assert e.value.level == ("p4d" if levels == 5 else "pgd")  # 5-level: the PGD entry is shared


def test_text_mapping_and_direct_map() -> None:
    mem, pt, va = build(4)
    assert pt.kernel_text_paddr(START_KERNEL_MAP + 0x2000000) == 0x1000000
    pt.set_page_offset(0xFFFF888000000000)
    assert pt.translate(0xFFFF888000005010) == 0x5010  # arithmetic, no walk
