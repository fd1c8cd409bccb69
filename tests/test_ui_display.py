"""The display layer (kdnb.ui.format / tables / render) on the bundled real dumps: what a person
sees has hex addresses and offsets, human sizes, seconds (never a raw timedelta), no `<NA>`, no
index column, labelled rows, evidence as `key: value` lines, text left-aligned."""

from __future__ import annotations

import re

import pandas as pd
import pytest

from kdnb.ui import format as fmt
from kdnb.ui import render, tables

from .test_ui import make_log, make_tasks, sample_dumps

DECIMAL_KERNEL_ADDRESS = re.compile(r"(?<![0-9a-fx])18446\d{15}(?!\d)")
RAW_TIMEDELTA = re.compile(r"\d+ days? \d\d:\d\d:\d\d")


def assert_readable(text: str) -> None:
    assert not DECIMAL_KERNEL_ADDRESS.search(text), DECIMAL_KERNEL_ADDRESS.search(text)
    assert "&lt;NA&gt;" not in text and "<NA>" not in text and ">nan<" not in text
    assert not RAW_TIMEDELTA.search(text), RAW_TIMEDELTA.search(text)


def test_values():
    assert fmt.human_size(0) == "0 B" and fmt.human_size(128073728) == "122.1 MiB"
    assert fmt.seconds(pd.Timedelta("9.783203150s")) == "9.783"
    assert fmt.seconds(pd.Timedelta("9.783203150s"), 6) == "9.783203"
    assert fmt.duration(pd.Timedelta("0 days 00:00:09.791012911")) == "9.79 s"
    assert fmt.duration(pd.Timedelta(hours=50)) == "2 d 2 h"
    assert fmt.value_text(0xffffffffc059509d) == "0xffffffffc059509d"
    assert fmt.value_text(4096, "total_bytes") == "4.0 KiB"
    assert fmt.value_text(pd.NA) == "" and fmt.value_text(None) == ""
    assert fmt.value_text("a\nb") == "a | b"
    assert fmt.evidence_lines({"rip": 0xffffffffc059509d, "pages": 12, "names": ["a", "b"]}) == [
        "rip: 0xffffffffc059509d", "pages: 12", "names: a, b"]


def test_display_frame_labels_and_kinds():
    mem = pd.DataFrame({"pages": pd.array([10, 4], dtype="Int64"),
                        "bytes": pd.array([40960, 16384], dtype="Int64"),
                        "proc": pd.array(["MemTotal", pd.NA], dtype="string")},
                       index=pd.Index(["total", "free"], name="item"))
    shown = fmt.display_frame(mem)
    assert list(shown.columns) == ["item", "pages", "bytes", "proc"]
    assert list(shown["item"]) == ["total", "free"] and list(shown["bytes"]) == ["40.0 KiB", "16.0 KiB"]
    assert list(shown["proc"]) == ["MemTotal", ""]
    t = fmt.display_frame(make_tasks())
    assert "index" not in t.columns and t["is_kthread"].iloc[0] == "yes"
    assert fmt.numeric_columns(make_log()) == ["seq", "time", "level"]


def test_table_alignment_and_no_index():
    log = make_log()
    opts = tables.datatable_options(log)
    left = [d for d in opts["columnDefs"] if d.get("className") == "dt-left"][0]["targets"]
    assert list(log.columns).index("text") in left and opts["showIndex"] is False
    assert opts["scrollX"] is True
    html = tables.static_table_html(log)
    assert '<td class="kdnb-txt">Kernel panic - not syncing: hung_task: blocked tasks</td>' in html
    assert '<td class="kdnb-num">17.400000</td>' in html


def test_sizes_addresses_and_seconds_sort_by_value(dump):
    """A click on "size" sorts 2 KiB before 1 MiB: each such column sorts by a hidden key."""
    df = pd.DataFrame({"name": ["a", "b", "c"], "size": [1 << 20, 2048, 512 << 20],
                       "address": pd.array([0xffff8d1801248000, 0x10, 0xffffffff81000000], "UInt64"),
                       "age": pd.to_timedelta([2.5, 30.0, 0.001], unit="s")})
    shown, opts = tables.datatable_frame(df)
    assert list(shown.columns[:4]) == ["name", "size", "address", "age"]
    order = {d["targets"][0]: d["orderData"][0] for d in opts["columnDefs"] if "orderData" in d}
    assert set(order) == {1, 2, 3}
    for col, key in order.items():
        text, values = shown.iloc[:, col].tolist(), shown.iloc[:, key].tolist()
        by_value = [t for _, t in sorted(zip(values, text))]
        raw = df.iloc[:, col]
        want = [shown.iloc[i, col] for i in sorted(range(3), key=lambda i: raw.iloc[i])]
        assert by_value == want, (shown.columns[col], text, values)
    hidden = [d for d in opts["columnDefs"] if d.get("visible") is False]
    assert {d["targets"][0] for d in hidden} == set(order.values())
    html = tables.itable_html(df)
    assert "orderData" in html and "_sort_1" in html
    _, real = tables.datatable_frame(dump.slab.head(40))  # a real view goes through the same path
    assert any("orderData" in d for d in real["columnDefs"])


