"""The last seconds before the crash as one table: log lines, tasks' last runs, what each CPU was
running since when, and the panic, on the kernel's clock (seconds since boot)."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pandas as pd

from ._safe import get
from .filters import panic_line

COLUMNS = ["time", "before", "source", "cpu", "pid", "what"]
TASK_ROWS = 15  # most recent task runs shown
_CALLER_RE = re.compile(r"^([TC])(\d{1,7})$")
# Lines of an oops/panic report that a timeline folds into one row: frames, registers, code bytes.
_DETAIL_RE = re.compile(r"^\s*(?:\? )?[\w.$]+\+0x[0-9a-f]+/0x[0-9a-f]+|^\s*</?(?:TASK|IRQ|NMI|SOFTIRQ)>"
                        r"|^\s*(?:RIP|RSP|RAX|RDX|RBP|R10|R13|FS|CS|CR2|DR0|DR3|PKRU|Code):"
                        r"|^\s*Call Trace:|^\s*Hardware name:|^\s*Tainted: \[")


def _secs(v: Any) -> float | None:
    if v is None or v is pd.NaT or (isinstance(v, float) and pd.isna(v)):
        return None
    try:
        return pd.Timedelta(v).total_seconds()
    except (TypeError, ValueError):
        return None


def crash_clock(dump: Any, log: pd.DataFrame | None) -> float | None:
    """The crash on the kernel's clock: the panic line's time, else the uptime, else the last
    log record."""
    if log is not None and len(log) and "time" in log:
        line = panic_line(log)
        if line is not None:
            hit = log[log["text"].astype(object) == line]
            if len(hit):
                return _secs(hit["time"].iloc[-1])
    info, _ = get(dump, "sys_info")
    up = _secs((info or {}).get("uptime"))
    if up is not None:
        return up
    if log is not None and len(log) and "time" in log:
        return _secs(log["time"].max())
    return None


def _caller(caller: Any) -> tuple[int | None, int | None]:
    m = _CALLER_RE.match(str(caller or ""))
    if not m:
        return None, None
    return (None, int(m.group(2))) if m.group(1) == "C" else (int(m.group(2)), None)


def _fold(rows: list[dict], folded: list[dict]) -> None:
    """One row for a run of call-trace/register lines (then empties `folded`)."""
    if folded:
        first = folded[0]
        rows.append({"time": first["time"], "source": "log", "cpu": first["cpu"],
                     "pid": first["pid"], "what": f"… {len(folded)} line{'s' if len(folded) > 1 else ''} of call trace "
                     "and registers"})
        folded.clear()


def _surviving(recent: pd.DataFrame, panic: str | None,
               max_rows: int) -> tuple[pd.DataFrame, list[int]]:
    """The log lines whose timeline rows can outlive the cut to the newest `max_rows` rows, and
    the row each becomes: a line, or a run of folded detail lines, is one row at its first
    line's time, and a row with `max_rows` log rows after it in the time order is cut whatever
    else joins them. The panic line's row is always kept. A 200,000-line log then costs one
    regex pass, not a row object per line."""
    texts = [str(t) for t in recent["text"].astype(object)]
    if not texts:
        return recent, []
    is_panic = np.array([t == panic for t in texts], dtype=bool)
    detail = np.array([bool(_DETAIL_RE.search(t)) for t in texts], dtype=bool) & ~is_panic
    starts = ~detail | np.r_[True, ~detail[:-1]]
    unit = np.cumsum(starts) - 1
    times = recent["time"].dt.total_seconds().to_numpy(dtype=float, na_value=np.nan)[starts]
    kept = np.zeros(int(unit[-1]) + 1, dtype=bool)
    kept[np.argsort(times, kind="stable")[-max_rows:]] = True
    kept[unit[is_panic]] = True
    keep = kept[unit]
    return recent[keep], unit[keep].tolist()


def timeline(dump: Any, window: float = 5.0, max_rows: int = 60) -> pd.DataFrame:
    """Events of the last `window` seconds before the crash, oldest first (at most `max_rows`:
    the newest, the panic always kept). `before` is seconds before the crash."""
    log, _ = get(dump, "log")
    end = crash_clock(dump, log)
    rows: list[dict] = []
    if end is None:
        return pd.DataFrame(columns=COLUMNS)
    start = end - window
    panic = panic_line(log) if log is not None else None
    if log is not None and len(log):
        secs = log["time"].dt.total_seconds()
        recent, units = _surviving(log[(secs >= start).fillna(False).astype(bool)], panic, max_rows)
        folded: list[dict] = []
        fold_unit = -1
        for row, unit in zip(recent.itertuples(index=False), units):
            pid, cpu = _caller(getattr(row, "caller", None))
            text = str(row.text)
            if text != panic and _DETAIL_RE.search(text):
                if unit != fold_unit:
                    _fold(rows, folded)
                    fold_unit = unit
                folded.append({"time": _secs(row.time), "cpu": cpu, "pid": pid})
                continue
            _fold(rows, folded)
            rows.append({"time": _secs(row.time), "source": "panic" if text == panic else "log",
                         "cpu": cpu, "pid": pid, "what": text})
        _fold(rows, folded)
    tasks, _ = get(dump, "tasks")
    if tasks is not None and len(tasks) and "last_run" in tasks:
        secs = tasks["last_run"].dt.total_seconds()
        ran = tasks[((secs >= start) & (secs > 0)).fillna(False).astype(bool)]
        ran = ran.assign(ran_at=secs[ran.index]).sort_values("ran_at").tail(TASK_ROWS)
        for row in ran.itertuples(index=False):
            rows.append({"time": row.ran_at, "source": "task", "cpu": row.cpu, "pid": row.pid,
                         "what": f"{row.comm} [{row.state}] last ran"})
    cpus, _ = get(dump, "cpu_state")
    if cpus is not None and len(cpus):
        for row in cpus.itertuples(index=False):
            since = _secs(getattr(row, "running_for", None))
            where = getattr(row, "function", None)
            what = (f"{row.comm} starts its current run" + (f" (now in {where})" if isinstance(
                where, str) else "") + (", the CPU that panicked" if getattr(row, "panic", False) else ""))
            rows.append({"time": end - since if since is not None else end, "source": "cpu",
                         "cpu": row.cpu, "pid": row.pid, "what": what})
    df = pd.DataFrame(rows, columns=["time", "source", "cpu", "pid", "what"])
    if not len(df):
        return pd.DataFrame(columns=COLUMNS)
    df = df.sort_values("time", kind="stable").reset_index(drop=True)
    if len(df) > max_rows:
        keep = df.index >= len(df) - max_rows
        df = df[keep | (df["source"] == "panic").to_numpy()].reset_index(drop=True)
    out = pd.DataFrame({
        "time": pd.to_timedelta(df["time"], unit="s"),
        "before": pd.to_timedelta((end - df["time"]).clip(lower=0), unit="s"),
        "source": pd.Categorical(df["source"], categories=["log", "task", "cpu", "panic"]),
        "cpu": pd.array(df["cpu"], dtype="Int16"), "pid": pd.array(df["pid"], dtype="Int32"),
        "what": pd.array(df["what"].astype(str), dtype="string")})
    out.attrs["kdnb"] = {"crash_clock": end, "window": window}
    return out
