"""The depth views side by side with drgn 0.3.0 reading the same dump with the kernel's DWARF
vmlinux (its -dbg package, fetched by `kdnb lab dbg RELEASE`): run queues (cpu_rq,
rq_for_each_fair_task / _rt_task) vs d.runq, mounts of every mount namespace (for_each_mount) vs
d.mounts, slab objects (slab_object_info) and vmap areas (for_each_vmap_area) vs d.whatis on
addresses drgn walks, mutex and rw-semaphore owners (mutex_owner, rwsem_owner) vs d.locks.

On the corpus, and on lab dumps in $KDNB_LAB_DUMPS (a folder of `kdnb lab make` outputs, such
as benchmarks/lab_rootcause_matrix.py --keep leaves). Skipped when drgn, the dumps or the -dbg
vmlinux are absent: these tests never download; `kdnb lab dbg` (or the `lab`-marked
tests/test_debuginfo.py) does.
"""

from __future__ import annotations

import itertools
import json
import os
import warnings
from pathlib import Path

import pytest

import kdnb
from kdnb.lab.debuginfo import cached_vmlinux
from tests.conftest import CORPUS

drgn = pytest.importorskip("drgn", minversion="0.0.30")

LAB = Path(os.environ.get("KDNB_LAB_DUMPS", "/nonexistent"))
FOLDERS = sorted(p for p in [*CORPUS.glob("*"), *LAB.glob("k*")] if (p / "ground-truth.json").exists())
SLOTS = 16  # slots compared per slab
POINTERS = ("mm", "files", "cred", "fs", "signal", "sighand", "nsproxy")
MAX_AREAS = 400


pytestmark = pytest.mark.corpus


