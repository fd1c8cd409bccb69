"""Filter logic of the viewers as plain classes: no widgets, testable headless.

Each filter is a small dataclass whose `apply(df)` returns the rows that pass; the widget viewers
only copy control values into these fields.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd

# Log lines that tell why the kernel died (highlighted in the log view and the report).
PANIC_PATTERNS = [
    r"Kernel panic - not syncing",
    r"\bBUG: ",
    r"\bOops\b",
    r"general protection fault",
    r"sysrq: Trigger a crash",
    r"unable to handle (?:kernel )?(?:NULL pointer dereference|page fault|paging request)",
    r"watchdog: BUG: soft lockup",
    r"NMI watchdog: .*hard LOCKUP",
    r"INFO: task .* blocked (?:in I/O wait )?for more than",
    r"rcu: INFO: .*detected stall",
    r"Out of memory",
    r"Machine check",
    r"Attempted to kill init",
    r"kernel BUG at",
    r"WARNING: CPU:",
    r"^RIP: 0010:",
]
PANIC_RE = re.compile("|".join(f"(?:{p})" for p in PANIC_PATTERNS))
LEVELS = ["emerg", "alert", "crit", "err", "warning", "notice", "info", "debug"]
TASK_STATES = ["R", "S", "D", "T", "t", "X", "Z", "P", "I"]


def panic_mask(log: pd.DataFrame) -> pd.Series:
    """True for the log lines that explain the crash."""
    if len(log) == 0 or "text" not in log:
        return pd.Series(np.zeros(len(log), dtype=bool), index=log.index)
    text = log["text"].astype(object).fillna("").astype(str)
    return text.str.contains(PANIC_RE, regex=True)


def panic_line(log: pd.DataFrame) -> str | None:
    """The decisive line: the panic() message, else the first Oops/BUG-like line."""
    if len(log) == 0 or "text" not in log:
        return None
    text = log["text"].astype(object).fillna("").astype(str)
    hits = text[text.str.contains("Kernel panic - not syncing", regex=False)]
    if len(hits):
        return hits.iloc[-1]
    mask = panic_mask(log)
    hits = text[mask & ~text.str.startswith("RIP: ")]
    return hits.iloc[0] if len(hits) else None


def _contains(s: pd.Series, needle: str, regex: bool) -> pd.Series:
    s = s.astype(object).fillna("").astype(str)
    if not regex:
        return s.str.contains(needle, case=False, regex=False)
    try:  # an invalid pattern is a substring (checked here: pyarrow-backed strings raise their own error)
        re.compile(needle)
    except re.error:
        return s.str.contains(needle, case=False, regex=False)
    return s.str.contains(needle, case=False, regex=True)


@dataclass
class TaskFilter:
    """Tasks by state letters, CPU, kernel-thread-ness and a name substring (or regex)."""

    states: Sequence[str] = ()          # empty: all states
    cpus: Sequence[int] = ()            # empty: all CPUs
    kthread: bool | None = None         # None: both, True: kernel threads only, False: user only
    name: str = ""                      # substring of comm (case-insensitive); regex if `regex`
    regex: bool = False

    def apply(self, tasks: pd.DataFrame) -> pd.DataFrame:
        keep = pd.Series(True, index=tasks.index)
        if self.states and "state" in tasks:
            keep &= tasks["state"].astype(object).isin(list(self.states))
        if self.cpus and "cpu" in tasks:
            keep &= tasks["cpu"].isin([int(c) for c in self.cpus]).fillna(False).astype(bool)
        if self.kthread is not None and "is_kthread" in tasks:
            keep &= tasks["is_kthread"].fillna(False).astype(bool) == bool(self.kthread)
        if self.name and "comm" in tasks:
            keep &= _contains(tasks["comm"], self.name, self.regex)
        return tasks[keep.astype(bool)]


@dataclass
class LogFilter:
    """Log lines by level (at most this verbose), a time window and a text search."""

    max_level: int = 7                  # 0 emerg … 7 debug; keeps level <= max_level
    levels: Sequence[str] = ()          # explicit level names; overrides max_level when given
    start: float | None = None          # seconds since boot, inclusive
    end: float | None = None            # seconds since boot, inclusive
    last_seconds: float | None = None   # only the last N seconds before the last record
    text: str = ""
    regex: bool = False
    panic_only: bool = False

    def apply(self, log: pd.DataFrame) -> pd.DataFrame:
        keep = pd.Series(True, index=log.index)
        if self.levels and "level_name" in log:
            keep &= log["level_name"].astype(object).isin(list(self.levels))
        elif self.max_level < 7 and "level" in log:
            keep &= (log["level"] <= self.max_level).fillna(True).astype(bool)
        if "time" in log and len(log):
            secs = log["time"].dt.total_seconds()
            if self.start is not None:
                keep &= (secs >= self.start).fillna(False).astype(bool)
            if self.end is not None:
                keep &= (secs <= self.end).fillna(False).astype(bool)
            if self.last_seconds is not None:
                last = secs.max()
                keep &= (secs >= last - self.last_seconds).fillna(False).astype(bool)
        if self.text and "text" in log:
            keep &= _contains(log["text"], self.text, self.regex)
        if self.panic_only:
            keep &= panic_mask(log)
        return log[keep.astype(bool)]


@dataclass
class SlabFilter:
    """Slab caches by name and object size, largest first."""

    name: str = ""
    regex: bool = False
    min_size: int | None = None         # object size in bytes
    max_size: int | None = None
    min_bytes: int | None = None        # total bytes of the cache
    sort_by: str = "total_bytes"
    top: int | None = None

    def apply(self, slab: pd.DataFrame) -> pd.DataFrame:
        keep = pd.Series(True, index=slab.index)
        if self.name and "name" in slab:
            keep &= _contains(slab["name"], self.name, self.regex)
        size_col = "object_size" if "object_size" in slab else ("size" if "size" in slab else None)
        if size_col is not None:
            if self.min_size is not None:
                keep &= (slab[size_col] >= self.min_size).fillna(False).astype(bool)
            if self.max_size is not None:
                keep &= (slab[size_col] <= self.max_size).fillna(False).astype(bool)
        if self.min_bytes is not None and "total_bytes" in slab:
            keep &= (slab["total_bytes"] >= self.min_bytes).fillna(False).astype(bool)
        out = slab[keep.astype(bool)]
        if self.sort_by and self.sort_by in out:
            out = out.sort_values(self.sort_by, ascending=False, kind="stable")
        if self.top is not None:
            out = out.head(self.top)
        return out


@dataclass
class TaskChoice:
    """Labels for a task picker: 'pid comm [state] cpu N'."""

    tasks: pd.DataFrame = field(default_factory=pd.DataFrame)

    def options(self, limit: int = 500) -> list[tuple[str, int]]:
        out = []
        for row in self.tasks.head(limit).itertuples(index=False):
            pid = getattr(row, "pid", None)
            if pid is None or pid is pd.NA:
                continue
            comm = getattr(row, "comm", "")
            state = getattr(row, "state", "")
            cpu = getattr(row, "cpu", "")
            cur = " *" if bool(getattr(row, "is_current", False) or False) else ""
            out.append((f"{int(pid):>6} {comm} [{state}] cpu {cpu}{cur}", int(pid)))
        return out
