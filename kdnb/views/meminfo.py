"""`Dump.meminfo`: the kernel's global memory counters (crash `kmem -i`, /proc/meminfo).

From `_totalram_pages`, `vm_zone_stat[]` and `vm_node_stat[]` (indexes from the BTF enums
`zone_stat_item`/`node_stat_item`, so items that move between kernels are found by name), the
block-device page cache for "buffers", the zones' low watermarks for "available" (the kernel's
si_mem_available()), the swap, overcommit, vmalloc, per-CPU allocator and hugetlb globals.
Per-CPU deltas not yet folded into the global counters are ignored, as /proc/meminfo ignores them (Committed_AS, a percpu_counter, is summed over the online CPUs as
the kernel's vm_memory_committed() does).

Rows are kdnb names (index `item`), each with the /proc/meminfo field it corresponds to (`proc`);
a counter this kernel does not have (no such enum item or symbol) is NA and listed in
`df.attrs["kdnb"]["absent"]`; one that could not be read is NA and flags the view incomplete.
"""

from __future__ import annotations

import struct
from functools import cache
from typing import TYPE_CHECKING, Callable

import numpy as np
import pandas as pd

from .. import bounds
from ..errors import CorruptStructure, KdnbError, SymbolNotFound
from .common import Gaps, enum_values, online_cpus
from .zones import WMARK_LOW, walk_zones

if TYPE_CHECKING:  # pragma: no cover
    from ..api import Dump
    from ..kernel.kernel import Kernel

#: (item, /proc/meminfo field); the first ten are the original rows, in their order.
FIELDS = [("total", "MemTotal"), ("free", "MemFree"), ("used", None), ("buffers", "Buffers"),
          ("cached", "Cached"), ("slab_reclaimable", "SReclaimable"),
          ("slab_unreclaimable", "SUnreclaim"), ("kernel_stack", "KernelStack"),
          ("page_tables", "PageTables"), ("anon", "AnonPages"),
          ("available", "MemAvailable"), ("swap_cached", "SwapCached"),
          ("active_anon", "Active(anon)"), ("inactive_anon", "Inactive(anon)"),
          ("active_file", "Active(file)"), ("inactive_file", "Inactive(file)"),
          ("unevictable", "Unevictable"), ("mlocked", "Mlocked"), ("swap_total", "SwapTotal"),
          ("swap_free", "SwapFree"), ("dirty", "Dirty"), ("writeback", "Writeback"),
          ("mapped", "Mapped"), ("shmem", "Shmem"), ("kreclaimable", "KReclaimable"),
          ("slab", "Slab"), ("sec_page_tables", "SecPageTables"), ("bounce", "Bounce"),
          ("writeback_tmp", "WritebackTmp"), ("commit_limit", "CommitLimit"),
          ("committed_as", "Committed_AS"), ("vmalloc_used", "VmallocUsed"),
          ("percpu", "Percpu"), ("hardware_corrupted", "HardwareCorrupted"),
          ("anon_huge", "AnonHugePages"), ("shmem_huge", "ShmemHugePages"),
          ("shmem_pmd_mapped", "ShmemPmdMapped"), ("file_huge", "FileHugePages"),
          ("file_pmd_mapped", "FilePmdMapped"), ("cma_total", "CmaTotal"), ("cma_free", "CmaFree"),
          ("unaccepted", "Unaccepted"), ("hugepages_total", "HugePages_Total"),
          ("hugepages_free", "HugePages_Free"), ("hugepages_rsvd", "HugePages_Rsvd"),
          ("hugepages_surp", "HugePages_Surp"), ("hugepage_size", "Hugepagesize"),
          ("hugetlb", "Hugetlb")]
ROWS = [item for item, _ in FIELDS]
#: Rows that are parts of RAM (never above `total`); swap and commit figures can exceed it
#: (x86's DirectMap* lines, which count reserved memory too, are left out for that reason).
RAM_ROWS = [r for r in ROWS if r not in ("swap_total", "swap_free", "commit_limit", "committed_as")]
MAX_INODES = 1 << 20
MAX_STAT_ITEMS = 1024  # enum zone/node_stat_item have ~ 10 and ~ 50-80 items
MAX_PAGES = 1 << 40  # 4 PiB of 4 KiB pages: no counter of a real machine is larger
MAX_HSTATES = 8  # HUGE_MAX_HSTATE is 2 on x86_64
HPAGE_PMD_NR = 512  # 2 MiB / 4 KiB
_I64 = struct.Struct("<q")


class _Absent(Exception):
    """Internal: the kernel has no such counter (enum item or symbol missing)."""


