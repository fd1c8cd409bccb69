"""The kernel layer on every corpus dump, checked against the guest's /proc/kallsyms and drgn's answers.

drgn's oracle `types` give sizes in bytes but member offsets in 8-byte words (offset // 8): e.g. 6.1
`task_struct.pid` is at byte 2416 and the oracle says 302. Its `struct kmem_cache` "size" entry is
the offset of the member named `size` (byte 24 -> 3), not the struct size.
"""

from __future__ import annotations

import json
import os
import re
import struct
from pathlib import Path

import pytest

import kdnb
from kdnb.errors import VmlinuxMismatch
from kdnb.kernel import Kernel
from tests.conftest import CORPUS, corpus_dir

DUMPS = ["k5.10-sysrq", "k5.10-hung_task", "k6.1-sysrq", "k6.1-oops", "k6.12-hung_task",
         "k6.12-hung_task-degraded", "k7.2-panic", "k7.2-softlockup"]


@pytest.fixture(scope="module", autouse=True)
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Keep the on-disk cache of these tests out of the user's home."""
    path = tmp_path_factory.mktemp("kdnb-cache")
    mp = pytest.MonkeyPatch()
    mp.setenv("KDNB_CACHE_DIR", str(path))
    yield path
    mp.undo()


@pytest.fixture(scope="module", params=DUMPS)
def case(request: pytest.FixtureRequest, cache_dir: Path) -> tuple[Path, Kernel, dict]:
    folder = CORPUS / request.param
    if not folder.is_dir():
        pytest.skip(f"corpus folder {folder} not present")
    dump = kdnb.open(folder / "vmcore.kdump-zlib")
    oracle = json.loads((folder / "oracle-drgn.json").read_text())
    yield folder, dump.kernel, oracle
    dump.close()


def _subset(folder: Path) -> list[tuple[int, str, str]]:
    rows = []
    for line in (folder / "snapshot" / "kallsyms-subset.txt").read_text().splitlines():
        addr, typ, name = line.split()[:3]
        rows.append((int(addr, 16), typ, name))
    return rows


def test_identity(case) -> None:
    folder, k, oracle = case
    assert k.banner_ok and k.warnings == []
    assert k.banner == oracle["banner"]
    assert k.pagetable.levels == 4


def test_symbols_match_proc_kallsyms(case) -> None:
    folder, k, oracle = case
    for name in ("_stext", "init_task", "linux_banner"):
        assert k.symbol(name) == oracle["symbols"][name]
    df = k.symbols
    types = dict(zip(df["name"], df["type"]))
    for addr, typ, name in _subset(folder):
        assert k.symbol(name) == addr, name
        assert types[name] == typ, name
    for name, addr in oracle["symbols"].items():
        assert k.symbol(name) == addr, name


def test_symbol_count(case) -> None:
    folder, k, oracle = case
    df = k.symbols
    source = k.symbol_source
    if "SYMBOL(kallsyms_num_syms)" in k.vmcoreinfo:
        assert source["tier"] == 1 and source["tables"]["num_syms"] == int(k.vmcoreinfo["SYMBOL(kallsyms_num_syms)"], 16)
    else:  # before 6.0: found by scanning the image, verified against VMCOREINFO's symbols
        assert source["tier"] == 2 and {"_stext", "init_uts_ns", "vmap_area_list"} <= set(source["verified"])
    count = struct.unpack("<I", k.read(source["tables"]["num_syms"], 4))[0]
    assert int(df["module"].isna().sum()) == count
    assert str(df["address"].dtype) == "UInt64" and str(df["size"].dtype) == "Int64"
    assert k.symbolize(k.symbol("schedule") + 0x1A).startswith("schedule+0x1a/0x")


def test_modules(case) -> None:
    folder, k, oracle = case
    assert sorted(m.name for m in k.modules) == sorted(m["name"] for m in oracle["modules"])
    mod_syms = k.symbols[k.symbols["module"].notna()]
    assert len(mod_syms) > 100
    row = mod_syms[mod_syms["type"].isin(["t", "T"])].iloc[0]
    text = k.symbolize(int(row["address"]) + 1)
    assert text.startswith(f"{row['name']}+0x1/") and text.endswith(f" [{row['module']}]")


def test_types_vs_drgn(case) -> None:
    folder, k, oracle = case
    for tname, facts in oracle["types"].items():
        t = k.type(tname)
        for key, value in facts.items():
            if value is None:  # not in this kernel (e.g. task_struct.__state before 5.14)
                assert not t.has_member(key), f"{tname}.{key}"
            elif key == "size" and not t.has_member("size"):
                assert t.size == value, tname
            else:
                assert t.offsetof(key) // 8 == value, f"{tname}.{key}"


def test_task_walk_vs_drgn(case) -> None:
    folder, k, oracle = case
    ts = k.type("struct task_struct")
    init = k.symbol("init_task")
    layout = k.layout(ts, ["pid", "tgid", "comm"])
    walk = k.list_walk(init + ts.offsetof("tasks"), ts, "tasks")
    rows = []
    for addr in walk:
        try:
            rows.append(layout.unpack(k.read(addr, layout.size)))
        except kdnb.KdnbError:
            rows.append(None)
    want = [t["pid"] for t in oracle["tasks"]]
    if "tasks" in oracle["errors"]:  # the degraded capture: a flagged partial walk
        assert not walk.complete and walk.error is not None
        assert [r[0] for r in rows[:len(want)]] == want
    else:
        assert walk.complete and walk.error is None
        assert [r[0] for r in rows] == want
        assert [r[2] for r in rows] == [t["comm"] for t in oracle["tasks"]]
    first = next(iter(k.for_each_entry(init + ts.offsetof("tasks"), "struct task_struct", "tasks")))
    assert first["pid"] == 1 and first.member("comm") == oracle["tasks"][0]["comm"]
    assert k.vtop(first.address) == k.pagetable.walk(first.address)  # direct-map fast path agrees


