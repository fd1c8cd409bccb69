"""The report's sections as HTML strings (used by the report notebook; each degrades to a note).

Every section starts with `<h2 id="kdnb-<key>">`, so tests and readers can find it.
"""

from __future__ import annotations

import html
from typing import Any, Callable

import pandas as pd

from ._safe import attempt, get, note_html
from .filters import panic_mask
from .render import html_of
from .tables import TABLE_CSS, table_html
from .plots import figure_html, log_rate, memory_breakdown, task_states_by_cpu, top_slab_caches

SECTIONS = [
    ("summary", "Summary"),
    ("rootcause", "Root cause"),
    ("validation", "Capture validation"),
    ("log", "Kernel log"),
    ("backtraces", "Backtraces"),
    ("tasks", "Tasks"),
    ("slab", "Slab caches"),
    ("memory", "Memory"),
    ("modules", "Modules"),
    ("cpus", "CPU registers"),
    ("segments", "Dump coverage"),
]
RAW_MEMORY = ("rawmemory", "Raw memory")


def heading(key: str) -> str:
    title = dict(SECTIONS + [RAW_MEMORY])[key]
    return f'<h2 id="kdnb-{key}">{html.escape(title)}</h2>'


def toc(include_memory: bool = False) -> str:
    items = SECTIONS + ([RAW_MEMORY] if include_memory else [])
    links = "".join(f'<a href="#kdnb-{k}">{html.escape(t)}</a>' for k, t in items)
    return f'<nav class="kdnb-toc">{links}</nav>'


def _obj_html(what: str, fn: Callable[[], Any]) -> str:
    value, why = attempt(fn)
    if why:
        return note_html(what, why)
    rendered, why = attempt(value._repr_html_) if hasattr(value, "_repr_html_") else (None, None)
    if rendered:
        return rendered
    return f"<pre>{html.escape(str(value))}</pre>"


def _frame(dump: Any, what: str, attr: str) -> tuple[pd.DataFrame | None, str]:
    df, why = get(dump, attr)
    return df, ("" if df is not None else note_html(what, why or "?"))


def summary(dump: Any) -> str:
    from .summary import dump_html

    return heading("summary") + dump_html(dump)


def rootcause(dump: Any) -> str:
    return heading("rootcause") + _obj_html("root cause", dump.root_cause)


def validation(dump: Any) -> str:
    return heading("validation") + _obj_html("capture validation", dump.validate)


def log(dump: Any) -> str:
    out = [heading("log")]
    df, note = _frame(dump, "kernel log", "log")
    if df is None:
        return out[0] + note
    mask = panic_mask(df)
    cols = [c for c in ("seq", "time", "level_name", "caller", "text") if c in df]
    if mask.any():
        out.append("<h3>Lines that explain the crash</h3>")
        out.append(table_html(df.loc[mask, cols], highlight=[True] * int(mask.sum()),
                              interactive=False))
    out.append(f"<h3>Every line ({len(df)})</h3>")
    out.append("<p>Lines that explain the crash are highlighted. Search the table to filter.</p>")
    out.append(table_html(df[cols], highlight=mask.to_numpy(), page_length=25))
    out.append(figure_html(log_rate(df), "log lines per second before the crash"))
    return "".join(out)


def backtraces(dump: Any) -> str:
    out = [heading("backtraces"), "<h3>The CPU that panicked</h3>"]
    bt, why = get(dump, "panic_backtrace")
    out.append(table_html(bt, interactive=False) if bt is not None
               else note_html("panic backtrace", why or "?"))
    out.append("<h3>Every CPU and every task in D state</h3>")
    all_bt, why = attempt(dump.backtraces)
    out.append(table_html(all_bt, page_length=25) if all_bt is not None
               else note_html("backtraces", why or "?"))
    out.append("<h3>Every task's stack, grouped by identical call chain</h3>")
    stacks, why = get(dump, "stacks")
    if stacks is not None:
        from ..views.stacks import stacks_display

        out.append(table_html(stacks_display(stacks), page_length=25))
    else:
        out.append(note_html("stacks", why or "?"))
    return "".join(out)


