"""The report's story as HTML sections, in the order a post-mortem reader needs them: the verdict
and the answer, the system, the last seconds, what each CPU was doing, the evidence; the data
sections follow (kdnb.ui.sections_data). Each section degrades to a note.

Every section starts with `<h2 id="kdnb-<key>">`, so tests and readers can find it.
"""

from __future__ import annotations

import html
from typing import Any

import pandas as pd

from ._safe import attempt, get, note_html
from .format import duration, human_size, value_text, when
from .render import VERDICT_COLOURS, checks_html, evidence_html, rootcause_html
from .tables import TABLE_CSS, table_html
from .timeline import timeline as build_timeline

SECTIONS = [
    ("verdict", "Verdict and answer"),
    ("system", "The system"),
    ("timeline", "The last seconds"),
    ("cpus", "What each CPU was doing"),
    ("evidence", "Evidence"),
    ("stacks", "Stacks of every task"),
    ("log", "Kernel log"),
    ("memory", "Memory"),
    ("modules", "Modules"),
    ("validation", "Capture validation"),
    ("tasks", "Tasks"),
    ("slab", "Slab caches"),
    ("registers", "CPU registers"),
    ("segments", "Dump coverage"),
]
RAW_MEMORY = ("rawmemory", "Raw memory")
REPORT_CSS = """
<style>
.kdnb-banner { padding: 8px 12px; margin: 8px 0; border-left: 5px solid #cf222e; background: #fff1f0; }
.kdnb-banner.degraded { border-color: #9a6700; background: #fff8e5; }
.kdnb-answer { font-size: 15px; }
table.kdnb-facts th { text-align: left; padding-right: 1.5em; vertical-align: top; white-space: nowrap; }
table.kdnb-facts td { white-space: normal; font-family: inherit; }
.kdnb-toc a { margin-right: 1em; }
</style>
"""


def heading(key: str) -> str:
    """The `<h2>` of a section, with its anchor."""
    title = dict(SECTIONS + [RAW_MEMORY])[key]
    return f'<h2 id="kdnb-{key}">{html.escape(title)}</h2>'


def toc(include_memory: bool = False) -> str:
    """Links to every section."""
    items = SECTIONS + ([RAW_MEMORY] if include_memory else [])
    links = "".join(f'<a href="#kdnb-{k}">{html.escape(t)}</a>' for k, t in items)
    return f'<nav class="kdnb-toc">{links}</nav>'


def css() -> str:
    """The report's style sheet (tables and sections)."""
    return TABLE_CSS + REPORT_CSS


def _facts(rows: list[tuple[str, Any]]) -> str:
    body = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>"
                   for k, v in rows if v not in (None, ""))
    return f"<table class='kdnb-table kdnb-facts'>{body}</table>"


def banner(dump: Any) -> str:
    """Why this dump cannot be fully trusted, at the top: its verdict and the failing or
    warning checks, or '' for a usable dump."""
    v, why = attempt(dump.validate)
    if v is None:
        return f"<div class='kdnb-banner'><b>The capture could not be validated</b>: {html.escape(why or '?')}</div>"
    if v.verdict == "usable":
        return ""
    bad = [c for c in v.items if c.status in ("fail", "warn")]
    bad.sort(key=lambda c: c.status != "fail")
    items = "".join(f"<li><code>{html.escape(c.check)}</code> ({c.status}): {html.escape(c.detail)}"
                    + (f" <i>{html.escape(c.consequence)}</i>" if c.consequence else "") + "</li>"
                    for c in bad[:6])
    more = f"<li>… {len(bad) - 6} more in Capture validation</li>" if len(bad) > 6 else ""
    cls = "degraded" if v.verdict == "degraded" else ""
    return (f"<div class='kdnb-banner {cls}'><b>This dump is {html.escape(v.verdict.upper())}</b>: "
            f"what follows is read from what the dump holds, and some of it is missing. Why:"
            f"<ul>{items}{more}</ul></div>")


