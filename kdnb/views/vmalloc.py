"""`Dump.vmap_areas`: the kernel's busy vmalloc-space areas (crash `kmem -v`, /proc/vmallocinfo),
and the memory regions of each loaded module; `area_of` / `module_region_of` place an address.

Busy areas are kept on ``vmap_area_list`` up to 6.8 and on each ``vmap_nodes[i].busy.head``
from 6.9 (d093602919ad, "mm: vmalloc: add a nodes variable"); both are sorted lists of
``struct vmap_area`` whose ``vm`` points at the ``struct vm_struct`` (size, flags, caller).
vmalloc'd kernel stacks (CONFIG_VMAP_STACK) are matched to their task through
``task_struct.stack``. Module memory: ``mod->mem[]`` from 6.4 (ac3b43283923), before that
``core_layout`` / ``init_layout``.
"""

from __future__ import annotations

import bisect
import struct
from typing import TYPE_CHECKING, Any

import pandas as pd

from ..errors import KdnbError
from .common import Gaps, enum_values, fitting, read_or_none

if TYPE_CHECKING:  # pragma: no cover
    from ..api import Dump

MAX_AREAS = 1 << 20       # a 64 GiB vmalloc space holds far fewer busy areas
MAX_NODES = 1024          # nr_vmap_nodes is at most the number of CPUs
MAX_MODULES = 1 << 16
VM_IOREMAP, VM_ALLOC, VM_MAP = 0x1, 0x2, 0x4  # include/linux/vmalloc.h, unchanged since 2.6
COLUMNS = ["start", "end", "size", "kind", "caller", "nr_pages", "flags", "pid", "comm",
           "vm", "address"]
KINDS = ["vmalloc", "ioremap", "vmap", "vm_map_ram", "other"]
_Q = struct.Struct("<Q")


def _area_heads(dump: "Dump", gaps: Gaps) -> list[int]:
    """The list heads holding the busy vmap areas (one, or one per vmap node)."""
    k = dump.kernel
    try:
        return [k.symbol("vmap_area_list")]
    except KdnbError:
        pass
    nodes = k.read_u64(k.symbol("vmap_nodes"))
    count = k.read_u32(k.symbol("nr_vmap_nodes"))
    if not 0 < count <= MAX_NODES:
        gaps.note(f"nr_vmap_nodes = {count} is implausible (1..{MAX_NODES}); reading node 0 only")
        count = 1
    node_t = k.type("struct vmap_node")
    head = node_t.offsetof("busy") + k.type("struct rb_list").offsetof("head")
    return [nodes + i * node_t.size + head for i in range(count)]


def _kind(flags: int, vm: int) -> str:
    if not vm:
        return "vm_map_ram"
    for bit, name in ((VM_ALLOC, "vmalloc"), (VM_IOREMAP, "ioremap"), (VM_MAP, "vmap")):
        if flags & bit:
            return name
    return "other"


def _stack_owners(dump: "Dump", gaps: Gaps) -> dict[int, tuple[int, str]]:
    """task_struct.stack of every task -> (pid, comm)."""
    k = dump.kernel
    off = k.type("struct task_struct").offsetof("stack")
    owners: dict[int, tuple[int, str]] = {}
    tasks = dump.tasks
    for addr, pid, comm in zip(tasks["address"], tasks["pid"], tasks["comm"]):
        data = read_or_none(k, int(addr) + off, 8, gaps, "task_struct.stack")
        if data is not None:
            owners[_Q.unpack(data)[0]] = (int(pid), str(comm))
    return owners


