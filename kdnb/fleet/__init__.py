"""Fleet triage: many dumps, one row each, bucketed by crash signature, on dask.distributed.

`kdnb.triage(paths)` -> DataFrame, `kdnb.buckets(df)` -> DataFrame, `kdnb triage PATH...`.
"""

from .buckets import buckets
from .report import fleet_html, write_report
from .triage import triage

__all__ = ["buckets", "fleet_html", "triage", "write_report"]
