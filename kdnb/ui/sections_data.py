"""The report's data sections after the story: grouped stacks, the log, memory (labelled rows),
modules, tasks, slab caches, CPU registers (one row per register), dump coverage and, on request,
raw stack bytes. Each degrades to a note."""

from __future__ import annotations

import html
from typing import Any

import pandas as pd

from ._safe import attempt, get, note_html
from .filters import panic_mask
from .format import hex_text
from .plots import figure_html, log_rate, memory_breakdown, task_states_by_cpu, top_slab_caches
from .sections import heading
from .sections_system import system_state
from .tables import table_html

MAX_SEGMENT_ROWS = 5000  # segments listed in the report (the page totals count them all)
TASK_COLUMNS = ("pid", "tgid", "ppid", "comm", "state", "cpu", "is_current", "is_kthread", "prio",
                "policy", "last_run", "utime", "stime", "rss_pages", "address")


def _frame(dump: Any, what: str, attr: str) -> tuple[pd.DataFrame | None, str]:
    df, why = get(dump, attr)
    return df, ("" if df is not None else note_html(what, why or "?"))


def stacks(dump: Any) -> str:
    """The panic CPU's stack, then every task's stack grouped by identical call chain."""
    out = [heading("stacks"), "<h3>The CPU that panicked</h3>"]
    bt, why = get(dump, "panic_backtrace")
    out.append(table_html(bt, interactive=False) if bt is not None
               else note_html("panic backtrace", why or "?"))
    out.append("<h3>Every task, grouped by identical call chain</h3>")
    grouped, why = get(dump, "stacks")
    if grouped is not None:
        from ..views.stacks import stacks_display

        out.append(f"<p>{int(grouped['count'].sum())} tasks in {len(grouped)} distinct stacks, "
                   "the largest group first; the chain is innermost first.</p>")
        out.append(table_html(stacks_display(grouped), page_length=15))
    else:
        out.append(note_html("stacks", why or "?"))
    out.append("<h3>Every CPU and every task in D state, frame by frame</h3>")
    all_bt, why = attempt(dump.backtraces)
    out.append(table_html(all_bt, page_length=25) if all_bt is not None
               else note_html("backtraces", why or "?"))
    return "".join(out)


def log(dump: Any) -> str:
    """The lines that explain the crash, then every line (searchable), and the rate plot."""
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


def memory(dump: Any) -> str:
    """The memory counters, one labelled row each, the breakdown chart, then the system state
    (zones vs watermarks, the OOM context, the largest processes; kdnb.ui.sections_system)."""
    df, note = _frame(dump, "memory counters", "meminfo")
    if df is None:
        return heading("memory") + note
    return (heading("memory") + figure_html(memory_breakdown(df), "memory breakdown")
            + table_html(df, interactive=False) + system_state(dump))


def modules(dump: Any) -> str:
    """Loaded modules with their bases, sizes and taints."""
    df, note = _frame(dump, "modules", "modules")
    if df is None:
        return heading("modules") + note
    return heading("modules") + f"<p>{len(df)} modules loaded.</p>" + table_html(df)


def tasks(dump: Any) -> str:
    """Every task (searchable) and the state-by-CPU chart."""
    df, note = _frame(dump, "tasks", "tasks")
    if df is None:
        return heading("tasks") + note
    cols = [c for c in TASK_COLUMNS if c in df]
    counts = ""
    if "state" in df:
        vc = df["state"].astype(object).value_counts()
        counts = "<p>" + ", ".join(f"{int(n)} in state <b>{html.escape(str(s))}</b>"
                                   for s, n in vc.items()) + "</p>"
    return (heading("tasks") + f"<p>{len(df)} tasks (threads and idle tasks included).</p>"
            + counts + '<div id="kdnb-tasks-table">' + table_html(df[cols], page_length=25)
            + "</div>" + figure_html(task_states_by_cpu(df), "task states by CPU"))


def slab(dump: Any) -> str:
    """Slab caches, largest first, and the top-caches chart."""
    df, note = _frame(dump, "slab caches", "slab")
    if df is None:
        return heading("slab") + note
    if "total_bytes" in df:
        df = df.sort_values("total_bytes", ascending=False, kind="stable")
    return (heading("slab") + f"<p>{len(df)} caches, largest first.</p>"
            + table_html(df, page_length=15) + figure_html(top_slab_caches(df), "top slab caches"))


def registers(dump: Any) -> str:
    """Every CPU's saved registers: one row per register, one column per CPU (all of them fit)."""
    df, note = _frame(dump, "CPU registers", "cpus")
    if df is None:
        return heading("registers") + note
    regs = [c for c in df.columns if c not in ("cpu", "pid")]
    table = pd.DataFrame({"register": regs})
    for row in df.itertuples(index=False):
        table[f"CPU {row.cpu} (pid {row.pid})"] = [hex_text(getattr(row, r)) for r in regs]
    return heading("registers") + table_html(table, interactive=False)


def segments(dump: Any) -> str:
    """Which physical ranges the dump holds, is missing or lost."""
    df, note = _frame(dump, "dump coverage", "segments")
    if df is None:
        return heading("segments") + note
    extra = ""
    if "state" in df and "pages" in df:
        by = df.groupby("state", observed=True)["pages"].sum()
        extra = "<p>" + ", ".join(f"{html.escape(str(k))}: {int(v)} pages" for k, v in by.items()) + "</p>"
    if len(df) > MAX_SEGMENT_ROWS:  # a fragmented dump: millions of one-page segments
        extra += (f"<p>The table lists the first {MAX_SEGMENT_ROWS} of {len(df)} segments; "
                  "<code>d.segments</code> has them all.</p>")
        df = df.head(MAX_SEGMENT_ROWS)
    return heading("segments") + extra + table_html(df)


def hexdump(data: bytes, base: int) -> str:
    """Classic 16-bytes-a-line hex dump with addresses."""
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