@pytest.fixture(scope="module", params=sample_dumps()[:2], ids=lambda p: p.parent.name)
def dump(request):
    import kdnb

    with kdnb.open(request.param) as d:
        yield d


def test_backtraces_read_as_text(dump):
    bt = dump.panic_backtrace
    shown = fmt.display_frame(bt)
    kernel = (bt["kind"].astype(str) != "user").to_numpy()
    assert all(v.startswith("0xffff") for v in shown["pc"][kernel])
    assert all(v.startswith("0x") for v in shown["sp"])
    assert all(v == "" or v.startswith("0x") for v in shown["offset"])
    assert "" in set(shown["module"]) or bt["module"].notna().all()
    html = render.html_of("backtraces", dump.backtraces)
    assert "<table" in html and "dataframe" not in html  # not pandas' to_html
    assert_readable(html)
    from kdnb.views.stacks import stacks_display

    assert_readable(tables.static_table_html(stacks_display(dump.stacks), max_rows=1000))


def test_validation_and_root_cause_html(dump):
    v = dump.validate()
    html = render.checks_html(v)
    assert_readable(html)
    assert "{'" not in html and "=0x" not in html
    passes = sum(c.status == "pass" for c in v.items)
    if passes == len(v.items):
        assert f"all {len(v.items)} checks pass" in html
    for c in v.items:
        for key in c.evidence:
            assert f"{key}: " in html
    rc = render.rootcause_html(dump.root_cause())
    assert_readable(rc)
    assert dump.root_cause().category in rc and "confidence" in rc


def test_every_view_renders_readably(dump):
    for name in ("tasks", "modules", "slab", "meminfo", "cpus", "segments", "log"):
        df = getattr(dump, name)
        assert_readable(tables.static_table_html(df, max_rows=len(df)))
    mem = tables.static_table_html(dump.meminfo, max_rows=100)
    assert "<th class=\"kdnb-txt\">item</th>" in mem and ">total<" in mem
    mods = fmt.display_frame(dump.modules)
    assert all(b.startswith("0xffffffff") for b in mods["base"])
    assert all(s.endswith(("KiB", "MiB", " B")) for s in mods["size"])


# -- viewer layout and plots ---------------------------------------------------------------------
def test_stack_panel_is_titled_and_follows_the_filters(dump):
    pytest.importorskip("ipywidgets")
    from kdnb.ui.viewer import TasksView

    v = TasksView(dump)
    cs = dump.cpu_state
    pid = int(cs[cs["panic"]]["pid"].iloc[0])  # the panicking task: kernel frames
    row = dump.tasks[dump.tasks["pid"] == pid].iloc[0]
    v.pick(pid)
    assert f"pid {pid} · {row['comm']} · state {row['state']}" in v.bt_title.value
    html = v.bt_out.outputs[0]["data"]["text/html"]
    assert_readable(html)
    assert "0xffff" in html
    v.name.value = "no-such-task-name"
    assert v.selected_pid is None and "filters hide pid" in v.bt_title.value
    assert v.bt_out.outputs[0]["data"]["text/html"] == ""
    shown = list(v.table.frame.columns)
    assert shown[:3] == ["pid", "comm", "state"] and "flags" not in shown


def test_state_colours_and_legends_fit(dump):
    pytest.importorskip("matplotlib")
    from matplotlib.colors import to_hex

    from kdnb.ui import plots
    from .test_ui import make_tasks

    for tasks in (dump.tasks, make_tasks()):
        fig = plots.task_states_by_cpu(tasks)
        ax = fig.axes[0]
        for bars in ax.containers:
            assert to_hex(bars.patches[0].get_facecolor()) == plots.STATE_COLOURS[bars.get_label()]
    for fig in (plots.task_states_by_cpu(dump.tasks), plots.memory_breakdown(dump.meminfo)):
        fig.canvas.draw()
        box = fig.legends[0].get_window_extent()
        w, h = fig.canvas.get_width_height()
        assert box.x0 >= 0 and box.y0 >= 0 and box.x1 <= w and box.y1 <= h, (box, w, h)


def test_viewer_progress_bar_leaves(dump):
    pytest.importorskip("ipywidgets")
    from kdnb.ui.viewer import DumpViewer

    v = DumpViewer(dump, progress=False)
    assert v.progress_box.layout.display == "none"
    html = v.backtraces.value
    assert_readable(html)
    assert "dataframe" not in html and "0xffff" in html
