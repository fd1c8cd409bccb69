"""`show(dump)`: the tabbed ipywidgets viewer (Summary, Tasks, Slab, Log, Backtraces, Validation,
Root cause).

The viewer classes compose widgets rather than subclass them (no attribute of ours can shadow an
ipywidgets trait, `comm` least of all). All filtering is done by the plain classes of
`kdnb.ui.filters`; each view keeps the rows it shows in `.current`, so tests drive the controls
headless and assert on `.current`.
"""

from __future__ import annotations

import html
from typing import Any, Callable

import pandas as pd

from ._safe import attempt, get, note_html
from .filters import LEVELS, TASK_STATES, LogFilter, SlabFilter, TaskChoice, TaskFilter, panic_mask
from .render import html_of
from .tables import TABLE_CSS, datatable_frame, datatable_options, table_html
from .plots import figure_html, log_rate, memory_breakdown, task_states_by_cpu, top_slab_caches
from .sections_system import system_state

TASK_TABLE_COLUMNS = ("pid", "comm", "state", "cpu", "is_current", "is_kthread", "prio", "policy",
                      "last_run", "utime", "stime", "rss_pages", "ppid", "tgid", "address")
MAX_TABLE_ROWS = 5000  # rows handed to a live table; larger frames are cut (filters narrow them)


def _widgets():
    import ipywidgets as w

    return w


def set_html(out: Any, markup: str, plain: str = "") -> None:
    """Replace an Output widget's content with HTML, headless-safe (no kernel context needed)."""
    out.outputs = ({"output_type": "display_data",
                    "data": {"text/html": markup, "text/plain": plain or "kdnb view"},
                    "metadata": {}},)


def _has_itables_widget() -> bool:
    try:
        from itables.widget import ITable  # noqa: F401
    except ImportError:
        return False
    return True


class _Table:
    """A live table: itables' ITable widget when anywidget is installed, else static HTML."""

    def __init__(self, select: bool = False, page_length: int = 15) -> None:
        w = _widgets()
        self.page_length = page_length
        self.frame: pd.DataFrame = pd.DataFrame()
        self.itable = None
        if _has_itables_widget():
            from itables.widget import ITable

            self.itable = ITable(pd.DataFrame(), select=select,
                                 **datatable_options(pd.DataFrame(), page_length))
            self.widget = self.itable
        else:
            self.widget = w.Output()

    def update(self, df: pd.DataFrame) -> None:
        self.frame = df
        shown = df.head(MAX_TABLE_ROWS)
        if self.itable is not None:
            frame, options = datatable_frame(shown, self.page_length)
            self.itable.update(frame, selected_rows=[], **options)
        else:
            set_html(self.widget, TABLE_CSS + table_html(shown, interactive=False),
                     f"{len(df)} rows")

    def observe_selection(self, fn: Callable[[int], None]) -> None:
        """Call fn(position in the current frame) when a row is selected in the table."""
        if self.itable is None:
            return

        def changed(change: dict) -> None:
            rows = change.get("new") or []
            if rows:
                fn(int(rows[0]))

        self.itable.observe(changed, names="selected_rows")


def _note(what: str, why: str):
    w = _widgets()
    return w.HTML(note_html(what, why))


