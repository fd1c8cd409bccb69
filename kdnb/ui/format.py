"""kdnb's one display layer: how a value, a column and a whole DataFrame look on screen.

The viewer, the report, `ui.table()` and the crash-style CLI all go through here: addresses and
offsets in hex, byte counts human-readable, durations in seconds with a fixed precision per
column (never a raw timedelta), NA blank, no index column, lists and dicts as short text.
DataFrames keep their real dtypes (addresses stay UInt64); only the *display copy* is text.
"""

from __future__ import annotations

import datetime as _dt
import html
import re
from typing import Any, Mapping

import numpy as np
import pandas as pd

# Columns shown in hex whatever their integer dtype.
HEX_COLUMNS = {"address", "base", "pc", "sp", "rip", "rsp", "rbp", "rax", "rbx", "rcx", "rdx",
               "rsi", "rdi", "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15", "cs", "ss",
               "eflags", "fs_base", "gs_base", "orig_rax", "ds", "es", "fs", "gs", "vaddr",
               "file_offset", "offset", "start", "end", "flags", "state_raw", "paddr", "task",
               "owner", "work", "worker", "superblock", "lock", "addr", "pointer", "object"}
# Columns holding byte counts, shown as `1.5 MiB`.
SIZE_COLUMNS = {"bytes", "size", "object_size", "total_bytes", "active_bytes", "rss", "memory",
                "free_bytes", "file_size"}
# Columns of seconds since boot (a log timestamp reads like dmesg's: microseconds).
TIMESTAMP_COLUMNS = {"time", "timestamp", "last_run", "start_time", "enqueued", "since"}
LIST_SHOWN = 20  # items of a list cell shown before "…"
KINDS = ("hex", "size", "seconds", "datetime", "bool", "list", "text", "number")


def is_na(v: Any) -> bool:
    """True for None, NA, NaN and NaT (False for lists and other containers)."""
    if v is None or v is pd.NA or v is pd.NaT:
        return True
    if isinstance(v, (float, np.floating)):
        return bool(np.isnan(v))
    if isinstance(v, (np.datetime64, np.timedelta64)):
        return bool(np.isnat(v))
    return False


def _name(column: object) -> str:
    return str(column).lower()


def is_hex_name(column: object) -> bool:
    """Whether a column of this name holds addresses or offsets."""
    name = _name(column)
    return name in HEX_COLUMNS or name.endswith(("_address", "_addr", "_offset", "_pc", "_ptr"))


def is_size_name(column: object) -> bool:
    """Whether a column of this name holds byte counts."""
    name = _name(column)
    return name in SIZE_COLUMNS or name.endswith("_bytes")


def column_kind(column: object, s: pd.Series) -> str:
    """How a column is shown: one of KINDS."""
    dtype = s.dtype
    if pd.api.types.is_bool_dtype(dtype):
        return "bool"
    if pd.api.types.is_timedelta64_dtype(dtype):
        return "seconds"
    if pd.api.types.is_datetime64_any_dtype(dtype):
        return "datetime"
    if pd.api.types.is_integer_dtype(dtype):
        if is_hex_name(column) or str(dtype) in ("UInt64", "uint64"):
            return "hex"
        return "size" if is_size_name(column) else "number"
    if pd.api.types.is_float_dtype(dtype):
        return "size" if is_size_name(column) else "number"
    if dtype == object:
        sample = next((v for v in s if not is_na(v)), None)
        if isinstance(sample, (list, tuple, set, dict)):
            return "list"
        if isinstance(sample, pd.Timedelta):
            return "seconds"
    return "text"


def hex_text(v: Any) -> str:
    """`0xffffffffc059509d` ('' for NA)."""
    return "" if is_na(v) else f"{int(v):#x}"


hex_or_blank = hex_text


def human_size(n: Any, na: str = "") -> str:
    """`1.5 MiB` for a byte count (`na` for NA)."""
    if is_na(n):
        return na
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return str(n)  # pragma: no cover


def seconds(v: Any, digits: int = 3, unit: bool = False) -> str:
    """A duration (timedelta, or seconds) as seconds with `digits` decimals; '' for NA."""
    if is_na(v):
        return ""
    try:
        secs = pd.Timedelta(v).total_seconds() if not isinstance(v, (int, float)) else float(v)
    except (TypeError, ValueError):
        return str(v)
    return f"{secs:.{digits}f}" + (" s" if unit else "")


def duration(v: Any) -> str:
    """A duration for a sentence: `9.78 s`, `3 min 12 s`, `2 h 5 min`, `4 d 3 h` ('' for NA)."""
    if is_na(v):
        return ""
    secs = pd.Timedelta(v).total_seconds() if not isinstance(v, (int, float)) else float(v)
    if abs(secs) < 60:
        return f"{secs:.3g} s" if abs(secs) >= 1 else f"{secs * 1000:.3g} ms"
    mins, sec = divmod(int(round(secs)), 60)
    hours, mins = divmod(mins, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days} d {hours} h"
    return f"{hours} h {mins} min" if hours else f"{mins} min {sec} s"


