"""One dump -> one row of the triage table; a dump that cannot be read is a row with its error.

`triage_item` is what each Dask task runs: it opens the dump, validates the capture, works out
the root cause, closes the dump and returns a plain dict (no DataFrame, no open file crosses
the wire). It never raises: a KdnbError is the row's `error`, and so is an unexpected exception
(named with where it happened), so that one bad dump in ten thousand cannot abort the run.
"""

from __future__ import annotations

import os
import time
import traceback
import warnings
from datetime import datetime, timezone
from typing import Any

import pandas as pd

from ..errors import KdnbError
from .discover import Item
from .signature import frame_chain, guilty_frame, parse_frame, signature, title

COLUMNS: dict[str, str] = {
    "path": "str", "files": "Int16", "size": "Int64", "mtime": "datetime64[ns, UTC]",
    "format": "str", "release": "str", "build_id": "str", "hostname": "str",
    "crash_time": "datetime64[ns, UTC]", "verdict": "str", "category": "str", "title": "str",
    "guilty_function": "str", "guilty_module": "str", "signature": "str", "frames": "str",
    "taints": "str", "comm": "str", "confidence": "float64", "message": "str", "answer": "str",
    "seconds": "float64", "cached": "bool", "error": "str",
}
ERROR_VERDICTS = ("unusable", "not a dump")


def _stat(paths: tuple[str, ...]) -> dict[str, Any]:
    try:
        sts = [os.stat(p) for p in paths]
    except OSError:
        return {}
    return {"size": sum(s.st_size for s in sts),
            "mtime": datetime.fromtimestamp(max(s.st_mtime for s in sts), tz=timezone.utc)}


def _where(exc: BaseException) -> str:
    tb = traceback.extract_tb(exc.__traceback__)
    at = f" (at {os.path.basename(tb[-1].filename)}:{tb[-1].lineno})" if tb else ""
    return f"internal error: {type(exc).__name__}: {exc}{at}"


def triage_item(item: Item) -> dict[str, Any]:
    """The row of one item (see COLUMNS); never raises."""
    t0 = time.perf_counter()
    row: dict[str, Any] = {"path": item.path, "files": len(item.paths), "cached": False,
                           **_stat(item.paths)}
    if item.error is not None:
        row.update(error=item.error, verdict="not a dump")
    else:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # incompleteness shows in the verdict
                _fill(row, item)
        except KdnbError as exc:
            row["error"] = " ".join(str(exc).split())
            row.setdefault("verdict", _verdict_of_unopened(item))
        except Exception as exc:  # noqa: BLE001 - a kdnb bug on one dump must not end the run
            row["error"] = _where(exc)
    row["seconds"] = time.perf_counter() - t0
    return row


def _verdict_of_unopened(item: Item) -> str:
    from ..analysis.validate import validate_path

    if len(item.paths) > 1:
        return "unusable"
    try:
        return validate_path(item.path).verdict
    except Exception:  # noqa: BLE001 - validation failing on this file must not end the run
        return "not a dump"


def _fill(row: dict[str, Any], item: Item) -> None:
    from ..api import Dump
    from ..process.source import looks_like_process_core

    if len(item.paths) == 1 and looks_like_process_core(item.path):
        row["verdict"] = "not a dump"
        raise KdnbError(f"{item.path}: a userspace process core, not a kernel crash dump "
                        "(kdnb.open(path) reads it as a kdnb.process.Core)")
    with Dump(item.paths if len(item.paths) > 1 else item.path) as d:
        _fill_open(row, d)


def _fill_open(row: dict[str, Any], d: Any) -> None:
    """Fill the row from an opened dump: identity, verdict, root cause, title, signature."""
    info = d.vmcoreinfo
    uts = d.header.get("utsname") or {}
    row.update(format=d.format, release=info.get("OSRELEASE") or uts.get("release"),
               build_id=info.get("BUILD-ID"), hostname=uts.get("nodename"))
    if info.get("CRASHTIME", "").isdigit():
        row["crash_time"] = datetime.fromtimestamp(int(info["CRASHTIME"]), tz=timezone.utc)
    validation = d.validate()
    row["verdict"] = validation.verdict
    rc = d.root_cause()
    _sys(row, d)
    frames = [f for f in (parse_frame(str(t)) for t in
                          rc.evidence.loc[rc.evidence["kind"] == "frame", "text"]) if f]
    func, mod = guilty_frame((rc.culprit.function, rc.culprit.module), frames)
    row.update(category=rc.category, guilty_function=func, guilty_module=mod,
               comm=rc.culprit.comm, confidence=float(rc.confidence), message=rc.message,
               answer=" -> ".join(step["what"] for step in rc.chain),
               frames=frame_chain([(func, mod)] + frames) if func else frame_chain(frames))
    row["title"] = title(rc.category, func, mod, rc.message)
    if row["verdict"] in ERROR_VERDICTS:
        failed = next((c for c in validation.items if c.status == "fail" and c.blocking),
                      None)
        row["error"] = f"capture {row['verdict']}: " + (failed.detail if failed else "")
    else:
        row["signature"] = signature(row["title"])


def _sys(row: dict[str, Any], d: Any) -> None:
    """Host name, crash time and kernel taints from the system summary, when it reads."""
    try:
        sys_info = d.sys_info
    except KdnbError:
        return
    if sys_info.get("nodename"):
        row["hostname"] = sys_info["nodename"]
    if sys_info.get("crash_time") is not None and not pd.isna(sys_info["crash_time"]):
        row["crash_time"] = pd.Timestamp(sys_info["crash_time"]).to_pydatetime()
    row["taints"] = sys_info.get("tainted") or ""


def rows_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """The triage table with the stable column order and dtypes of COLUMNS."""
    df = pd.DataFrame(rows, columns=list(COLUMNS))
    for col, dtype in COLUMNS.items():
        if dtype == "str":
            df[col] = df[col].astype(object).where(df[col].notna(), None)
        elif dtype.startswith("datetime"):
            df[col] = pd.to_datetime(df[col], utc=True).astype(dtype)
        elif dtype == "bool":
            df[col] = df[col].fillna(False).astype(bool)
        else:
            df[col] = df[col].astype(dtype)
    return df.reset_index(drop=True)
