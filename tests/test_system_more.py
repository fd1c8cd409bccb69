"""Sockets, interface counters, per-VMA RSS, the architecture's interrupt rows and the OOM
context on the bundled samples and the corpus (the lab-marked comparisons with /proc snapshots
are tests/test_system_more_lab.py).

No bundled sample or corpus dump is an OOM crash, so the OOM report parser is tested here on
two real oom-killer reports (tests/fixtures/oom: the dmesg of the lab's oom scenario on 6.12 and
6.1, from the report's first line to the panic), and on real OOM dumps in the lab tests."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pandas as pd
import pytest

from kdnb.analysis.oom import oom_context
from kdnb.errors import KdnbError
from kdnb.views.common import IncompleteViewWarning
from tests.test_system import SAMPLES, dump_of, folders, quiet, resolve

FIXTURES = Path(__file__).parent / "fixtures" / "oom"


@pytest.mark.parametrize("where", folders())
def test_sockets_are_the_tasks_socket_files(where) -> None:
    folder = resolve(where)
    d = dump_of(folder)
    s = quiet(lambda: d.sockets)
    assert str(s["inode"].dtype) == "UInt64" and str(s["pid"].dtype) == "Int32"
    for pid, group in s.groupby("pid"):
        files = quiet(lambda: d.files(int(pid))).set_index("fd")
        for row in group.itertuples():
            assert files.loc[row.fd, "path"] == f"socket:[{row.inode}]"
    ps = folder / "snapshot" / "ps.txt"
    servers = re.findall(r"httpd .*-p (\S+):(\d+)", ps.read_text()) if ps.exists() else []
    if servers and "incomplete" not in s.attrs.get("kdnb", {}):  # the corpus' busybox httpd listens
        (addr, port), = servers
        row = s[s["comm"] == "httpd"].iloc[0]
        assert (row["family"], row["type"], row["protocol"], row["state"]) == ("inet", "stream", 6, "LISTEN")
        assert (row["local_addr"], row["local_port"], row["remote_port"]) == (addr, int(port), 0)


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