def when(v: Any) -> str:
    """A wall-clock time as `2026-11-28 00:55:44 UTC` ('' for NA)."""
    if is_na(v):
        return ""
    ts = pd.Timestamp(v)
    if ts.tzinfo is None:
        ts = ts.tz_localize(_dt.timezone.utc)
    return ts.tz_convert(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def one_line(text: Any) -> str:
    """Multi-line text on one line (lines joined by ' | '), for table cells."""
    parts = [p.strip() for p in str(text).splitlines() if p.strip()]
    return " | ".join(parts)


def value_text(v: Any, key: object = "") -> str:
    """One value as text, the way its key suggests (hex for address-like keys and for integers
    too large to be anything else, human sizes for byte counts)."""
    if isinstance(v, Mapping):
        return "; ".join(f"{k}: {value_text(x, k)}" for k, x in v.items())
    if isinstance(v, (list, tuple, set)):
        items = list(v)
        shown = ", ".join(value_text(x, key) for x in items[:LIST_SHOWN])
        return shown + (f", … ({len(items)})" if len(items) > LIST_SHOWN else "")
    if is_na(v):
        return ""
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (int, np.integer)):
        if is_hex_name(key) or int(v) > 0xFFFFFFFF:
            return f"{int(v):#x}"
        return human_size(v) if is_size_name(key) else str(int(v))
    if isinstance(v, (float, np.floating)):
        return human_size(v) if is_size_name(key) else f"{float(v):.4g}"
    if isinstance(v, (pd.Timedelta, _dt.timedelta, np.timedelta64)):
        return seconds(v, 6 if _name(key) in TIMESTAMP_COLUMNS else 3, unit=True)
    if isinstance(v, (pd.Timestamp, _dt.datetime, np.datetime64)):
        return when(v)
    return one_line(v)


def evidence_lines(evidence: Mapping[str, Any] | None) -> list[str]:
    """Evidence of a check as readable `key: value` lines."""
    if not evidence:
        return []
    return [f"{k}: {value_text(v, k)}" for k, v in evidence.items()]


def column_text(column: object, s: pd.Series, kind: str | None = None) -> list[str]:
    """Every cell of one column as display text (NA blank), the same text `value_text` and the
    kind's formatter give one cell, made a column at a time (a 200,000-line log in well under a
    second)."""
    kind = kind or column_kind(column, s)
    if kind == "hex":
        return ["" if v is None else f"{int(v):#x}" for v in _objects(s)]
    if kind == "size":
        return [human_size(v) for v in s]
    if kind == "seconds":
        digits = 6 if _name(column) in TIMESTAMP_COLUMNS else 3
        if pd.api.types.is_timedelta64_dtype(s.dtype):
            secs = s.dt.total_seconds().to_numpy(dtype=float, na_value=np.nan)
            return ["" if x != x else f"{x:.{digits}f}" for x in secs.tolist()]
        return [seconds(v, digits) for v in s]
    if kind == "datetime":
        return [when(v) for v in s]
    if kind == "number" and pd.api.types.is_float_dtype(s.dtype):
        return ["" if is_na(v) else f"{float(v):.4g}" for v in s]
    if kind == "number" and pd.api.types.is_integer_dtype(s.dtype):
        return ["" if v is None else (f"{v:#x}" if v > 0xFFFFFFFF else str(v)) for v in _objects(s)]
    if kind == "text":  # plain strings without the type dispatch of value_text
        breaks = _LINE_BREAKS.search
        return [(one_line(v) if breaks(v) else v.strip()) if type(v) is str
                else ("" if v is None else value_text(v, column)) for v in _objects(s)]
    return [value_text(v, column) for v in s]


_LINE_BREAKS = re.compile("[\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029]")


def _objects(s: pd.Series) -> list:
    """The column's values as Python objects, NA as None."""
    return s.to_numpy(dtype=object, na_value=None).tolist()


def with_labels(df: pd.DataFrame) -> pd.DataFrame:
    """The frame with a meaningful index (named, or of strings) turned into its first column;
    a plain 0..n-1 index is dropped."""
    idx = df.index
    meaningful = idx.name is not None or any(n is not None for n in idx.names) or \
        (idx.dtype == object or pd.api.types.is_string_dtype(idx.dtype))
    if not meaningful or isinstance(idx, pd.RangeIndex):
        return df.reset_index(drop=True)
    names = [n or ("item" if i == 0 else f"level_{i}") for i, n in enumerate(idx.names)]
    out = df.copy()
    out.index = idx.set_names(names)
    return out.reset_index()


def display_frame(df: pd.DataFrame) -> pd.DataFrame:
    """A copy for display only: every cell text (hex, sizes, seconds, NA blank), no index."""
    df = with_labels(df)
    out = pd.DataFrame(index=range(len(df)))
    for pos, col in enumerate(df.columns):
        out.insert(pos, str(col), column_text(col, df.iloc[:, pos]), allow_duplicates=True)
    return out


def numeric_columns(df: pd.DataFrame) -> list[str]:
    """Columns shown right-aligned: plain counts and numbers (not addresses, sizes or text)."""
    df = with_labels(df)
    return [str(c) for c in df.columns if column_kind(c, df[c]) in ("number", "size", "seconds")]


def cell_html(text: str) -> str:
    """A cell's text escaped for HTML."""
    return html.escape(text)
