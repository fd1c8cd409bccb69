"""The one-screen summary of a dump: what `Dump._repr_html_` shows and the viewer's first tab."""

from __future__ import annotations

import datetime as _dt
import html
from typing import Any

from ._safe import attempt, get
from .filters import panic_line

COUNTED = [("cpus", "CPUs"), ("tasks", "tasks"), ("log", "log lines"), ("modules", "modules"),
           ("slab", "slab caches")]


def _sys_value(info: dict | None, *keys: str) -> Any:
    if not info:
        return None
    for key in keys:
        if key in info and info[key] not in (None, ""):
            return info[key]
    return None


def crash_time(dump: Any, info: dict | None = None) -> str | None:
    """Crash wall-clock time, UTC: sys view, else VMCOREINFO CRASHTIME, else the dump header."""
    value = _sys_value(info, "crash_time", "crashtime", "time")
    if value is None:
        vmci, _ = get(dump, "vmcoreinfo")
        raw = (vmci or {}).get("CRASHTIME")
        if raw:
            try:
                value = _dt.datetime.fromtimestamp(int(raw), tz=_dt.timezone.utc)
            except (ValueError, OverflowError, OSError):
                value = None
    if value is None:
        header, _ = get(dump, "header")
        value = (header or {}).get("timestamp")
    if value is None:
        return None
    if isinstance(value, (int, float)):
        value = _dt.datetime.fromtimestamp(value, tz=_dt.timezone.utc)
    if isinstance(value, _dt.datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S %Z").strip()
    return str(value)


def summary_facts(dump: Any, counts: bool = True, verdict: bool = True) -> dict:
    """Facts of the summary as a dict (values are str/int or None); `missing` says what failed."""
    missing: dict[str, str] = {}
    facts: dict[str, Any] = {"path": getattr(dump, "path", None)}
    fmt, why = get(dump, "format")
    facts["format"] = fmt
    vmci, why = get(dump, "vmcoreinfo")
    info, why_sys = get(dump, "sys_info")
    if why_sys:
        missing["system summary"] = why_sys
    facts["release"] = _sys_value(info, "release") or (vmci or {}).get("OSRELEASE")
    facts["machine"] = _sys_value(info, "machine")
    facts["crash_time"] = crash_time(dump, info)
    uptime = _sys_value(info, "uptime")
    log, why_log = get(dump, "log")
    if why_log:
        missing["log"] = why_log
    if uptime is None and log is not None and len(log) and "time" in log:
        uptime = log["time"].max()
    if uptime is not None:
        try:
            import pandas as pd

            uptime = f"{pd.Timedelta(uptime).total_seconds():.1f} s"
        except (TypeError, ValueError):
            uptime = str(uptime)
    facts["uptime"] = uptime
    panic = _sys_value(info, "panic_message", "panic", "panic_msg")
    if panic is None and log is not None:
        panic = panic_line(log)
    facts["panic"] = panic
    facts["panic_cpu"] = _sys_value(info, "panic_cpu")
    facts["tainted"] = _sys_value(info, "tainted", "taint")
    if verdict:
        val, why = attempt(dump.validate)
        facts["verdict"] = getattr(val, "verdict", None) if val is not None else None
        if why:
            missing["validation"] = why
    if counts:
        for attr, label in COUNTED:
            value, why = get(dump, attr)
            facts[label] = None if value is None else len(value)
            if why:
                missing[label] = why
    facts["missing"] = missing
    return facts


VERDICT_COLOURS = {"usable": "#1a7f37", "degraded": "#9a6700", "unusable": "#cf222e"}


def dump_html(dump: Any, counts: bool = True, verdict: bool = True) -> str:
    """A compact HTML card: release, crash time, verdict, panic line, counts."""
    f = summary_facts(dump, counts=counts, verdict=verdict)
    esc = lambda v: html.escape(str(v))  # noqa: E731
    rows = []

    def row(label: str, value: Any, raw: bool = False) -> None:
        if value is None or value == "":
            return
        rows.append(f"<tr><th style='text-align:left;padding-right:1em'>{esc(label)}</th>"
                    f"<td style='text-align:left'>{value if raw else esc(value)}</td></tr>")

    row("release", f["release"])
    row("format", f["format"])
    row("crash time", f["crash_time"])
    row("uptime", f["uptime"])
    if f.get("verdict"):
        colour = VERDICT_COLOURS.get(str(f["verdict"]), "#444")
        row("verdict", f"<b style='color:{colour}'>{esc(f['verdict'])}</b>", raw=True)
    if f["panic"]:
        row("panic", f"<code style='color:#7a0000'>{esc(f['panic'])}</code>", raw=True)
    row("panic CPU", f["panic_cpu"])
    row("tainted", f["tainted"])
    counted = [f"{f[label]} {label}" for _, label in COUNTED if f.get(label) is not None]
    row("counts", ", ".join(counted) if counted else None)
    row("file", f["path"])
    missing = ""
    if f["missing"]:
        items = "".join(f"<li>{esc(k)}: not available: {esc(v)}</li>" for k, v in f["missing"].items())
        missing = f"<details><summary>{len(f['missing'])} piece(s) not available</summary><ul>{items}</ul></details>"
    return ("<div class='kdnb-summary'><div><b>kdnb.Dump</b></div>"
            f"<table style='border-collapse:collapse'>{''.join(rows)}</table>{missing}</div>")


def dump_text(dump: Any, counts: bool = True, verdict: bool = True) -> str:
    """The same facts as plain text."""
    f = summary_facts(dump, counts=counts, verdict=verdict)
    lines = [f"{k:<11}{f[k]}" for k in ("release", "format", "crash_time", "uptime", "verdict",
                                        "panic", "panic_cpu", "tainted", "path") if f.get(k)]
    counted = [f"{f[label]} {label}" for _, label in COUNTED if f.get(label) is not None]
    if counted:
        lines.append(f"{'counts':<11}{', '.join(counted)}")
    for k, v in f["missing"].items():
        lines.append(f"{'missing':<11}{k}: {v}")
    return "\n".join(lines)