def verdict(dump: Any) -> str:
    """The capture verdict and the root cause (category, culprit, the why, confidence)."""
    out = [heading("verdict"), banner(dump)]
    v, why = attempt(dump.validate)
    if v is not None:
        colour = VERDICT_COLOURS.get(v.verdict, "#444")
        out.append(f"<p class='kdnb-answer'>Capture: <b class='kdnb-verdict' style='color:{colour}'>"
                   f"{html.escape(v.verdict.upper())}</b> — {html.escape(v.summary)}</p>")
    rc, why = attempt(dump.root_cause)
    if rc is None:
        return "".join(out) + note_html("root cause", why or "?")
    out.append(rootcause_html(rc, evidence=False))
    if rc.category == "unknown":
        reasons = list(getattr(rc, "notes", []) or [])
        out.append("<p><b>kdnb could not decide why the kernel died</b>"
                   + (": " + html.escape(reasons[0]) if reasons else
                      ": the log holds no panic, Oops, BUG or lockup report") + "</p>")
    return "".join(out)


def _cmdline(dump: Any, log: pd.DataFrame | None) -> str | None:
    value, _ = get(dump, "cmdline")
    if value:
        return str(value)
    if log is not None and len(log) and "text" in log:
        text = log["text"].astype(object).fillna("").astype(str)
        hits = text[text.str.startswith("Command line: ")]
        if len(hits):
            return hits.iloc[0][len("Command line: "):] + " (from the log)"
    return None


def _memory_line(info: dict, meminfo: pd.DataFrame | None) -> str | None:
    total = info.get("memory")
    if meminfo is None or "bytes" not in meminfo:
        return human_size(total) if total else None
    by = {str(k): v for k, v in zip(meminfo.index.astype(str), meminfo["bytes"]) if pd.notna(v)}
    total = by.get("total", total)
    parts = [f"{human_size(total)} total"] if total else []
    for key in ("free", "used", "cached", "slab_unreclaimable"):
        if key in by:
            parts.append(f"{human_size(by[key])} {key.replace('_', ' ')}")
    return ", ".join(parts) or None


def _taints(info: dict, modules: pd.DataFrame | None) -> str | None:
    letters = info.get("tainted")
    who = []
    if modules is not None and "taints" in modules:
        tainted = modules[modules["taints"].astype(object).fillna("").astype(str) != ""]
        who = [f"{n} ({t})" for n, t in zip(tainted["name"], tainted["taints"])]
    if not letters and not who:
        return "not tainted" if info else None
    return (letters or "") + (f" — modules: {', '.join(who)}" if who else "")


def system(dump: Any) -> str:
    """Hostname, release, command line, uptime, load, memory, taints."""
    info, why = get(dump, "sys_info")
    info = info or {}
    log, _ = get(dump, "log")
    meminfo, _ = get(dump, "meminfo")
    modules, _ = get(dump, "modules")
    vmci, _ = get(dump, "vmcoreinfo")
    loads = [info.get(k) for k in ("load_avg_1", "load_avg_5", "load_avg_15")]
    rows = [("hostname", info.get("nodename")),
            ("release", info.get("release") or (vmci or {}).get("OSRELEASE")),
            ("version", info.get("version")), ("machine", info.get("machine")),
            ("command line", _cmdline(dump, log)),
            ("uptime", duration(info.get("uptime")) if info.get("uptime") is not None else None),
            ("booted", when(info.get("boot_time"))), ("crashed", when(info.get("crash_time"))),
            ("load average", " ".join(f"{x:.2f}" for x in loads) if all(
                isinstance(x, float) for x in loads) else None),
            ("memory", _memory_line(info, meminfo)),
            ("taints", _taints(info, modules)),
            ("CPUs", info.get("cpus")), ("tasks", info.get("tasks")),
            ("panic CPU", info.get("panic_cpu"))]
    out = heading("system") + _facts(rows)
    return out + (note_html("system summary", why) if why else "")


