"""Where the notebooks find their dump: the parameter, else the first bundled sample."""

from __future__ import annotations

import os

from ..errors import KdnbError


def sample_paths() -> list[str]:
    """Paths of the bundled sample dumps (empty when there are none)."""
    try:
        from ..samples import samples
    except ImportError:
        return []
    table = samples()
    if len(table) == 0 or "path" not in table:
        return []
    return [str(p) for p in table["path"]]


def resolve_dump(path: "str | os.PathLike | None" = None) -> str:
    """`path` itself, or the first bundled sample when `path` is None or empty."""
    if path:
        return os.fspath(path)
    found = sample_paths()
    if not found:
        raise KdnbError("no dump path given and no bundled sample found in data/")
    return found[0]
