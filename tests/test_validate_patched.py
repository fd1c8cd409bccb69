"""Capture validation on real samples whose kernel memory is patched while it is read.

Each corruption here once gave a silently wrong `usable`: the verdict must now be `degraded`
and the failing check must name the reason. The bytes are found through kdnb itself (symbols,
BTF offsets, page tables) and replaced by a reader wrapper; the files are never modified.
"""

from __future__ import annotations

import struct
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import kdnb
from kdnb.analysis.validate import validate
from kdnb.errors import PageNotInDump
from kdnb.kernel.kernel import Kernel
from tests.conftest import DATA

SAMPLES = {"k5.10": DATA / "k5.10-hung" / "vmcore.kdump-zlib",
           "k6.1": DATA / "k6.1-oops" / "vmcore.kdump-lzo",
           "k6.12": DATA / "k6.12-hung" / "vmcore.kdump-zlib",
           "k7.2": DATA / "k7.2-oops" / "vmcore.kdump-zlib-flat"}
PATCHED_SAMPLES = ["k6.1", "k7.2"]  # two SLUB and module layouts (6.1; 7.2's sheaves, mem[])
PAGE = 4096
VIEW_CHECKS = ("kernel.cpus", "kernel.tasks", "kernel.slab", "kernel.modules", "kernel.stacks",
               "kernel.meminfo", "kernel.in_use_memory", "symbols.btf")


