"""`Dump.whatis(addr)`: what a kernel address is (crash `kmem ADDR`, `sym`): a symbol + offset
(kernel or module), inside a task's stack or task_struct, a slab object (cache, object start,
allocated or free), a page of the direct map (its struct page: flags, mapping), a vmalloc area
(its size, kind and the function that allocated it; for a vmalloc'd stack, whose), a module's
memory region (which module, text/data/rodata/init), or just which region of the address space
it lies in (vmemmap, kernel text).

Checks run from the most specific to the least; the record says which one matched. Whether a
slab object is free: see kdnb.views.slab_free (freelists, CPU freelists, sheaves).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pandas as pd

from ..errors import KdnbError, TypeNotFound
from .slab_free import free_state
from .stackwalk import collect_stacks, context
from .vmalloc import area_of, module_region_of

if TYPE_CHECKING:  # pragma: no cover
    from ..api import Dump
    from ..kernel.kernel import Kernel

PAGE_SHIFT = 12
MAX_COMPOUND_SPAN = 1 << 30  # struct pages of a 1 GiB folio: 2^18 x 64 bytes = 16 MiB, with room
KERNEL_TEXT = 0xFFFFFFFF80000000  # __START_KERNEL_map
MODULES_VADDR, MODULES_END = 0xFFFFFFFFA0000000, 0xFFFFFFFFFF000000
HEX_DETAILS = ("object", "cache", "page", "task", "area_start", "area_size", "region_start", "vm")
REGIONS = [  # x86_64 4-level layout (Documentation/arch/x86/x86_64/mm.rst); KASLR moves them
    ("vmalloc", "vmalloc_base", 1 << 45),
    ("vmemmap", "vmemmap_base", 1 << 40),
]


@dataclass
class WhatIs:
    """The answer for one address; `str()` is the one-paragraph form, `frame()` a one-row frame."""

    address: int
    kind: str  # symbol, stack, task, slab, page, vmalloc, module, region, unknown
    what: str
    details: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        extra = "".join(f"\n  {k}: {v:#x}" if isinstance(v, int) and k in HEX_DETAILS
                        else f"\n  {k}: {v}" for k, v in self.details.items() if v is not None)
        return f"{self.address:#x}: {self.kind}: {self.what}{extra}"

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame([{"address": self.address, "kind": self.kind, "what": self.what,
                              **{k: v for k, v in self.details.items()}}])


def whatis(dump: "Dump", address: int) -> WhatIs:
    """Classify one kernel address (see the module docstring)."""
    if not 0 <= address < 1 << 64:
        raise KdnbError(f"{address:#x} is not a 64-bit address")
    for check in (_symbol, _task, _slab_or_page, _vmalloc, _region):
        hit = check(dump, address)
        if hit is not None:
            if hit.kind in ("stack", "symbol", "module"):
                hit.details.update(_area_details(dump, address))
            return hit
    return WhatIs(address, "unknown", "not a kernel address kdnb can place")


def _area_details(dump: "Dump", address: int) -> dict[str, Any]:
    """The vmap area (a vmalloc'd stack, a module allocation) or module region around an address."""
    out: dict[str, Any] = {}
    if MODULES_VADDR <= address < MODULES_END:
        region = module_region_of(dump, address)
        if region is not None:
            out.update(module=region[2], region=region[3], region_start=region[0])
    try:
        area = area_of(dump.vmap_areas, address)
    except KdnbError:
        area = None
    if area is not None:
        out.update(area_start=area["start"], area_size=area["size"], area_caller=area["caller"])
    return out


def _vmalloc(dump: "Dump", address: int) -> WhatIs | None:
    """A busy vmap area (vmalloc, ioremap, vmap, vm_map_ram) holding the address."""
    try:
        area = area_of(dump.vmap_areas, address)
    except KdnbError:
        return None
    if area is None:
        return None
    whose = f", kernel stack of pid {area['pid']} ({area['comm']})" if area["pid"] is not None else ""
    caller = f" by {area['caller']}" if area["caller"] else ""
    return WhatIs(address, "vmalloc",
                  f"{area['kind']} area {area['start']:#x} + {address - area['start']:#x} "
                  f"({area['size']:#x} bytes{caller}{whose})",
                  {"area_start": area["start"], "area_size": area["size"], "area_kind": area["kind"],
                   "area_caller": area["caller"], "pid": area["pid"], "vm": area["vm"]})


def _symbol(dump: "Dump", address: int) -> WhatIs | None:
    k = dump.kernel
    if address < KERNEL_TEXT:
        return None
    try:
        hit = k.lookup(address)
    except KdnbError:
        hit = None
    region = module_region_of(dump, address) if MODULES_VADDR <= address < MODULES_END else None
    if region is not None and hit is not None and not region[0] <= hit.address < region[1]:
        hit = None  # a module's last symbol's size runs on past its region (sizes are guessed)
    if hit is None or (hit.size and hit.size > 0 and address >= hit.address + hit.size):
        if MODULES_VADDR <= address < MODULES_END:
            if region is not None:
                start, _, name, part = region
                return WhatIs(address, "module", f"module {name}, {part} {start:#x} + {address - start:#x}",
                              {"module": name, "region": part, "region_start": start})
            return None  # a vmalloc area, or the module area's free space (_vmalloc, _region)
        return None
    mod = f" [{hit.module}]" if hit.module else ""
    size = f"/{hit.size:#x}" if hit.size and hit.size > 0 else ""
    return WhatIs(address, "symbol", f"{hit.name}+{hit.offset:#x}{size}{mod}",
                  {"symbol": hit.name, "offset": hit.offset, "module": hit.module})


def _task(dump: "Dump", address: int) -> WhatIs | None:
    tasks = dump.tasks
    ctx = context(dump)
    collect_stacks(dump, states="all", cpus="all")  # every task's stack base (the shared walk)
    base = address & ~(ctx.unwinder.thread_size - 1)
    by_stack = {stack: task for task, stack in ctx.stack_base.items()}
    rows = {int(a): (int(p), str(c)) for a, p, c in zip(tasks["address"], tasks["pid"], tasks["comm"])}
    if by_stack.get(base) in rows:
        pid, comm = rows[by_stack[base]]
        return WhatIs(address, "stack", f"kernel stack of pid {pid} ({comm}), "
                      f"{base + ctx.unwinder.thread_size - address:#x} below its top",
                      {"pid": pid, "task": by_stack[base]})
    # the nearest task_struct at or below: BTF's size overstates the real one (the FPU state
    # at its end is sized at boot), so a neighbour's range must not win
    below = [a for a in rows if a <= address]
    size = dump.kernel.type("struct task_struct").size or 0
    if below:
        t = max(below)
        if address < t + size:
            pid, comm = rows[t]
            return WhatIs(address, "task", f"task_struct of pid {pid} ({comm}) + {address - t:#x}",
                          {"pid": pid, "task": t})
    return None


def _slab_or_page(dump: "Dump", address: int) -> WhatIs | None:
    k = dump.kernel
    base = k.page_offset
    if base is None or not base <= address < base + (dump.reader.max_pfn << PAGE_SHIFT):
        return None  # the direct map ends where the dumped machine's memory ends
    pfn = (address - base) >> PAGE_SHIFT
    page_t = k.type("struct page")
    page = k.vmemmap_base + pfn * (page_t.size or 64)
    try:
        flags, head = struct.unpack("<QQ", k.read(page, 16))
        if head & 1:  # a tail page
            page = compound_head(page, head)
            flags = k.read_u64(page)
        slab = _slab(dump, k, page, address, base)
    except KdnbError as exc:
        return WhatIs(address, "page", f"direct map, page frame {pfn:#x} (struct page unreadable: {exc})")
    if slab is not None:
        return slab
    mapping = k.read_u64(page + page_t.offsetof("mapping"))
    return WhatIs(address, "page", f"direct map, page frame {pfn:#x}",
                  {"page": page, "flags": f"{flags:#x}", "mapping": f"{mapping:#x}"})


def compound_head(page: int, info: int) -> int:
    """The head page of the tail ``page`` whose second word is ``info`` (bit 0 set): the head's
    address + 1, or (7.x, power-of-2 sizeof(struct page)) a mask of the set's alignment + 1,
    e.g. ~0xff | 1 for the four 64-byte struct pages of an order-2 compound page."""
    value = info - 1
    span = (~value & 0xFFFFFFFFFFFFFFFF) + 1
    if 0 < span <= MAX_COMPOUND_SPAN and span & (span - 1) == 0:
        return page & value
    return value


def _slab(dump: "Dump", k: "Kernel", page: int, address: int, base: int) -> WhatIs | None:
    """A slab object of a cache d.slab lists, or None."""
    try:  # 5.17 d122019bf061: struct slab overlays struct page
        st = k.type("struct slab")
        if not st.has_member("slab_cache"):
            raise TypeNotFound("not SLUB's struct slab")
    except TypeNotFound:
        st = k.type("struct page")
    cache = k.read_u64(page + st.offsetof("slab_cache"))
    caches = dump.slab
    row = caches[caches["address"] == cache]
    if not cache or not len(row):
        return None
    name, size = str(row["name"].iloc[0]), int(row["size"].iloc[0])
    start = base + ((page - k.vmemmap_base) // (k.type("struct page").size or 64) << PAGE_SHIFT)
    index = (address - start) // size if size > 0 else 0
    obj = start + index * size
    state = free_state(k, st, page, cache, obj)
    return WhatIs(address, "slab", f"{name} object {obj:#x} + {address - obj:#x} ({state})",
                  {"cache": cache, "cache_name": name, "object": obj, "index": index, "state": state})


def _region(dump: "Dump", address: int) -> WhatIs | None:
    k = dump.kernel
    if address >= KERNEL_TEXT:
        area = "module area" if MODULES_VADDR <= address < MODULES_END else "kernel image mapping"
        return WhatIs(address, "region", area)
    for name, symbol, span in REGIONS:
        try:
            start = k.read_u64(k.symbol(symbol))
        except KdnbError:
            continue
        if start <= address < start + span:
            return WhatIs(address, "region", f"{name} (starts at {start:#x})")
    return None
