"""HTML for kdnb's result objects through the display layer: any DataFrame as a kdnb table (never
pandas' default HTML), the capture validation with its evidence as `key: value` lines, the root
cause with its evidence table. The viewer and the report call `html_of`."""

from __future__ import annotations

import html
from typing import Any

import pandas as pd

from ._safe import attempt, note_html
from .format import evidence_lines, one_line
from .tables import table_html

STATUS_COLOURS = {"pass": "#1a7f37", "ok": "#1a7f37", "skip": "#6e7781", "warn": "#9a6700",
                  "fail": "#cf222e"}
VERDICT_COLOURS = {"usable": "#1a7f37", "ready": "#1a7f37", "degraded": "#9a6700",
                   "at risk": "#9a6700", "unusable": "#cf222e", "not ready": "#cf222e",
                   "not a dump": "#cf222e"}


def _esc(v: Any) -> str:
    return html.escape("" if v is None else str(v))


def lines_html(lines: list[str]) -> str:
    """Lines as one block, one per line (evidence, chains)."""
    return "<br>".join(_esc(x) for x in lines)


def _is_pass(status: str) -> bool:
    return status in ("pass", "ok")


def _check_row(c: Any) -> str:
    colour = STATUS_COLOURS.get(str(c.status), "#444")
    return (f"<tr><td class='kdnb-txt' style='color:{colour};font-weight:bold'>{_esc(c.status)}</td>"
            f"<td class='kdnb-txt'><code>{_esc(c.check)}</code></td>"
            f"<td class='kdnb-txt' style='white-space:normal'>{_esc(c.detail)}</td>"
            f"<td class='kdnb-txt' style='white-space:normal'>{_esc(c.consequence or '')}</td>"
            f"<td class='kdnb-txt'>{lines_html(evidence_lines(getattr(c, 'evidence', None)))}</td></tr>")


def _checks_table(items: list) -> str:
    head = ("<thead><tr><th>status</th><th>check</th><th>detail</th><th>consequence</th>"
            "<th>evidence</th></tr></thead>")
    return (f"<div class='kdnb-tablebox'><table class='kdnb-table'>{head}<tbody>"
            + "".join(_check_row(c) for c in items) + "</tbody></table></div>")


def checks_html(result: Any, collapse: bool = True) -> str:
    """A validation / readiness result: the verdict, its summary, the checks that did not pass
    (all of them when `collapse` is False; the passes folded away otherwise)."""
    items = list(getattr(result, "items", []))
    verdict = str(getattr(result, "verdict", "?"))
    colour = VERDICT_COLOURS.get(verdict, "#444")
    title = getattr(result, "title", "checks")
    out = [f"<p><b>{_esc(title)}: <span class='kdnb-verdict' style='color:{colour}'>"
           f"{_esc(verdict.upper())}</span></b><br>{_esc(getattr(result, 'summary', ''))}</p>"]
    bad = [c for c in items if not _is_pass(str(c.status))]
    passed = [c for c in items if _is_pass(str(c.status))]
    if not collapse:
        return "".join(out) + _checks_table(items)
    if bad:
        out.append(_checks_table(bad))
    if passed:
        what = f"all {len(items)} checks pass" if not bad else f"{len(passed)} other checks pass"
        out.append(f"<details class='kdnb-passes'><summary>{_esc(what)}</summary>"
                   + _checks_table(passed) + "</details>")
    return "".join(out)


def rootcause_html(rc: Any, evidence: bool = True) -> str:
    """The answer: category, confidence, the one-paragraph why, message, culprit, chain,
    alternatives, notes and (optionally) the evidence table."""
    conf = getattr(rc, "confidence", None)
    conf_text = f" <small>(confidence {conf:.0%})</small>" if isinstance(conf, float) else ""
    out = [f"<div class='kdnb-rootcause'><h3>Root cause: <span class='kdnb-category'>"
           f"{_esc(rc.category)}</span>{conf_text}</h3>"]
    why, _ = attempt(lambda: rc.explanation)
    if why:
        out.append(f"<p>{_esc(why)}</p>")
    out.append("<table class='kdnb-table kdnb-facts'>")
    for label, value in (("message", getattr(rc, "message", "") or "(none in the log)"),
                         ("culprit", str(getattr(rc, "culprit", "") or ""))):
        out.append(f"<tr><th>{label}</th><td style='white-space:normal'>{_esc(value)}</td></tr>")
    out.append("</table>")
    chain = getattr(rc, "chain", []) or []
    if chain:
        out.append("<p><b>Chain</b></p><ol>" + "".join(
            f"<li><b>{_esc(s.get('role'))}</b>: {_esc(s.get('what'))}</li>" for s in chain) + "</ol>")
    alts = getattr(rc, "alternatives", []) or []
    if alts:
        out.append("<p><b>Alternatives</b></p><ul>" + "".join(
            f"<li>{_esc(c)}: {_esc(w)}</li>" for c, w in alts) + "</ul>")
    for note in getattr(rc, "notes", []) or []:
        out.append(f"<p class='kdnb-note'>note: {_esc(note)}</p>")
    if evidence:
        out.append("<p><b>Evidence</b></p>" + evidence_html(rc))
    return "".join(out) + "</div>"


def evidence_html(rc: Any) -> str:
    """The root cause's evidence rows (kind, time, cpu, pid, text, why) as a kdnb table."""
    ev = getattr(rc, "evidence", None)
    if not isinstance(ev, pd.DataFrame) or not len(ev):
        return "<p>none</p>"
    cols = [c for c in ("kind", "time", "cpu", "pid", "text", "why") if c in ev]
    return table_html(ev[cols], interactive=False)


def html_of(what: str, fn: Any) -> str:
    """HTML of `fn()` (or of `fn` itself when not callable) through the display layer; a
    not-available note when it raises an expected error."""
    value, why = attempt(fn if callable(fn) else (lambda: fn))
    if why:
        return note_html(what, why)
    if isinstance(value, pd.DataFrame):
        return table_html(value, interactive=False)
    if hasattr(value, "items") and hasattr(value, "verdict") and isinstance(
            getattr(value, "items", None), list):
        return checks_html(value)
    if hasattr(value, "category") and hasattr(value, "culprit"):
        return rootcause_html(value)
    if hasattr(value, "_repr_html_"):
        out, _ = attempt(value._repr_html_)
        if out is not None:
            return out
    return f"<pre>{_esc(value)}</pre>"


def plain_of(value: Any) -> str:
    """A one-line text form of a value (for text/plain twins of HTML outputs)."""
    return one_line(value)[:200]
