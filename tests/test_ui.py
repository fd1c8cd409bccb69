"""kdnb.ui headless: filters, display formatting, the summary card, the viewer driven by its
controls, degradation when a view is missing, and the viewer on a real sample."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kdnb.ui import format as fmt
from kdnb.ui import tables
from kdnb.ui.filters import LogFilter, SlabFilter, TaskChoice, TaskFilter, panic_line, panic_mask
from kdnb.ui.summary import dump_html, dump_text, summary_facts

from .conftest import CORPUS, DATA


def sample_dumps() -> list[Path]:
    """The bundled samples, else the corpus kdump files, else nothing."""
    found = sorted(p for p in DATA.glob("*/vmcore*") if not p.name.endswith((".zst", ".json")))
    if not found and CORPUS.is_dir():
        found = sorted(CORPUS.glob("*/vmcore.kdump-zlib"))[:2]
    return found


# -- synthetic frames with the documented columns -------------------------------------------
def make_tasks() -> pd.DataFrame:
    rows = [  # pid comm state kthread cpu current
        (0, "swapper/0", "R", True, 0, False), (0, "swapper/1", "R", True, 1, False),
        (1, "init", "S", False, 0, False), (2, "kthreadd", "S", True, 1, False),
        (34, "khungtaskd", "R", True, 0, True), (178, "bash", "R", False, 1, True),
        (283, "kdnb_frozen_wr", "D", False, 0, False), (284, "kworker/0:1", "I", True, 0, False),
        (300, "sleeper", "S", False, 1, False), (301, "writer", "D", False, 1, False),
    ]
    df = pd.DataFrame(rows, columns=["pid", "comm", "state", "is_kthread", "cpu", "is_current"])
    df["pid"] = df["pid"].astype("Int32")
    df["comm"] = df["comm"].astype("category")
    df["state"] = pd.Categorical(df["state"], categories=list("RSDTtXZPI"))
    df["cpu"] = df["cpu"].astype("Int16")
    df["last_run"] = pd.to_timedelta(np.arange(len(df)), unit="s")
    df["address"] = pd.array([0xffff888000000000 + 0x1000 * i for i in range(len(df))],
                             dtype="UInt64")
    return df


def make_log() -> pd.DataFrame:
    texts = ["Linux version 6.12", "Command line: console=ttyS0", "usb 1-1: new device",
             "INFO: task kdnb_frozen_wr:283 blocked for more than 5 seconds.",
             "Call Trace:", "RIP: 0010:percpu_rwsem_wait+0x11f/0x140",
             "Kernel panic - not syncing: hung_task: blocked tasks"]
    levels = [5, 6, 6, 3, 4, 4, 0]
    return pd.DataFrame({
        "seq": pd.array(range(len(texts)), dtype="Int64"),
        "time": pd.to_timedelta([0.0, 0.0, 1.5, 15.0, 15.1, 15.2, 17.4], unit="s"),
        "level": pd.array(levels, dtype="Int8"),
        "level_name": pd.Categorical([["emerg", "alert", "crit", "err", "warning", "notice",
                                       "info", "debug"][lv] for lv in levels]),
        "text": pd.array(texts, dtype="string"),
    })


def make_slab() -> pd.DataFrame:
    names = ["kmalloc-64", "kmalloc-4k", "dentry", "kdnb_obj", "task_struct"]
    size = [64, 4096, 192, 128, 9792]
    total = [64 * 1000, 4096 * 50, 192 * 2000, 128 * 16, 9792 * 70]
    return pd.DataFrame({"name": names, "object_size": pd.array(size, dtype="Int32"),
                         "total_bytes": pd.array(total, dtype="Int64"),
                         "active_bytes": pd.array([t // 2 for t in total], dtype="Int64"),
                         "address": pd.array([0xffff888001000000 + i for i in range(5)],
                                             dtype="UInt64")})


class FakeDump:
    """Just enough of `kdnb.Dump` for the UI; pieces listed in `missing` raise like an unwritten
    view does (ModuleNotFoundError)."""

    path = "/nowhere/vmcore"
    format = "kdump"
    header = {"timestamp": None}

    def __init__(self, missing: tuple[str, ...] = ()) -> None:
        self.missing = set(missing)
        self.vmcoreinfo = {"OSRELEASE": "6.12.0-test", "CRASHTIME": "1795825810"}
        self.cpus = pd.DataFrame({"cpu": pd.array([0, 1], dtype="Int16"),
                                  "pid": pd.array([34, 178], dtype="Int32"),
                                  "rip": pd.array([0xffffffff81000000, 0x47b5e1], dtype="UInt64"),
                                  "rsp": pd.array([0xffffc90000010000, 0x7ffd0000], dtype="UInt64")})
        self.picked: list[int] = []

    def _need(self, name: str) -> None:
        if name in self.missing:
            raise ModuleNotFoundError(f"No module named 'kdnb.views.{name}'", name=f"kdnb.views.{name}")

    @property
    def tasks(self):
        self._need("tasks")
        return make_tasks()

    @property
    def log(self):
        self._need("log")
        return make_log()

    @property
    def slab(self):
        self._need("slab")
        return make_slab()

    @property
    def modules(self):
        self._need("modules")
        return pd.DataFrame({"name": ["kdnb_crash"], "taints": ["OE"]})

    @property
    def meminfo(self):
        self._need("meminfo")
        return pd.DataFrame({"name": ["total", "free", "cached", "slab_unreclaimable"],
                             "pages": [1000, 400, 200, 50],
                             "bytes": [4096000, 1638400, 819200, 204800]})

    @property
    def sys_info(self):
        self._need("sys")
        return {"release": "6.12.0-test", "panic_message": "Kernel panic - not syncing: test",
                "panic_cpu": 0}

    @property
    def panic_backtrace(self):
        self._need("backtrace")
        return self.backtrace(cpu=0)

    def backtrace(self, cpu=None, pid=None):
        self._need("backtrace")
        if pid is not None:
            self.picked.append(pid)
        return pd.DataFrame({"frame": pd.array([0, 1], dtype="Int16"),
                             "pc": pd.array([0xffffffff81234567, 0xffffffff81000010], dtype="UInt64"),
                             "function": ["schedule", "percpu_rwsem_wait"],
                             "text": ["schedule+0x27/0xc0", "percpu_rwsem_wait+0x11f/0x140"]})

    def backtraces(self, states=("D",), cpus="all"):
        self._need("backtrace")
        return self.backtrace(cpu=0).assign(pid=pd.array([283, 283], dtype="Int32"))

    def validate(self):
        self._need("validate")

        class V:
            verdict = "usable"

            def _repr_html_(self):
                return "<p>validation: usable</p>"
        return V()

    def root_cause(self):
        self._need("rootcause")

        class R:
            category = "hung-task"

            def _repr_html_(self):
                return "<p>Root cause: hung-task</p>"
        return R()


# -- filters ----------------------------------------------------------------------------------
def test_task_filter_by_state_cpu_kthread_name():
    t = make_tasks()
    assert set(TaskFilter(states=["D"]).apply(t)["pid"]) == {283, 301}
    assert set(TaskFilter(states=["D"], cpus=[1]).apply(t)["pid"]) == {301}
    assert not TaskFilter(kthread=True).apply(t)["is_kthread"].eq(False).any()
    assert set(TaskFilter(kthread=False, states=["R"]).apply(t)["pid"]) == {178}
    assert list(TaskFilter(name="FROZEN").apply(t)["comm"]) == ["kdnb_frozen_wr"]
    assert len(TaskFilter(name=r"^kworker/\d", regex=True).apply(t)) == 1
    assert len(TaskFilter(name="[", regex=True).apply(t)) == 0  # a bad regex falls back to text
    assert len(TaskFilter().apply(t)) == len(t)


def test_log_filter_level_window_text_panic():
    log = make_log()
    assert list(LogFilter(max_level=3).apply(log)["seq"]) == [3, 6]
    assert list(LogFilter(start=1.0, end=15.1).apply(log)["seq"]) == [2, 3, 4]
    assert list(LogFilter(last_seconds=2.35).apply(log)["seq"]) == [4, 5, 6]
    assert list(LogFilter(text="blocked for").apply(log)["seq"]) == [3]
    assert list(LogFilter(levels=["info"]).apply(log)["seq"]) == [1, 2]
    assert list(LogFilter(panic_only=True).apply(log)["seq"]) == [3, 5, 6]


def test_panic_line_prefers_the_panic_message():
    log = make_log()
    assert panic_line(log) == "Kernel panic - not syncing: hung_task: blocked tasks"
    assert panic_line(log.iloc[:4]).startswith("INFO: task kdnb_frozen_wr")
    assert panic_line(log.iloc[:2]) is None
    assert panic_mask(log).sum() == 3


def test_slab_filter_name_size_sorted():
    s = make_slab()
    assert list(SlabFilter().apply(s)["name"])[0] == "task_struct"
    assert list(SlabFilter(name="kmalloc").apply(s)["name"]) == ["kmalloc-4k", "kmalloc-64"]
    assert list(SlabFilter(min_size=100, max_size=200).apply(s)["name"]) == ["dentry", "kdnb_obj"]
    assert len(SlabFilter(top=2).apply(s)) == 2


def test_task_choice_labels():
    opts = TaskChoice(make_tasks()).options()
    assert ("   178 bash [R] cpu 1 *", 178) in opts


# -- display ------------------------------------------------------------------------------------
def test_display_frame_hex_and_seconds_without_touching_the_data():
    t = make_tasks()
    shown = fmt.display_frame(t)
    assert shown["address"].iloc[1] == "0xffff888000001000"
    assert shown["last_run"].iloc[2] == "2.000000"  # seconds since boot, like dmesg
    assert str(t["address"].dtype) == "UInt64"  # the frame itself keeps numbers
    html = tables.static_table_html(t, max_rows=3)
    assert "0xffff888000000000" in html and "first 3 of 10 rows" in html


def test_table_html_has_static_rows_and_offline_itable():
    pytest.importorskip("itables")
    html = tables.table_html(make_log(), highlight=panic_mask(make_log()))
    assert 'class="kdnb-static"' in html and 'class="kdnb-live"' in html
    assert html.count('class="kdnb-hl"') == 3
    assert "https://" not in html.split('class="kdnb-live"')[0]


# -- summary ------------------------------------------------------------------------------------
def test_summary_card_facts():
    f = summary_facts(FakeDump())
    assert f["release"] == "6.12.0-test"
    assert f["panic"] == "Kernel panic - not syncing: test"
    assert f["verdict"] == "usable"
    assert f["tasks"] == 10 and f["log lines"] == 7 and f["CPUs"] == 2
    assert f["crash_time"].startswith("2026-11-28 00:30:10")
    html = dump_html(FakeDump())
    for text in ("6.12.0-test", "usable", "Kernel panic - not syncing: test", "10 tasks"):
        assert text in html


def test_summary_degrades_when_views_are_missing():
    d = FakeDump(missing=("tasks", "sys", "validate", "slab"))
    f = summary_facts(d)
    assert f["tasks"] is None and f["verdict"] is None
    assert f["panic"].startswith("Kernel panic")  # found in the log instead
    assert "not implemented yet (kdnb.views.tasks)" in f["missing"]["tasks"]
    assert "not available" in dump_html(d)
    assert "missing" in dump_text(d)


# -- the viewer, headless ------------------------------------------------------------------------
@pytest.fixture
def widgets():
    return pytest.importorskip("ipywidgets")


def test_tasks_view_controls_filter_and_pick(widgets):
    from kdnb.ui.viewer import TasksView

    d = FakeDump()
    v = TasksView(d)
    assert len(v.current) == 10
    v.states.value = ("D",)
    assert set(v.current["pid"]) == {283, 301}
    v.cpus.value = (0,)
    assert list(v.current["pid"]) == [283]
    assert v.count.value == "1 of 10 tasks"
    assert [p for _, p in v.picker.options] == [283]
    v.picker.value = 283
    assert d.picked == [283] and v.backtrace is not None and list(v.backtrace["function"])[0] == "schedule"
    v.states.value, v.cpus.value = (), ()
    v.kthread.value = True
    assert v.current["is_kthread"].all()
    v.kthread.value = None
    v.name.value = "swapper"
    assert len(v.current) == 2
    # the table shows the filtered rows, addresses in hex
    assert len(v.table.frame) == 2
    if v.table.itable is not None:
        v.table.itable.selected_rows = [1]
        assert v.selected_pid == 0
    assert not hasattr(type(v.widget), "comm") or v.widget.comm is None or True


def test_log_view_controls(widgets):
    from kdnb.ui.viewer import LogView

    v = LogView(FakeDump())
    v.level.value = 3
    assert list(v.current["seq"]) == [3, 6]
    v.level.value = 7
    v.text.value = "panic"
    assert list(v.current["seq"]) == [6]
    v.text.value = ""
    v.window.value = (1.0, 15.1)
    assert list(v.current["seq"]) == [2, 3, 4]
    v.window.value = (v.window.min, v.window.max)
    v.panic_only.value = True
    assert list(v.current["seq"]) == [3, 5, 6]
    assert "kdnb-hl" in v.panic_box.value
    assert v.table.frame["!"].tolist() == ["▶"] * 3


def test_slab_view_controls(widgets):
    from kdnb.ui.viewer import SlabView

    v = SlabView(FakeDump())
    assert v.current["name"].iloc[0] == "task_struct"
    v.name.value = "kmalloc"
    assert list(v.current["name"]) == ["kmalloc-4k", "kmalloc-64"]
    v.name.value = ""
    v.size.value = (100, 200)
    assert list(v.current["name"]) == ["dentry", "kdnb_obj"]


def test_dump_viewer_tabs_and_degradation(widgets):
    from kdnb.ui.viewer import DumpViewer

    v = DumpViewer(FakeDump(), progress=False)
    assert list(v.widget.titles) == list(DumpViewer.TABS)
    assert v.bar.value == len(DumpViewer.TABS)
    assert "hung-task" in v.rootcause.value and "usable" in v.validation.value

    v = DumpViewer(FakeDump(missing=("tasks", "slab", "backtrace", "validate", "rootcause",
                                     "meminfo", "sys")), progress=False)
    assert isinstance(v.tasks.widget, widgets.HTML) and "not available" in v.tasks.widget.value
    assert "not available" in v.slab.widget.value
    assert "not available" in v.backtraces.value
    assert "not available" in v.validation.value and "not available" in v.rootcause.value
    assert len(v.log.current) == 7  # the log still works


def test_no_widget_subclass_shadows_comm(widgets):
    import kdnb.ui.viewer as viewer

    for obj in vars(viewer).values():
        if isinstance(obj, type) and issubclass(obj, widgets.Widget):
            assert "comm" not in vars(obj)


def test_plots_render_png():
    pytest.importorskip("matplotlib")
    from kdnb.ui import plots

    for fig in (plots.task_states_by_cpu(make_tasks()), plots.top_slab_caches(make_slab()),
                plots.log_rate(make_log()), plots.memory_breakdown(FakeDump().meminfo),
                plots.task_states_by_cpu(make_tasks().iloc[:0])):
        png = fig._repr_png_()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 2000


# -- on a real sample ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def real_dump():
    dumps = sample_dumps()
    if not dumps:
        pytest.skip("no bundled sample and no corpus dump")
    import kdnb

    with kdnb.open(dumps[0]) as d:
        yield d


def test_viewer_on_a_sample(widgets, real_dump):
    from kdnb.ui.viewer import DumpViewer

    v = DumpViewer(real_dump, progress=False)
    log = real_dump.log
    assert len(v.log.current) == len(log)
    v.log.panic_only.value = True
    assert 0 < len(v.log.current) < len(log)
    v.log.panic_only.value = False
    v.log.level.value = 3
    assert (v.log.current["level"] <= 3).all()
    if v.tasks.reason is None:
        tasks = real_dump.tasks
        v.tasks.kthread.value = False
        assert len(v.tasks.current) == int((~tasks["is_kthread"]).sum())
        v.tasks.kthread.value = None
        v.tasks.name.value = "swapper"
        assert len(v.tasks.current) >= 1
        assert set(v.tasks.current["comm"].astype(str)).issubset(
            {c for c in tasks["comm"].astype(str) if "swapper" in c})
        v.tasks.pick(int(v.tasks.current["pid"].iloc[0]))
        assert v.tasks.backtrace is not None or v.tasks.backtrace_reason
    html = dump_html(real_dump)
    assert real_dump.vmcoreinfo["OSRELEASE"] in html
