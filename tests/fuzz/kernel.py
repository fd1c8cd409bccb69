"""Kernel-structure mutators: patch bytes of kernel objects inside pages of a sample.

Targets (a field or byte range at a kernel virtual address) are found once on the pristine dump
through kdnb itself (symbols, BTF offsets, the views' object addresses). A mutation reads the
pages holding the target, patches them and writes them back: into an ELF copy in place, or into
a kdump copy as raw pages appended to the file with the page descriptors pointed at them.
"""

from __future__ import annotations

import random
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path

import kdnb
from kdnb.errors import KdnbError
from tests.fuzz.samples import PAGE, ElfLayout, KdumpLayout

PTR, INT, BYTES = "ptr", "int", "bytes"
TASK_FIELDS = {"tasks.next": PTR, "tasks.prev": PTR, "pid": INT, "tgid": INT, "prio": INT,
               "static_prio": INT, "normal_prio": INT, "__state": INT, "state": INT, "flags": INT,
               "comm": BYTES, "real_parent": PTR, "parent": PTR, "children.next": PTR,
               "sibling.next": PTR, "stack": PTR, "thread.sp": PTR, "mm": PTR, "thread_info.cpu": INT,
               "group_leader": PTR, "signal": PTR, "se.sum_exec_runtime": INT, "start_time": INT}
CACHE_FIELDS = {"list.next": PTR, "list.prev": PTR, "name": PTR, "size": INT, "object_size": INT,
                "oo": INT, "min": INT, "node": PTR, "cpu_slab": PTR, "flags": INT, "offset": INT}
MODULE_FIELDS = {"list.next": PTR, "list.prev": PTR, "name": BYTES, "state": INT, "btf_data": PTR,
                 "btf_data_size": INT, "refcnt": INT, "num_syms": INT, "syms": PTR, "kallsyms": PTR}
GLOBALS = {"nr_cpu_ids": (4, INT), "__cpu_online_mask": (8, INT), "__cpu_possible_mask": (8, INT),
           "__per_cpu_offset": (16, PTR), "slab_caches": (16, PTR), "modules": (16, PTR),
           "_totalram_pages": (8, INT), "vm_zone_stat": (96, INT), "vm_node_stat": (400, INT),
           "tk_core": (256, BYTES), "shadow_timekeeper": (256, BYTES), "linux_banner": (128, BYTES),
           "init_uts_ns": (400, BYTES), "panic_cpu": (4, INT), "tainted_mask": (8, INT),
           "avenrun": (24, INT), "blockdev_superblock": (8, PTR), "kallsyms_num_syms": (4, INT),
           "kallsyms_token_table": (1024, BYTES), "kallsyms_token_index": (512, BYTES),
           "kallsyms_names": (1 << 16, BYTES), "kallsyms_offsets": (1 << 16, BYTES),
           "kallsyms_relative_base": (8, PTR), "kallsyms_markers": (1024, BYTES),
           "__start_BTF": (1 << 16, BYTES), "__start_orc_unwind_ip": (1 << 14, BYTES),
           "__start_orc_unwind": (1 << 14, BYTES), "orc_lookup": (1 << 12, BYTES),
           "init_top_pgt": (4096, PTR), "node_online_map": (8, INT), "max_pfn": (8, INT),
           "page_offset_base": (8, PTR), "vmemmap_base": (8, PTR), "mem_section": (8, PTR),
           "prb": (8, PTR), "init_task": (64, BYTES)}


@dataclass(frozen=True)
class Target:
    """A field (`kind` ptr/int, `size` 1-8) or a byte range (`kind` bytes) of kernel memory."""

    name: str
    vaddr: int
    size: int
    kind: str


def _fields(k, type_name: str, base: int, fields: dict[str, str], label: str) -> list[Target]:
    try:
        t = k.type(type_name)
    except KdnbError:
        return []
    out = []
    for member, kind in fields.items():
        try:
            off, size = t.offsetof(member), t.member(member).type.size or 8
        except (KdnbError, KeyError):
            continue
        size = size if kind == BYTES else min(size, 8)
        out.append(Target(f"{label}.{member}", base + off, size, kind))
    return out


