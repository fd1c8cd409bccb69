"""`kdnb report CORE`: one self-contained offline HTML post-mortem of a process core.

Written straight from the `Core` (no notebook kernel: a core is small and its answer is quick),
in the order a reader needs: the answer (category, message, culprit, why), the process and its
signal, the faulting thread's stack, every other thread's stack, the evidence, the mapped images
(build ids, whether the file on disk matches), the mappings, the auxiliary vector, what the core
itself lacks, and the commands to look further. Tables go through kdnb.ui.tables (hex
addresses, human sizes, no index).
"""

from __future__ import annotations

import html
import os
import time
from typing import TYPE_CHECKING, Callable

from ..errors import KdnbError
from .tables import static_table_html

if TYPE_CHECKING:  # pragma: no cover
    from ..process.core import Core

ALL_ROWS = 10_000
STACK_ROWS = 100  # a stack overflow has thousands of identical frames
FRAME_COLUMNS = ["level", "pc", "function", "offset", "image", "how"]
CSS = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:72em;color:#222;line-height:1.4}
h1{font-size:1.5em}h2{font-size:1.2em;border-bottom:1px solid #ccc;margin-top:1.6em}
.kdnb-answer{border-left:6px solid #c62828;padding:.6em 1em;background:#fdf3f3}
.kdnb-table{border-collapse:collapse;font-size:.9em;display:block;overflow-x:auto;max-width:100%}
.kdnb-table td,.kdnb-table th{border:1px solid #ddd;padding:2px 6px;white-space:nowrap}
.kdnb-num{text-align:right}.kdnb-txt{text-align:left}
code{background:#f4f4f4;padding:0 3px}.kdnb-more{color:#666;font-size:.85em}
dl{display:grid;grid-template-columns:max-content auto;gap:2px 1em}dt{font-weight:600}
"""


def _esc(v: object) -> str:
    return html.escape(str(v))


def _facts(pairs: list[tuple[str, object]]) -> str:
    return "<dl>" + "".join(f"<dt>{_esc(k)}</dt><dd>{_esc(v)}</dd>" for k, v in pairs
                            if v is not None and v != "") + "</dl>"


def _section(title: str, body: str) -> str:
    return f"<h2>{_esc(title)}</h2>{body}"


def _answer(core: "Core") -> str:
    rc = core.root_cause()
    chain = "".join(f"<li>[{_esc(s['role'])}] {_esc(s['what'])}</li>" for s in rc.chain)
    notes = "".join(f"<li>{_esc(n)}</li>" for n in rc.notes)
    return (f"<div class='kdnb-answer'><p><b>{_esc(rc.category)}</b> "
            f"(confidence {rc.confidence:.0%}): {_esc(rc.message)}</p>"
            f"<p>Culprit: {_esc(rc.culprit)}</p><p>{_esc(rc.explanation)}</p>"
            + (f"<ol>{chain}</ol>" if chain else "")
            + (f"<p>Notes:</p><ul>{notes}</ul>" if notes else "") + "</div>")


def _process(core: "Core") -> str:
    p, s = core.process, core.signal
    where = core.explain(s.addr) if s.addr is not None and core.fault_signal else None
    sender = (f"pid {s.sender_pid} (uid {s.sender_uid})" if s.sender_pid is not None else None)
    return _facts([
        ("command", p.get("args")), ("executable", p.get("executable")), ("pid", p.get("pid")),
        ("parent pid", p.get("ppid")),
        ("user / group", f"{p.get('uid')} / {p.get('gid')}" if p.get("uid") is not None else None),
        ("threads", len(core.threads)), ("signal", str(s)), ("fault address", where),
        ("sent by", sender), ("faulting thread", core.faulting_tid),
    ])


def _stack(core: "Core", tid: int) -> str:
    try:
        frames = core.backtrace(tid)
    except KdnbError as exc:
        return f"<p>no backtrace: {_esc(exc)}</p>"
    cols = [c for c in FRAME_COLUMNS if c in frames.columns]
    return static_table_html(frames[cols], max_rows=STACK_ROWS)


def _threads(core: "Core") -> str:
    others = [int(t) for t in core.threads["tid"] if int(t) != core.faulting_tid]
    if not others:
        return "<p>the process had one thread</p>"
    return "".join(f"<h3>thread {tid}</h3>{_stack(core, tid)}" for tid in others)


def _core_itself(core: "Core") -> str:
    problems = "".join(f"<li>{_esc(x)}</li>" for x in core.problems)
    return _facts(core.facts()) + (f"<ul>{problems}</ul>" if problems else "")


def _journal(core: "Core") -> str:
    j = core.journal
    f = j.facts
    lines = [(k.replace("_", " "), f[k]) for k in ("unit", "slice", "cgroup", "exe", "cmdline", "cwd",
                                                   "hostname", "boot_id", "time", "rlimit", "package")]
    return (_facts(lines) + "<h3>Open files at the crash</h3>" + static_table_html(j.open_files, ALL_ROWS)
            + "<h3>Limits at the crash</h3>" + static_table_html(j.limits, ALL_ROWS))


def _further(core: "Core") -> str:
    exe = core.process.get("executable") or "PROGRAM"
    first = (f"<li><code>minidump-stackwalk {_esc(core.path)} SYMBOLS_DIR</code> (rust-minidump) for "
             "a second opinion on the stacks</li>" if core.format == "minidump" else
             f"<li><code>gdb {_esc(exe)} {_esc(core.path)}</code> then <code>bt full</code>, "
             "<code>info registers</code></li>")
    return ("<ul>" + first +
            f"<li><code>python3 -c \"import kdnb; c = kdnb.open('{_esc(core.path)}'); "
            "print(c.root_cause())\"</code></li>"
            "<li><code>kdnb coredump-check</code>: would the next crash leave a core?</li></ul>")


def process_report_html(core: "Core", progress: Callable[[str], None] | None = None) -> str:
    """The whole report as one HTML document."""
    say = progress or (lambda _line: None)
    p = core.process
    title = f"{p.get('comm')} (pid {p.get('pid')}): {core.signal.name}"
    parts = [f"<h1>Process post-mortem: {_esc(title)}</h1>"]
    for name, fn in (("Answer", _answer), ("Process and signal", _process)):
        say(name.lower())
        parts.append(_section(name, fn(core)))
    say("stacks")
    parts.append(_section(f"Stack of the faulting thread {core.faulting_tid}",
                          _stack(core, core.faulting_tid)))
    parts.append(_section("Other threads", _threads(core)))
    say("evidence, images, mappings")
    parts.append(_section("Evidence", static_table_html(core.root_cause().evidence, ALL_ROWS)))
    parts.append(_section("Mapped images", static_table_html(core.images, ALL_ROWS)))
    parts.append(_section("Mappings", static_table_html(core.mappings, ALL_ROWS)))
    parts.append(_section("Auxiliary vector", static_table_html(core.auxv, ALL_ROWS)))
    if core.journal is not None:
        parts.append(_section("systemd-coredump's journal entry", _journal(core)))
    parts.append(_section("The core file" if core.format != "minidump" else "The minidump",
                          _core_itself(core)))
    parts.append(_section("Look further", _further(core)))
    stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{_esc(title)}</title>"
            f"<style>{CSS}</style></head><body>{''.join(parts)}"
            f"<p class='kdnb-more'>made by kdnb on {stamp}</p></body></html>")


def make_process_report(path: str | os.PathLike, output: str | os.PathLike,
                        binaries: list[str] | None = None,
                        progress: Callable[[str], None] | None = None,
                        journal: str | os.PathLike | None = None) -> str:
    """Open a process core (with its systemd-coredump journal entry when given) and write its
    report to `output`; returns the output path."""
    from ..process import open_process

    with open_process(path, binaries=binaries, journal=journal) as core:
        text = process_report_html(core, progress)
    out = os.fspath(output)
    with open(out, "w", encoding="utf-8") as f:
        f.write(text)
    return out

