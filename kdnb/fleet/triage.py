"""`kdnb.triage(paths)`: one row per dump of a fleet, computed on Dask, cached per dump."""

from __future__ import annotations

import os
import warnings
from typing import Any

import pandas as pd

from .cache import Cache, item_key
from .discover import discover
from .engine import run
from .row import rows_frame


def triage(paths: str | os.PathLike | list, client: Any = None, scheduler: str | None = None,
           workers: int | None = None, cache: bool | str | os.PathLike = True,
           progress: bool = True) -> pd.DataFrame:
    """Triage every dump under `paths` (dump files, directories searched for dumps, glob
    patterns; the parts of a split set are one dump) and return one row per dump.

    Columns (kdnb.fleet.row.COLUMNS): path, files, size, mtime, format, release, build_id,
    hostname, crash_time, verdict, category, title, guilty_function, guilty_module, signature,
    frames, taints, comm, confidence, message, answer, seconds, cached, error. A file that
    cannot be read is a row whose `error` says why; such rows have no signature.

    Rows are computed on dask.distributed: `client` (a dask Client) or `scheduler` (an
    address) uses an existing cluster whose workers see the same paths; otherwise a
    LocalCluster of `workers` single-threaded processes (default: one per core) is started
    and closed; `workers=0` computes in this process. `cache` (True: the default file, a
    path, or False) keeps the rows per dump so a re-run computes only new or changed dumps.
    """
    items = discover(paths)
    store = Cache(None if cache is True else cache) if cache is not False else None
    if store is not None and store.problem:
        warnings.warn(store.problem, stacklevel=2)
    keys: list[str | None] = []
    rows: list[dict[str, Any] | None] = []
    todo = []
    for item in items:
        key = item_key(item) if store is not None and item.error is None else None
        keys.append(key)
        hit = store.get(key) if store is not None else None
        rows.append(hit)
        if hit is None:
            todo.append(len(rows) - 1)

    def on_row(i: int, row: dict[str, Any]) -> None:
        rows[todo[i]] = row
        if store is not None:
            store.put(keys[todo[i]], row)

    run([items[i] for i in todo], client=client, scheduler=scheduler, workers=workers,
        progress=progress, on_row=on_row)
    if store is not None and todo:
        store.save()
    df = rows_frame([r for r in rows if r is not None])
    df.attrs["kdnb"] = {"paths": [os.fspath(p) for p in ([paths] if isinstance(
        paths, (str, os.PathLike)) else paths)], "computed": len(todo),
        "from_cache": len(items) - len(todo),
        "cache": str(store.path) if store is not None else None}
    return df
