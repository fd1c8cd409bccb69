"""The system-state views (meminfo, zones, buddyinfo, sysctl, cmdline) against each capture's
/proc snapshot and ground truth, where the value cannot have changed between the snapshot and the
crash, and against the kernel's own sums."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pandas as pd
import pytest

import kdnb
from kdnb.views.common import IncompleteViewWarning
from tests.conftest import DATA, corpus_dir, ground_truth

CORPUS = ["k5.10-sysrq", "k5.10-hung_task", "k6.1-sysrq", "k6.1-oops", "k6.12-hung_task",
          "k6.12-hung_task-degraded", "k7.2-panic", "k7.2-softlockup"]
SAMPLES = sorted(p.parent.name for p in DATA.glob("*/ground-truth.json"))
#: /proc/meminfo fields that stay put while the guest idles between snapshot and crash
CONSTANT = ["MemTotal", "CommitLimit", "Percpu", "Hugepagesize", "HugePages_Total", "Hugetlb",
            "SwapTotal"]

_open: dict[str, kdnb.Dump] = {}


def dump_of(folder: Path) -> kdnb.Dump:
    """One Dump per folder for the session."""
    key = str(folder)
    if key not in _open:
        vmcores = sorted(folder.glob("vmcore.kdump-*"))
        if not vmcores:
            pytest.skip(f"no kdump file in {folder}")
        _open[key] = kdnb.open(vmcores[0])
    return _open[key]


def folders() -> list:
    return [pytest.param(DATA / n, id=f"data-{n}") for n in SAMPLES] + \
        [pytest.param(n, id=n, marks=pytest.mark.corpus) for n in CORPUS]


def resolve(where: Path | str) -> Path:
    return where if isinstance(where, Path) else corpus_dir(where)


def quiet(fn):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", IncompleteViewWarning)
        return fn()


def proc_meminfo(folder: Path) -> dict[str, int]:
    """snapshot/meminfo.txt as {field: kB (or count for HugePages_*)}."""
    out = {}
    for line in (folder / "snapshot" / "meminfo.txt").read_text().splitlines():
        name, _, rest = line.partition(":")
        out[name] = int(rest.split()[0])
    return out


@pytest.mark.parametrize("where", folders())
def test_meminfo_against_the_snapshot(where) -> None:
    folder = resolve(where)
    d = dump_of(folder)
    mi = d.meminfo
    snap = proc_meminfo(folder)
    assert list(mi.columns) == ["pages", "bytes", "proc"]
    assert {str(t) for t in mi.dtypes[["pages", "bytes"]]} == {"Int64"}
    by_proc = {p: row for p, row in zip(mi["proc"], mi.itertuples()) if isinstance(p, str)}
    hugepage = int(mi.loc["hugepage_size", "pages"])
    for name in CONSTANT:
        if name in snap:
            row = by_proc[name]
            got = row.pages // hugepage if name.startswith("HugePages_") else row.bytes // 1024
            assert got == snap[name], name
    # everything /proc shows that the kernel has is read (the rest is absent on this kernel)
    absent = set(mi.attrs["kdnb"].get("absent", []))
    for item, row in mi.iterrows():
        if isinstance(row["proc"], str) and row["proc"] in snap and item not in absent:
            assert row["pages"] is not None and row["pages"] >= 0, item
    # plausible where the idle guest moved a little (Dirty was synced, the trigger ran)
    for name in ("MemFree", "MemAvailable", "Slab", "Shmem", "Mapped", "Committed_AS", "VmallocUsed"):
        assert abs(by_proc[name].bytes // 1024 - snap[name]) <= max(snap[name] // 10, 1024), name
    assert mi.loc["slab", "pages"] == mi.loc["slab_reclaimable", "pages"] + mi.loc["slab_unreclaimable", "pages"]
    assert mi.loc["available", "pages"] <= mi.loc["total", "pages"]


@pytest.mark.parametrize("where", folders())
def test_zones_and_buddyinfo_add_up(where) -> None:
    folder = resolve(where)
    d = dump_of(folder)
    z, b, mi = d.zones, d.buddyinfo, d.meminfo
    assert list(z["zone"].cat.categories) and set(z["zone"]) >= {"DMA", "DMA32"}
    assert {str(z[c].dtype) for c in ("spanned", "present", "managed", "free", "min", "low", "high")} == {"Int64"}
    # totalram_pages is the sum of the zones' managed pages
    assert z["managed"].sum() == mi.loc["total", "pages"]
    assert z["free"].sum() == mi.loc["free", "pages"]
    populated = z[z["populated"]]
    assert (populated["min"] <= populated["low"]).all() and (populated["low"] <= populated["high"]).all()
    assert len(b) == len(populated) * 11 and list(b.columns) == ["node", "zone", "order", "free_blocks", "free_pages"]
    assert (b["free_pages"] == b["free_blocks"] * (2 ** b["order"].astype("int64"))).all()
    # NR_FREE_PAGES counts the buddy lists (per-CPU vm_stat deltas aside)
    assert abs(int(b["free_pages"].sum()) - int(z["free"].sum())) <= 64
    assert "incomplete" not in b.attrs["kdnb"]


def _scenario_sysctls(scenario: str) -> dict[str, int]:
    want = {"kernel.panic": 5}  # every capture boots with panic=5
    if "hung" in scenario:
        want.update({"kernel.hung_task_panic": 1, "kernel.hung_task_timeout_secs": 5})
    if "oops" in scenario:
        want["kernel.panic_on_oops"] = 1
    if "softlockup" in scenario:
        want["kernel.softlockup_panic"] = 1
    return want


@pytest.mark.parametrize("where", folders())
def test_sysctl_and_cmdline(where) -> None:
    folder = resolve(where)
    d = dump_of(folder)
    gt = ground_truth(folder)
    # /proc/cmdline prints saved_command_line and a newline (a trailing blank stays)
    assert d.cmdline == (folder / "snapshot" / "cmdline.txt").read_text().removesuffix("\n")
    assert d.cmdline.strip() == gt["first_kernel_cmdline"]
    sc = d.sysctl
    assert list(sc.columns) == ["name", "value", "number", "symbol", "address"]
    assert "incomplete" not in sc.attrs["kdnb"] and not sc.attrs["kdnb"].get("absent")
    got = dict(zip(sc["name"], sc["number"]))
    for name, value in _scenario_sysctls(gt["scenario"]).items():
        assert got[name] == value, name
    assert got["kernel.tainted"] == int(gt["tainted_before_crash"]) or got["kernel.tainted"] > 0
    assert sc.set_index("name").loc["kernel.core_pattern", "value"] == "core"
    assert re.fullmatch(r"\d+\t4\t1\t7", sc.set_index("name").loc["kernel.printk", "value"])
    snap = folder / "snapshot" / "sysctl.txt"
    if snap.exists():  # lab dumps made since the snapshot records them
        _same_as_snapshot(sc, snap)


def _same_as_snapshot(sc, snap: Path) -> None:
    """Every sysctl equals the snapshot's but the crash's own changes (console_verbose() raises
    the console loglevel; a hung-task report uses up one warning)."""
    values = dict(zip(sc["name"], sc["value"]))
    for line in snap.read_text().splitlines():
        name, _, value = line.partition(" = ")
        if name in values and name not in ("kernel.printk", "kernel.hung_task_warnings", "kernel.tainted"):
            assert values[name] == value, name


def workload(folder: Path) -> dict[str, int]:
    """comm -> pid of the lab's workload processes (snapshot/workload.txt)."""
    return {c: int(p) for c, p in (line.split() for line in
                                   (folder / "snapshot" / "workload.txt").read_text().splitlines())}


