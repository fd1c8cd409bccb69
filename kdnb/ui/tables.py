"""HTML tables made from the display copy of `kdnb.ui.format`: a static table (readable without
JavaScript) and an itables table (searchable, sorted, paged), both without an index column,
text left-aligned, numbers right-aligned, scrolling inside their box when wider than the page.
"""

from __future__ import annotations

import json
import uuid
import warnings
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from .format import cell_html, column_kind, display_frame, is_na, numeric_columns, with_labels

STATIC_ROWS = 20  # rows a reader without JavaScript sees
_INF = float("inf")
LAYOUT_ROWS = 1000  # more than any page length: the rows itables formats to lay a table out


def _cells(shown: pd.DataFrame, numeric: set[str]) -> list[str]:
    return ["kdnb-num" if c in numeric else "kdnb-txt" for c in shown.columns]


def static_table_html(df: pd.DataFrame, max_rows: int = STATIC_ROWS,
                      row_classes: Sequence[str] | None = None, caption: str | None = None) -> str:
    """A plain HTML table of the first rows (readable with JavaScript off)."""
    shown = display_frame(df.head(max_rows))
    classes = _cells(shown, set(numeric_columns(df)))
    parts = ['<table class="kdnb-table">']
    if caption:
        parts.append(f"<caption>{cell_html(caption)}</caption>")
    parts.append("<thead><tr>" + "".join(f'<th class="{k}">{cell_html(str(c))}</th>'
                                         for c, k in zip(shown.columns, classes))
                 + "</tr></thead><tbody>")
    for i, row in enumerate(shown.itertuples(index=False)):
        cls = row_classes[i] if row_classes is not None and i < len(row_classes) else ""
        attr = f' class="{cls}"' if cls else ""
        parts.append(f"<tr{attr}>" + "".join(
            f'<td class="{k}">{cell_html(v)}</td>' for v, k in zip(row, classes)) + "</tr>")
    parts.append("</tbody></table>")
    if len(df) > max_rows:
        parts.append(f'<p class="kdnb-more">first {max_rows} of {len(df)} rows '
                     "(the full table is searchable with JavaScript on)</p>")
    return "".join(parts)


def datatable_options(df: pd.DataFrame, page_length: int = 15) -> dict:
    """itables/DataTables options shared by the report tables and the viewer's ITable widgets."""
    shown_cols = [str(c) for c in display_frame(df.head(0)).columns]
    numeric = set(numeric_columns(df))
    left = [i for i, c in enumerate(shown_cols) if c not in numeric]
    right = [i for i, c in enumerate(shown_cols) if c in numeric]
    defs = []
    if left:
        defs.append({"targets": left, "className": "dt-left"})
    if right:
        defs.append({"targets": right, "className": "dt-right"})
    return dict(pageLength=page_length, lengthMenu=[10, 15, 25, 50, 100], maxBytes=0,
                classes="display compact nowrap", showIndex=False, scrollX=True,
                style="width:100%;margin:0;caption-side:bottom",
                autoWidth=False, columnDefs=defs)


SORTED_BY_VALUE = ("hex", "size", "seconds")  # kinds whose text does not sort like the value


def _sort_key(s: pd.Series, kind: str) -> list:
    if kind == "hex":  # fixed width: sorts as text like the number
        values = s.to_numpy(dtype=object, na_value=None).tolist()
        return ["" if v is None else f"{int(v):016x}" for v in values]
    if kind == "seconds" and pd.api.types.is_timedelta64_dtype(s.dtype):
        values = s.dt.total_seconds().to_numpy(dtype=float, na_value=np.nan).tolist()
    elif kind == "seconds":
        values = [None if is_na(v) else (v.total_seconds() if isinstance(v, pd.Timedelta) else float(v))
                  for v in s]
    else:
        values = s.to_numpy(dtype=float, na_value=np.nan).tolist()
    return [None if v is None or v != v else v for v in values]


def datatable_frame(df: pd.DataFrame, page_length: int = 15) -> tuple[pd.DataFrame, dict]:
    """The display copy of `df` and its DataTables options, with a hidden sort key after the
    shown columns for each column whose text does not sort like its values (hex addresses,
    "1.5 MiB", "2.300 s"): clicking such a column sorts by the value."""
    shown = display_frame(df)
    opts = datatable_options(df, page_length)
    labelled = with_labels(df)
    defs = []
    for pos, col in enumerate(labelled.columns):
        kind = column_kind(col, labelled.iloc[:, pos])
        if kind not in SORTED_BY_VALUE:
            continue
        j = len(shown.columns)
        shown.insert(j, f"_sort_{pos}", _sort_key(labelled.iloc[:, pos], kind), allow_duplicates=True)
        defs += [{"targets": [pos], "orderData": [j]},
                 {"targets": [j], "visible": False, "searchable": False,
                  "type": "string" if kind == "hex" else "num"}]
    opts["columnDefs"] = opts["columnDefs"] + defs
    return shown, opts