@pytest.fixture(scope="module", params=FOLDERS, ids=lambda p: f"{p.parent.name}/{p.name}")
def pair(request):
    folder = request.param
    release = json.loads((folder / "ground-truth.json").read_text())["kernel_release"]
    vmlinux = cached_vmlinux(release)
    if vmlinux is None:
        pytest.skip(f"no -dbg vmlinux of {release}: run `kdnb lab dbg {release}`")
    dumps = sorted(folder.glob("vmcore.kdump-zlib"))
    if not dumps:
        pytest.skip(f"{folder.name} has no vmcore.kdump-zlib")
    prog = drgn.Program()
    prog.set_core_dump(str(dumps[0]))
    prog.load_debug_info([str(vmlinux)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with kdnb.open(dumps[0]) as d:
            yield d, prog, folder


def test_runq(pair) -> None:
    from drgn.helpers.linux.cpumask import for_each_online_cpu
    from drgn.helpers.linux.sched import cpu_rq, rq_for_each_fair_task, rq_for_each_rt_task

    d, prog, _ = pair
    try:
        theirs = {cpu: (int(r.curr.pid), int(r.nr_running), sorted(int(t.pid) for t in rq_for_each_fair_task(r)),
                        sorted(int(t.pid) for t in rq_for_each_rt_task(r)))
                  for cpu in for_each_online_cpu(prog) for r in [cpu_rq(prog, cpu)]}
    except drgn.FaultError as exc:
        pytest.skip(f"drgn cannot read the run queues: {exc}")
    rq = d.runq
    assert set(int(c) for c in rq["cpu"]) == set(theirs)
    for cpu, (current, nr_running, fair, rt) in theirs.items():
        mine = rq[rq["cpu"] == cpu]
        assert [int(p) for p in mine[mine["current"]]["pid"]] == [current]
        assert set(int(x) for x in mine["nr_running"]) == {nr_running}
        for cls, pids in (("fair", fair), ("rt", rt)):
            assert sorted(int(p) for p in mine[mine["sched_class"] == cls]["pid"]) == pids, (cpu, cls)


def test_mounts_of_every_namespace(pair) -> None:
    from drgn import Object
    from drgn.helpers.linux.fs import for_each_mount, mount_dst, mount_fstype
    from drgn.helpers.linux.pid import for_each_task

    d, prog, folder = pair
    if "degraded" in folder.name:
        pytest.skip("in-use slab pages excluded: drgn cannot walk every task")
    namespaces = {t.nsproxy.mnt_ns.value_() for t in for_each_task(prog) if t.nsproxy}
    theirs = {(int(m.mnt_id), mount_dst(m).decode(), mount_fstype(m).decode())
              for ns in namespaces for m in for_each_mount(Object(prog, "struct mnt_namespace *", ns))}
    visible = d.mounts[~d.mounts["internal"]]
    mine = {(int(i), p, f) for i, p, f in zip(visible["mnt_id"], visible["path"], visible["fstype"])}
    assert mine == theirs


def test_slab_objects(pair) -> None:
    """Every slot of the slabs holding a task's mm, files, cred, fs, signal, sighand, nsproxy
    and task_struct (objects of distinct caches, found through drgn's task list)."""
    from drgn import FaultError
    from drgn.helpers.linux.mm import page_to_virt
    from drgn.helpers.linux.pid import for_each_task
    from drgn.helpers.linux.slab import slab_cache_objects_per_slab, slab_object_info

    d, prog, folder = pair
    seeds: list[int] = []
    try:
        for task in itertools.islice(for_each_task(prog), 1, 4):
            seeds += [task.value_()] + [getattr(task, m).value_() for m in POINTERS if getattr(task, m)]
    except FaultError as exc:
        pytest.skip(f"drgn cannot walk the tasks: {exc}")
    compared, undecided, slabs, differ = 0, 0, set(), []
    for seed in seeds:
        try:
            info = slab_object_info(prog, seed)
        except FaultError:
            continue
        if info is None or info.slab.value_() in slabs:
            continue
        slabs.add(info.slab.value_())
        cache = info.slab_cache
        base, size = page_to_virt(info.slab).value_(), int(cache.size)
        for i in range(min(int(slab_cache_objects_per_slab(cache)), SLOTS)):
            addr = base + i * size + 8
            try:
                theirs = slab_object_info(prog, addr)
            except FaultError:
                continue
            if theirs.allocated is None:  # drgn could not decide (a freelist it reads is missing)
                undecided += 1
                continue
            w = d.whatis(addr)
            if w.kind == "task":  # a task_struct is named as the task, its slot checked by address
                mine, want = (w.details["task"], True), (theirs.address, theirs.allocated)
            else:
                mine = (w.kind, w.details.get("cache_name"), w.details.get("object"), w.details.get("state"))
                want = ("slab", cache.name.string_().decode(), theirs.address,
                        "allocated" if theirs.allocated else "free")
            if mine != want:
                differ.append(f"{addr:#x}: kdnb {mine} drgn {want}")
            compared += 1
    assert compared >= 30 and compared >= 2 * undecided, (compared, undecided)
    assert not differ, differ[:3]


def test_vmap_areas(pair) -> None:
    from drgn.helpers.linux.mm import for_each_vmap_area

    d, prog, folder = pair
    try:
        theirs = [(int(va.va_start), int(va.va_end)) for va in
                  itertools.islice(for_each_vmap_area(prog), MAX_AREAS)]
    except drgn.FaultError as exc:
        pytest.skip(f"drgn cannot walk the vmap areas: {exc}")
    if "degraded" not in folder.name:
        assert len(theirs) == len(d.vmap_areas)
    for start, end in theirs:
        w = d.whatis(start + (end - start) // 2)
        assert (w.details.get("area_start"), w.details.get("area_size")) == (start, end - start), str(w)


def test_lock_owners(pair) -> None:
    from drgn import Object
    from drgn.helpers.linux.locking import mutex_owner, rwsem_owner

    d, prog, _ = pair
    locks = d.locks[d.locks["kind"].isin(["mutex", "rwsem"])]
    if not len(locks):
        pytest.skip("no task waits on a mutex or rw-semaphore in this dump")
    for kind, addr, owner in zip(locks["kind"], locks["address"], locks["owner_pid"]):
        obj = Object(prog, f"struct {'mutex' if kind == 'mutex' else 'rw_semaphore'}", address=int(addr))
        task = mutex_owner(obj) if kind == "mutex" else rwsem_owner(obj)
        assert int(owner) == int(task.pid), (kind, hex(int(addr)))


@pytest.mark.skipif(not (CORPUS / "k6.12-hung_task-degraded").exists(), reason="corpus not present")
def test_slot_state_unknown_where_a_freelist_is_missing() -> None:
    """On the degraded capture some CPUs' active slabs have their lockless freelist in pages the
    dump excludes: the objects of such a slab that are not seen free are 'unknown', never
    'allocated' (and nothing raises)."""
    import struct

    from kdnb.errors import KdnbError

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with kdnb.open(CORPUS / "k6.12-hung_task-degraded" / "vmcore.kdump-zlib") as d:
            k = d.kernel
            kc, cpu_t = k.type("struct kmem_cache"), k.type("struct kmem_cache_cpu")
            states: dict[str, int] = {}
            for cache, size in zip(d.slab["address"], d.slab["size"]):
                cpu_slab = k.read_u64(int(cache) + kc.offsetof("cpu_slab"))
                for cpu in range(k.nr_cpu_ids):
                    try:
                        raw = k.read(k.per_cpu(cpu_slab, cpu), cpu_t.size)
                    except KdnbError:
                        continue
                    head = struct.unpack_from("<Q", raw, cpu_t.offsetof("freelist"))[0]
                    try:
                        if not head or k.read_u64(head) is not None:
                            continue  # no lockless freelist, or a readable one
                    except KdnbError:
                        pass
                    for i in range(4):  # the head and the slots after it, in its slab
                        w = d.whatis(head + i * int(size))
                        if w.kind == "slab":
                            states[w.details["state"]] = states.get(w.details["state"], 0) + 1
    assert states.get("unknown", 0) > 0, states
    assert states.get("free", 0) > 0, states  # each head itself is on the freelist


def test_tasks_are_drgns_plus_the_idle_tasks(pair) -> None:
    """kdnb lists every task drgn's for_each_task gives, plus one idle task (pid 0, swapper/N)
    per CPU, which crash's `ps` shows and for_each_task leaves out."""
    from drgn import FaultError
    from drgn.helpers.linux.cpumask import for_each_online_cpu
    from drgn.helpers.linux.pid import for_each_task

    d, prog, folder = pair
    try:
        theirs = {(t.pid.value_(), t.comm.string_().decode()) for t in for_each_task(prog)}
        cpus = len(list(for_each_online_cpu(prog)))
    except FaultError as exc:
        pytest.skip(f"drgn cannot walk the tasks: {exc}")
    tasks = d.tasks
    ours = set(zip(tasks["pid"].astype(int), tasks["comm"].astype(str)))
    idle = {t for t in ours if t[0] == 0}
    if "degraded" in folder.name:  # 3 task_structs are in excluded pages there
        assert ours - idle <= theirs
    else:
        assert ours - idle == theirs
    assert sorted(c for _, c in idle) == [f"swapper/{i}" for i in range(cpus)]