class TasksView:
    """Tasks filtered by state / CPU / kernel thread / name; a picked task shows its backtrace."""

    def __init__(self, dump: Any, tasks: pd.DataFrame | None = None) -> None:
        w = _widgets()
        self.dump = dump
        if tasks is None:
            tasks, self.reason = get(dump, "tasks")
        else:
            self.reason = None
        self.tasks = tasks if tasks is not None else pd.DataFrame()
        self.filter = TaskFilter()
        self.current = self.tasks
        self.backtrace: pd.DataFrame | None = None
        self.backtrace_reason: str | None = None
        self.selected_pid: int | None = None
        if self.reason:
            self.widget = _note("Tasks", self.reason)
            return
        states = [s for s in TASK_STATES if "state" in self.tasks
                  and s in set(self.tasks["state"].astype(object))]
        cpus = sorted(int(c) for c in self.tasks["cpu"].dropna().unique()) if "cpu" in self.tasks else []
        self.states = w.SelectMultiple(options=states, description="state", rows=min(len(states), 6) or 1)
        self.cpus = w.SelectMultiple(options=cpus, description="CPU", rows=min(len(cpus), 6) or 1)
        self.kthread = w.ToggleButtons(options=[("all", None), ("kernel threads", True),
                                                ("user tasks", False)], value=None,
                                       description="kind")
        self.name = w.Text(value="", description="name", placeholder="substring of the task name",
                           continuous_update=True)
        self.count = w.HTML()
        self.table = _Table(select=True)
        self.picker = w.Select(options=[], description="task", rows=8,
                               layout=w.Layout(width="28em", flex="0 0 auto"))
        self.bt_title = w.HTML("<b>Stack</b>: pick a task, or select a row above")
        self.bt_out = w.Output(layout=w.Layout(overflow="auto", max_height="28em"))
        self.plot_out = w.Output()
        for ctl in (self.states, self.cpus, self.kthread, self.name):
            ctl.observe(lambda _c: self.refresh(), names="value")
        self.picker.observe(lambda c: self.pick(c["new"]), names="value")
        self.table.observe_selection(self._picked_row)
        self.refresh()
        set_html(self.plot_out, figure_html(task_states_by_cpu(self.tasks), "task states by CPU"))
        self.widget = w.VBox([
            w.HBox([self.states, self.cpus, w.VBox([self.kthread, self.name])]),
            self.count, self.table.widget,
            w.HBox([self.picker, w.VBox([self.bt_title, self.bt_out],
                                        layout=w.Layout(flex="1 1 auto", min_width="0"))],
                   layout=w.Layout(width="100%")),
            self.plot_out], layout=w.Layout(width="100%"))

    def refresh(self) -> pd.DataFrame:
        self.filter.states = tuple(self.states.value)
        self.filter.cpus = tuple(self.cpus.value)
        self.filter.kthread = self.kthread.value
        self.filter.name = self.name.value
        self.current = self.filter.apply(self.tasks)
        self.count.value = f"{len(self.current)} of {len(self.tasks)} tasks"
        self.table.update(self.current[[c for c in TASK_TABLE_COLUMNS if c in self.current]])
        self.picker.options = TaskChoice(self.current).options()
        if self.selected_pid is not None and "pid" in self.current and \
                self.selected_pid not in set(self.current["pid"].dropna().astype(int)):
            self.clear(f"the filters hide pid {self.selected_pid}")
        return self.current

    def clear(self, why: str) -> None:
        """Empty the stack panel (no stale stack of a task the table no longer shows)."""
        self.selected_pid, self.backtrace, self.backtrace_reason = None, None, None
        self.bt_title.value = f"<b>Stack</b>: no task selected ({html.escape(why)})"
        set_html(self.bt_out, "", "no task selected")

    def title(self, pid: int) -> str:
        """`pid 135 · kdnb_trigger · state R · CPU 0` for the stack panel."""
        rows = self.tasks[self.tasks["pid"] == pid] if "pid" in self.tasks else self.tasks.iloc[:0]
        if not len(rows):
            return f"pid {pid}"
        row = rows.iloc[0]
        parts = [f"pid {pid}", str(row.get("comm", "")), f"state {row.get('state', '?')}"]
        if "cpu" in row and not pd.isna(row["cpu"]):
            parts.append(f"CPU {int(row['cpu'])}")
        return " · ".join(parts)

    def _picked_row(self, pos: int) -> None:
        if 0 <= pos < len(self.current) and "pid" in self.current:
            self.pick(int(self.current["pid"].iloc[pos]))

    def pick(self, pid: int | None) -> pd.DataFrame | None:
        """Show the backtrace of task `pid`."""
        if pid is None:
            return None
        self.selected_pid = int(pid)
        self.bt_title.value = f"<b>Stack of {html.escape(self.title(int(pid)))}</b>"
        self.backtrace, self.backtrace_reason = attempt(lambda: self.dump.backtrace(pid=int(pid)))
        if self.backtrace is None:
            set_html(self.bt_out, note_html(f"backtrace of pid {pid}", self.backtrace_reason or "?"))
        else:
            set_html(self.bt_out, TABLE_CSS + table_html(self.backtrace, interactive=False))
        return self.backtrace


