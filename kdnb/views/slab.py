"""`Dump.slab`: SLUB cache usage, one row per `struct kmem_cache` (crash `kmem -s`).

`num_slabs`/`num_objs` are the per-node counters (CONFIG_SLUB_DEBUG). Free objects are counted
where SLUB keeps them: slabs on the node partial lists and the per-CPU partial lists
(`objects - inuse`), and the per-CPU lockless freelists (walked, with CONFIG_SLAB_FREELIST_HARDENED
pointer decoding); on kernels with per-CPU sheaves (`kmem_cache.cpu_sheaves`, which replaced the
per-CPU slabs by 7.2) the objects in each CPU's main and spare sheaf and in the full sheaves of each
node's barn. `active_objs = num_objs - free_objs` is what is really allocated (crash's
ALLOCATED; /proc/slabinfo counts per-CPU free objects as active). This is the same accounting as
drgn's `slab_cache_usage()`.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Any

import pandas as pd

from ..errors import KdnbError, TypeNotFound
from .common import Gaps, fitting, online_cpus, read_or_none

if TYPE_CHECKING:  # pragma: no cover
    from ..api import Dump
    from ..kernel.kernel import Kernel

OO_SHIFT = 16
OO_MASK = (1 << OO_SHIFT) - 1
MAX_CACHES = 1 << 16
MAX_PARTIAL = 1 << 20
PAGE_SHIFT = 12
_U64 = struct.Struct("<Q")

COLUMNS = ["name", "object_size", "size", "objs_per_slab", "order", "num_slabs", "num_objs",
           "active_objs", "free_objs", "total_bytes", "active_bytes", "address"]


class _CacheUnreadable(Exception):
    """Internal: a structure a cache's free count needs is not in the dump."""


