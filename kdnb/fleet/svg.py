"""Crashes over time as an inline SVG (stacked bars per day, one colour per bucket): the fleet
report stays one offline file and needs no plotting library."""

from __future__ import annotations

import html

import pandas as pd

COLOURS = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1",
           "#9c755f"]
MAX_DAYS = 400  # bars drawn; a longer span is binned by week


def crashes_over_time(df: pd.DataFrame, top: int = 7, width: int = 760, height: int = 260) -> str:
    """Stacked bars of crashes per day (per week over long spans) for the `top` biggest
    buckets and the rest; `df` is a triage table. Returns an `<svg>` element."""
    ok = df[df["signature"].notna() & df["crash_time"].notna()]
    if ok.empty:
        return "<p>no crash with a known time and signature</p>"
    biggest = ok["signature"].value_counts().index[:top]
    label = {s: ok.loc[ok["signature"] == s, "title"].iloc[0] for s in biggest}
    series = ok["signature"].where(ok["signature"].isin(biggest), "other")
    day = ok["crash_time"].dt.tz_convert("UTC").dt.floor("D").dt.tz_localize(None)
    span = (day.max() - day.min()).days + 1
    freq = "D" if span <= MAX_DAYS else "W"
    table = pd.crosstab(day.dt.to_period(freq), series)
    table = table.reindex(pd.period_range(table.index.min(), table.index.max(), freq=freq),
                          fill_value=0)
    order = [s for s in biggest if s in table.columns] + \
        (["other"] if "other" in table.columns else [])
    left, bottom, top_pad = 40, 40, 10
    plot_w, plot_h = width - left - 10, height - bottom - top_pad
    peak = int(table.sum(axis=1).max()) or 1
    bar_w = plot_w / len(table)
    parts = [(f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height + 18 * len(order)}" '
             f'role="img" aria-label="crashes over time" font-family="sans-serif" font-size="11">'),
             (f'<line x1="{left}" y1="{top_pad + plot_h}" x2="{left + plot_w}" '
             f'y2="{top_pad + plot_h}" stroke="#333"/>'),
             f'<text x="4" y="{top_pad + 10}">{peak}</text>',
             f'<text x="4" y="{top_pad + plot_h}">0</text>']
    for i, (period, counts) in enumerate(table.iterrows()):
        y = top_pad + plot_h
        for j, sig in enumerate(order):
            n = int(counts.get(sig, 0))
            if n:
                h = plot_h * n / peak
                y -= h
                name = html.escape(label.get(sig, "other buckets"))
                parts.append(f'<rect x="{left + i * bar_w:.1f}" y="{y:.1f}" '
                             f'width="{max(bar_w - 1, 1):.1f}" height="{h:.1f}" '
                             f'fill="{COLOURS[j % len(COLOURS)]}"><title>{period}: {n} x '
                             f'{name}</title></rect>')
    for i in sorted({0, len(table) - 1, len(table) // 2}):
        parts.append(f'<text x="{left + i * bar_w:.1f}" y="{top_pad + plot_h + 14}">'
                     f'{table.index[i]}</text>')
    for j, sig in enumerate(order):
        y = height + 18 * j
        parts.append(f'<rect x="{left}" y="{y - 10}" width="10" height="10" '
                     f'fill="{COLOURS[j % len(COLOURS)]}"/><text x="{left + 16}" y="{y}">'
                     f'{html.escape(label.get(sig, "other buckets"))}</text>')
    parts.append("</svg>")
    return "".join(parts)