class LogView:
    """The kernel log filtered by level, time window and text; panic lines highlighted."""

    def __init__(self, dump: Any, log: pd.DataFrame | None = None) -> None:
        w = _widgets()
        self.dump = dump
        if log is None:
            log, self.reason = get(dump, "log")
        else:
            self.reason = None
        self.log = log if log is not None else pd.DataFrame()
        self.filter = LogFilter()
        self.current = self.log
        if self.reason:
            self.widget = _note("Log", self.reason)
            return
        secs = self.log["time"].dt.total_seconds() if len(self.log) else pd.Series([0.0])
        lo, hi = float(secs.min() or 0.0), float(secs.max() or 0.0)
        self.level = w.Dropdown(options=[(f"{i} {n} and worse", i) for i, n in enumerate(LEVELS)],
                                value=7, description="level")
        self.window = w.FloatRangeSlider(value=(lo, hi), min=lo, max=max(hi, lo + 1e-6),
                                         step=max((hi - lo) / 1000, 1e-6), description="time (s)",
                                         readout_format=".3f", continuous_update=False,
                                         layout=w.Layout(width="40em"))
        self.text = w.Text(value="", description="text", placeholder="search the log",
                           continuous_update=True)
        self.panic_only = w.Checkbox(value=False, description="panic lines only")
        self.count = w.HTML()
        self.panic_box = w.HTML()
        self.table = _Table()
        for ctl in (self.level, self.window, self.text, self.panic_only):
            ctl.observe(lambda _c: self.refresh(), names="value")
        self.refresh()
        self.plot_out = w.Output()
        set_html(self.plot_out, figure_html(log_rate(self.log), "log lines per second"))
        mask = panic_mask(self.log)
        lines = self.log[mask]
        self.panic_box.value = TABLE_CSS + (
            "<b>Lines that explain the crash</b>" +
            table_html(lines[[c for c in ("seq", "time", "level_name", "text") if c in lines]],
                       highlight=[True] * len(lines), interactive=False)
            if len(lines) else "<i>no panic line found in the log</i>")
        self.widget = w.VBox([w.HBox([self.level, self.text, self.panic_only]), self.window,
                              self.panic_box, self.count, self.table.widget, self.plot_out])

    def refresh(self) -> pd.DataFrame:
        self.filter.max_level = int(self.level.value)
        lo, hi = self.window.value
        full = (lo <= self.window.min and hi >= self.window.max)
        self.filter.start, self.filter.end = (None, None) if full else (lo, hi)
        self.filter.text = self.text.value
        self.filter.panic_only = bool(self.panic_only.value)
        self.current = self.filter.apply(self.log)
        self.count.value = f"{len(self.current)} of {len(self.log)} lines"
        shown = self.current.copy()
        shown.insert(0, "!", panic_mask(shown).map({True: "▶", False: ""}))
        self.table.update(shown)
        return self.current


class SlabView:
    """Slab caches filtered by name and object size, largest first."""

    def __init__(self, dump: Any, slab: pd.DataFrame | None = None) -> None:
        w = _widgets()
        self.dump = dump
        if slab is None:
            slab, self.reason = get(dump, "slab")
        else:
            self.reason = None
        self.slab = slab if slab is not None else pd.DataFrame()
        self.filter = SlabFilter()
        self.current = self.slab
        if self.reason:
            self.widget = _note("Slab", self.reason)
            return
        size_col = "object_size" if "object_size" in self.slab else "size"
        biggest = int(self.slab[size_col].max()) if size_col in self.slab and len(self.slab) else 0
        self.name = w.Text(value="", description="name", placeholder="cache name",
                           continuous_update=True)
        self.size = w.IntRangeSlider(value=(0, max(biggest, 1)), min=0, max=max(biggest, 1),
                                     description="obj size", continuous_update=False,
                                     layout=w.Layout(width="40em"))
        self.count = w.HTML()
        self.table = _Table()
        for ctl in (self.name, self.size):
            ctl.observe(lambda _c: self.refresh(), names="value")
        self.refresh()
        self.plot_out = w.Output()
        set_html(self.plot_out, figure_html(top_slab_caches(self.slab), "top slab caches"))
        self.widget = w.VBox([w.HBox([self.name, self.size]), self.count, self.table.widget,
                              self.plot_out])

    def refresh(self) -> pd.DataFrame:
        self.filter.name = self.name.value
        lo, hi = self.size.value
        self.filter.min_size = lo if lo > self.size.min else None
        self.filter.max_size = hi if hi < self.size.max else None
        self.current = self.filter.apply(self.slab)
        self.count.value = f"{len(self.current)} of {len(self.slab)} caches"
        self.table.update(self.current)
        return self.current


