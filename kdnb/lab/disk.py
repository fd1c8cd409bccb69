"""The capture disk: an ext4 image made with mke2fs, read back with debugfs (no mount)."""

from __future__ import annotations

import shutil
from pathlib import Path

from .packages import LabError, _run


def sbin_tool(name: str) -> str | None:
    """A tool from PATH, else from /usr/sbin or /sbin (not in a normal user's PATH on Debian)."""
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")


def make_disk(path: Path, size_mib: int) -> Path:
    """Create a sparse raw image of ``size_mib`` MiB holding an empty ext4 file system."""
    mke2fs = sbin_tool("mke2fs")
    if mke2fs is None:
        raise LabError("make disk: mke2fs not found (apt-get install e2fsprogs)")
    with open(path, "wb") as f:
        f.truncate(size_mib << 20)
    _run([mke2fs, "-q", "-F", "-t", "ext4", "-O", "^has_journal", "-L", "kdnb", str(path)],
         "make disk")
    return path


def read_disk(path: Path, dest: Path) -> Path:
    """Copy the whole file system in ``path`` into the folder ``dest`` with debugfs rdump."""
    debugfs = sbin_tool("debugfs")
    if debugfs is None:
        raise LabError("copy: debugfs not found (apt-get install e2fsprogs)")
    dest.mkdir(parents=True, exist_ok=True)
    _run([debugfs, "-R", f"rdump / {dest}", str(path)], "copy (debugfs rdump)")
    return dest


def disk_size_mib(memory_mib: int, n_full: int, n_filtered_elf: int, n_kdump: int) -> int:
    """A disk big enough for the requested dumps (sparse, so generous is cheap)."""
    return 64 + memory_mib * (n_full + n_filtered_elf) + (memory_mib // 2 + 16) * n_kdump