class _Slub:
    """Layouts and kernel-version choices for walking SLUB."""

    def __init__(self, k: "Kernel", gaps: Gaps) -> None:
        self.k = k
        self.gaps = gaps
        kc = k.type("struct kmem_cache")
        self.nr_nodes = max(1, min(k.read_u32(k.symbol("nr_node_ids")), 1 << 10)) \
            if _has_symbol(k, "nr_node_ids") else 1
        fields = ["name", "object_size", "size", "oo.x", "list.next", "list.prev", "offset"]
        self.hardened = kc.has_member("random")  # CONFIG_SLAB_FREELIST_HARDENED
        self.has_cpu_slab = kc.has_member("cpu_slab")  # absent with CONFIG_SLUB_TINY (6.2+)
        if self.hardened:
            fields.append("random")
        if self.has_cpu_slab:
            fields.append("cpu_slab")
        self.cache_layout = k.layout(kc, fields)
        self.fields = {f: i for i, f in enumerate(fields)}
        if kc.has_member("node"):
            self.node_off, self.node_stride, self.barn_off = kc.offsetof("node"), 8, None
        else:  # 6.18+ (per-CPU sheaves): per_node[] of {barn, node} pointers
            ptrs = k.type("struct kmem_cache_per_node_ptrs")
            self.node_off = kc.offsetof("per_node") + ptrs.offsetof("node")
            self.node_stride = ptrs.size or 16
            self.barn_off = kc.offsetof("per_node") + ptrs.offsetof("barn")
        self.cache_size = max(self.cache_layout.size, self.node_off + self.node_stride * self.nr_nodes)
        self.has_sheaves = kc.has_member("cpu_sheaves")
        if self.has_sheaves:
            fields.append("cpu_sheaves")
            self.cache_layout = k.layout(kc, fields)
            self.fields = {f: i for i, f in enumerate(fields)}
            pcs = k.type("struct slub_percpu_sheaves")
            # rcu_free holds objects still waiting for a grace period: in use until it ends
            self.pcs_layout = k.layout(pcs, [m for m in ("main", "spare") if pcs.has_member(m)])
            sheaf = k.type("struct slab_sheaf")
            self.sheaf_size_off = sheaf.offsetof("size")
            self.sheaf_list_off = sheaf.offsetof("barn_list")
            self.barn_layout = k.layout(k.type("struct node_barn"), ["sheaves_full.next"])
            self.barn_full_off = k.type("struct node_barn").offsetof("sheaves_full")
            self.cpus = online_cpus(k)
        self.list_off = kc.offsetof("list")
        node_t = k.type("struct kmem_cache_node")
        if not node_t.has_member("nr_slabs"):
            raise KdnbError("slab usage needs CONFIG_SLUB_DEBUG (kmem_cache_node.nr_slabs missing)")
        self.node_layout = k.layout(node_t, ["nr_slabs.counter", "total_objects.counter", "partial.next"])
        self.node_partial_off = node_t.offsetof("partial")
        # 5.17 d122019bf061 ("mm: Split slab into its own type"): struct slab, else struct page
        try:
            slab_t = k.type("struct slab")
            if not slab_t.has_member("slab_cache"):
                raise TypeNotFound("struct slab is not SLUB's")
        except TypeNotFound:
            slab_t = k.type("struct page")
        link = "slab_list" if slab_t.has_member("slab_list") else "lru"
        self.slab_list_off = slab_t.offsetof(link)
        # `next` links the per-CPU partial slabs; gone with them in 6.18+ (sheaves)
        self.slab_next = slab_t.has_member("next")
        self.slab_layout = k.layout(slab_t, [f"{link}.next", "inuse", "objects", "slab_cache"]
                                    + (["next"] if self.slab_next else []))
        if self.has_cpu_slab:
            cpu_t = k.type("struct kmem_cache_cpu")
            cur = "slab" if cpu_t.has_member("slab") else "page"  # 5.17 bb192ed9aa71
            cfields = ["freelist", cur] + (["partial"] if cpu_t.has_member("partial") else [])
            self.cpu_layout = k.layout(cpu_t, cfields)
            self.cpu_partial = len(cfields) == 3
            self.cpus = online_cpus(k)
        self.page_size = 1 << PAGE_SHIFT

    def node_pointers(self, cache: bytes, offset: int) -> list[int]:
        """The `nr_nodes` pointers at `offset`, `node_stride` apart, in a kmem_cache's bytes."""
        return [_U64.unpack_from(cache, offset + i * self.node_stride)[0] for i in range(self.nr_nodes)]

    def sheaf_objects(self, sheaf: int, what: str) -> int:
        """Objects held by one sheaf (allocated from the slabs, free for the cache's users)."""
        if not sheaf:
            return 0
        return struct.unpack("<I", self._read(sheaf + self.sheaf_size_off, 4, what))[0]

    def slab(self, addr: int) -> tuple[int, int, int, int, int]:
        """(list next, inuse, objects, slab_cache, next) of a slab; raises _CacheUnreadable."""
        data = self._read(addr, self.slab_layout.size, "slab")
        values = self.slab_layout.unpack(data)
        return values if self.slab_next else (*values, 0)

    def _read(self, addr: int, size: int, what: str) -> bytes:
        try:
            return self.k.read(addr, size)
        except KdnbError as exc:
            self.gaps.note(f"{what} at {addr:#x}", addr, exc)
            raise _CacheUnreadable from exc


def _has_symbol(k: "Kernel", name: str) -> bool:
    try:
        k.symbol(name)
    except KdnbError:
        return False
    return True


def _bswap64(x: int) -> int:
    return int.from_bytes(x.to_bytes(8, "little"), "big")


class _FreelistReader:
    """Follows a SLUB freelist, reading each page of the slab once."""

    def __init__(self, s: _Slub) -> None:
        self.s = s
        self.pages: dict[int, bytes] = {}

    def count(self, head: int, offset: int, random: int | None, limit: int, what: str) -> int:
        seen: set[int] = set()
        ptr = head
        k = self.s.k
        while ptr:
            if ptr in seen:
                self.s.gaps.note(f"{what}: freelist cycle at {ptr:#x}", ptr)
                raise _CacheUnreadable
            if len(seen) > limit:
                self.s.gaps.note(f"{what}: freelist longer than the slab ({limit} objects)", head)
                raise _CacheUnreadable
            seen.add(ptr)
            at = ptr + offset
            page = at & ~0xFFF
            data = self.pages.get(page)
            if data is None:
                try:
                    data = k.read(page, 4096)
                except KdnbError as exc:
                    self.s.gaps.note(f"{what}: freelist object at {at:#x}", at, exc)
                    raise _CacheUnreadable from exc
                self.pages[page] = data
            (raw,) = _U64.unpack_from(data, at & 0xFFF) if (at & 0xFFF) <= 4088 else \
                _U64.unpack(k.read(at, 8))
            # 5.7 1ad53d9fa3f6: ptr ^ s->random ^ swab(ptr_addr)
            ptr = raw ^ random ^ _bswap64(at) if random is not None else raw
        return len(seen)