def itable_html(df: pd.DataFrame, highlight: Iterable[bool] | None = None, page_length: int = 15,
                caption: str | None = None) -> str:
    """An itables table (searchable, sortable, paged) of the display copy of `df`.

    `highlight` marks rows drawn with the `kdnb-hl` class (panic lines). Needs
    `itables.init_notebook_mode(connected=False)` once in the notebook for offline use.
    """
    from itables import JavascriptFunction
    from itables.javascript import get_itable_arguments, html_table_from_template

    shown, kwargs = datatable_frame(df, page_length)
    kwargs["display_logo_when_loading"] = False
    if caption:
        kwargs["caption"] = caption
    if highlight is not None:
        flags = list(bool(x) for x in highlight)
        shown.insert(len(shown.columns), "_hl", flags, allow_duplicates=True)
        hl_idx = len(shown.columns) - 1
        kwargs["columnDefs"] = kwargs["columnDefs"] + [{"targets": [hl_idx], "visible": False}]
        kwargs["createdRow"] = JavascriptFunction(
            "function (row, data, index) { if (data[%d] === true || data[%d] === 'true' || "
            "data[%d] === 'True') { row.classList.add('kdnb-hl'); } }" % (hl_idx, hl_idx, hl_idx))
        kwargs["allow_html"] = False
    with warnings.catch_warnings():  # createdRow is a DataTables option itables does not list
        warnings.simplefilter("ignore", SyntaxWarning)
        # itables lays out from the row count too (no search box when one page holds all), and
        # any count above the largest page length decides the same. As objects, no column gets
        # itables' float or category renderers, which expect its own cell encoding; the rows are ours.
        dt_args = get_itable_arguments(shown.head(LAYOUT_ROWS).astype(object), **kwargs)
    # A null cell (an NA sort key) is shown, and sorts, as empty instead of raising DataTables' alert.
    dt_args["columnDefs"] = list(dt_args.get("columnDefs") or []) + [{"targets": "_all",
                                                                       "defaultContent": ""}]
    dt_args["data_json"] = rows_json(shown)
    return html_table_from_template(
        table_id=f"kdnb_{uuid.uuid4().hex[:10]}", dt_url=dt_args.pop("dt_url"),
        connected=dt_args.pop("connected"),
        display_logo_when_loading=dt_args.pop("display_logo_when_loading", False), kwargs=dt_args)


def rows_json(shown: pd.DataFrame) -> str:
    """DataTables' row data of a display copy as one JSON text: text cells HTML-escaped, NA and
    NaN null, booleans and numbers as they are.

    itables would format every cell again through pandas' repr machinery (about 20 s for a
    200,000-line log) and add a static preview of its own; the display copy is already text and
    kdnb's static table is the preview, so the rows are serialised here in one pass.
    """
    columns = []
    for _, s in shown.items():
        values = s.to_numpy(dtype=object, na_value=None).tolist()
        if pd.api.types.is_float_dtype(s.dtype):
            values = [None if v is None or v != v or v in (_INF, -_INF) else v for v in values]
        columns.append(values)
    text = json.dumps([list(row) for row in zip(*columns)], default=str, allow_nan=False)
    # <, > and & occur in JSON text only inside strings: escaping the text escapes every cell.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def table_html(df: pd.DataFrame, highlight: Iterable[bool] | None = None, page_length: int = 15,
               caption: str | None = None, interactive: bool = True) -> str:
    """Static first rows (shown without JavaScript) plus the interactive table (shown with it)."""
    flags = None if highlight is None else [bool(x) for x in highlight]
    row_classes = None if flags is None else ["kdnb-hl" if f else "" for f in flags]
    if not interactive:
        static = static_table_html(df, max_rows=max(len(df), 1), row_classes=row_classes,
                                   caption=caption)
        return f'<div class="kdnb-tablebox">{static}</div>'
    static = static_table_html(df, row_classes=row_classes, caption=caption)
    try:
        live = itable_html(df, highlight=flags, page_length=page_length, caption=caption)
    except ImportError:
        return f'<div class="kdnb-tablebox">{static}</div>'
    return (f'<div class="kdnb-tablebox"><div class="kdnb-static">{static}</div>'
            f'<div class="kdnb-live">{live}</div>'
            "<script>document.documentElement.classList.add('kdnb-js');</script></div>")


TABLE_CSS = """
<style>
.kdnb-hl, .kdnb-hl td { background: #fde2e2 !important; color: #7a0000; font-weight: 600; }
.kdnb-na { color: #8a6d3b; background: #fcf8e3; padding: 4px 8px; border-left: 3px solid #e0c36a; }
.kdnb-js .kdnb-static { display: none; }
html:not(.kdnb-js) .kdnb-live { display: none; }
.kdnb-tablebox { max-width: 100%; overflow-x: auto; }
table.kdnb-table { border-collapse: collapse; font-size: 12px; }
table.kdnb-table td, table.kdnb-table th { border: 1px solid #ddd; padding: 2px 6px;
  text-align: left; white-space: nowrap; font-family: ui-monospace, monospace; }
table.kdnb-table td.kdnb-num, table.kdnb-table th.kdnb-num { text-align: right; }
.kdnb-tablebox table.dataTable td.dt-left, .kdnb-tablebox table.dataTable th.dt-left,
.jp-OutputArea table.dataTable td.dt-left, .jp-OutputArea table.dataTable th.dt-left {
  text-align: left !important; }
.kdnb-tablebox table.dataTable td, .jp-OutputArea table.dataTable td {
  font-family: ui-monospace, monospace; font-size: 12px; }
.kdnb-more { color: #666; font-size: 11px; }
.kdnb-lines { margin: 0; padding-left: 1.2em; }
.kdnb-lines li { font-family: ui-monospace, monospace; font-size: 12px; }
</style>
"""
