"""Whether one SLUB object is free, for `Dump.whatis`: on its slab's freelist, on the lockless
freelist of the CPU whose active slab it is (``kmem_cache_cpu``, gone in 7.0), or cached in a
per-CPU sheaf or a node barn's full sheaf (6.18+, 2d517aa09bbc "slab: add opt-in caching layer
of percpu sheaves"). Hardened freelist pointers are decoded as ``ptr ^ s->random ^ swab(&ptr)``.
Every walk is bounded.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import KdnbError

if TYPE_CHECKING:  # pragma: no cover
    from ..kernel.kernel import Kernel

MAX_FREELIST = 1 << 16    # objects on one freelist (a slab holds at most a few thousand)
MAX_SHEAF = 1 << 12       # objects in one sheaf (its capacity is a few dozen)
MAX_SHEAVES = 1 << 12     # full sheaves in one barn


def free_state(k: "Kernel", st: Any, page: int, cache: int, obj: int) -> str:
    """``free``, ``allocated``, or ``unknown`` (a freelist or a CPU's slab state that could be
    the object's is not in the dump) for the object ``obj`` of ``cache`` on the slab at ``page``
    (``st`` is the type the slab is described by: struct slab, or struct page before 5.17)."""
    kc = k.type("struct kmem_cache")
    offset = k.read_u32(cache + kc.offsetof("offset"))
    random = k.read_u64(cache + kc.offsetof("random")) if kc.has_member("random") else None
    lists = [k.read_u64(page + st.offsetof("freelist"))]
    unsure = False
    if kc.has_member("cpu_slab"):  # absent with CONFIG_SLUB_TINY (6.2+) and from 7.0
        heads, unsure = _cpu_freelists(k, k.read_u64(cache + kc.offsetof("cpu_slab")), page)
        lists += heads
    for ptr in lists:
        seen = 0
        try:
            while ptr and seen < MAX_FREELIST:
                if ptr == obj:
                    return "free"
                at = ptr + offset
                raw = k.read_u64(at)
                ptr = raw ^ random ^ int.from_bytes(at.to_bytes(8, "little"), "big") if random is not None else raw
                seen += 1
        except KdnbError:  # the rest of this freelist is in pages the dump lacks
            unsure = True
    if kc.has_member("cpu_sheaves") and obj in _sheaf_objects(k, cache):
        return "free"
    return "unknown" if unsure else "allocated"


def _cpu_freelists(k: "Kernel", cpu_slab: int, page: int) -> tuple[list[int], bool]:
    """The lockless freelist heads of the CPUs whose active slab is ``page``, and whether some
    CPU's state could not be read (its active slab may be ``page``)."""
    cpu_t = k.type("struct kmem_cache_cpu")
    cur = "slab" if cpu_t.has_member("slab") else "page"  # 5.17 bb192ed9aa71
    layout = k.layout(cpu_t, ["freelist", cur])
    heads, unreadable = [], False
    for cpu in range(k.nr_cpu_ids):
        try:
            freelist, active = layout.unpack(k.read(k.per_cpu(cpu_slab, cpu), cpu_t.size))
        except KdnbError:
            unreadable = True
            continue
        if active == page:
            heads.append(freelist)
    return heads, unreadable


def _sheaf(k: "Kernel", sheaf: int, out: set[int]) -> None:
    """Add the objects a sheaf holds (``objects[:size]``) to ``out``."""
    if not sheaf:
        return
    t = k.type("struct slab_sheaf")
    size = min(k.read_u32(sheaf + t.offsetof("size")), MAX_SHEAF)
    raw = k.read(sheaf + t.offsetof("objects"), 8 * size)
    out.update(int.from_bytes(raw[i:i + 8], "little") for i in range(0, len(raw), 8))


def _sheaf_objects(k: "Kernel", cache: int) -> set[int]:
    """Objects of ``cache`` cached in each CPU's main and spare sheaf and in its barns' full
    sheaves (free for the cache's users; rcu_free sheaves wait for a grace period: in use)."""
    kc = k.type("struct kmem_cache")
    out: set[int] = set()
    pcs_t = k.type("struct slub_percpu_sheaves")
    cpu_sheaves = k.read_u64(cache + kc.offsetof("cpu_sheaves"))
    for cpu in range(k.nr_cpu_ids if cpu_sheaves else 0):
        pcs = k.per_cpu(cpu_sheaves, cpu)
        for member in ("main", "spare"):
            if pcs_t.has_member(member):
                try:
                    _sheaf(k, k.read_u64(pcs + pcs_t.offsetof(member)), out)
                except KdnbError:
                    continue
    for barn in _barns(k, cache):
        head = barn + k.type("struct node_barn").offsetof("sheaves_full")
        link = k.type("struct slab_sheaf").offsetof("barn_list")
        node, seen = k.read_u64(head), 0
        while node not in (head, 0) and seen < MAX_SHEAVES:
            _sheaf(k, node - link, out)
            node, seen = k.read_u64(node), seen + 1
    return out


def _barns(k: "Kernel", cache: int) -> list[int]:
    """The barn of each node: kmem_cache_node.barn (6.18-7.0), per_node[i].barn (7.1+)."""
    kc = k.type("struct kmem_cache")
    try:
        nodes = max(1, min(k.read_u32(k.symbol("nr_node_ids")), 1 << 10))
    except KdnbError:  # !CONFIG_NUMA
        nodes = 1
    if kc.has_member("per_node"):
        ptrs = k.type("struct kmem_cache_per_node_ptrs")
        base = cache + kc.offsetof("per_node")
        return [b for i in range(nodes)
                if (b := k.read_u64(base + i * ptrs.size + ptrs.offsetof("barn")))]
    node_t = k.type("struct kmem_cache_node")
    if not node_t.has_member("barn"):
        return []
    base = cache + kc.offsetof("node")
    return [b for i in range(nodes) if (n := k.read_u64(base + 8 * i))
            and (b := k.read_u64(n + node_t.offsetof("barn")))]
