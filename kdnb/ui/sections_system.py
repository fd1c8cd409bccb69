"""The report's system-state part, under the memory counters: each zone's free pages beside its
watermarks, the OOM context when the log has an oom-killer report, and the largest tasks by RSS.
Each part degrades to a note."""

from __future__ import annotations

import html
from typing import Any

from ._safe import attempt, get, note_html
from .tables import table_html

TOP_TASKS = 10
PAGE = 4096


def _zones(dump: Any) -> str:
    zones, why = get(dump, "zones")
    if zones is None:
        return note_html("zones", why or "?")
    z = zones[zones["managed"] > 0]
    shown = z[["node", "zone", "managed", "free", "min", "low", "high", "boost"]].copy()
    low = (shown["free"] < shown["min"] + shown["boost"]).to_numpy()
    return "<h3>Zones: free pages and watermarks</h3>" + table_html(
        shown.astype({c: "Int64" for c in shown.columns if c not in ("node", "zone")}),
        highlight=low, interactive=False,
        caption="d.zones, in pages; a highlighted zone has fewer free pages than its min "
                "watermark (+ boost): allocations there must reclaim or fail")


def _oom(dump: Any) -> str:
    ctx, why = attempt(lambda: dump.oom)
    if ctx is None:
        return note_html("OOM context", why) if why else ""
    v = ctx.victim
    facts = [("allocation", (f"{ctx.invoker_comm} (pid {ctx.invoker_pid}), order {ctx.order}, "
                             f"gfp_mask {ctx.gfp_mask:#x} ({' | '.join(ctx.gfp_flags)})")),
             ("constraint", (f"{ctx.constraint or 'unknown'} ({ctx.constraint_from}); nodemask "
                             f"{ctx.nodemask or '(null)'}"))]
    if v is not None:
        split = ", ".join(f"{k.split('_')[1]} {v[k]}" for k in ("rss_anon_pages", "rss_file_pages",
                                                                "rss_shmem_pages") if k in v)
        facts.append(("victim", f"{v['comm']} (pid {v['pid']}, uid {v['uid']}): {v['rss_pages']} resident "
                                f"pages{' (' + split + ')' if split else ''}, total-vm {v['total_vm_pages']} "
                                f"pages, oom_score_adj {v['oom_score_adj']}; "
                                + ("killed" if ctx.victim_killed else v["source"])))
    if ctx.panic:
        facts.append(("outcome", ctx.panic))
    rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(t))}</td></tr>" for k, t in facts)
    checks = "".join(f"<li>{html.escape(c)}</li>" for c in ctx.checks)
    return ("<h3>OOM context</h3>" + f'<table class="kdnb-facts">{rows}</table>'
            + (f"<p>Checked against memory at the crash:</p><ul>{checks}</ul>" if checks else ""))


def _top_tasks(dump: Any) -> str:
    tasks, why = get(dump, "tasks")
    if tasks is None or "rss_pages" not in tasks:
        return note_html("tasks by RSS", why or "no rss_pages")
    t = tasks[~tasks["is_kthread"] & (tasks["pid"] == tasks["tgid"])].dropna(subset=["rss_pages"])
    top = t.nlargest(TOP_TASKS, "rss_pages")[["pid", "comm", "state", "rss_pages"]].copy()
    top["rss_MiB"] = (top["rss_pages"].astype("float64") * PAGE / 2**20).round(1)
    return "<h3>Largest processes by resident memory</h3>" + table_html(
        top.astype({"rss_pages": "Int64"}), interactive=False,
        caption="d.tasks' rss_pages (the mm's rss_stat); per mapping: d.vmas(pid)")


def system_state(dump: Any) -> str:
    """Zones vs watermarks, the OOM context (when there is one), the top tasks by RSS."""
    return _zones(dump) + _oom(dump) + _top_tasks(dump)