def present(d: kdnb.Dump, folder: Path) -> list[str]:
    """The sleeper and the FIFO reader, unless the (degraded) dump lost their task_struct."""
    pids = set(quiet(lambda: d.tasks)["pid"])
    comms = [c for c in ("kdnb_sleeper", "kdnb_fifo_rd") if workload(folder)[c] in pids]
    assert comms or "degraded" in folder.name
    return comms


@pytest.mark.parametrize("where", folders())
def test_vmas_of_the_workload(where) -> None:
    folder = resolve(where)
    d = dump_of(folder)
    for comm in present(d, folder):
        vm = quiet(lambda c=comm: d.vmas(workload(folder)[c]))
        assert (vm["comm"] == comm).all() and (vm["start"] < vm["end"]).all()
        assert (vm["start"].iloc[1:].to_numpy() >= vm["end"].iloc[:-1].to_numpy()).all()
        if "degraded" in folder.name and "incomplete" in vm.attrs["kdnb"]:
            continue  # makedumpfile dropped slab pages: a flagged partial map is right
        # the static executable (kdnb_work, or busybox in older lab dumps), on the tmpfs root
        exe = vm[vm["path"] == vm["path"].iloc[0]]
        assert vm["path"].iloc[0] in ("/bin/kdnb_work", "/bin/busybox")
        assert len(exe) >= 4 and exe["start"].iloc[0] == 0x400000 and exe["offset"].iloc[0] == 0
        assert (exe["kind"] == "shmem").all() and exe["inode"].nunique() == 1
        assert {"heap", "stack", "special"} <= set(vm["kind"])
        assert {"[vdso]", "[vvar]", "[stack]", "[heap]"} <= set(vm["path"].dropna())
        assert "r-xp" in set(exe["perms"])
        assert "incomplete" not in vm.attrs["kdnb"]
    maps = quiet(lambda: d.maps)
    assert (maps["pid"] > 0).all()
    if "degraded" not in folder.name:
        assert set(workload(folder).values()) & set(maps["pid"])


