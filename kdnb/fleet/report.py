"""The fleet report: one offline HTML file (no script, no external reference) on a triage table."""

from __future__ import annotations

import html
import os
import shlex
from datetime import datetime, timezone

import pandas as pd

from .buckets import buckets
from .svg import crashes_over_time

STYLE = """body{font-family:sans-serif;margin:1.5em;max-width:1200px}
table{border-collapse:collapse;font-size:13px;margin:.5em 0}td,th{border:1px solid #ccc;
padding:3px 6px;text-align:left;vertical-align:top}th{background:#f0f0f0}code{font-size:12px}
details{margin:.4em 0}summary{cursor:pointer}.err{color:#a00}"""


def report_command(path: str) -> str:
    """The command that renders one dump's own report."""
    stem = os.path.basename(path).replace(".", "-")
    return f"kdnb report {shlex.quote(path)} -o {shlex.quote(stem + '.html')}"


def _table(df: pd.DataFrame) -> str:
    if df.empty:
        return "<p>none</p>"
    return df.to_html(index=False, escape=True, na_rep="", border=0)


def _list(values) -> str:
    return ", ".join(values) if isinstance(values, (list, tuple)) else str(values)


def _bucket_details(b: pd.DataFrame, df: pd.DataFrame) -> str:
    out = []
    for row in b.itertuples():
        ex = df[df["path"] == row.example].iloc[0]
        out.append(
            f"<details><summary><b>{row.count}</b> x {html.escape(str(row.title))} "
            f"<code>{row.signature}</code></summary><ul>"
            f"<li>kernels: {html.escape(_list(row.kernels))}; hosts: "
            f"{html.escape(_list(row.hosts))}; first {row.first_crash}, last {row.last_crash}</li>"
            f"<li>example: <code>{html.escape(str(row.example))}</code></li>"
            f"<li>message: <code>{html.escape(str(ex['message'] or ''))}</code></li>"
            f"<li>answer: {html.escape(str(ex['answer'] or ''))}</li>"
            f"<li>frames: <code>{html.escape(str(ex['frames'] or ''))}</code></li>"
            f"<li>its own report: <code>{html.escape(report_command(str(row.example)))}</code>"
            f"</li></ul></details>")
    return "".join(out) or "<p>none</p>"


def _counts(series: pd.Series, name: str, n: int = 15) -> pd.DataFrame:
    s = series.dropna().astype(str)
    s = s[s != ""]
    return s.value_counts().head(n).rename_axis(name).reset_index(name="dumps")


def fleet_html(df: pd.DataFrame, since: str | pd.Timestamp | None = None,
               title: str = "kdnb fleet triage") -> str:
    """The report on a triage table as one HTML string: buckets with counts, crashes over
    time, kernels x categories, top culprit modules and taints, new buckets since `since`,
    each bucket's example answer and the command that renders that dump's report, errors."""
    b = buckets(df)
    show = b.assign(kernels=b["kernels"].map(_list), hosts=b["hosts"].map(_list),
                    modules=b["modules"].map(_list), taints=b["taints"].map(_list))
    show = show[["count", "title", "category", "first_crash", "last_crash", "kernels", "hosts",
                 "modules", "taints", "signature"]]
    ok = df[df["error"].isna()]
    grid = pd.crosstab(ok["release"].fillna("?"), ok["category"].fillna("?")) \
        if len(ok) else pd.DataFrame()
    grid_html = grid.to_html(escape=True, border=0) if len(grid) else "<p>none</p>"
    errors = df[df["error"].notna()][["path", "verdict", "error"]]
    if since is not None:
        new = buckets(df, since=since)
        new_html = (f"<h2>New buckets since {html.escape(str(since))}</h2>"
                    + _table(new[["count", "title", "first_crash", "kernels", "signature"]]))
    else:
        new_html = "<h2>New buckets</h2><p>no date given (<code>--since DATE</code>)</p>"
    made = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>"
        f"<p>{len(df)} dumps, {len(df) - len(errors)} triaged, {len(errors)} errors, "
        f"{len(b)} buckets; made {made}.</p>"
        f"<h2>Buckets</h2>{_table(show)}"
        f"<h2>Crashes over time</h2>{crashes_over_time(df)}"
        f"{new_html}"
        f"<h2>Kernels x categories</h2>{grid_html}"
        f"<h2>Top culprit modules</h2>{_table(_counts(ok['guilty_module'], 'module'))}"
        f"<h2>Top taints</h2>{_table(_counts(ok['taints'], 'taints'))}"
        f"<h2>Each bucket</h2>{_bucket_details(b, df)}"
        f"<h2 class='err'>Dumps that could not be triaged</h2>{_table(errors)}"
        "</body></html>")


def write_report(df: pd.DataFrame, out: str | os.PathLike,
                 since: str | pd.Timestamp | None = None) -> str:
    """Write the fleet report to `out`; returns its path."""
    with open(out, "w", encoding="utf-8") as f:
        f.write(fleet_html(df, since=since))
    return os.fspath(out)
