"""`Dump.oom`: the OOM context of a crash, from the log's oom-killer report joined with memory.

The OOM killer prints, in order (mm/oom_kill.c dump_header, dump_tasks, dump_oom_summary,
__oom_kill_process): `COMM invoked oom-killer: gfp_mask=0x..(FLAGS), order=N, oom_score_adj=N`,
the invoker's `CPU: .. PID: .. Comm: ..` line, show_mem's per-zone `free: min: low: high:`
lines, the task table (`Tasks state (memory values in pages):`, its columns named by its
header: 6.x adds rss_anon/rss_file/rss_shmem), then either `oom-kill:constraint=..,nodemask=..`
and `Out of memory: Killed process PID (COMM) total-vm:..kB, anon-rss:..kB, ...` or, with
vm.panic_on_oom, the panic `Out of memory: system-wide panic_on_oom is enabled` (check_panic_on_oom
panics only for CONSTRAINT_NONE when panic_on_oom is 1) before any victim is chosen. Then kdnb
names the task the killer ranks first by oom_badness() (rss + swap entries + page-table pages,
oom_score_adj scaled by the pages the OOM may use) from the same table.

Memory cross-checks: the victim's (or top task's) rss_pages of d.tasks (the exact per-CPU sum;
the log prints the approximate counter, so they may differ by the per-CPU batches) and d.zones'
free pages and watermarks beside the log's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pandas as pd

from ..errors import KdnbError

if TYPE_CHECKING:  # pragma: no cover
    from ..api import Dump
    from .rootcause_model import Analysis

HEADER = re.compile(r"^(?P<comm>.+?) invoked oom-killer: gfp_mask=(?P<gfp>0x[0-9a-f]+)\((?P<flags>[^)]*)\),"
                    r"(?: nodemask=(?P<nodemask>[^,]*),)? order=(?P<order>-?\d+), oom_score_adj=(?P<adj>-?\d+)")
CPU_LINE = re.compile(r"^CPU: (?P<cpu>\d+) (?:UID: \d+ )?PID: (?P<pid>\d+) Comm: (?P<comm>\S+)")
ZONE = re.compile(r"^Node (?P<node>\d+) (?P<zone>\S+) free:(?P<free>\d+)kB (?:boost:(?P<boost>\d+)kB )?"
                  r"min:(?P<min>\d+)kB low:(?P<low>\d+)kB high:(?P<high>\d+)kB")
SUMMARY = re.compile(r"^oom-kill:constraint=(?P<constraint>\w+),nodemask=(?P<nodemask>.*?),cpuset=(?P<cpuset>.*?),"
                     r"mems_allowed=(?P<mems>.*?),(?P<scope>global_oom|oom_memcg=.*?),task_memcg=(?P<memcg>.*?),"
                     r"task=(?P<task>.*),pid=(?P<pid>\d+),uid=(?P<uid>\d+)$")
KILLED = re.compile(r"Killed process (?P<pid>\d+) \((?P<comm>.*)\) total-vm:(?P<total_vm>\d+)kB, "
                    r"anon-rss:(?P<anon>\d+)kB, file-rss:(?P<file>\d+)kB, shmem-rss:(?P<shmem>\d+)kB, "
                    r"UID:(?P<uid>\d+) pgtables:(?P<pgtables>\d+)kB oom_score_adj:(?P<adj>-?\d+)")
PANIC = re.compile(r"Out of memory: (?P<how>system-wide|compulsory) panic_on_oom is enabled")
TASK_ROW = re.compile(r"^\[\s*(\d+)\]\s+(.*)$")
TOTAL_PAGES = re.compile(r"^(\d+) pages RAM$")
TOTAL_SWAP = re.compile(r"^Total swap = (\d+)kB$")
OOM_SCORE_ADJ_MIN = -1000
MAX_LINES = 20000  # log records read after the header: a task table of 20 k processes
PAGE_KB = 4


@dataclass
class OomContext:
    """The failed allocation, the constraint, the victim and the memory at the crash."""

    invoker_comm: str
    invoker_pid: int | None
    cpu: int | None
    gfp_mask: int
    gfp_flags: list[str]
    order: int
    oom_score_adj: int
    constraint: str | None
    constraint_from: str
    nodemask: str | None
    victim: dict[str, Any] | None
    victim_killed: bool
    panic: str | None
    tasks: pd.DataFrame
    zones: pd.DataFrame
    seq: int | None
    checks: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        v = self.victim
        who = "none" if v is None else \
            f"{v['comm']} (pid {v['pid']}, {v['rss_pages']} resident pages, oom_score_adj {v['oom_score_adj']})" + \
            ("" if self.victim_killed else " - ranked first, not killed: the kernel panicked first")
        return (f"{self.invoker_comm} (pid {self.invoker_pid}) failed an order-{self.order} allocation, "
                f"gfp_mask={self.gfp_mask:#x}({'|'.join(self.gfp_flags)}); constraint "
                f"{self.constraint or '?'} ({self.constraint_from}); victim: {who}")


def _task_table(lines: list[str]) -> pd.DataFrame:
    """The `Tasks state` table (its header names the columns) as a frame of ints + name."""
    cols: list[str] = []
    rows: list[list[Any]] = []
    for text in lines:
        if text.startswith("[  pid  ]"):
            cols = ["pid", *text.split("]", 1)[1].split()]
            continue
        m = TASK_ROW.match(text)
        if cols and m:
            parts = m.group(2).split(None, len(cols) - 2)
            if len(parts) == len(cols) - 1 and all(re.fullmatch(r"-?\d+", p) for p in parts[:-1]):
                rows.append([int(m.group(1)), *map(int, parts[:-1]), parts[-1]])
    df = pd.DataFrame(rows, columns=cols or ["pid", "name"])
    for c in df.columns:
        if c != "name":
            df[c] = df[c].astype("Int64")
    return df


def _badness(tasks: pd.DataFrame, total_pages: int) -> pd.Series:
    """oom_badness() of each row: rss + swapents + pgtables pages + adj * total_pages / 1000."""
    pages = tasks["rss"] + tasks.get("swapents", 0) + tasks.get("pgtables_bytes", 0) // 4096
    score = pages + tasks["oom_score_adj"] * (total_pages // 1000)
    return score.where(tasks["oom_score_adj"] > OOM_SCORE_ADJ_MIN)


def _report_lines(log: pd.DataFrame) -> tuple[re.Match, int, list[str]] | None:
    hits = log.index[log["text"].str.contains(" invoked oom-killer: ", regex=False, na=False)]
    if not len(hits):
        return None
    start = log.index.get_loc(hits[-1])
    texts = [str(t) for t in log["text"].iloc[start:start + MAX_LINES]]
    m = HEADER.match(texts[0])
    if m is None:
        return None
    seq = log["seq"].iloc[start] if "seq" in log else None
    return m, None if seq is None else int(seq), [line for t in texts for line in t.split("\n")]


def oom_context(dump: "Dump") -> OomContext | None:
    """The OOM context of the dump's last oom-killer report; None when the log has none."""
    found = _report_lines(dump.log)
    if found is None:
        return None
    m, seq, lines = found
    cpu = next((c for c in map(CPU_LINE.match, lines[1:4]) if c), None)
    summary = next((s for s in map(SUMMARY.match, lines) if s), None)
    killed = next((k for k in map(KILLED.search, lines) if k), None)
    panic = next((p for p in map(PANIC.search, lines) if p), None)
    tasks = _task_table(lines)
    total = next((int(t.group(1)) for t in map(TOTAL_PAGES.match, lines) if t), 0) + \
        next((int(t.group(1)) // PAGE_KB for t in map(TOTAL_SWAP.match, lines) if t), 0)
    if summary is not None:
        constraint, source = summary["constraint"], "oom-kill line"
    elif panic is not None and panic["how"] == "system-wide":
        constraint, source = "CONSTRAINT_NONE", "panic_on_oom=1 panics only for CONSTRAINT_NONE"
    else:
        constraint, source = None, "not in the log"
    ctx = OomContext(
        invoker_comm=m["comm"], invoker_pid=int(cpu["pid"]) if cpu else None,
        cpu=int(cpu["cpu"]) if cpu else None, gfp_mask=int(m["gfp"], 16),
        gfp_flags=[f for f in m["flags"].split("|") if f], order=int(m["order"]),
        oom_score_adj=int(m["adj"]), constraint=constraint, constraint_from=source,
        nodemask=summary["nodemask"] if summary else m["nodemask"],
        victim=None, victim_killed=killed is not None,
        panic=panic.group(0) if panic else None, tasks=tasks, zones=_zones(dump, lines), seq=seq)
    ctx.victim = _victim(tasks, killed, total)
    _cross_check(dump, ctx)
    return ctx


def _victim(tasks: pd.DataFrame, killed: re.Match | None, total_pages: int) -> dict[str, Any] | None:
    if killed is not None:
        kb = {k: int(killed[k]) for k in ("total_vm", "anon", "file", "shmem", "pgtables")}
        return {"pid": int(killed["pid"]), "comm": killed["comm"], "uid": int(killed["uid"]),
                "oom_score_adj": int(killed["adj"]), "total_vm_pages": kb["total_vm"] // PAGE_KB,
                "rss_anon_pages": kb["anon"] // PAGE_KB, "rss_file_pages": kb["file"] // PAGE_KB,
                "rss_shmem_pages": kb["shmem"] // PAGE_KB,
                "rss_pages": (kb["anon"] + kb["file"] + kb["shmem"]) // PAGE_KB,
                "pgtables_bytes": kb["pgtables"] * 1024, "source": "Killed process line"}
    if not len(tasks) or "rss" not in tasks or "oom_score_adj" not in tasks:
        return None
    score = _badness(tasks, total_pages)
    if score.isna().all():
        return None
    row = tasks.loc[score.idxmax()]
    out = {"pid": int(row["pid"]), "comm": row["name"], "uid": int(row["uid"]),
           "oom_score_adj": int(row["oom_score_adj"]), "total_vm_pages": int(row["total_vm"]),
           "rss_pages": int(row["rss"]), "pgtables_bytes": int(row.get("pgtables_bytes", 0)),
           "source": "ranked first by oom_badness() in the log's task table"}
    for c in ("rss_anon", "rss_file", "rss_shmem"):
        if c in row:
            out[f"{c}_pages"] = int(row[c])
    return out


def _zones(dump: "Dump", lines: list[str]) -> pd.DataFrame:
    """The log's per-zone free/min/low/high (pages) beside d.zones' values at the crash; the
    log's watermarks include the zone's watermark_boost (wmark_pages()), so does `below_min`."""
    rows = [{"node": int(z["node"]), "zone": z["zone"],
             **{f"log_{k}": int(z[k]) // PAGE_KB for k in ("free", "min", "low", "high")}}
            for z in map(ZONE.match, lines) if z]
    df = pd.DataFrame(rows, columns=["node", "zone", "log_free", "log_min", "log_low", "log_high"])
    try:
        mem = dump.zones[["node", "zone", "free", "min", "low", "high", "boost"]]
    except KdnbError:
        return df
    df = df.merge(mem.astype({"node": "int64"}), on=["node", "zone"], how="left")
    df["below_min"] = df["free"] < df["min"] + df["boost"]
    return df


def _cross_check(dump: "Dump", ctx: OomContext) -> None:
    """Compare the victim's RSS and the zones with kernel memory; the outcomes go to ctx.checks."""
    v = ctx.victim
    if v is not None:
        try:
            t = dump.tasks
            rss = t.loc[t["pid"] == v["pid"], "rss_pages"].dropna()
        except KdnbError as exc:
            ctx.checks.append(f"victim's rss_stat unreadable: {exc}")
            rss = None
        if rss is not None and len(rss):
            got = int(rss.iloc[0])
            v["rss_pages_memory"] = got
            ctx.checks.append(f"victim pid {v['pid']}: log rss {v['rss_pages']} pages, mm rss_stat "
                              f"{got} pages at the crash (difference {got - v['rss_pages']:+d})")
        elif rss is not None and not ctx.victim_killed:
            ctx.checks.append(f"victim pid {v['pid']} is not among the dump's tasks")
    for z in ctx.zones.itertuples():
        if hasattr(z, "free") and not pd.isna(z.free):
            ctx.checks.append(f"node {z.node} {z.zone}: free {int(z.free)} pages at the crash "
                              f"(log {z.log_free}), min {int(z.min)} + boost {int(z.boost)} "
                              f"(log {z.log_min})"
                              + (" - below min" if z.below_min else ""))


def oom_evidence(an: "Analysis") -> None:
    """Evidence rows of an OOM root cause: the failed allocation, the constraint, the victim
    and the zones below their min watermark."""
    ctx = an.get("oom context", lambda: an.dump.oom)
    if ctx is None:
        return
    an.add("memory", f"{ctx.invoker_comm} (pid {ctx.invoker_pid}) asked for an order-{ctx.order} "
           f"allocation, gfp_mask={ctx.gfp_mask:#x} ({'|'.join(ctx.gfp_flags)})",
           "the allocation the OOM killer was invoked for", ctx.seq, cpu=ctx.cpu, pid=ctx.invoker_pid)
    an.add("memory", f"constraint {ctx.constraint or 'unknown'}, nodemask {ctx.nodemask or '(null)'}",
           f"which memory the allocation could use ({ctx.constraint_from})", ctx.seq)
    v = ctx.victim
    if v is not None:
        verb = "killed" if ctx.victim_killed else "ranked first by the OOM killer (not killed: panic_on_oom)"
        an.add("memory", f"victim {v['comm']} (pid {v['pid']}) {verb}: {v['rss_pages']} resident pages, "
               f"total-vm {v['total_vm_pages']} pages, oom_score_adj {v['oom_score_adj']}",
               "the process holding the memory", ctx.seq, pid=v["pid"])
    for z in ctx.zones.itertuples():
        if bool(getattr(z, "below_min", False)):
            an.add("memory", f"node {z.node} zone {z.zone}: {int(z.free)} free pages < min watermark "
                   f"{int(z.min + z.boost)}", "no zone could satisfy the allocation (d.zones at the crash)")
