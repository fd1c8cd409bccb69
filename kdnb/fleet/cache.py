"""The per-dump result cache: a nightly re-run of a fleet triages only the dumps that are new.

One Parquet file holds the rows already computed, each keyed by the dump's path(s), size,
mtime and a hash of its first 64 KiB (the headers), plus the kdnb and signature versions: a
dump rewritten in place, or a kdnb whose rules changed, is triaged again. A row made because a
worker died (not because of the dump) is never cached. The file is replaced atomically.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

from .discover import Item
from .row import COLUMNS, rows_frame
from .signature import SIGNATURE_VERSION

HEADER_BYTES = 1 << 16
WORKER_ERROR = "worker failed: "  # rows starting so are about the run, not the dump


def default_path() -> Path:
    """~/.cache/kdnb/fleet/triage.parquet (under $KDNB_CACHE_DIR when it is set)."""
    base = os.environ.get("KDNB_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "kdnb")
    return Path(base) / "fleet" / "triage.parquet"


def item_key(item: Item) -> str | None:
    """The cache key of an item; None when a file cannot be read (nothing to cache)."""
    from .. import __version__

    h = hashlib.sha256(f"{__version__}/{SIGNATURE_VERSION}".encode())
    try:
        for p in item.paths:
            st = os.stat(p)
            h.update(f"\0{os.path.abspath(p)}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
            if os.path.isfile(p):
                with open(p, "rb") as f:
                    h.update(f.read(HEADER_BYTES))
    except OSError:
        return None
    return h.hexdigest()


class Cache:
    """The rows of earlier runs, by key."""

    def __init__(self, path: str | os.PathLike | None = None) -> None:
        self.path = Path(path) if path is not None else default_path()
        self.rows: dict[str, dict[str, Any]] = {}
        if self.path.exists():
            try:
                df = pd.read_parquet(self.path)
            except (OSError, ValueError) as exc:  # a damaged cache is rebuilt, not fatal
                self.problem = f"{self.path}: unreadable cache, rebuilt ({exc})"
                return
            if set(COLUMNS) | {"key"} <= set(df.columns):
                for rec in df.astype(object).where(df.notna(), None).to_dict("records"):
                    self.rows[rec.pop("key")] = rec
        self.problem = ""

    def get(self, key: str | None) -> dict[str, Any] | None:
        """The cached row for a key, marked `cached`; None on a miss."""
        row = self.rows.get(key) if key is not None else None
        return {**row, "cached": True} if row is not None else None

    def put(self, key: str | None, row: dict[str, Any]) -> None:
        """Remember a row (not one made by a failed worker)."""
        if key is not None and not str(row.get("error") or "").startswith(WORKER_ERROR):
            self.rows[key] = {**row, "cached": False}

    def save(self) -> None:
        """Write the cache, dropping rows of files that no longer exist."""
        keep = {k: r for k, r in self.rows.items() if os.path.lexists(r["path"])}
        df = rows_frame(list(keep.values()))
        df.insert(0, "key", list(keep))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, suffix=".parquet.tmp")
        os.close(fd)
        try:
            df.to_parquet(tmp, index=False)
            os.replace(tmp, self.path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