def test_per_cpu(case) -> None:
    folder, k, oracle = case
    rq_t = k.type("struct rq")
    for cpu in range(k.nr_cpu_ids):
        rq = k.object(k.per_cpu("runqueues", cpu), rq_t)
        assert rq["cpu"] == cpu


def test_cache_second_open(case, cache_dir: Path) -> None:
    folder, k, oracle = case
    k.btf  # noqa: B018 - loads (and caches) the BTF
    again = Kernel(k.reader)
    assert again._cached.get("btf") is not None
    assert again.symbol("init_task") == k.symbol("init_task")
    assert again.type("struct task_struct").size == k.type("struct task_struct").size
    (cache_dir / f"{k.cache_key}.npz").write_bytes(b"garbage")
    third = Kernel(k.reader)
    assert third.symbol("init_task") == k.symbol("init_task")


def test_system_map(case, tmp_path: Path) -> None:
    folder, k, oracle = case
    slide = int(k.vmcoreinfo["KERNELOFFSET"], 16)
    df = k.symbols[k.symbols["module"].isna()]
    lines = [f"{(a - slide if t not in 'Aa' else a):016x} {t} {n}"
             for a, t, n in zip(df["address"].tolist(), df["type"].tolist(), df["name"].tolist())]
    (tmp_path / "System.map").write_text("\n".join(lines) + "\n")
    k2 = Kernel(k.reader, system_map=tmp_path / "System.map", use_cache=False)
    assert k2.banner_ok
    assert k2.symbol("init_task") == k.symbol("init_task")
    # a map of another build: its linux_banner lands elsewhere and is refused
    shifted = [f"{int(x[:16], 16) + (0x2000 if x.endswith(' linux_banner') else 0):016x}{x[16:]}"
               for x in lines]
    (tmp_path / "other.map").write_text("\n".join(shifted) + "\n")
    with pytest.raises(VmlinuxMismatch):
        Kernel(k.reader, system_map=tmp_path / "other.map", use_cache=False)


def test_module_symbolize_matches_oops_line(case) -> None:
    """The kernel's own `RIP: 0010:func+off/size [mod]` line round-trips through symbolize."""
    folder, k, oracle = case
    m = re.search(r"RIP: 0010:(\w+)\+0x([0-9a-f]+)/0x([0-9a-f]+) \[(\w+)\]", (folder / "dmesg.txt").read_text())
    if m is None:
        pytest.skip("no module RIP line in this dump's log")
    name, off, size, mod = m.groups()
    assert k.symbolize(k.symbol(name) + int(off, 16)) == f"{name}+0x{off}/0x{size} [{mod}]"


def test_memory_model(case) -> None:
    folder, k, oracle = case
    assert k.vmemmap_base == k.read_u64(k.symbol("vmemmap_base"))
    assert k.page_offset == k.read_u64(k.symbol("page_offset_base"))
    # a struct page in vmemmap (4 KiB-mapped, walked) describes the page holding init_task
    pfn = k.vtop(k.symbol("init_task")) >> 12
    page = k.vmemmap_base + pfn * int(k.vmcoreinfo["SIZE(page)"])
    assert k.pagetable.walk(page) == k.vtop(page)
    with pytest.raises(kdnb.FaultError):
        k.vtop(0xFFFFFE8000000000)  # an unmapped hole (the LDT remap area)


VMLINUX = os.environ.get("KDNB_TEST_VMLINUX")  # the 6.1 -dbg vmlinux, when a developer has it


@pytest.mark.skipif(not VMLINUX, reason="set KDNB_TEST_VMLINUX to the 6.1 -dbg vmlinux to run")
def test_vmlinux_symbols_and_types_agree_with_the_dump_alone() -> None:
    folder = corpus_dir("k6.1-sysrq")
    with kdnb.open(folder / "vmcore.kdump-zlib", vmlinux=VMLINUX) as with_vm, \
            kdnb.open(folder / "vmcore.kdump-zlib") as alone:
        for name in ("init_task", "linux_banner", "_stext", "slab_caches"):
            assert with_vm.symbol(name) == alone.symbol(name)
        assert with_vm.type("struct task_struct").size == alone.type("struct task_struct").size
        assert set(zip(with_vm.tasks.pid, with_vm.tasks.comm)) == set(zip(alone.tasks.pid, alone.tasks.comm))
    with pytest.raises(VmlinuxMismatch):
        kdnb.open(corpus_dir("k6.12-hung_task") / "vmcore.kdump-zlib", vmlinux=VMLINUX).kernel


@pytest.mark.parametrize("name", ["k6.1-sysrq", "k6.12-hung_task", "k7.2-panic"])
def test_scan_finds_the_tables_vmcoreinfo_names(name: str) -> None:
    """The tier-2 scan, run on kernels whose VMCOREINFO names the tables, finds those tables
    (6.1: seqs_of_names between markers and token table; 6.12/7.2: offsets after the index)."""
    from kdnb.kernel import kallsyms, kallsyms_scan
    d = kdnb.open(corpus_dir(name) / "vmcore.kdump-zlib")
    expected = kallsyms.expected_symbols(d.vmcoreinfo)
    tables, raw = kallsyms_scan.find(d.kernel.read, expected, d.path)
    named = kallsyms.tables_from_vmcoreinfo(d.vmcoreinfo)
    for field in ("num_syms", "names", "token_table", "token_index", "offsets", "relative_base"):
        assert getattr(tables, field) == getattr(named, field), field
    assert raw.names == d.kernel._table.names and len(raw.verified) >= 5
