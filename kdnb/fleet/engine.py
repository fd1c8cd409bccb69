"""Where the rows are computed: in this process, or on dask.distributed.

`run(items, ...)` submits one task per item (a tuple of paths: the scheduler holds only paths
and, later, small row dicts). By default it starts a LocalCluster of one single-threaded worker
process per core, so each worker opens one dump at a time and drops it before the next; a
`client` (or a scheduler address) uses an existing cluster whose workers see the same paths.
`workers=0` computes every row in this process, with the same function.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TextIO

from ..errors import KdnbError
from .cache import WORKER_ERROR
from .discover import Item
from .row import triage_item


def _bar(done: int, total: int, out: TextIO = sys.stderr) -> None:
    width = 30
    fill = width * done // max(total, 1)
    out.write(f"\rkdnb triage [{'#' * fill}{' ' * (width - fill)}] {done}/{total} dumps")
    if done == total:
        out.write("\n")
    out.flush()


def run(items: list[Item], client: Any = None, scheduler: str | None = None,
        workers: int | None = None, progress: bool = True,
        on_row: Callable[[int, dict], None] | None = None) -> list[dict[str, Any]]:
    """The row of every item, in the order of `items`."""
    if not items:
        return []
    if workers == 0 and client is None and scheduler is None:
        rows = []
        for i, item in enumerate(items):
            rows.append(triage_item(item))
            if on_row is not None:
                on_row(i, rows[-1])
            if progress:
                _bar(i + 1, len(items))
        return rows
    with _client(client, scheduler, workers) as cl:
        return _distributed(cl, items, progress, on_row)


@contextmanager
def _client(client: Any, scheduler: str | None, workers: int | None) -> Iterator[Any]:
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError as exc:
        raise KdnbError("fleet triage needs dask.distributed: pip install 'kdnb[fleet]' "
                        f"({exc})") from None
    if client is not None:
        yield client
        return
    if scheduler is not None:
        try:
            cl = Client(scheduler, timeout="30s")
        except (OSError, TimeoutError) as exc:
            raise KdnbError(f"scheduler {scheduler}: cannot connect ({exc})") from None
        try:
            yield cl
        finally:
            cl.close()
        return
    n = workers if workers is not None else (os.cpu_count() or 1)
    with LocalCluster(n_workers=max(n, 1), threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as cl:
        yield cl


def _distributed(cl: Any, items: list[Item], progress: bool,
                 on_row: Callable[[int, dict], None] | None) -> list[dict[str, Any]]:
    from dask.distributed import as_completed
    from dask.distributed import progress as dask_progress

    run_id = uuid.uuid4().hex[:12]  # keys of earlier runs on a shared scheduler never collide
    keys = [f"kdnb-triage-{run_id}-{i}" for i in range(len(items))]
    futures = cl.map(triage_item, items, key=keys, pure=False, retries=0)
    index = {f.key: i for i, f in enumerate(futures)}
    if progress:  # a widget in Jupyter (rows are gathered below), else a text bar until done
        try:
            dask_progress(futures, multi=False)
        except ImportError:  # a Jupyter kernel without ipywidgets
            dask_progress(futures, multi=False, notebook=False)
    rows: list[dict[str, Any] | None] = [None] * len(items)
    for fut in as_completed(futures):
        i = index[fut.key]
        try:
            rows[i] = fut.result()
        except Exception as exc:  # noqa: BLE001 - a dead worker (OOM kill, crash) is one row
            rows[i] = {"path": items[i].path, "files": len(items[i].paths), "cached": False,
                       "error": f"{WORKER_ERROR}{type(exc).__name__}: {exc}"}
        if on_row is not None:
            on_row(i, rows[i])
        fut.release()
    return [r for r in rows if r is not None]