@pytest.mark.parametrize("where", folders())
def test_files_of_the_workload(where) -> None:
    folder = resolve(where)
    d = dump_of(folder)
    for comm in present(d, folder):
        f = quiet(lambda c=comm: d.files(workload(folder)[c]))
        if "degraded" in folder.name and "incomplete" in f.attrs["kdnb"]:
            continue
        by_fd = f.set_index("fd")
        assert list(by_fd.loc[[0, 1, 2], "path"]) == ["/dev/null", "/dev/console", "/dev/console"]
        assert set(by_fd.loc[[0, 1, 2], "type"]) == {"char"}
        # /dev/null is on the devtmpfs mounted at /dev: the path crossed a mount
        assert by_fd.loc[0, "mnt_id"] != by_fd.loc[1, "mnt_id"]
        assert by_fd.loc[0, "flags"] & 0o3 == 0 and by_fd.loc[1, "flags"] & 0o3 == 2  # O_RDONLY, O_RDWR
    with pytest.raises(kdnb.KdnbError):
        d.files(999_999)


@pytest.mark.parametrize("where", folders())
def test_irqs_and_softirqs(where) -> None:
    folder = resolve(where)
    d = dump_of(folder)
    irqs = d.irqs
    cpus = [c for c in irqs.columns if c.startswith("cpu")]
    assert cpus and (irqs["total"] == irqs[cpus].sum(axis=1)).all()
    named = irqs.set_index("irq")["actions"]
    assert named.loc[0] == "timer" and named.loc[4] == "ttyS0"
    assert any(a.startswith("virtio") for a in named)
    assert irqs.set_index("irq").loc[0, "total"] > 0
    soft = d.softirqs
    assert list(soft["softirq"]) == ["HI", "TIMER", "NET_TX", "NET_RX", "BLOCK", "IRQ_POLL",
                                     "TASKLET", "SCHED", "HRTIMER", "RCU"]
    assert soft.set_index("softirq").loc["TIMER", "total"] > 0
    snap = folder / "snapshot" / "interrupts.txt"
    if snap.exists():  # counts only grow between the snapshot and the crash
        _at_least_the_snapshot(irqs, snap)


def _at_least_the_snapshot(irqs, snap: Path) -> None:
    by_irq = irqs.set_index("irq")
    lines = snap.read_text().splitlines()
    ncpu = len(lines[0].split())
    for line in lines[1:]:
        head, _, rest = line.partition(":")
        if head.strip().isdigit():
            counts = [int(x) for x in rest.split()[:ncpu]]
            row = by_irq.loc[int(head)]
            assert all(row[f"cpu{i}"] >= c for i, c in enumerate(counts)), line
            assert row["actions"].replace(", ", ",") in line.replace(", ", ","), line


@pytest.mark.parametrize("where", folders())
def test_timers(where) -> None:
    folder = resolve(where)
    d = dump_of(folder)
    t = d.timers
    assert t.attrs["kdnb"]["hz"] == 250  # Debian's CONFIG_HZ
    assert set(t["kind"]) == {"timer", "hrtimer"} and set(t["cpu"]) == set(d.cpus["cpu"])
    assert "delayed_work_timer_fn" in set(t["function"])
    # each CPU's tick (or watchdog) hrtimer is due within seconds of the crash
    hr = t[t["kind"] == "hrtimer"]
    assert (hr.groupby("cpu")["expires_in"].min().abs() < pd.Timedelta(seconds=10)).all()
    assert t["expires_in"].notna().all() and "incomplete" not in t.attrs["kdnb"]


@pytest.mark.parametrize("where", folders())
def test_block_and_net(where) -> None:
    folder = resolve(where)
    d = dump_of(folder)
    blk = d.block
    assert list(blk.columns)[:3] == ["name", "dev", "major"] and "incomplete" not in blk.attrs["kdnb"]
    vda = blk[blk["name"] == "vda"]
    if "5.10" not in d.vmcoreinfo["OSRELEASE"]:  # 5.10 has bdevs only for open devices
        assert len(vda) == 1 and vda["major"].iloc[0] == 254 and vda["sectors"].iloc[0] > 0
        assert {"loop0", "vda"} <= set(blk["name"])
    net = d.net
    lo = net[net["name"] == "lo"]
    assert len(lo) == 1 and lo["ifindex"].iloc[0] == 1 and "LOOPBACK" in lo["flag_names"].iloc[0]
    assert lo["mac"].iloc[0] == "00:00:00:00:00:00" and lo["mtu"].iloc[0] == 65536


def test_cli_commands(capsys) -> None:
    from kdnb.cli import main

    sample = str(sorted((DATA / "k6.1-oops").glob("vmcore.*"))[0])
    pid = workload(DATA / "k6.1-oops")["kdnb_fifo_rd"]
    for argv, want in ((["kmem", "-i", sample], "MemTotal"), (["kmem", "-z", sample], "DMA32"),
                       (["kmem", "-f", sample], "free_blocks"), (["vm", str(pid), sample], "[stack]"),
                       (["files", str(pid), sample], "/dev/console"), (["dev", sample], "vda"),
                       (["net", sample], "LOOPBACK"), (["irq", sample], "timer"),
                       (["irq", "-s", sample], "TIMER"), (["timer", sample], "hrtimer"),
                       (["sysctl", sample], "kernel.panic_on_oops")):
        assert main(argv) == 0, argv
        assert want in capsys.readouterr().out, argv
    assert main(["vm", "999999", sample]) == 3
    assert "no task with pid 999999" in capsys.readouterr().err
