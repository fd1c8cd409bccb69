"""Sockets, interface counters, per-VMA RSS, the x86 interrupt rows and the OOM context against
the /proc snapshot and the log of fresh lab dumps (the kdnb_sockets workload process holds unix,
TCP, TCP6 and UDP sockets with unread data; the snapshot has /proc/net/{unix,tcp,tcp6,udp,udp6},
/proc/net/dev, /proc/interrupts and each workload process's smaps).

Equal: the sockets (by inode: path, state, addresses, ports, queues), per-VMA Rss and Anonymous
of the idle workload processes. At least the snapshot's: interface and interrupt counters.
Marked `lab`; KDNB_SYSTEM_LAB_DIRS=dir1:dir2 checks folders made earlier
(`kdnb lab make sysrq --kernel 6.12 -o dir1`, `kdnb lab make oom --kernel 6.1 -o dir2`)."""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shutil
from pathlib import Path

import pytest

import kdnb

pytestmark = pytest.mark.lab

TCP_STATE = {1: "ESTABLISHED", 7: "CLOSE", 10: "LISTEN"}


def _proc_net_inet(text: str, v6: bool) -> dict[int, dict]:
    """/proc/net/{tcp,udp}[6] rows by inode: local, remote (addr, port), state, tx, rx."""
    out = {}
    for line in text.splitlines()[1:]:
        f = line.split()
        if len(f) < 10:
            continue
        def addr(x: str) -> tuple[str, int]:
            a, p = x.split(":")
            raw = bytes.fromhex(a)
            if v6:  # four host-order 32-bit words
                raw = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
                return str(ipaddress.IPv6Address(raw)), int(p, 16)
            return str(ipaddress.IPv4Address(raw[::-1])), int(p, 16)
        tx, rx = (int(x, 16) for x in f[4].split(":"))
        out[int(f[9])] = {"local": addr(f[1]), "remote": addr(f[2]), "state": int(f[3], 16), "tx": tx, "rx": rx}
    return out


def check_sockets(d: kdnb.Dump, snap: Path, pid: int) -> None:
    s = d.sockets
    mine = s[s["pid"] == pid].set_index("inode")
    assert len(mine) >= 10, mine
    unix = {int(f[6]): (f[7] if len(f) > 7 else None) for f in
            (line.split() for line in (snap / "net-unix.txt").read_text().splitlines()[1:])}
    for ino, row in mine[mine["family"] == "unix"].iterrows():
        assert ino in unix and (row["local_addr"] if isinstance(row["local_addr"], str) else None) == unix[ino]
        if row["state"] == "ESTABLISHED":  # socketpair and connected pair: both ends here
            assert row["peer_inode"] in mine.index and mine.loc[row["peer_inode"], "peer_inode"] == ino
    inet = {}
    for name, v6 in (("tcp", False), ("udp", False), ("tcp6", True), ("udp6", True)):
        if (snap / f"net-{name}.txt").exists():
            inet.update(_proc_net_inet((snap / f"net-{name}.txt").read_text(), v6))
    rows = mine[mine["family"].isin(["inet", "inet6"])]
    assert len(rows) >= 5
    for ino, row in rows.iterrows():
        want = inet[ino]
        assert (row["local_addr"], row["local_port"]) == want["local"], ino
        assert (row["remote_addr"], row["remote_port"]) == want["remote"], ino
        assert row["state"] == TCP_STATE.get(want["state"], str(want["state"])), ino
        assert (row["rx_queue"], row["tx_queue"]) == (want["rx"], want["tx"]), ino
    assert (mine["rx_queue"] > 0).sum() >= 4  # unix stream, unix dgram, TCP, UDP hold unread data


def check_counters(d: kdnb.Dump, snap: Path) -> None:
    net = d.net.set_index("name")
    for line in (snap / "net-dev.txt").read_text().splitlines()[2:]:
        name, _, rest = line.partition(":")
        v = [int(x) for x in rest.split()]
        row = net.loc[name.strip()]
        snap_counts = {"rx_bytes": v[0], "rx_packets": v[1], "rx_errors": v[2], "tx_bytes": v[8],
                       "tx_packets": v[9], "tx_errors": v[10]}
        assert all(row[c] >= n for c, n in snap_counts.items()), (name, snap_counts)
        assert row["rx_packets"] > 0  # the workload's TCP and UDP traffic over lo