def _sheaves(s: _Slub, name: str, cpu_sheaves: int, barns: list[int]) -> int:
    """Objects cached in the per-CPU sheaves and in the full sheaves of each node's barn."""
    held = 0
    offs = s.k.per_cpu_offsets
    for cpu in s.cpus:
        pcs = (cpu_sheaves + int(offs[cpu])) & 0xFFFFFFFFFFFFFFFF
        for sheaf in s.pcs_layout.unpack(s._read(pcs, s.pcs_layout.size, f"{name} cpu {cpu} sheaves")):
            held += s.sheaf_objects(sheaf, f"{name} cpu {cpu} sheaf")
    for barn in barns:
        if not barn:
            continue
        head = barn + s.barn_full_off
        (node,) = s.barn_layout.unpack(s._read(barn, s.barn_layout.size, f"{name} barn"))
        seen = 0
        while node != head:
            seen += 1
            if seen > MAX_PARTIAL or node == 0:
                s.gaps.note(f"{name}: barn full-sheaf list at {head:#x} is corrupt", head)
                raise _CacheUnreadable
            sheaf = node - s.sheaf_list_off
            held += s.sheaf_objects(sheaf, f"{name} barn sheaf")
            node = _U64.unpack(s._read(node, 8, f"{name} barn sheaf"))[0]
    return held


def _cache_row(s: _Slub, addr: int, row: tuple, fl: _FreelistReader,
               barns: list[int] | None = None) -> dict[str, Any]:
    f = s.fields
    k = s.k
    try:
        name = k.read_cstring(row[f["name"]], 256)
    except KdnbError as exc:
        s.gaps.note(f"name of kmem_cache at {addr:#x}", row[f["name"]], exc)
        name = f"<kmem_cache {addr:#x}>"
    oo = row[f["oo.x"]]
    objs_per_slab, order = oo & OO_MASK, oo >> OO_SHIFT
    out: dict[str, Any] = {
        "name": name, "object_size": row[f["object_size"]], "size": row[f["size"]],
        "objs_per_slab": objs_per_slab, "order": order, "num_slabs": None, "num_objs": None,
        "active_objs": None, "free_objs": None, "address": addr,
    }
    nodes = row[-1]
    num_slabs = num_objs = free = 0
    try:
        for ptr in nodes:
            if not ptr:
                continue
            data = s._read(ptr, s.node_layout.size, f"kmem_cache_node of {name}")
            nr_slabs, total, nxt = s.node_layout.unpack(data)
            num_slabs += nr_slabs
            num_objs += total
            out["num_slabs"], out["num_objs"] = num_slabs, num_objs
            head = ptr + s.node_partial_off
            seen = 0
            while nxt != head:
                seen += 1
                if seen > MAX_PARTIAL or nxt == 0:
                    s.gaps.note(f"{name}: node partial list at {head:#x} is corrupt", head)
                    raise _CacheUnreadable
                nxt, inuse, objects, _cache, _next = s.slab(nxt - s.slab_list_off)
                free += objects - inuse
        if s.has_cpu_slab:
            offset = row[f["offset"]]
            random = row[f["random"]] if s.hardened else None
            base = row[f["cpu_slab"]]
            offs = k.per_cpu_offsets
            for cpu in s.cpus:
                c = (base + int(offs[cpu])) & 0xFFFFFFFFFFFFFFFF
                cvals = s.cpu_layout.unpack(s._read(c, s.cpu_layout.size, f"{name} cpu {cpu} kmem_cache_cpu"))
                freelist, cur = cvals[0], cvals[1]
                if cur:
                    _n, _inuse, objects, cache, _next = s.slab(cur)
                    if cache == addr:
                        free += fl.count(freelist, offset, random, max(objects, objs_per_slab),
                                         f"{name} cpu {cpu}")
                partial = cvals[2] if s.cpu_partial else 0
                seen = 0
                while partial:
                    seen += 1
                    if seen > MAX_PARTIAL:
                        s.gaps.note(f"{name}: cpu {cpu} partial list is corrupt", partial)
                        raise _CacheUnreadable
                    _n, inuse, objects, _cache, nxt = s.slab(partial)
                    free += objects - inuse
                    partial = nxt
        if s.has_sheaves:
            free += _sheaves(s, name, row[f["cpu_sheaves"]], barns or [])
    except _CacheUnreadable:
        return out
    out["free_objs"] = free
    out["active_objs"] = num_objs - free
    return out


