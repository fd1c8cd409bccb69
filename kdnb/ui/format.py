"""Display helpers: hex addresses, readable durations, static HTML tables and itables tables.

DataFrames keep their real dtypes (addresses are UInt64); only the *display copy* made here turns
them into text.
"""

from __future__ import annotations

import html
import uuid
import warnings
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

# Columns shown in hex whatever their dtype (when integer).
HEX_COLUMNS = {"address", "base", "pc", "sp", "rip", "rsp", "rbp", "rax", "rbx", "rcx", "rdx",
               "rsi", "rdi", "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15", "cs", "ss",
               "eflags", "fs_base", "gs_base", "orig_rax", "ds", "es", "fs", "gs", "vaddr",
               "file_offset", "start", "end", "flags", "state_raw", "paddr"}
STATIC_ROWS = 20  # rows a reader without JavaScript sees


def is_hex_column(name: object, s: pd.Series) -> bool:
    if not (pd.api.types.is_integer_dtype(s.dtype)):
        return False
    name = str(name)
    return name in HEX_COLUMNS or name.endswith("_address") or name.endswith("_addr") or \
        str(s.dtype) in ("UInt64", "uint64")


def hex_or_blank(v: object) -> str:
    if v is None or v is pd.NA or (isinstance(v, float) and np.isnan(v)):
        return ""
    return f"{int(v):#x}"


def seconds(v: object) -> str:
    if v is None or v is pd.NaT or v is pd.NA:
        return ""
    try:
        return f"{pd.Timedelta(v).total_seconds():.6f}"
    except (TypeError, ValueError):
        return str(v)


def formatters(df: pd.DataFrame) -> dict:
    """pandas `to_html`/Styler formatters: hex for addresses, seconds for durations."""
    out: dict = {}
    for col in df.columns:
        s = df[col]
        if is_hex_column(col, s):
            out[col] = hex_or_blank
        elif pd.api.types.is_timedelta64_dtype(s.dtype):
            out[col] = seconds
    return out


def display_frame(df: pd.DataFrame) -> pd.DataFrame:
    """A copy for display only: addresses as hex text, durations as seconds, NA as blank."""
    out = pd.DataFrame(index=df.index)
    fmts = formatters(df)
    for col in df.columns:
        s = df[col]
        if col in fmts:
            out[col] = [fmts[col](v) for v in s]
        elif isinstance(s.dtype, pd.CategoricalDtype) or pd.api.types.is_string_dtype(s.dtype) \
                or s.dtype == object:
            out[col] = s.astype(object).where(s.notna(), "").astype(str)
        elif pd.api.types.is_bool_dtype(s.dtype):
            out[col] = s.astype(object).where(s.notna(), "")
        elif pd.api.types.is_extension_array_dtype(s.dtype):
            out[col] = s.astype(object).where(s.notna(), "") if s.isna().any() else s.astype(object)
        else:
            out[col] = s
    return out.reset_index(drop=True)


def static_table_html(df: pd.DataFrame, max_rows: int = STATIC_ROWS,
                      row_classes: Sequence[str] | None = None, caption: str | None = None) -> str:
    """A plain HTML table of the first rows (readable with JavaScript off)."""
    shown = display_frame(df.head(max_rows))
    parts = ['<table class="kdnb-table">']
    if caption:
        parts.append(f"<caption>{html.escape(caption)}</caption>")
    parts.append("<thead><tr>" + "".join(f"<th>{html.escape(str(c))}</th>" for c in shown.columns)
                 + "</tr></thead><tbody>")
    for i, row in enumerate(shown.itertuples(index=False)):
        cls = row_classes[i] if row_classes is not None and i < len(row_classes) else ""
        attr = f' class="{cls}"' if cls else ""
        parts.append(f"<tr{attr}>" + "".join(
            f"<td>{html.escape('' if v is None else str(v))}</td>" for v in row) + "</tr>")
    parts.append("</tbody></table>")
    if len(df) > max_rows:
        parts.append(f'<p class="kdnb-more">first {max_rows} of {len(df)} rows '
                     "(the full table is searchable with JavaScript on)</p>")
    return "".join(parts)


def itable_html(df: pd.DataFrame, highlight: Iterable[bool] | None = None, page_length: int = 15,
                caption: str | None = None) -> str:
    """An itables table (searchable, sortable, paged) of the display copy of `df`.

    `highlight` marks rows drawn with the `kdnb-hl` class (panic lines). Needs
    `itables.init_notebook_mode(connected=False)` once in the notebook for offline use.
    """
    from itables import JavascriptFunction, to_html_datatable

    shown = display_frame(df)
    kwargs: dict = dict(pageLength=page_length, lengthMenu=[10, 15, 25, 50, 100],
                        maxBytes=0, classes="display compact nowrap", showIndex=False,
                        display_logo_when_loading=False)
    if caption:
        kwargs["caption"] = caption
    if highlight is not None:
        flags = list(bool(x) for x in highlight)
        shown.insert(len(shown.columns), "_hl", flags)
        hl_idx = len(shown.columns) - 1
        kwargs["columnDefs"] = [{"targets": [hl_idx], "visible": False}]
        kwargs["createdRow"] = JavascriptFunction(
            "function (row, data, index) { if (data[%d] === true || data[%d] === 'true' || "
            "data[%d] === 'True') { row.classList.add('kdnb-hl'); } }" % (hl_idx, hl_idx, hl_idx))
        kwargs["allow_html"] = False
    with warnings.catch_warnings():  # createdRow is a DataTables option itables does not list
        warnings.simplefilter("ignore", SyntaxWarning)
        return to_html_datatable(shown, table_id=f"kdnb_{uuid.uuid4().hex[:10]}", **kwargs)


def table_html(df: pd.DataFrame, highlight: Iterable[bool] | None = None, page_length: int = 15,
               caption: str | None = None, interactive: bool = True) -> str:
    """Static first rows (shown without JavaScript) plus the interactive table (shown with it)."""
    flags = None if highlight is None else [bool(x) for x in highlight]
    row_classes = None if flags is None else ["kdnb-hl" if f else "" for f in flags]
    static = static_table_html(df, row_classes=row_classes, caption=caption)
    if not interactive:
        return f'<div class="kdnb-tablebox">{static}</div>'
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
table.kdnb-table { border-collapse: collapse; font-size: 12px; }
table.kdnb-table td, table.kdnb-table th { border: 1px solid #ddd; padding: 2px 6px; text-align: left; }
.kdnb-more { color: #666; font-size: 11px; }
</style>
"""
