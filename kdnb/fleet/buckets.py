"""`kdnb.buckets(triage_df)`: the triage rows grouped by crash signature, biggest first."""

from __future__ import annotations

import pandas as pd

BUCKET_COLUMNS = ["signature", "title", "category", "count", "first_crash", "last_crash",
                  "kernels", "hosts", "modules", "taints", "example", "example_answer"]


def _sorted_unique(values: pd.Series) -> list[str]:
    return sorted({str(v) for v in values.dropna() if str(v)})


def buckets(triage_df: pd.DataFrame, since: str | pd.Timestamp | None = None) -> pd.DataFrame:
    """One row per signature: signature, title, category, count, first_crash, last_crash,
    kernels, hosts, modules (guilty frames' modules), taints, example (the latest dump's path)
    and example_answer (its root-cause chain). Rows with an error are left out. With `since`,
    only buckets whose first crash is at or after that date (the new bugs) are kept."""
    ok = triage_df[triage_df["signature"].notna()]
    out = []
    for sig, g in ok.groupby("signature", sort=False):
        latest = g.sort_values("crash_time", na_position="first").iloc[-1]
        out.append({
            "signature": sig, "title": latest["title"], "category": latest["category"],
            "count": len(g), "first_crash": g["crash_time"].min(),
            "last_crash": g["crash_time"].max(), "kernels": _sorted_unique(g["release"]),
            "hosts": _sorted_unique(g["hostname"]), "modules": _sorted_unique(g["guilty_module"]),
            "taints": _sorted_unique(g["taints"]), "example": latest["path"],
            "example_answer": latest["answer"],
        })
    df = pd.DataFrame(out, columns=BUCKET_COLUMNS)
    df["count"] = df["count"].astype("Int64")
    for col in ("first_crash", "last_crash"):
        df[col] = pd.to_datetime(df[col], utc=True)
    if since is not None:
        cut = pd.Timestamp(since)
        cut = cut.tz_localize("UTC") if cut.tzinfo is None else cut
        df = df[df["first_crash"] >= cut]
    return df.sort_values(["count", "last_crash"], ascending=[False, False],
                          kind="stable").reset_index(drop=True)