class _Stats:
    """vm_zone_stat / vm_node_stat items by enum name."""

    def __init__(self, k: "Kernel") -> None:
        self.values: dict[str, int] = {}
        for enum, symbol, count in (("enum zone_stat_item", "vm_zone_stat", "NR_VM_ZONE_STAT_ITEMS"),
                                    ("enum node_stat_item", "vm_node_stat", "NR_VM_NODE_STAT_ITEMS")):
            items = enum_values(k, enum)
            if count not in items:
                raise CorruptStructure(f"{enum} has no {count}")
            n = bounds.count(items[count], f"{enum} {count}", MAX_STAT_ITEMS)
            raw = struct.unpack(f"<{n}q", k.read(k.symbol(symbol), 8 * n))
            for name, idx in items.items():
                if 0 <= idx < n:
                    self.values.setdefault(name, raw[idx])

    def get(self, *names: str) -> int | None:
        for name in names:
            if name in self.values:
                return self.values[name]
        return None

    def need(self, *names: str) -> int:
        """The first of `names` this kernel has; _Absent when it has none."""
        v = self.get(*names)
        if v is None:
            raise _Absent
        return v


def _long(k: "Kernel", name: str) -> int:
    """A global `long` / `atomic_long_t`; _Absent when the kernel has no such symbol."""
    try:
        addr = k.symbol(name)
    except SymbolNotFound:
        raise _Absent from None
    return _I64.unpack(k.read(addr, 8))[0]


def _int(k: "Kernel", name: str) -> int:
    """A global `int`; _Absent when the kernel has no such symbol."""
    try:
        addr = k.symbol(name)
    except SymbolNotFound:
        raise _Absent from None
    return struct.unpack("<i", k.read(addr, 4))[0]


def _blockdev_pages(k: "Kernel", gaps: Gaps) -> int | None:
    """nr_blockdev_pages(): page cache of the block devices' inodes on blockdev_superblock."""
    try:
        sb = k.read_u64(k.symbol("blockdev_superblock"))
        sb_t = k.type("struct super_block")
        ino_t = k.type("struct inode")
        head = sb + sb_t.offsetof("s_inodes")
        link_off = ino_t.offsetof("i_sb_list")
        layout = k.layout(ino_t, ["i_sb_list.next", "i_data.nrpages"])
    except KdnbError as exc:
        gaps.note("blockdev_superblock", None, exc)
        return None
    total = 0
    try:
        node = k.read_u64(head)
        seen: set[int] = set()
        while node != head:
            if node in seen or node == 0 or len(seen) > MAX_INODES:
                gaps.note(f"block device inode list at {head:#x} is corrupt", head)
                return None
            seen.add(node)
            inode = node - link_off
            node, nrpages = layout.unpack(k.read(inode, layout.size))
            if not isinstance(node, int) or not isinstance(nrpages, int):
                raise CorruptStructure("struct inode i_sb_list.next / i_data.nrpages are not "
                                       "integers (the BTF types are damaged)")
            total += nrpages
    except KdnbError as exc:
        gaps.note("block device inode", None, exc)
        return None
    return total


def percpu_counter_sum(k: "Kernel", address: int) -> int:
    """percpu_counter_sum() of the `struct percpu_counter` at `address` (online CPUs)."""
    pc = k.type("struct percpu_counter")
    count, counters = k.layout(pc, ["count", "counters"]).unpack(k.read(address, pc.size or 0))
    if counters:
        offs = k.per_cpu_offsets
        for cpu in online_cpus(k):
            count += struct.unpack("<i", k.read((counters + int(offs[cpu])) & (2**64 - 1), 4))[0]
    return count


def _hstates(k: "Kernel") -> tuple[dict[str, int], int]:
    """The default huge page size's counters (in base pages) and the hugetlb total (pages)."""
    n = bounds.count(_int(k, "hugetlb_max_hstate"), "hugetlb_max_hstate", MAX_HSTATES)
    default = _int(k, "default_hstate_idx")
    h_t = k.type("struct hstate")
    layout = k.layout(h_t, ["order", "nr_huge_pages", "free_huge_pages", "resv_huge_pages",
                            "surplus_huge_pages"])
    base = k.symbol("hstates")
    out: dict[str, int] = {}
    hugetlb = 0
    for i in range(n):
        order, nr, free, resv, surp = layout.unpack(k.read(base + i * (h_t.size or 0), layout.size))
        per = 1 << bounds.shift(order, "hstate.order", 30)
        hugetlb += nr * per
        if i == default:
            out = {"hugepages_total": nr * per, "hugepages_free": free * per,
                   "hugepages_rsvd": resv * per, "hugepages_surp": surp * per, "hugepage_size": per}
    return out, hugetlb