def timeline(dump: Any) -> str:
    """Log lines, tasks' last runs, CPU events and the panic of the last seconds."""
    tl, why = attempt(lambda: build_timeline(dump))
    if tl is None:
        return heading("timeline") + note_html("timeline", why or "?")
    if not len(tl):
        return heading("timeline") + "<p>Nothing is timed in this dump (no log, no task clock).</p>"
    window = tl.attrs.get("kdnb", {}).get("window", 0)
    crash = tl.attrs.get("kdnb", {}).get("crash_clock", 0.0)
    mask = (tl["source"].astype(str) == "panic").to_numpy()
    return (heading("timeline") +
            f"<p>The last {window:g} seconds before the crash at {crash:.6f} s after boot, oldest "
            "first: log lines (call traces and register dumps folded), each task's last run, the "
            "run each CPU was in. <i>before</i> is seconds before the crash.</p>"
            + table_html(tl, highlight=mask, interactive=False))


def cpus(dump: Any) -> str:
    """One line per CPU: its task, context and where it was; the table below."""
    cs, why = get(dump, "cpu_state")
    if cs is None:
        return heading("cpus") + note_html("CPU state", why or "?")
    lines = []
    for row in cs.itertuples(index=False):
        what = "idle" if getattr(row, "idle", False) else f"{row.comm} (pid {row.pid}, state {row.state})"
        where = getattr(row, "function", None)
        ran = getattr(row, "running_for", None)
        lines.append(f"<li><b>CPU {row.cpu}</b>{' (panicked)' if row.panic else ''}: {html.escape(what)}"
                     f" in {html.escape(str(getattr(row, 'context', '?')))} context"
                     + (f", in <code>{html.escape(str(where))}</code>" if isinstance(where, str) else "")
                     + (f", running for {html.escape(duration(ran))}" if ran is not None and
                        not pd.isna(ran) else "") + "</li>")
    return heading("cpus") + f"<ul>{''.join(lines)}</ul>" + table_html(cs, interactive=False)


def evidence(dump: Any) -> str:
    """The evidence the root cause rests on."""
    rc, why = attempt(dump.root_cause)
    if rc is None:
        return heading("evidence") + note_html("evidence", why or "?")
    return heading("evidence") + evidence_html(rc) + _inflight(dump, rc)


def _inflight(dump: Any, rc: Any) -> str:
    """The block requests in flight (d.inflight_io), shown only when an I/O hang is the answer."""
    if getattr(rc, "category", None) != "io-hang":
        return ""
    io, why = get(dump, "inflight_io")
    if io is None:
        return note_html("block requests in flight", why or "?")
    shown = io[["disk", "hw_queue", "tag", "op", "flags", "sector", "bytes", "state", "age", "io_age",
                "bios", "pid", "comm", "request"]].rename(columns={"request": "request_address"})
    shown = shown.astype({"sector": "Int64", "bytes": "Int64"})  # counts, not addresses (UInt64 shows hex)
    return "<h3>Block requests in flight</h3>" + table_html(shown, interactive=False, caption=(
        "d.inflight_io: age and io_age in seconds before the crash (since allocation, since issue "
        "to the driver)"))


def validation(dump: Any) -> str:
    """The capture validation, collapsed to what did not pass."""
    v, why = attempt(dump.validate)
    if v is None:
        return heading("validation") + note_html("capture validation", why or "?")
    return heading("validation") + checks_html(v, collapse=True)


def title(dump: Any) -> str:
    """The report's title: release and dump file."""
    import os

    vmci, _ = get(dump, "vmcoreinfo")
    release = (vmci or {}).get("OSRELEASE", "?")
    name = os.path.basename(str(getattr(dump, "path", "")))
    return (f'<h1 id="kdnb-title">Crash report: {html.escape(release)}</h1>'
            f"<p>dump <code>{html.escape(name)}</code></p>")


def footer(dump: Any) -> str:
    """Who made the report, when, from what."""
    import datetime as dt

    from .. import __version__

    made = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (f'<footer class="kdnb-footer">made by kdnb {html.escape(__version__)} on {made} '
            f"from <code>{html.escape(value_text(getattr(dump, 'path', '')))}</code>; works offline, "
            "tables are searchable with JavaScript on and show their first rows without it.</footer>")
