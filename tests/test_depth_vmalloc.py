"""d.vmap_areas and d.whatis on vmalloc and module addresses, on every bundled sample and the
corpus. The addresses come from the dump itself (a task's saved stack pointer and its
task_struct.stack, a module's memory from struct module, the HPET mapping the kernel keeps in
hpet_virt_address) or from the guest's /proc/modules, never from a list written here."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pytest

import kdnb
from kdnb.views.vmalloc import module_regions
from tests.conftest import CORPUS, DATA

FOLDERS = sorted(p for p in [*DATA.glob("*"), *CORPUS.glob("*")] if (p / "ground-truth.json").exists())


@pytest.fixture(scope="module", params=FOLDERS, ids=lambda p: f"{p.parent.name}/{p.name}")
def dump(request):
    path = sorted(p for p in request.param.glob("vmcore*") if p.is_file() and p.suffix != ".zst")[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with kdnb.open(path) as d:
            yield d, request.param


def _task_words(d: kdnb.Dump, task: int) -> tuple[int, int]:
    """(thread.sp, stack) of the task_struct at ``task``."""
    k = d.kernel
    ts = k.type("struct task_struct")
    sp = k.read_u64(task + ts.offsetof("thread") + k.type("struct thread_struct").offsetof("sp"))
    return sp, k.read_u64(task + ts.offsetof("stack"))


def test_vmalloc_stacks(dump) -> None:
    d, folder = dump
    areas = d.vmap_areas
    assert list(areas.columns)[:5] == ["start", "end", "size", "kind", "caller"]
    assert (areas["start"].diff().dropna() > 0).all() and (areas["end"] > areas["start"]).all()
    if "degraded" in folder.name:
        pytest.skip("in-use slab pages excluded: the task list is partial")
    sleeping = d.tasks[~d.tasks["is_current"] & (d.tasks["pid"] > 0)]
    checked = 0
    for addr, pid in zip(sleeping["address"][:40], sleeping["pid"][:40]):
        sp, stack = _task_words(d, int(addr))
        w = d.whatis(sp)
        assert (w.kind, w.details["pid"]) == ("stack", int(pid)), str(w)
        assert w.details["area_start"] == stack and w.details["area_size"] >= 4 * 4096
        row = areas[areas["start"] == stack].iloc[0]
        assert row["pid"] == pid and row["kind"] == "vmalloc" and row["caller"]
        checked += 1
    assert checked >= 10
    # a stack area's guard page (past its end, before the next area) is no area
    first = areas[areas["pid"].notna()].iloc[0]
    assert d.whatis(int(first["end"]) - 1).details.get("area_start") == int(first["start"])


def test_ioremap_area(dump) -> None:
    d, _ = dump
    k = d.kernel
    hpet = k.read_u64(k.symbol("hpet_virt_address"))  # q35 has an HPET; the kernel maps it
    w = d.whatis(hpet + 0x10)
    assert w.kind == "vmalloc" and w.details["area_kind"] == "ioremap"
    assert w.details["area_start"] <= hpet < w.details["area_start"] + w.details["area_size"]
    assert "hpet" in w.details["area_caller"]


def test_module_areas(dump) -> None:
    d, folder = dump
    regions = module_regions(d)
    names = set(d.modules["name"])
    assert {r[2] for r in regions} == names
    for start, end, name, region in regions:
        w = d.whatis(start + (end - start) // 2)
        assert w.details.get("module") == name and w.details.get("region") == region, str(w)
    # /proc/modules in the guest printed each module's core base
    listed = re.findall(r"(?m)^(\S+) \d+ .* (0x[0-9a-f]+)", (folder / "snapshot" / "modules.txt").read_text())
    assert listed
    complete = "incomplete" not in d.vmap_areas.attrs["kdnb"]
    assert complete or "degraded" in folder.name
    for name, base in listed:
        w = d.whatis(int(base, 16))
        assert w.details.get("module") == name, str(w)
        assert w.details.get("area_caller") or not complete, str(w)  # module memory is a vmap area
    data = [r for r in regions if "text" not in r[3]]
    if data:  # past the last symbol of the text: no symbol may claim it
        w = d.whatis(data[0][0])
        assert w.kind in ("module", "symbol") and w.details["module"] == data[0][2]


def test_kmem_v_lists_the_stacks(capsys) -> None:
    import json

    from kdnb.cli import main

    sample = sorted(p for p in DATA.glob("k6.12-*/vmcore*") if p.is_file())[0]
    assert main(["kmem", "-v", "--json", str(sample)]) == 0
    rows = json.loads(capsys.readouterr().out)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with kdnb.open(sample) as d:
            areas, tasks = d.vmap_areas, d.tasks
    assert [r["start"] for r in rows] == [int(a) for a in areas["start"]]
    listed = {(r["pid"], r["comm"]) for r in rows if r["pid"] is not None}
    # every task; the boot CPU's idle task runs on the kernel image's init_stack
    assert listed == {(int(p), str(c)) for p, c in zip(tasks["pid"], tasks["comm"])} - {(0, "swapper/0")}
    assert main(["kmem", "-v", str(sample)]) == 0
    text = capsys.readouterr().out
    assert text.splitlines()[0].split()[:5] == ["START", "END", "SIZE", "KIND", "CALLER"]
    assert "KiB" in text and "kernel_clone" in text
