"""Printing views for the crash-style commands: aligned text tables with hex addresses and human
sizes, or `--json` / `--csv` for scripts. Addresses are hex strings in every format (a JSON
number cannot hold a 64-bit kernel address exactly)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Iterable, TextIO

import numpy as np
import pandas as pd

from ..ui.format import human_size as _human_size
from ..ui.format import is_hex_name, is_size_name, one_line, seconds

# Columns whose JSON/CSV values are hex strings (a JSON number cannot hold a kernel address).
ADDRESS_COLUMNS = {"address", "task", "owner", "work", "worker", "superblock", "base", "pc", "sp"}


def human_size(n: Any) -> str:
    """`1.5 MiB` for a byte count ('-' for NA)."""
    return _human_size(n, na="-")


def _seconds(v: Any) -> Any:
    return None if pd.isna(v) else round(pd.Timedelta(v).total_seconds(), 6)


def _plain(v: Any, column: str) -> Any:
    """A JSON/CSV value: hex for addresses, seconds for durations, lists kept (JSON) ."""
    if isinstance(v, (list, tuple)):
        return [_plain(x, "") for x in v]
    if v is None or (not isinstance(v, (list, tuple)) and pd.isna(v)):
        return None
    if column in ADDRESS_COLUMNS:
        return f"{int(v):#x}"
    if isinstance(v, pd.Timedelta):
        return _seconds(v)
    if hasattr(v, "item"):
        return v.item()
    return v


def records(df: pd.DataFrame) -> list[dict[str, Any]]:
    """The frame as plain rows (what --json prints)."""
    cols = list(df.columns)
    return [{c: _plain(v, c) for c, v in zip(cols, row)} for row in df.itertuples(index=False, name=None)]


def _text_cell(v: Any, column: str) -> str:
    """A text-table cell through kdnb's display layer (crash's conventions: '-' for NA, hex
    addresses without 0x)."""
    if isinstance(v, (list, tuple)):
        return ",".join("-" if x is None else str(x) for x in v)
    if v is None or pd.isna(v):
        return "-"
    if is_hex_name(column) and isinstance(v, (int, np.integer)):
        return f"{int(v):x}"
    if is_size_name(column):
        return human_size(v)
    if isinstance(v, pd.Timedelta):
        return seconds(v, 3) + "s"
    return one_line(v)


def table(df: pd.DataFrame, out: TextIO | None = None) -> None:
    """An aligned text table: left-aligned text, right-aligned numbers, no index."""
    out = out or sys.stdout
    if not len(df):
        print("(none)", file=out)
        return
    cols = list(df.columns)
    cells = [[_text_cell(v, c) for v, c in zip(row, cols)] for row in df.itertuples(index=False, name=None)]
    heads = [c.upper() for c in cols]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(heads)]
    numeric = [(pd.api.types.is_numeric_dtype(df[c]) and not is_hex_name(c)) or is_size_name(c)
               for c in cols]

    def line(values: Iterable[str]) -> str:
        return "  ".join(v.rjust(w) if num else v.ljust(w)
                         for v, w, num in zip(values, widths, numeric)).rstrip()

    print(line(heads), file=out)
    for r in cells:
        print(line(r), file=out)


def emit(df: pd.DataFrame, args: argparse.Namespace, text: Any = None) -> None:
    """--json, --csv, or the text form (`text(df)` when given, else an aligned table); then
    one line when the view is incomplete."""
    if getattr(args, "json", False):
        print(json.dumps(records(df), indent=1, default=str))
    elif getattr(args, "csv", False):
        flat = pd.DataFrame(records(df), columns=list(df.columns))
        for c in flat.columns:
            flat[c] = [";".join(map(str, v)) if isinstance(v, list) else v for v in flat[c]]
        flat.to_csv(sys.stdout, index=False)
    elif text is not None:
        text(df)
    else:
        table(df)
    gap = df.attrs.get("kdnb", {}).get("incomplete")
    if gap and not getattr(args, "json", False):
        print(f"kdnb: incomplete: {gap['reason']}", file=sys.stderr)