def slab_frame(dump: "Dump") -> pd.DataFrame:
    """The slab DataFrame (columns: see COLUMNS and the issue)."""
    k = dump.kernel
    gaps = Gaps()
    s = _Slub(k, gaps)
    fl = _FreelistReader(s)
    head = k.symbol("slab_caches")
    link = k.read(head, 16)
    head_next, head_prev = _U64.unpack_from(link, 0)[0], _U64.unpack_from(link, 8)[0]
    rows: list[dict[str, Any]] = []
    seen: set[int] = set()
    closed = False  # the forward walk came back to the head
    for direction, first in (("list.next", head_next), ("list.prev", head_prev)):
        node = first
        idx = s.fields[direction]
        while node != head and node not in seen and len(seen) < MAX_CACHES:
            if node == 0:
                gaps.note(f"NULL pointer in slab_caches after {len(seen)} caches")
                break
            seen.add(node)
            addr = node - s.list_off
            data = read_or_none(k, addr, s.cache_size, gaps, "kmem_cache")
            if data is None:
                break
            vals = s.cache_layout.unpack(data)
            nodes = s.node_pointers(data, s.node_off)
            barns = s.node_pointers(data, s.barn_off) if s.barn_off is not None else None
            rows.append(_cache_row(s, addr, (*vals, nodes), fl, barns))
            node = vals[idx]
        else:
            if node == head:
                closed = direction == "list.next"
                break
            if len(seen) >= MAX_CACHES:
                gaps.note(f"slab_caches: more than {MAX_CACHES} caches", head)
            elif direction == "list.next":  # back at a cache already seen: the list cycles
                gaps.note(f"slab_caches: cycle at {node:#x} after {len(seen)} caches", node)
    df = _frame(rows, s.page_size, gaps)
    df.attrs["kdnb"] = {**df.attrs.get("kdnb", {}),
                        "walk": {"list": "slab_caches", "entries": len(seen), "closed": closed}}
    return gaps.attach(df, "slab")


def _frame(rows: list[dict[str, Any]], page_size: int, gaps: Gaps) -> pd.DataFrame:
    col = {c: [r[c] for r in rows] for c in COLUMNS if c not in ("total_bytes", "active_bytes")}
    df = pd.DataFrame({
        "name": pd.array(col["name"], dtype="string"),
        "object_size": fitting(col["object_size"], "Int32", "object_size", gaps),
        "size": fitting(col["size"], "Int32", "size", gaps),
        "objs_per_slab": fitting(col["objs_per_slab"], "Int32", "objs_per_slab", gaps),
        "order": fitting(col["order"], "Int16", "order", gaps),
        "num_slabs": fitting(col["num_slabs"], "Int64", "num_slabs", gaps),
        "num_objs": fitting(col["num_objs"], "Int64", "num_objs", gaps),
        "active_objs": fitting(col["active_objs"], "Int64", "active_objs", gaps),
        "free_objs": fitting(col["free_objs"], "Int64", "free_objs", gaps),
        "address": fitting(col["address"], "UInt64", "address", gaps),
    })
    # memory held by the cache's slabs, and the slots really allocated (object + metadata)
    df.insert(9, "total_bytes", df["num_slabs"] * (df["order"].astype("Int64").rpow(2) * page_size))
    df.insert(10, "active_bytes", df["active_objs"] * df["size"].astype("Int64"))
    return df