def _stacks(dump: Any) -> pd.DataFrame:
    from ..views.stacks import stacks_display

    return stacks_display(dump.stacks)


def backtraces_html(dump: Any) -> str:
    parts = ["<h4>Panic CPU</h4>", html_of("panic backtrace", lambda: dump.panic_backtrace),
             "<h4>Every CPU and every D-state task</h4>",
             html_of("backtraces", lambda: dump.backtraces()),
             "<h4>Every task's stack, grouped by identical call chain</h4>",
             html_of("stacks", lambda: _stacks(dump))]
    return TABLE_CSS + "".join(parts)


class DumpViewer:
    """The tabbed viewer. `DumpViewer(dump).widget` is the ipywidgets Tab."""

    TABS = ("Summary", "Tasks", "Slab", "Log", "Backtraces", "Validation", "Root cause")

    def __init__(self, dump: Any, progress: bool = True) -> None:
        w = _widgets()
        self.dump = dump
        self.bar = w.IntProgress(value=0, min=0, max=len(self.TABS), description="loading",
                                 bar_style="info")
        self.step = w.HTML()
        self.progress_box = w.VBox([self.bar, self.step])
        if progress:
            _display_maybe(self.progress_box)
        self.summary = self._step("summary", lambda: w.HTML(self._summary_html()))
        self.tasks = self._step("tasks", lambda: TasksView(dump))
        self.slab = self._step("slab caches", lambda: SlabView(dump))
        self.log = self._step("kernel log", lambda: LogView(dump))
        self.backtraces = self._step("backtraces", lambda: w.HTML(backtraces_html(dump)))
        self.validation = self._step("validation",
                                     lambda: w.HTML(html_of("validation", dump.validate)))
        self.rootcause = self._step("root cause",
                                    lambda: w.HTML(html_of("root cause", dump.root_cause)))
        self.bar.bar_style, self.bar.description, self.step.value = "success", "ready", ""
        self.progress_box.layout.display = "none"  # done: the bar leaves the page
        self.progress_box.close()
        children = [self.summary, self.tasks.widget, self.slab.widget, self.log.widget,
                    self.backtraces, self.validation, self.rootcause]
        self.widget = w.Tab(children=children, titles=self.TABS)

    def _step(self, label: str, fn: Callable[[], Any]) -> Any:
        self.step.value = f"reading {html.escape(label)}…"
        try:
            return fn()
        finally:
            self.bar.value += 1

    def _summary_html(self) -> str:
        from .summary import dump_html

        parts = [dump_html(self.dump)]
        meminfo, why = get(self.dump, "meminfo")
        if meminfo is not None:
            parts.append(figure_html(memory_breakdown(meminfo), "memory breakdown"))
        else:
            parts.append(note_html("memory breakdown", why or "?"))
        parts.append(TABLE_CSS + system_state(self.dump))  # zones, the OOM context, top RSS
        return "".join(parts)

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)


def _display_maybe(obj: Any) -> None:
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover
        return
    if get_ipython() is not None:
        from IPython.display import display

        display(obj)


def show(dump: Any) -> DumpViewer:
    """The tabbed viewer on a dump (or a dump path).

    It displays itself as a cell's result (`d.show()` on the last line); keep it in a variable
    to drive its filters from code, and display it with `display(viewer)`.
    """
    if isinstance(dump, (str, bytes)) or hasattr(dump, "__fspath__"):
        from ..api import open as open_dump

        dump = open_dump(dump)
    return DumpViewer(dump)
