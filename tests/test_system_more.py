"""Sockets, interface counters, per-VMA RSS, the architecture's interrupt rows and the OOM
context on the bundled samples and the corpus (the lab-marked comparisons with /proc snapshots
are tests/test_system_more_lab.py).

No bundled sample or corpus dump is an OOM crash, so the OOM report parser is tested here on
two real oom-killer reports (tests/fixtures/oom: the dmesg of the lab's oom scenario on 6.12 and
6.1, from the report's first line to the panic), and on real OOM dumps in the lab tests."""

from __future__ import annotations

import ipaddress
import re
import warnings
from pathlib import Path

import pandas as pd
import pytest

import kdnb
from kdnb.analysis.oom import oom_context
from kdnb.errors import KdnbError
from kdnb.views.common import IncompleteViewWarning
from tests.conftest import DATA
from tests.test_system import SAMPLES, dump_of, folders, quiet, resolve

FIXTURES = Path(__file__).parent / "fixtures" / "oom"


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
    # /proc/net/sockstat: struct sockets in use; hashed IPv4 TCP (no TIME_WAIT) and UDP sockets
    stat = dict(re.findall(r"^(\w+): (.*)$", (snap / "sockstat.txt").read_text(), re.M))
    num = {k: dict(zip(v.split()[::2], map(int, v.split()[1::2]))) for k, v in stat.items()}
    assert s["socket"].dropna().nunique() == num["sockets"]["used"]
    inet = s[(s["family"] == "inet") & ~s["state"].isin(["TIME_WAIT", "NEW_SYN_RECV"])]
    assert ((inet["protocol"] == 6).sum(), (inet["protocol"] == 17).sum()) == \
        (num["TCP"]["inuse"], num["UDP"]["inuse"])
    assert (s["state"] == "TIME_WAIT").sum() == num["TCP"]["tw"]


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


@pytest.mark.parametrize("where", folders())
def test_against_the_socket_and_smaps_snapshot(where) -> None:
    """Samples made since the lab records sockets and smaps (data/k5.10-io-hang and later)."""
    folder = resolve(where)
    snap = folder / "snapshot"
    if not (snap / "net-tcp.txt").exists():
        pytest.skip("snapshot without /proc/net/tcp and smaps")
    d = dump_of(folder)
    workload = {c: int(p) for c, p in (line.split() for line in (snap / "workload.txt").read_text().splitlines())}
    check_sockets(d, snap, workload["kdnb_sockets"])
    check_counters(d, snap)
    check_arch_irqs(d, snap)
    for comm, pid in workload.items():
        if (snap / f"smaps-{comm}.txt").exists():
            check_smaps(d, snap, comm, pid)


@pytest.mark.parametrize("where", folders())
def test_sockets_are_the_tasks_socket_files(where) -> None:
    folder = resolve(where)
    d = dump_of(folder)
    s = quiet(lambda: d.sockets)
    assert str(s["inode"].dtype) == "UInt64" and str(s["pid"].dtype) == "Int32"
    for pid, group in s.groupby("pid"):
        files = quiet(lambda pid=pid: d.files(int(pid))).set_index("fd")
        for row in group.itertuples():
            assert files.loc[row.fd, "path"] == f"socket:[{row.inode}]"
    ps = folder / "snapshot" / "ps.txt"
    servers = re.findall(r"httpd .*-p (\S+):(\d+)", ps.read_text()) if ps.exists() else []
    unowned = s[s["pid"].isna()]
    if servers:  # the corpus' busybox httpd listens and served one request before the snapshot
        (addr, port), = servers
        if "incomplete" not in s.attrs.get("kdnb", {}):
            row = s[s["comm"] == "httpd"].iloc[0]
            assert (row["family"], row["type"], row["protocol"], row["state"]) == ("inet", "stream", 6, "LISTEN")
            assert (row["local_addr"], row["local_port"], row["remote_port"]) == (addr, int(port), 0)
        # httpd closed first: its end waits in TIME_WAIT (60 s), in the ehash, in no file
        assert (folder / "snapshot" / "httpd-check.html").exists()
        (tw,) = unowned.itertuples()
        assert (tw.state, tw.local_addr, tw.local_port, tw.remote_addr) == ("TIME_WAIT", addr, int(port), addr)
        assert tw.remote_port >= 1024 and pd.isna(tw.inode) and pd.isna(tw.fd)
    else:
        assert not len(unowned)