def kernel_targets(d: "kdnb.Dump") -> list[Target]:
    """Fields and byte ranges of the kernel's objects in a pristine dump."""
    k = d.kernel
    out: list[Target] = []
    for name, (size, kind) in GLOBALS.items():
        try:
            out.append(Target(name, k.symbol(name), size, kind))
        except KdnbError:
            continue
    tasks = d.tasks
    picks = sorted({0, len(tasks) // 2, len(tasks) - 1, *tasks.index[tasks["state"] == "D"][:2]})
    for i in picks:
        row = tasks.iloc[i]
        label = f"task[{row['pid']}:{row['comm']}]"
        out += _fields(k, "struct task_struct", int(row["address"]), TASK_FIELDS, label)
        try:
            stack = k.read_u64(int(row["address"]) + k.type("struct task_struct").offsetof("stack"))
            out.append(Target(f"{label}.stack_pages", stack, 16384, BYTES))
        except KdnbError:
            pass
    slab = d.slab
    for i in sorted({0, len(slab) // 3, len(slab) - 1}):
        row = slab.iloc[i]
        out += _fields(k, "struct kmem_cache", int(row["address"]), CACHE_FIELDS, f"kmem_cache[{row['name']}]")
    mods = d.modules
    for i in sorted({0, len(mods) - 1}) if len(mods) else []:
        row = mods.iloc[i]
        out += _fields(k, "struct module", int(row["address"]), MODULE_FIELDS, f"module[{row['name']}]")
    out += _printk_targets(d)
    return out


def _printk_targets(d: "kdnb.Dump") -> list[Target]:
    k, info = d.kernel, d.vmcoreinfo
    try:
        prb = k.read_u64(int(info["SYMBOL(prb)"], 16))
        ring = lambda key: int(info[key])  # noqa: E731
        dr, tr = ring("OFFSET(printk_ringbuffer.desc_ring)"), ring("OFFSET(printk_ringbuffer.text_data_ring)")
        out = [Target("prb.desc_ring.count_bits", prb + dr + ring("OFFSET(prb_desc_ring.count_bits)"), 4, INT),
               Target("prb.text_data_ring.size_bits", prb + tr + ring("OFFSET(prb_data_ring.size_bits)"), 4, INT)]
        for f in ("descs", "infos", "head_id", "tail_id"):
            out.append(Target(f"prb.desc_ring.{f}", prb + dr + ring(f"OFFSET(prb_desc_ring.{f})"), 8, PTR))
        out.append(Target("prb.text_data_ring.data", prb + tr + ring("OFFSET(prb_data_ring.data)"), 8, PTR))
        descs = k.read_u64(prb + dr + ring("OFFSET(prb_desc_ring.descs)"))
        infos = k.read_u64(prb + dr + ring("OFFSET(prb_desc_ring.infos)"))
        data = k.read_u64(prb + tr + ring("OFFSET(prb_data_ring.data)"))
        out += [Target("printk descs", descs, 8192, BYTES), Target("printk infos", infos, 8192, BYTES),
                Target("printk text", data, 8192, BYTES)]
        return out
    except (KdnbError, KeyError, ValueError):
        return []


def _value(rng: random.Random, t: Target, old: int, others: list[Target]) -> tuple[int, str]:
    bits = 8 * t.size
    if t.kind == PTR:
        choices = [(0, "NULL"), (t.vaddr, "points at itself"), (rng.choice(others).vaddr, "points at another target"),
                   (old ^ (1 << rng.randrange(bits)), "bit flip"), (old + rng.choice((-8, 8, 4096)), "shifted"),
                   ((1 << 64) - 1, "-1"), (0xFFFF888000000000 | rng.getrandbits(30) << 12, "wild direct-map pointer"),
                   (rng.getrandbits(64), "random")]
    else:
        choices = [(0, "zero"), (1, "one"), (-1, "-1"), (0x7FFFFFFF, "INT_MAX"), (200000, "200000"),
                   (1048576, "1048576"), (old ^ (1 << rng.randrange(bits)), "bit flip"), (old * 2 + 1, "doubled"),
                   (-old, "negated"), (rng.getrandbits(bits), "random")]
    value, how = rng.choice(choices)
    return value & ((1 << bits) - 1), how


def _new_bytes(rng: random.Random, t: Target, old: bytes, others: list[Target]) -> tuple[int, bytes, str]:
    """(offset in the target, replacement bytes, description)."""
    if t.kind != BYTES:  # an array of 8-byte values (per-CPU offsets, PGD entries): one element
        start = 8 * rng.randrange(t.size // 8) if t.size > 8 else 0
        elem = Target(t.name, t.vaddr + start, min(t.size, 8), t.kind)
        was = int.from_bytes(old[start:start + elem.size], "little")
        value, how = _value(rng, elem, was, others)
        return start, value.to_bytes(elem.size, "little"), f"+{start:#x}: {was:#x} -> {value:#x} ({how})"
    start = rng.randrange(t.size)
    n = min(t.size - start, rng.choice((1, 4, 8, 64, 512, 4096)))
    how = rng.choice(("random", "zero", "ones", "letters", "flip"))
    if how == "random":
        new = rng.randbytes(n)
    elif how == "zero":
        new = bytes(n)
    elif how == "ones":
        new = b"\xff" * n
    elif how == "letters":
        new = b"A" * n
    else:
        new = bytearray(old[start:start + n])
        new[rng.randrange(n)] ^= 1 << rng.randrange(8)
        new = bytes(new)
    return start, new, f"{n} bytes at +{start:#x} ({how})"


def mutate(rng: random.Random, d: "kdnb.Dump", base: KdumpLayout | ElfLayout, targets: list[Target],
           out: Path) -> str:
    """Patch one target of the pristine dump `d` and write the result to `out`."""
    k = d.kernel
    for _ in range(20):  # some targets lie in pages the dump lacks: try another
        t = rng.choice(targets)
        try:
            old = k.read(t.vaddr, t.size)
        except KdnbError:
            continue
        start, new, how = _new_bytes(rng, t, old, targets)
        if write_patched(d, base, t.vaddr + start, new, out):
            return f"{t.name} @ {t.vaddr:#x}: {how}"
    shutil.copyfile(base.path, out)
    return "no target could be patched (pristine copy)"


def write_patched(d: "kdnb.Dump", base: KdumpLayout | ElfLayout, vaddr: int, new: bytes, out: Path) -> bool:
    """Write to `out` a copy of `base` (the file of dump `d`) whose kernel memory at `vaddr`
    holds `new`; False when a page of that range is not in the file."""
    try:
        pages = _patched_pages(d.kernel, d, vaddr, new)
    except KdnbError:
        return False
    return _write(base, pages, out)


def _patched_pages(k, d: "kdnb.Dump", vaddr: int, new: bytes) -> dict[int, bytes]:
    pages: dict[int, bytearray] = {}
    pos = 0
    while pos < len(new):
        va = vaddr + pos
        n = min(len(new) - pos, PAGE - (va % PAGE))
        paddr = k.vtop(va)
        pfn = paddr // PAGE
        if pfn not in pages:
            pages[pfn] = bytearray(d.read_phys(pfn * PAGE, PAGE))
        pages[pfn][paddr % PAGE:paddr % PAGE + n] = new[pos:pos + n]
        pos += n
    return {pfn: bytes(p) for pfn, p in pages.items()}


def _write(base: KdumpLayout | ElfLayout, pages: dict[int, bytes], out: Path) -> bool:
    if isinstance(base, ElfLayout):
        spots = {pfn: base.file_offset(pfn * PAGE) for pfn in pages}
        if any(v is None for v in spots.values()):
            return False
        shutil.copyfile(base.path, out)
        with open(out, "r+b") as f:
            for pfn, data in pages.items():
                f.seek(spots[pfn])
                f.write(data)
        return True
    ranks = {pfn: base.rank(pfn) for pfn in pages}
    if any(v is None for v in ranks.values()):
        return False
    shutil.copyfile(base.path, out)
    with open(out, "r+b") as f:
        end = f.seek(0, 2)
        for i, (pfn, data) in enumerate(pages.items()):
            f.seek(end + i * PAGE)
            f.write(data)
            f.seek(base.desc_off + 24 * ranks[pfn])
            f.write(struct.pack("<qIIQ", end + i * PAGE, PAGE, 0, 0))
    return True
