"""`Dump.meminfo`: the kernel's global memory counters (crash `kmem -i`, /proc/meminfo).

From `_totalram_pages`, `vm_zone_stat[]` and `vm_node_stat[]` (indexes from the BTF enums
`zone_stat_item`/`node_stat_item`, so items that move between kernels are found by name), plus
the block-device page cache for "buffers". Per-CPU deltas not yet folded into the global
counters are ignored, as /proc/meminfo ignores them.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from .. import bounds
from ..errors import CorruptStructure, KdnbError
from .common import Gaps, enum_values

if TYPE_CHECKING:  # pragma: no cover
    from ..api import Dump
    from ..kernel.kernel import Kernel

ROWS = ["total", "free", "used", "buffers", "cached", "slab_reclaimable", "slab_unreclaimable",
        "kernel_stack", "page_tables", "anon"]
MAX_INODES = 1 << 20
MAX_STAT_ITEMS = 1024  # enum zone/node_stat_item have ~ 10 and ~ 50 items
MAX_PAGES = 1 << 40  # 4 PiB of 4 KiB pages: no counter of a real machine is larger


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


def meminfo_frame(dump: "Dump") -> pd.DataFrame:
    """Rows total … anon (index `item`), columns `pages` and `bytes` (Int64)."""
    k = dump.kernel
    gaps = Gaps()
    page_size = dump.page_size
    values: dict[str, int | None] = dict.fromkeys(ROWS)
    try:
        values["total"] = struct.unpack("<q", k.read(k.symbol("_totalram_pages"), 8))[0]
    except KdnbError as exc:
        gaps.note("_totalram_pages", None, exc)
    try:
        st = _Stats(k)
    except KdnbError as exc:
        gaps.note("vm_zone_stat/vm_node_stat", None, exc)
        st = None
    if st is not None:
        values["free"] = st.get("NR_FREE_PAGES")
        if values["total"] is not None and values["free"] is not None:
            values["used"] = values["total"] - values["free"]
        buffers = _blockdev_pages(k, gaps)
        values["buffers"] = buffers
        file_pages = st.get("NR_FILE_PAGES")
        if file_pages is not None:
            # fs/proc/meminfo.c: Cached = file pages - swap cache - buffers, never negative
            cached = file_pages - (st.get("NR_SWAPCACHE") or 0) - (buffers or 0)
            values["cached"] = max(cached, 0)
        # 5.9 d42f3245c7e2 renamed NR_SLAB_*RECLAIMABLE to *_B (still counted in pages globally)
        values["slab_reclaimable"] = st.get("NR_SLAB_RECLAIMABLE_B", "NR_SLAB_RECLAIMABLE")
        values["slab_unreclaimable"] = st.get("NR_SLAB_UNRECLAIMABLE_B", "NR_SLAB_UNRECLAIMABLE")
        kb = st.get("NR_KERNEL_STACK_KB")
        values["kernel_stack"] = kb * 1024 // page_size if kb is not None else None
        values["page_tables"] = st.get("NR_PAGETABLE")
        values["anon"] = st.get("NR_ANON_MAPPED", "NR_ANON_PAGES")
    for row in ROWS:
        v = values[row]
        if v is not None and not 0 <= v <= MAX_PAGES:
            gaps.note(f"{row}: {v} pages is impossible (a corrupt counter); shown as NA")
            values[row] = None
    pages = pd.array([values[r] for r in ROWS], dtype="Int64")
    df = pd.DataFrame({"pages": pages, "bytes": pages * page_size},
                      index=pd.Index(ROWS, name="item"))
    if values["kernel_stack"] is not None and kb is not None:
        df.loc["kernel_stack", "bytes"] = np.int64(kb * 1024)
    return gaps.attach(df, "meminfo")