@pytest.mark.parametrize("where", folders())
def test_loopback_counters(where) -> None:
    d = dump_of(resolve(where))
    lo = quiet(lambda: d.net).set_index("name").loc["lo"]
    # loopback_get_stats64 counts each packet once as sent and once as received
    assert lo["stats_source"].startswith("lstats")
    assert (lo["rx_packets"], lo["rx_bytes"]) == (lo["tx_packets"], lo["tx_bytes"])
    assert lo["rx_bytes"] >= 40 * lo["rx_packets"]  # an IPv4 + TCP header at least
    assert (lo["rx_errors"], lo["tx_errors"]) == (0, 0)


@pytest.mark.parametrize("where", folders())
def test_vma_rss_adds_up_to_rss_stat(where) -> None:
    d = dump_of(resolve(where))
    maps = quiet(lambda: d.maps)
    tasks = quiet(lambda: d.tasks)
    if "incomplete" in maps.attrs.get("kdnb", {}):
        pytest.skip("the degraded capture lost mm structures")
    assert len(maps) and maps["rss"].notna().all()
    assert (maps["rss"] == maps["rss_anon"] + maps["rss_file"] + maps["rss_shmem"]).all()
    assert (maps["rss"] <= (maps["end"] - maps["start"]) // 4096).all()
    per_process = maps.groupby("pid")["rss"].sum()
    rss_stat = tasks[tasks["pid"] > 0].drop_duplicates("pid").set_index("pid")["rss_pages"]
    assert (per_process == rss_stat.reindex(per_process.index)).all()
    # the binary's text is file-backed, never anonymous; the stack is anonymous
    stacks = maps[maps["kind"] == "stack"]
    assert (stacks["rss_anon"] == stacks["rss"]).all() and (stacks["rss"] > 0).all()


@pytest.mark.parametrize("where", folders())
def test_arch_interrupt_rows(where) -> None:
    d = dump_of(resolve(where))
    irqs = d.irqs
    arch = irqs[irqs["irq"].isna()].set_index("name")
    assert {"NMI", "LOC", "RES", "CAL", "TLB", "ERR"} <= set(arch.index)
    cpus = [c for c in irqs.columns if c.startswith("cpu")]
    assert (arch.loc["LOC", cpus] > 0).all()  # every online CPU takes local timer interrupts
    assert arch.loc["LOC", "total"] == arch.loc["LOC", cpus].sum()
    assert irqs["name"].is_unique


class _LogOnly:
    """A dump whose only readable part is the log (no zones, no tasks)."""

    def __init__(self, text: str) -> None:
        records: list[str] = []
        for line in text.splitlines():
            m = re.match(r"^\[\s*\d+\.\d+\] (.*)$", line)
            if m:
                records.append(m.group(1))
            elif records:
                records[-1] += "\n" + line
        self.log = pd.DataFrame({"seq": range(len(records)), "text": records})

    @property
    def zones(self) -> pd.DataFrame:
        raise KdnbError("no memory in a log fixture")

    @property
    def tasks(self) -> pd.DataFrame:
        raise KdnbError("no memory in a log fixture")


@pytest.mark.parametrize("release", ["6.12", "6.1"])
def test_oom_report_from_a_real_log(release: str) -> None:
    text = (FIXTURES / f"dmesg-{release}-oom.txt").read_text()
    ctx = oom_context(_LogOnly(text))
    header = re.search(r"(\S+) invoked oom-killer: gfp_mask=(0x[0-9a-f]+)\(([^)]*)\), order=(\d+)", text)
    assert ctx is not None and header is not None
    assert (ctx.invoker_comm, ctx.gfp_mask, "|".join(ctx.gfp_flags), ctx.order) == \
        (header[1], int(header[2], 16), header[3], int(header[4]))
    assert ctx.invoker_pid == int(re.search(r"PID: (\d+) Comm: " + header[1], text)[1])
    assert ctx.constraint == "CONSTRAINT_NONE" and not ctx.victim_killed
    rows = re.findall(r"^\[[^\]]*\] \[\s*(\d+)\]\s+\d+\s+\d+\s+\d+\s+(\d+)\s.* (\S+)$", text, re.M)
    assert len(ctx.tasks) == len(rows)
    pid, rss, comm = max(rows, key=lambda r: int(r[1]))  # no oom_score_adj, no swap: largest rss
    assert (ctx.victim["pid"], ctx.victim["rss_pages"], ctx.victim["comm"]) == (int(pid), int(rss), comm)
    zones = re.findall(r"Node 0 (\w+) free:(\d+)kB .*? min:(\d+)kB", text)
    assert [(z, int(f) // 4, int(m) // 4) for z, f, m in zones] == \
        list(zip(ctx.zones["zone"], ctx.zones["log_free"], ctx.zones["log_min"]))
    assert ctx.checks and all("unreadable" in c for c in ctx.checks)  # no memory to check against


@pytest.mark.parametrize("where", folders())
def test_no_oom_context_without_an_oom_report(where) -> None:
    d = dump_of(resolve(where))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", IncompleteViewWarning)
        assert d.oom is None


@pytest.mark.parametrize("where", folders()[:len(SAMPLES)])
def test_report_system_state(where) -> None:
    from kdnb.ui import sections_data

    d = dump_of(resolve(where))
    text = quiet(lambda: sections_data.memory(d))
    assert "Zones: free pages and watermarks" in text and "Largest processes by resident memory" in text
    assert "OOM context" not in text  # no oom-killer report in these logs
    top = quiet(lambda: d.tasks).query("pid == tgid and not is_kthread").nlargest(1, "rss_pages")
    assert f">{int(top['rss_pages'].iloc[0])}<" in text


def test_viewer_summary_shows_the_system_state() -> None:
    pytest.importorskip("ipywidgets")
    from kdnb.ui.viewer import DumpViewer

    d = dump_of(resolve(folders()[0].values[0]))
    summary = quiet(lambda: DumpViewer(d, progress=False)).summary.value
    assert "Zones: free pages and watermarks" in summary and "Largest processes" in summary


def test_vma_rss_on_hostile_page_tables() -> None:
    """Every entry of every table present and pointing back at the same table (aliasing): the
    walk stops with a KdnbError within its budgets instead of counting 2^35 pages."""
    import time

    import numpy as np

    from kdnb.views.vma_rss import PageKinds, RssCounter

    d = dump_of(DATA / SAMPLES[0])
    tasks = quiet(lambda: d.tasks)
    task = int(tasks[(tasks["pid"] == tasks["tgid"]) & ~tasks["is_kthread"]]["address"].iloc[0])
    k = d.kernel
    mm = k.read_u64(task + k.type("struct task_struct").offsetof("mm"))
    counter = RssCounter(k, k.read_u64(mm + k.type("struct mm_struct").offsetof("pgd")), PageKinds(k))
    looping = np.full(512, counter.root | 0x67, dtype=np.uint64)  # present, rw, user, a, d; not huge
    counter._table = lambda paddr: looping
    started = time.monotonic()
    with pytest.raises(KdnbError, match="more pages than|page-table visits"):
        counter.counts([(0, 1 << 47)])
    assert time.monotonic() - started < 5
    with pytest.raises(KdnbError, match="overlap"):
        counter.counts([(0x1000, 0x3000), (0x2000, 0x4000)])


@pytest.mark.parametrize("release", ["6.12", "5.10"])
def test_oom_kill_report_from_a_real_log(release: str) -> None:
    """The lab's oom-kill scenario (vm.panic_on_oom=0): the killer chose and killed the hog; the
    oom-kill summary and the Killed process line are in the log."""
    text = (FIXTURES / f"dmesg-{release}-oom-kill.txt").read_text()
    ctx = oom_context(_LogOnly(text))
    summary = re.search(r"oom-kill:constraint=(\w+),nodemask=([^,]*),.*,task=(\S+),pid=(\d+),uid=(\d+)", text)
    killed = re.search(r"Killed process (\d+) \((\S+)\) total-vm:(\d+)kB, anon-rss:(\d+)kB, "
                       r"file-rss:(\d+)kB, shmem-rss:(\d+)kB", text)
    assert ctx is not None and summary and killed and ctx.victim_killed
    assert (ctx.constraint, ctx.nodemask) == (summary[1], summary[2]) and ctx.constraint_from == "oom-kill line"
    v = ctx.victim
    assert (v["pid"], v["comm"], v["uid"]) == (int(killed[1]), killed[2], int(summary[5]))
    assert v["pid"] == int(summary[4]) and v["comm"] == summary[3]
    assert (v["total_vm_pages"], v["rss_anon_pages"], v["rss_file_pages"], v["rss_shmem_pages"]) == \
        tuple(int(killed[i]) // 4 for i in range(3, 7))
    assert ctx.panic is None


def test_counters_of_a_driver_kdnb_does_not_model_are_na(monkeypatch) -> None:
    """A driver callback outside netstats.CALLBACKS (virtio_net's virtnet_get_stats64, ...):
    NA counters and the callback named in attrs (shown here by forgetting loopback's)."""
    from kdnb.views import netstats
    from kdnb.views.net import net_frame

    monkeypatch.setattr(netstats, "CALLBACKS", {})
    d = dump_of(DATA / SAMPLES[0])
    lo = net_frame(d).set_index("name")
    assert lo.loc["lo", ["rx_packets", "tx_bytes"]].isna().all() and pd.isna(lo.loc["lo", "stats_source"])
    assert "loopback_get_stats64" in lo.attrs["kdnb"]["stats_na"]["lo"]