def _available(k: "Kernel", st: _Stats, gaps: Gaps) -> int:
    """si_mem_available(): free minus reserves, plus the reclaimable halves of page cache
    and reclaimable kernel memory above the zones' low watermarks."""
    wmark_low = sum(z.watermarks[WMARK_LOW] + z.boost for z in walk_zones(k, gaps))
    avail = st.need("NR_FREE_PAGES") - _long(k, "totalreserve_pages")
    cache = st.need("NR_ACTIVE_FILE") + st.need("NR_INACTIVE_FILE")
    avail += cache - min(cache // 2, wmark_low)
    recl = st.need("NR_SLAB_RECLAIMABLE_B", "NR_SLAB_RECLAIMABLE") + \
        (st.get("NR_KERNEL_MISC_RECLAIMABLE") or 0)
    avail += recl - min(recl // 2, wmark_low)
    return max(avail, 0)


def _commit_limit(k: "Kernel", total: int, hugetlb: int) -> int:
    """vm_commit_limit(): overcommit_kbytes, else (RAM - hugetlb) * overcommit_ratio%, + swap."""
    kbytes = _long(k, "sysctl_overcommit_kbytes")
    allowed = kbytes >> 2 if kbytes else (total - hugetlb) * _int(k, "sysctl_overcommit_ratio") // 100
    return allowed + _long(k, "total_swap_pages")


def _counters(k: "Kernel", st: _Stats, total: int | None, gaps: Gaps) -> dict[str, Callable[[], int]]:
    """How each row beyond the original ten is computed (pages)."""
    # 5.13 69473e5de873 counts NR_*_THPS in pages (before: in huge pages); NR_SWAPCACHE came in
    # the same release (b6038942480e), so its presence tells the units apart
    thp = 1 if "NR_SWAPCACHE" in st.values else HPAGE_PMD_NR
    hstates = cache(lambda: _hstates(k))

    def pick(table: Callable[[], dict[str, int]], row: str) -> Callable[[], int]:
        return lambda: table()[row] if row in table() else _raise_absent()

    def swap_cached() -> int:
        if "NR_SWAPCACHE" in st.values:
            return st.values["NR_SWAPCACHE"]
        if _long(k, "total_swap_pages") == 0:  # 5.10: total_swapcache_pages() is 0 without swap
            return 0
        raise KdnbError("swap cache size of a kernel before 5.13 with swap is not summed")

    node = {"active_anon": "NR_ACTIVE_ANON", "inactive_anon": "NR_INACTIVE_ANON",
            "active_file": "NR_ACTIVE_FILE", "inactive_file": "NR_INACTIVE_FILE",
            "unevictable": "NR_UNEVICTABLE", "mlocked": "NR_MLOCK", "dirty": "NR_FILE_DIRTY",
            "writeback": "NR_WRITEBACK", "mapped": "NR_FILE_MAPPED", "shmem": "NR_SHMEM",
            "sec_page_tables": "NR_SECONDARY_PAGETABLE", "bounce": "NR_BOUNCE",
            "writeback_tmp": "NR_WRITEBACK_TEMP", "cma_free": "NR_FREE_CMA_PAGES",
            "unaccepted": "NR_UNACCEPTED"}
    out: dict[str, Callable[[], int]] = {row: (lambda item=item: st.need(item)) for row, item in node.items()}
    out.update({
        "available": lambda: _available(k, st, gaps),
        "swap_cached": swap_cached,
        "swap_total": lambda: _long(k, "total_swap_pages"),
        "swap_free": lambda: _long(k, "nr_swap_pages"),
        "kreclaimable": lambda: st.need("NR_SLAB_RECLAIMABLE_B", "NR_SLAB_RECLAIMABLE")
        + (st.get("NR_KERNEL_MISC_RECLAIMABLE") or 0),
        "slab": lambda: st.need("NR_SLAB_RECLAIMABLE_B", "NR_SLAB_RECLAIMABLE")
        + st.need("NR_SLAB_UNRECLAIMABLE_B", "NR_SLAB_UNRECLAIMABLE"),
        "commit_limit": lambda: _commit_limit(k, total if total is not None else _raise_absent(),
                                              hstates()[1]),
        "committed_as": lambda: max(percpu_counter_sum(k, k.symbol("vm_committed_as")), 0),
        # 7.x counts vmalloc pages in node stat NR_VMALLOC; before, the atomic nr_vmalloc_pages
        "vmalloc_used": lambda: st.values["NR_VMALLOC"] if "NR_VMALLOC" in st.values
        else _long(k, "nr_vmalloc_pages"),
        "percpu": lambda: _int(k, "pcpu_nr_populated") * _int(k, "pcpu_nr_units"),
        "hardware_corrupted": lambda: _long(k, "num_poisoned_pages"),
        "anon_huge": lambda: st.need("NR_ANON_THPS") * thp,
        "shmem_huge": lambda: st.need("NR_SHMEM_THPS") * thp,
        "shmem_pmd_mapped": lambda: st.need("NR_SHMEM_PMDMAPPED") * thp,
        "file_huge": lambda: st.need("NR_FILE_THPS") * thp,
        "file_pmd_mapped": lambda: st.need("NR_FILE_PMDMAPPED") * thp,
        "cma_total": lambda: _long(k, "totalcma_pages"),
        "hugetlb": lambda: hstates()[1],
        **{row: pick(lambda: hstates()[0], row) for row in ("hugepages_total", "hugepages_free", "hugepages_rsvd",
                                        "hugepages_surp", "hugepage_size")},
    })
    return out


def _raise_absent() -> int:
    raise _Absent


def meminfo_frame(dump: "Dump") -> pd.DataFrame:
    """Rows `ROWS` (index `item`), columns `pages` and `bytes` (Int64) and `proc` (the
    /proc/meminfo field; hugepages_* count base pages: divide by hugepage_size's pages for
    /proc's numbers of huge pages)."""
    k = dump.kernel
    gaps = Gaps()
    page_size = dump.page_size
    values: dict[str, int | None] = dict.fromkeys(ROWS)
    absent: list[str] = []
    try:
        values["total"] = _I64.unpack(k.read(k.symbol("_totalram_pages"), 8))[0]
    except KdnbError as exc:
        gaps.note("_totalram_pages", None, exc)
    try:
        st = _Stats(k)
    except KdnbError as exc:
        gaps.note("vm_zone_stat/vm_node_stat", None, exc)
        st = None
    kb = None
    if st is not None:
        values["free"] = st.get("NR_FREE_PAGES")
        if values["total"] is not None and values["free"] is not None:
            values["used"] = values["total"] - values["free"]
        buffers = _blockdev_pages(k, gaps)
        values["buffers"] = buffers
        # 5.10 has no NR_SWAPCACHE: its swap cache is 0 without swap (else Cached is unknown)
        counters = _counters(k, st, values["total"], gaps)
        swap_cached = _try(counters.pop("swap_cached"), "swap_cached", gaps, absent)
        values["swap_cached"] = swap_cached
        file_pages = st.get("NR_FILE_PAGES")
        if file_pages is not None and swap_cached is not None:
            # fs/proc/meminfo.c: Cached = file pages - swap cache - buffers, never negative
            values["cached"] = max(file_pages - swap_cached - (buffers or 0), 0)
        # 5.9 d42f3245c7e2 renamed NR_SLAB_*RECLAIMABLE to *_B (still counted in pages globally)
        values["slab_reclaimable"] = st.get("NR_SLAB_RECLAIMABLE_B", "NR_SLAB_RECLAIMABLE")
        values["slab_unreclaimable"] = st.get("NR_SLAB_UNRECLAIMABLE_B", "NR_SLAB_UNRECLAIMABLE")
        kb = st.get("NR_KERNEL_STACK_KB")
        values["kernel_stack"] = kb * 1024 // page_size if kb is not None else None
        values["page_tables"] = st.get("NR_PAGETABLE")
        values["anon"] = st.get("NR_ANON_MAPPED", "NR_ANON_PAGES")
        for row, get in counters.items():
            values[row] = _try(get, row, gaps, absent)
    for row in ROWS:
        v = values[row]
        if v is not None and not 0 <= v <= MAX_PAGES:
            gaps.note(f"{row}: {v} pages is impossible (a corrupt counter); shown as NA")
            values[row] = None
    pages = pd.array([values[r] for r in ROWS], dtype="Int64")
    df = pd.DataFrame({"pages": pages, "bytes": pages * page_size,
                       "proc": pd.array([p for _, p in FIELDS], dtype="string")},
                      index=pd.Index(ROWS, name="item"))
    if values["kernel_stack"] is not None and kb is not None:
        df.loc["kernel_stack", "bytes"] = np.int64(kb * 1024)
    if absent:
        df.attrs["kdnb"] = {"absent": sorted(set(absent))}
    return gaps.attach(df, "meminfo")


def _try(get: Callable[[], int], row: str, gaps: Gaps, absent: list[str]) -> int | None:
    try:
        return get()
    except _Absent:
        absent.append(row)
    except (KdnbError, struct.error) as exc:
        gaps.note(row, None, exc)
    return None