def check_smaps(d: kdnb.Dump, snap: Path, comm: str, pid: int) -> None:
    smaps = (snap / f"smaps-{comm}.txt").read_text()
    want = {int(a, 16): (int(r) // 4, int(an) // 4) for a, r, an in
            re.findall(r"^([0-9a-f]+)-[0-9a-f]+ .*?\nRss:\s+(\d+) kB.*?\nAnonymous:\s+(\d+) kB",
                       smaps, re.S | re.M)}
    got = {int(r.start): (r.rss, r.rss_anon) for r in d.vmas(pid).itertuples()}
    assert got == want, comm


def check_arch_irqs(d: kdnb.Dump, snap: Path) -> None:
    arch = d.irqs[d.irqs["irq"].isna()].set_index("name")
    lines = (snap / "interrupts.txt").read_text().splitlines()
    ncpu = len(lines[0].split())
    checked = 0
    for line in lines[1:]:
        head, _, rest = line.partition(":")
        name = head.strip()
        if name.isdigit():
            continue
        nums = [int(x) for x in rest.split()[:ncpu] if x.isdigit()]
        row = arch.loc[name]
        if len(nums) == 1 and ncpu > 1:  # ERR, MIS: one global count
            assert row["total"] >= nums[0], line
        else:
            assert all(row[f"cpu{i}"] >= n for i, n in enumerate(nums)), line
        checked += 1
    assert checked >= 10


def check_oom(d: kdnb.Dump, folder: Path) -> None:
    gt = json.loads((folder / "ground-truth.json").read_text())
    hog = next(w["pid"] for w in gt["workload_processes"] if w["comm"] == "kdnb_hog")
    ctx = d.oom
    header = next(line for line in gt["observed_crash_lines_console"] if "invoked oom-killer" in line)
    m = re.search(r"gfp_mask=(0x[0-9a-f]+)\(([^)]*)\), order=(\d+)", header)
    assert (ctx.invoker_pid, ctx.invoker_comm) == (gt["crash_context_cpu_pid_comm"]["pid"], "kdnb_hog")
    assert (ctx.gfp_mask, "|".join(ctx.gfp_flags), ctx.order) == (int(m[1], 16), m[2], int(m[3]))
    assert ctx.constraint == "CONSTRAINT_NONE" and ctx.panic == gt["expected_panic_message"].split(": ", 1)[1]
    v = ctx.victim
    assert v["pid"] == hog and not ctx.victim_killed
    # the log prints the approximate rss counter; the dump's per-CPU sum may be ahead by batches
    assert 0 <= v["rss_pages_memory"] - v["rss_pages"] <= 64 * d.kernel.nr_cpu_ids
    z = ctx.zones
    assert (z["free"] == z["log_free"]).all() and (z["min"] + z["boost"] == z["log_min"]).all()
    assert z["below_min"].any()
    ev = d.root_cause().evidence
    assert ev["text"].str.contains(f"victim kdnb_hog \\(pid {hog}\\)").any()
    assert ev["text"].str.contains("gfp_mask=").any()
    from kdnb.ui import sections_data

    text = sections_data.memory(d)  # the report's memory section shows the OOM context
    assert "OOM context" in text and f"kdnb_hog (pid {hog}, uid 0)" in text


def check_folder(folder: Path) -> None:
    snap = folder / "snapshot"
    workload = {c: int(p) for c, p in (line.split() for line in (snap / "workload.txt").read_text().splitlines())}
    with kdnb.open(sorted(folder.glob("vmcore.kdump-*"))[0]) as d:
        check_sockets(d, snap, workload["kdnb_sockets"])
        check_counters(d, snap)
        check_arch_irqs(d, snap)
        for comm, pid in workload.items():
            check_smaps(d, snap, comm, pid)
        if json.loads((folder / "ground-truth.json").read_text())["scenario"] == "oom":
            check_oom(d, folder)
        else:
            assert d.oom is None


def _given() -> list[Path]:
    return [Path(p) for p in os.environ.get("KDNB_SYSTEM_LAB_DIRS", "").split(":") if p]


@pytest.mark.skipif(not _given(), reason="KDNB_SYSTEM_LAB_DIRS not set")
def test_given_lab_dumps() -> None:
    for folder in _given():
        check_folder(folder)


@pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="qemu-system-x86_64 not installed")
@pytest.mark.parametrize("kernel,scenario", [("6.12", "sysrq"), ("5.10", "sysrq"), ("6.12", "oom"),
                                             ("6.1", "oom")])
def test_fresh_lab_dump(tmp_path: Path, kernel: str, scenario: str) -> None:
    import kdnb.lab

    path = kdnb.lab.make(scenario, kernel=kernel, formats=("kdump-zlib",), out_dir=tmp_path / "out",
                         progress=None)
    check_folder(path.parent)