def tasks(dump: Any) -> str:
    df, note = _frame(dump, "tasks", "tasks")
    if df is None:
        return heading("tasks") + note
    cols = [c for c in ("pid", "tgid", "ppid", "comm", "state", "cpu", "is_current",
                        "is_kthread", "prio", "policy", "last_run", "utime", "stime",
                        "rss_pages", "address") if c in df]
    counts = ""
    if "state" in df:
        vc = df["state"].astype(object).value_counts()
        counts = "<p>" + ", ".join(f"{int(n)} in state <b>{html.escape(str(s))}</b>"
                                   for s, n in vc.items()) + "</p>"
    return (heading("tasks") + f"<p>{len(df)} tasks (threads and idle tasks included).</p>"
            + counts + '<div id="kdnb-tasks-table">' + table_html(df[cols], page_length=25)
            + "</div>" + figure_html(task_states_by_cpu(df), "task states by CPU"))


def slab(dump: Any) -> str:
    df, note = _frame(dump, "slab caches", "slab")
    if df is None:
        return heading("slab") + note
    if "total_bytes" in df:
        df = df.sort_values("total_bytes", ascending=False, kind="stable")
    return (heading("slab") + f"<p>{len(df)} caches, largest first.</p>"
            + table_html(df, page_length=15) + figure_html(top_slab_caches(df), "top slab caches"))


def memory(dump: Any) -> str:
    df, note = _frame(dump, "memory counters", "meminfo")
    if df is None:
        return heading("memory") + note
    return (heading("memory") + table_html(df, interactive=False)
            + figure_html(memory_breakdown(df), "memory breakdown"))


def modules(dump: Any) -> str:
    df, note = _frame(dump, "modules", "modules")
    if df is None:
        return heading("modules") + note
    return heading("modules") + f"<p>{len(df)} modules loaded.</p>" + table_html(df)


def cpus(dump: Any) -> str:
    df, note = _frame(dump, "CPU registers", "cpus")
    if df is None:
        return heading("cpus") + note
    return heading("cpus") + table_html(df, interactive=False)


def segments(dump: Any) -> str:
    df, note = _frame(dump, "dump coverage", "segments")
    if df is None:
        return heading("segments") + note
    extra = ""
    if "state" in df and "pages" in df:
        by = df.groupby("state", observed=True)["pages"].sum()
        extra = "<p>" + ", ".join(f"{html.escape(str(k))}: {int(v)} pages" for k, v in by.items()) + "</p>"
    return heading("segments") + extra + table_html(df)


def hexdump(data: bytes, base: int) -> str:
    lines = []
    for off in range(0, len(data), 16):
        chunk = data[off:off + 16]
        hexes = " ".join(f"{b:02x}" for b in chunk)
        text = "".join(chr(b) if 32 <= b < 127 else "." for b in chunk)
        lines.append(f"{base + off:016x}  {hexes:<47}  {text}")
    return "\n".join(lines)


def raw_memory(dump: Any, size: int = 256) -> str:
    """Kernel stack bytes at each CPU's stack pointer: only with --include-memory."""
    out = [heading("rawmemory"),
           "<p>Included because the report was made with <code>--include-memory</code>.</p>"]
    df, note = _frame(dump, "CPU registers", "cpus")
    if df is None:
        return "".join(out) + note
    for row in df.itertuples(index=False):
        rsp = getattr(row, "rsp", None)
        if rsp is None or rsp is pd.NA:
            continue
        data, why = attempt(lambda: dump.read(int(rsp), size))
        out.append(f"<h3>CPU {getattr(row, 'cpu', '?')}: {size} bytes at rsp {int(rsp):#x}</h3>")
        out.append(f"<pre>{html.escape(hexdump(data, int(rsp)))}</pre>" if data is not None
                   else note_html("stack bytes", why or "?"))
    return "".join(out)


def css() -> str:
    return TABLE_CSS


def title(dump: Any) -> str:
    import os

    vmci, _ = get(dump, "vmcoreinfo")
    release = (vmci or {}).get("OSRELEASE", "?")
    name = os.path.basename(str(getattr(dump, "path", "")))
    return (f'<h1 id="kdnb-title">Crash report: {html.escape(release)}</h1>'
            f"<p>dump <code>{html.escape(name)}</code></p>")


def footer(dump: Any) -> str:
    import datetime as dt

    from .. import __version__

    when = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (f'<footer class="kdnb-footer">made by kdnb {html.escape(__version__)} on {when} '
            f"from <code>{html.escape(str(getattr(dump, 'path', '')))}</code>; works offline, "
            "tables are searchable with JavaScript on and show their first rows without it.</footer>")
