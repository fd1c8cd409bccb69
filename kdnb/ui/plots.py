"""matplotlib figures where a person would rather look than read.

Figures are built with the object API (`matplotlib.figure.Figure`): no pyplot state, no GUI
backend, safe in tests and kernels alike. `figure_html` embeds one as a PNG data URI.
"""

from __future__ import annotations

import base64
import io

import numpy as np
import pandas as pd

from .filters import TASK_STATES

# One colour per task state, the same in every plot and every dump (R running is red, D
# uninterruptible orange, S sleeping blue, I idle grey, ...).
STATE_COLOURS = {"R": "#d62728", "S": "#1f77b4", "D": "#ff7f0e", "T": "#9467bd", "t": "#8c564b",
                 "X": "#000000", "Z": "#e377c2", "P": "#bcbd22", "I": "#b0b0b0"}
OTHER_STATE_COLOUR = "#17becf"


def _figure_class():
    from matplotlib.figure import Figure

    class KdnbFigure(Figure):
        """A Figure that displays itself as a PNG in any IPython front end (no pyplot needed)."""

        def _repr_png_(self) -> bytes:
            return figure_png(self)

    return KdnbFigure


def _figure(w: float = 7.0, h: float = 3.2):
    fig = _figure_class()(figsize=(w, h), dpi=100, layout="constrained")
    return fig, fig.add_subplot()


def task_states_by_cpu(tasks: pd.DataFrame):
    """Stacked bars: how many tasks of each state last ran on each CPU."""
    fig, ax = _figure()
    if len(tasks) == 0 or "cpu" not in tasks or "state" not in tasks:
        ax.text(0.5, 0.5, "no tasks", ha="center", va="center")
        return fig
    table = pd.crosstab(tasks["cpu"].astype("Int64").fillna(-1).astype(int),
                        tasks["state"].astype(object).fillna("?"))
    order = [s for s in TASK_STATES if s in table.columns] + \
        [s for s in table.columns if s not in TASK_STATES]
    table = table[order]
    bottom = np.zeros(len(table))
    x = np.arange(len(table))
    for state in table.columns:
        vals = table[state].to_numpy()
        ax.bar(x, vals, bottom=bottom, label=str(state),
               color=STATE_COLOURS.get(str(state), OTHER_STATE_COLOUR))
        bottom += vals
    ax.set_xticks(x, [f"cpu {c}" if c >= 0 else "?" for c in table.index])
    ax.set_ylabel("tasks")
    ax.set_title("Task states by CPU (last CPU each task ran on)")
    fig.legend(title="state", fontsize=8, loc="outside right upper")
    return fig


def top_slab_caches(slab: pd.DataFrame, n: int = 15):
    """Horizontal bars: the slab caches holding the most memory."""
    fig, ax = _figure(7.0, 0.25 * n + 1.2)
    col = "total_bytes" if "total_bytes" in slab else None
    if col is None or len(slab) == 0:
        ax.text(0.5, 0.5, "no slab caches", ha="center", va="center")
        return fig
    top = slab.sort_values(col, ascending=False).head(n).iloc[::-1]
    kib = top[col].astype(float).to_numpy() / 1024
    ax.barh(top["name"].astype(str).to_numpy(), kib, color="#4c72b0", label="total")
    if "active_bytes" in top:
        ax.barh(top["name"].astype(str).to_numpy(), top["active_bytes"].astype(float).to_numpy() / 1024,
                color="#dd8452", label="in use")
        ax.legend(fontsize=8)
    ax.set_xlabel("KiB")
    ax.set_title(f"Top {len(top)} slab caches by bytes")
    ax.tick_params(axis="y", labelsize=8)
    return fig


def log_rate(log: pd.DataFrame, window: float = 60.0):
    """Log lines per second over the last `window` seconds before the last record."""
    fig, ax = _figure()
    if len(log) == 0 or "time" not in log:
        ax.text(0.5, 0.5, "no log", ha="center", va="center")
        return fig
    secs = log["time"].dt.total_seconds().dropna().to_numpy()
    last = float(secs.max())
    start = max(0.0, last - window)
    recent = secs[secs >= start]
    edges = np.arange(np.floor(start), np.ceil(last) + 1.0, 1.0)
    if len(edges) < 2:
        edges = np.array([start, start + 1.0])
    counts, edges = np.histogram(recent, bins=edges)
    ax.bar(edges[:-1] - last, counts, width=1.0, align="edge", color="#55a868")
    if "level" in log:
        bad = log[(log["level"] <= 3).fillna(False).astype(bool)]["time"].dt.total_seconds()
        bad = bad[bad >= start].to_numpy()
        if len(bad):
            ax.scatter(bad - last, np.zeros(len(bad)), marker="|", color="#c44e52", s=200,
                       label="err or worse")
            ax.legend(fontsize=8)
    ax.set_xlabel("seconds before the last log record")
    ax.set_ylabel("lines / s")
    ax.set_title("Log lines per second before the crash")
    return fig


MEM_ROWS = ["free", "cached", "buffers", "anon", "slab_reclaimable", "slab_unreclaimable",
            "kernel_stack", "page_tables"]
MEM_COLOURS = dict(zip(MEM_ROWS, ["#2ca02c", "#1f77b4", "#aec7e8", "#ff7f0e", "#9467bd", "#c5b0d5",
                                  "#8c564b", "#e377c2"]))


def meminfo_bytes(meminfo: pd.DataFrame) -> dict[str, float]:
    """{counter name: bytes} whether the names are the index or a `name`-like column."""
    labels = None
    for col in ("name", "counter", "item", "field"):
        if col in meminfo:
            labels = meminfo[col].astype(str).to_numpy()
            break
    if labels is None:
        labels = meminfo.index.astype(str).to_numpy()
    return {k: float(v) for k, v in zip(labels, meminfo["bytes"].to_numpy()) if pd.notna(v)}


def memory_breakdown(meminfo: pd.DataFrame):
    """One stacked bar: where the RAM was at crash time."""
    fig, ax = _figure(7.0, 2.6)
    if len(meminfo) == 0 or "bytes" not in meminfo:
        ax.text(0.5, 0.5, "no memory counters", ha="center", va="center")
        return fig
    by = meminfo_bytes(meminfo)
    total = by.get("total") or sum(by.get(r, 0.0) for r in MEM_ROWS)
    left = 0.0
    for name in MEM_ROWS:
        if name in by and by[name] > 0:
            ax.barh([0], [by[name] / 2**20], left=left, label=name, color=MEM_COLOURS[name])
            left += by[name] / 2**20
    if total and total / 2**20 > left:
        ax.barh([0], [total / 2**20 - left], left=left, label="other", color="#cccccc")
    ax.set_yticks([])
    ax.set_xlabel("MiB")
    ax.set_title(f"Memory at crash time ({total / 2**20:.0f} MiB total)")
    fig.legend(fontsize=7, ncols=5, loc="outside lower center")
    return fig


def figure_png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def figure_html(fig, alt: str = "") -> str:
    """An <img> with the figure embedded as a PNG data URI."""
    data = base64.b64encode(figure_png(fig)).decode("ascii")
    return f'<img class="kdnb-fig" alt="{alt}" src="data:image/png;base64,{data}"/>'
