"""On-disk cache of decoded kallsyms names and the BTF blob + index, keyed by the kernel build.

One `.npz` file per build (no pickles), written atomically; a corrupt, foreign or stale file is
ignored (and later overwritten), never trusted: the caller re-checks what it loads against the dump.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import numpy as np

from ..bounds import vmcoreinfo_int

CACHE_VERSION = 1


def cache_dir() -> Path:
    """`$KDNB_CACHE_DIR`, else `$XDG_CACHE_HOME/kdnb`, else `~/.cache/kdnb`."""
    env = os.environ.get("KDNB_CACHE_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return Path(xdg) / "kdnb" if xdg else Path.home() / ".cache" / "kdnb"


def build_key(vmcoreinfo: dict[str, str], uts_version: bytes) -> str:
    """A key for the kernel build: BUILD-ID (garbage on some kernels) + OSRELEASE + uts version +
    the KASLR-invariant layout of the kallsyms tables. A malformed SYMBOL value raises
    ImplausibleValue."""
    h = hashlib.sha256()
    for k in ("BUILD-ID", "OSRELEASE", "NUMBER(KERNEL_IMAGE_SIZE)"):
        h.update(vmcoreinfo.get(k, "").encode() + b"\0")
    h.update(uts_version + b"\0")
    base = vmcoreinfo_int(vmcoreinfo, "SYMBOL(_stext)", default=0)
    for k in sorted(vmcoreinfo):
        if k.startswith("SYMBOL(kallsyms_"):
            h.update(f"{k}={vmcoreinfo_int(vmcoreinfo, k) - base}\0".encode())
    h.update(f"v{CACHE_VERSION}".encode())
    return h.hexdigest()[:40]


def load(key: str, directory: Path | None = None) -> dict[str, np.ndarray] | None:
    """The arrays cached under `key`, or None when absent, unreadable or not ours."""
    path = (directory or cache_dir()) / f"{key}.npz"
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {name: z[name] for name in z.files}
    except Exception:  # noqa: BLE001 - any unreadable or malformed file is a miss
        return None
    if str(arrays.pop("key", "")) != key:
        return None
    return arrays


def store(key: str, arrays: dict[str, np.ndarray], directory: Path | None = None) -> bool:
    """Write the arrays atomically under `key`; False (silently) when the directory is unusable."""
    directory = directory or cache_dir()
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{key}.", suffix=".tmp", dir=directory)
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, key=np.array(key), **arrays)
            os.replace(tmp, directory / f"{key}.npz")
        except BaseException:
            os.unlink(tmp)
            raise
    except (OSError, ValueError, TypeError):  # a cache must never break an analysis
        return False
    return True