class PatchedReader:
    """A DumpReader whose physical memory reads return patched bytes, and whose `excluded`
    pages are missing as if the dump filter had dropped them (the rest is the wrapped reader's)."""

    def __init__(self, reader: Any, patches: dict[int, bytes], excluded: set[int]) -> None:
        self._reader = reader
        self._excluded = excluded
        self._pages: dict[int, list[tuple[int, bytes]]] = {}
        for paddr, data in patches.items():
            self._pages.setdefault(paddr // PAGE, []).append((paddr, data))

    def read_phys(self, paddr: int, size: int) -> bytes:
        end = paddr + size
        for pfn in range(paddr // PAGE, (end - 1) // PAGE + 1):
            if pfn in self._excluded:
                raise PageNotInDump(pfn * PAGE, "excluded by dump level 31", self._reader.path)
        data = self._reader.read_phys(paddr, size)
        hits = [p for pfn in range(paddr // PAGE, (end - 1) // PAGE + 1)
                for p in self._pages.get(pfn, [])]
        if not hits:
            return data
        buf = bytearray(data)
        for start, patch in hits:
            lo, hi = max(start, paddr), min(start + len(patch), end)
            if lo < hi:
                buf[lo - paddr:hi - paddr] = patch[lo - start:hi - start]
        return bytes(buf)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reader, name)


Patch = Callable[[kdnb.Dump], dict[int, bytes]]


def patched_dump(path: Path, make: Patch, fresh_types: bool = False,
                 exclude: Callable[[kdnb.Dump], list[int]] | None = None) -> kdnb.Dump:
    """The dump at `path` with the kernel-virtual patches `make(dump)` returns applied, and
    the pages holding the virtual addresses `exclude(dump)` returns missing.

    `fresh_types` decodes BTF from the (patched) dump instead of the on-disk cache."""
    patches: dict[int, bytes] = {}
    with kdnb.open(path) as clean:
        excluded = {clean.vtop(a) // PAGE for a in (exclude(clean) if exclude else [])}
        for vaddr, data in make(clean).items():
            done = 0
            while done < len(data):  # page by page: virtual pages need not be contiguous
                n = min(len(data) - done, PAGE - (vaddr + done) % PAGE)
                patches[clean.vtop(vaddr + done)] = data[done:done + n]
                done += n
    d = kdnb.open(path)
    d._reader = PatchedReader(d._reader, patches, excluded)
    d.__dict__["kernel"] = Kernel(d._reader, use_cache=not fresh_types)
    return d


def _u64(value: int) -> bytes:
    return struct.pack("<Q", value)


def _validate(d: kdnb.Dump) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return validate(d)


def _assert_degraded(v: Any, check: str, *words: str) -> None:
    assert v.verdict == "degraded", str(v)
    assert v.status(check) == "fail", str(v)
    detail = v[check].detail
    for word in words:
        assert word in detail, (word, detail)


# -- the patches ---------------------------------------------------------------------------
def _task_list(d: kdnb.Dump) -> tuple[int, int, int]:
    """(&init_task.tasks, first and second process's tasks nodes)."""
    head = d.symbol("init_task") + d.type("struct task_struct").offsetof("tasks")
    first = d.kernel.read_u64(head)
    return head, first, d.kernel.read_u64(first)


def task_two_cycle(d: kdnb.Dump) -> dict[int, bytes]:
    _head, first, second = _task_list(d)
    return {second: _u64(first)}


def task_head_to_itself(d: kdnb.Dump) -> dict[int, bytes]:
    head, _first, _second = _task_list(d)
    return {head: _u64(head)}


def task_garbage_parent(d: kdnb.Dump) -> dict[int, bytes]:
    t = d.type("struct task_struct")
    _head, _first, second = _task_list(d)
    return {second - t.offsetof("tasks") + t.offsetof("real_parent"): _u64(0xDEAD000012345678)}


def head_to_itself(symbol: str) -> Patch:
    return lambda d: {d.symbol(symbol): _u64(d.symbol(symbol))}


def two_cycle(symbol: str) -> Patch:
    def make(d: kdnb.Dump) -> dict[int, bytes]:
        first = d.kernel.read_u64(d.symbol(symbol))
        second = d.kernel.read_u64(first)
        return {second: _u64(first)}
    return make


def u32_symbol(symbol: str, value: int) -> Patch:
    return lambda d: {d.symbol(symbol): struct.pack("<I", value)}


def online_mask_cpu0(d: kdnb.Dump) -> dict[int, bytes]:
    return {d.symbol("__cpu_online_mask"): _u64(1)}


def orc_zeroed(d: kdnb.Dump) -> dict[int, bytes]:
    start, stop = d.symbol("__start_orc_unwind"), d.symbol("__stop_orc_unwind")
    return {start: bytes(stop - start)}


def btf_type_renamed(name: bytes) -> Patch:
    """Change one letter of a type name in the BTF string section."""
    def make(d: kdnb.Dump) -> dict[int, bytes]:
        start, stop = d.symbol("__start_BTF"), d.symbol("__stop_BTF")
        blob = d.kernel.read(start, stop - start)
        return {start + blob.index(b"\0" + name + b"\0") + len(name): b"Q"}
    return make


def free_pages_negative(d: kdnb.Dump) -> dict[int, bytes]:
    items = {e.name: e.value for e in d.type("enum zone_stat_item").strip().enumerators}
    return {d.symbol("vm_zone_stat") + 8 * items["NR_FREE_PAGES"]: struct.pack("<q", -5000)}


_NO_PRINTABLE = bytes(0 if 32 <= b < 127 else b for b in range(256))


def log_text_nul(d: kdnb.Dump) -> dict[int, bytes]:
    """The printk text ring with every printable byte zeroed (block ids and lengths kept)."""
    k = d.kernel
    ring = k.read_u64(d.symbol("prb"))
    t = d.type("struct printk_ringbuffer")
    bits = k.read_u32(ring + t.offsetof("text_data_ring.size_bits"))
    data = k.read_u64(ring + t.offsetof("text_data_ring.data"))
    return {data: k.read(data, 1 << bits).translate(_NO_PRINTABLE)}


# -- the tests -----------------------------------------------------------------------------
@pytest.mark.parametrize("sample", sorted(SAMPLES))
def test_unpatched_samples_stay_usable(sample: str) -> None:
    d = patched_dump(SAMPLES[sample], lambda _d: {})
    v = _validate(d)
    assert v.verdict == "usable", str(v)
    for check in VIEW_CHECKS:
        assert v.status(check) == "pass", (check, str(v))


@pytest.mark.parametrize("sample", PATCHED_SAMPLES)
@pytest.mark.parametrize("make,check,words", [
    (task_two_cycle, "kernel.tasks", ("init_task.tasks links only 2 of", "cycle")),
    (task_head_to_itself, "kernel.tasks", ("init_task.tasks is empty", "children lists")),
    (task_garbage_parent, "kernel.tasks", ("parent task_struct at 0xdead",)),
    (head_to_itself("slab_caches"), "kernel.slab", ("slab_caches is empty",)),
    (two_cycle("slab_caches"), "kernel.slab", ("slab_caches: cycle",)),
    (head_to_itself("modules"), "kernel.modules", ("modules list is empty", "mod_tree")),
    (two_cycle("modules"), "kernel.modules", ("module list: cycle",)),
    (free_pages_negative, "kernel.meminfo", ("free", "-5000")),
    (log_text_nul, "log.printk", ("decode to empty or NUL text",)),
], ids=["task-2-cycle", "init_task-self", "real_parent-garbage", "slab_caches-self",
        "slab_caches-2-cycle", "modules-self", "modules-2-cycle", "free-pages-negative",
        "log-text-nul"])
def test_broken_kernel_lists_and_counters(sample: str, make: Patch, check: str,
                                          words: tuple[str, ...]) -> None:
    v = _validate(patched_dump(SAMPLES[sample], make))
    _assert_degraded(v, check, *words)


@pytest.mark.parametrize("make,words", [
    (u32_symbol("nr_cpu_ids", 0), ("nr_cpu_ids", "implausible")),
    (u32_symbol("nr_cpu_ids", 1), ("nr_cpu_ids is 1",)),
    (online_mask_cpu0, ("runqueues of CPU(s) [0]",)),
], ids=["nr_cpu_ids-0", "nr_cpu_ids-1", "online-mask"])
def test_lost_cpus(make: Patch, words: tuple[str, ...]) -> None:
    v = _validate(patched_dump(SAMPLES["k6.1"], make))
    _assert_degraded(v, "kernel.cpus", *words)


def test_orc_tables_overwritten() -> None:
    v = _validate(patched_dump(SAMPLES["k6.1"], orc_zeroed))
    _assert_degraded(v, "kernel.stacks", "unwinding error", "ORC")
    assert v["kernel.stacks"].evidence["broken"] > v["kernel.stacks"].evidence["clean"]


@pytest.mark.parametrize("name,view", [(b"kmem_cache", "kernel.slab"),
                                       (b"task_struct", "kernel.tasks")])
def test_btf_damage_fails_symbols_btf(name: bytes, view: str) -> None:
    v = _validate(patched_dump(SAMPLES["k6.1"], btf_type_renamed(name), fresh_types=True))
    _assert_degraded(v, "symbols.btf", name.decode())
    assert v.status(view) == "fail", str(v)


def _some_tasks(d: kdnb.Dump) -> list[int]:
    """Two task_structs in the middle of the process list (not the running ones)."""
    tasks = d.tasks
    quiet = tasks[~tasks["is_current"] & (tasks["pid"] > 2)]
    return [int(a) for a in quiet["address"].iloc[len(quiet) // 2:len(quiet) // 2 + 2]]


@pytest.mark.parametrize("sample", PATCHED_SAMPLES)
def test_excluded_task_pages_name_the_filter(sample: str) -> None:
    v = _validate(patched_dump(SAMPLES[sample], lambda _d: {}, exclude=_some_tasks))
    _assert_degraded(v, "kernel.in_use_memory", "excluded from the dump", "makedumpfile -d")
    ev = v["kernel.in_use_memory"].evidence
    assert ev["unreadable_reads"]["excluded"] >= 1 and ev["physical_addresses"]
    assert v.status("kernel.tasks") == "warn", str(v)  # the loss is the filter's, not the list's
