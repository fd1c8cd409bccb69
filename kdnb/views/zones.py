"""`Dump.zones` and `Dump.buddyinfo`: the memory zones of each NUMA node (/proc/zoneinfo,
crash `kmem -z`) and their free blocks by order (/proc/buddyinfo, crash `kmem -f`).

One walk: `node_data[]` (the `struct pglist_data *` of each node id below `nr_node_ids`), each
node's `node_zones[]`, each `struct zone` read once. The counters are the zone's own `vm_stat[]`
(per-CPU deltas not yet folded in are ignored, as /proc/zoneinfo ignores them).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from .. import bounds
from ..errors import KdnbError
from .common import Gaps, enum_values, fitting, read_or_none

if TYPE_CHECKING:  # pragma: no cover
    from ..api import Dump
    from ..kernel.kernel import Kernel

MAX_ZONES = 8  # MAX_NR_ZONES is 4 or 5 on x86_64 (DMA, DMA32, Normal, Movable, Device)
MAX_ORDERS = 16  # NR_PAGE_ORDERS is 11 on x86_64 (up to 14 with CONFIG_ARCH_FORCE_MAX_ORDER)
WMARK_MIN, WMARK_LOW, WMARK_HIGH = 0, 1, 2  # enum zone_watermarks

ZONE_COLUMNS = ["node", "zone", "populated", "start_pfn", "spanned", "present", "managed", "free",
                "min", "low", "high", "boost", "reserved_highatomic", "address"]
BUDDY_COLUMNS = ["node", "zone", "order", "free_blocks", "free_pages"]


@dataclass
class Zone:
    """One `struct zone` as the walk read it (counts in pages)."""

    node: int
    name: str
    address: int
    start_pfn: int
    spanned: int
    present: int
    managed: int
    free: int | None
    watermarks: tuple[int, int, int]  # min, low, high (without the boost)
    boost: int
    reserved_highatomic: int
    free_blocks: list[int] = field(default_factory=list)  # nr_free of each order


class _ZoneReader:
    """Layouts and kernel-version choices for `struct zone`."""

    def __init__(self, k: "Kernel") -> None:
        z = k.type("struct zone")
        # 5.0 1c30844d2dfe renamed zone.watermark[] to _watermark[] and added watermark_boost
        self.boosted = z.has_member("_watermark")
        wm = "_watermark" if self.boosted else "watermark"
        # 5.0 9705bea5f833 made managed_pages an atomic_long_t
        managed = "managed_pages.counter" if z.has_member("managed_pages.counter") else "managed_pages"
        fields = [f"{wm}[{WMARK_MIN}]", f"{wm}[{WMARK_LOW}]", f"{wm}[{WMARK_HIGH}]",
                  "nr_reserved_highatomic", "zone_start_pfn", managed, "spanned_pages",
                  "present_pages", "name"] + (["watermark_boost"] if self.boosted else [])
        self.layout = k.layout(z, fields)
        self.size = z.size or self.layout.size
        fa = z.member("free_area")
        self.orders = bounds.count(fa.type.strip().length, "zone.free_area length", MAX_ORDERS)
        area_t = fa.type.strip().target.strip()
        self.area_off = fa.offset
        self.area_stride = area_t.size or 0
        self.nr_free_off = area_t.offsetof("nr_free")
        vm = z.member("vm_stat")
        items = enum_values(k, "enum zone_stat_item")
        self.free_idx = items.get("NR_FREE_PAGES")
        self.vm_off = vm.offset
        self.vm_len = vm.type.strip().length
        self.names: dict[int, str] = {}


def node_ids(k: "Kernel", gaps: Gaps) -> list[tuple[int, int]]:
    """(node id, pglist_data address) of each node that has one."""
    try:
        n = bounds.in_range(k.read_u32(k.symbol("nr_node_ids")), "nr_node_ids", 1,
                            bounds.NUMA_NODES_MAX, k.reader.path)
        raw = k.read(k.symbol("node_data"), 8 * n)
        ptrs = struct.unpack(f"<{n}Q", raw)
        return [(i, p) for i, p in enumerate(ptrs) if p]
    except KdnbError as exc:
        try:  # !CONFIG_NUMA: one static node
            return [(0, k.symbol("contig_page_data"))]
        except KdnbError:
            gaps.note("node_data / contig_page_data", None, exc)
            return []


def walk_zones(k: "Kernel", gaps: Gaps) -> list[Zone]:
    """Every zone of every node (populated or not), in node then zone order."""
    r = _ZoneReader(k)
    pg = k.type("struct pglist_data")
    node_zones = pg.member("node_zones")
    nz = bounds.count(node_zones.type.strip().length, "pglist_data.node_zones length", MAX_ZONES)
    out: list[Zone] = []
    for node, pgdat in node_ids(k, gaps):
        for i in range(nz):
            addr = pgdat + node_zones.offset + i * r.size
            data = read_or_none(k, addr, r.size, gaps, f"struct zone {i} of node {node}")
            if data is None:
                continue
            out.append(_zone(k, r, node, addr, data))
    return out


def _zone(k: "Kernel", r: _ZoneReader, node: int, addr: int, data: bytes) -> Zone:
    v = r.layout.unpack(data)
    wmin, wlow, whigh, highatomic, start, managed, spanned, present, name_ptr = v[:9]
    boost = v[9] if r.boosted else 0
    if name_ptr not in r.names:
        try:
            r.names[name_ptr] = k.read_cstring(name_ptr, 32)
        except KdnbError:
            r.names[name_ptr] = "?"
    free = None
    if r.free_idx is not None and 0 <= r.free_idx < r.vm_len:
        (free,) = struct.unpack_from("<q", data, r.vm_off + 8 * r.free_idx)
    blocks = [struct.unpack_from("<Q", data, r.area_off + o * r.area_stride + r.nr_free_off)[0]
              for o in range(r.orders)]
    return Zone(node, r.names[name_ptr], addr, start, spanned, present, managed, free,
                (wmin, wlow, whigh), boost, highatomic, blocks)


def zones_frame(dump: "Dump") -> pd.DataFrame:
    """One row per zone: node, zone (DMA, DMA32, Normal, Movable, Device), populated,
    start_pfn, spanned, present, managed, free, min, low, high, boost, reserved_highatomic
    (pages), address of the struct zone."""
    gaps = Gaps()
    zones = walk_zones(dump.kernel, gaps)
    df = pd.DataFrame({
        "node": fitting([z.node for z in zones], "Int16", "node", gaps),
        "zone": pd.Categorical([z.name for z in zones]),
        "populated": np.array([z.present > 0 for z in zones], dtype=bool),
        "start_pfn": fitting([z.start_pfn for z in zones], "UInt64", "start_pfn", gaps),
        **{col: fitting([getattr(z, col) for z in zones], "Int64", col, gaps)
           for col in ("spanned", "present", "managed", "free")},
        **{col: fitting([z.watermarks[i] for z in zones], "Int64", col, gaps)
           for i, col in enumerate(("min", "low", "high"))},
        "boost": fitting([z.boost for z in zones], "Int64", "boost", gaps),
        "reserved_highatomic": fitting([z.reserved_highatomic for z in zones], "Int64",
                                       "reserved_highatomic", gaps),
        "address": fitting([z.address for z in zones], "UInt64", "address", gaps),
    }, columns=ZONE_COLUMNS)
    return gaps.attach(df, "zones")


def buddyinfo_frame(dump: "Dump") -> pd.DataFrame:
    """One row per populated zone and order: node, zone, order, free_blocks (blocks of 2^order
    pages on the buddy free lists, /proc/buddyinfo's numbers), free_pages (free_blocks << order)."""
    gaps = Gaps()
    rows = [(z.node, z.name, order, n) for z in walk_zones(dump.kernel, gaps) if z.present
            for order, n in enumerate(z.free_blocks)]
    blocks = fitting([r[3] for r in rows], "Int64", "free_blocks", gaps)
    orders = fitting([r[2] for r in rows], "Int16", "order", gaps)
    df = pd.DataFrame({
        "node": fitting([r[0] for r in rows], "Int16", "node", gaps),
        "zone": pd.Categorical([r[1] for r in rows]),
        "order": orders,
        "free_blocks": blocks,
        "free_pages": fitting([None if pd.isna(b) else int(b) << r[2] for b, r in zip(blocks, rows)],
                              "Int64", "free_pages", gaps),
    }, columns=BUDDY_COLUMNS)
    return gaps.attach(df, "buddyinfo")
