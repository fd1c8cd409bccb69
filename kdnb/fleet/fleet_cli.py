"""`kdnb triage PATH... [--html F] [--parquet F] [--scheduler A] [--workers N] [--since DATE]
[--no-cache]`: the buckets of a fleet on the terminal, the report and the table on disk."""

from __future__ import annotations

import argparse

from ..errors import KdnbError


def cmd_triage(args: argparse.Namespace) -> int:
    """Triage the fleet, print the buckets and the error count; exit 0 (1 when some dumps
    could not be triaged)."""
    import pandas as pd

    from .buckets import buckets
    from .report import write_report
    from .triage import triage

    if args.since is not None:
        try:
            pd.Timestamp(args.since)
        except ValueError:
            raise KdnbError(f"--since {args.since!r}: not a date (YYYY-MM-DD)") from None
    df = triage(args.paths, scheduler=args.scheduler, workers=args.workers,
                cache=not args.no_cache, progress=not args.quiet)
    b = buckets(df, since=args.since)
    errors = int(df["error"].notna().sum())
    info = df.attrs["kdnb"]
    print(f"{len(df)} dumps ({info['computed']} triaged now, {info['from_cache']} from the "
          f"cache), {len(buckets(df))} buckets, {errors} errors")
    if args.since is not None:
        print(f"{len(b)} buckets new since {args.since}")
    for row in b.itertuples():
        print(f"{row.count:6d}  {row.signature}  {row.title}  [{', '.join(row.kernels)}]")
    for row in df[df["error"].notna()].itertuples():
        said = str(row.error)
        print(f" error  {said if said.startswith(row.path) else row.path + ': ' + said}")
    if args.parquet:
        df.to_parquet(args.parquet, index=False)
        print(f"table: {args.parquet}")
    if args.html:
        print(f"report: {write_report(df, args.html, since=args.since)}")
    return 1 if errors else 0


def add_subparser(sub: argparse._SubParsersAction) -> None:
    """Register `kdnb triage`."""
    p = sub.add_parser("triage", help="many dumps: one row each, bucketed by crash signature")
    p.add_argument("paths", nargs="+", metavar="PATH",
                   help="dump files, directories searched for dumps, or glob patterns")
    p.add_argument("--html", metavar="F", help="write the fleet report (one offline HTML file)")
    p.add_argument("--parquet", metavar="F", help="write the triage table as Parquet")
    p.add_argument("--scheduler", metavar="ADDRESS",
                   help="an existing dask scheduler (tcp://host:8786); its workers must see "
                   "the same paths")
    p.add_argument("--workers", type=int, metavar="N",
                   help="local worker processes (default: one per core; 0: in this process)")
    p.add_argument("--since", metavar="DATE", help="list the buckets first seen on or after DATE")
    p.add_argument("--no-cache", action="store_true", help="triage every dump again")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_triage)