def vmap_areas_frame(dump: "Dump") -> pd.DataFrame:
    """One row per busy vmap area, by start address (columns: see COLUMNS; ``caller`` is the
    allocating function as `func+off`, ``pid``/``comm`` the task whose kernel stack it is)."""
    k = dump.kernel
    gaps = Gaps()
    va_t, vm_t = k.type("struct vmap_area"), k.type("struct vm_struct")
    va = k.layout(va_t, ["va_start", "va_end", "vm"])
    vm_fields = ["addr", "size", "flags", "nr_pages", "caller"]
    vm = k.layout(vm_t, vm_fields)
    owners = _stack_owners(dump, gaps)
    rows: list[dict[str, Any]] = []
    for head in _area_heads(dump, gaps):
        walk = k.list_walk(head, va_t, "list", max_entries=MAX_AREAS)
        for area in walk:
            data = read_or_none(k, area, va_t.size, gaps, "struct vmap_area")
            if data is None:
                continue
            start, end, vm_addr = va.unpack(data)
            if end < start:
                gaps.note(f"vmap_area at {area:#x}: end {end:#x} below start {start:#x}", area)
                continue
            flags = nr_pages = caller = 0
            if vm_addr:
                raw = read_or_none(k, vm_addr, vm_t.size, gaps, "struct vm_struct")
                if raw is not None:
                    _, _, flags, nr_pages, caller = vm.unpack(raw)
            pid, comm = owners.get(start, (None, None))
            rows.append({"start": start, "end": end, "size": end - start,
                         "kind": _kind(flags, vm_addr), "caller": k.symbolize(caller) if caller else None,
                         "nr_pages": nr_pages, "flags": flags, "pid": pid, "comm": comm,
                         "vm": vm_addr, "address": area})
        if walk.error is not None:
            gaps.note(f"vmap areas: {walk.error}", head)
    rows.sort(key=lambda r: r["start"])
    df = pd.DataFrame({
        "start": fitting([r["start"] for r in rows], "UInt64", "start", gaps),
        "end": fitting([r["end"] for r in rows], "UInt64", "end", gaps),
        "size": fitting([r["size"] for r in rows], "Int64", "size", gaps),
        "kind": pd.Categorical([r["kind"] for r in rows], categories=KINDS),
        "caller": pd.array([r["caller"] for r in rows], dtype="string"),
        "nr_pages": fitting([r["nr_pages"] for r in rows], "Int64", "nr_pages", gaps),
        "flags": fitting([r["flags"] for r in rows], "UInt64", "flags", gaps),
        "pid": fitting([r["pid"] for r in rows], "Int32", "pid", gaps),
        "comm": pd.array([r["comm"] for r in rows], dtype="string"),
        "vm": fitting([r["vm"] for r in rows], "UInt64", "vm", gaps),
        "address": fitting([r["address"] for r in rows], "UInt64", "address", gaps),
    })
    return gaps.attach(df, "vmap_areas")


def area_of(areas: pd.DataFrame, address: int) -> dict[str, Any] | None:
    """The row of ``areas`` (a vmap_areas frame) containing ``address``, as a dict, or None."""
    starts = [int(s) for s in areas["start"]]
    i = bisect.bisect_right(starts, address) - 1
    if i < 0 or address >= int(areas["end"].iloc[i]):
        return None
    row = areas.iloc[i]
    return {c: None if pd.isna(v) else v.item() if hasattr(v, "item") else v for c, v in row.items()}


def module_regions(dump: "Dump") -> list[tuple[int, int, str, str]]:
    """(start, end, module, region) of every loaded module's memory (text, data, rodata, init...)."""
    k = dump.kernel
    mt = k.type("struct module")
    out: list[tuple[int, int, str, str]] = []
    if mt.has_member("mem"):
        n = mt.member("mem").type.strip().length
        names = {v: name.removeprefix("MOD_").lower()
                 for name, v in enum_values(k, "enum mod_mem_type").items()}
        fields = [f"mem[{i}].{f}" for i in range(n) for f in ("base", "size")]
    else:
        fields = [f"{lay}.{f}" for lay in ("core_layout", "init_layout")
                  for f in ("base", "size", "text_size", "ro_size")]
    layout = k.layout(mt, fields)
    for addr, name in zip(dump.modules["address"][:MAX_MODULES], dump.modules["name"]):
        try:
            v = layout.unpack(k.read(int(addr), mt.size))
        except KdnbError:
            continue
        if mt.has_member("mem"):
            for i in range(n):
                base, size = v[2 * i], v[2 * i + 1]
                if base and size:
                    out.append((base, base + size, str(name), names.get(i, str(i))))
            continue
        for j, lay in enumerate(("core", "init")):
            base, size, text, ro = v[4 * j: 4 * j + 4]
            if not (base and size):
                continue
            text, ro = min(text, size), min(max(ro, text), size)
            for lo, hi, part in ((0, text, "text"), (text, ro, "rodata"), (ro, size, "data")):
                if hi > lo:
                    out.append((base + lo, base + hi, str(name), f"{lay} {part}"))
    return sorted(out)


def module_region_of(dump: "Dump", address: int) -> tuple[int, int, str, str] | None:
    """The module region (start, end, module, region) holding ``address``, or None."""
    for start, end, name, region in module_regions(dump):
        if start <= address < end:
            return start, end, name, region
    return None
