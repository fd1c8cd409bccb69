"""Which files of a fleet are dumps: paths, directories and globs, split sets put together.

A path named on the command line is always triaged (a file that is no dump becomes an error row).
Inside a directory a file is taken when its first bytes are a dump's (ELF core, kdump, flattened
makedumpfile) or when its name says it is one (`vmcore*`, `*.vmcore`, `dump.*`, `*.kdump`): a
vmcore whose header was destroyed is still reported, a `dmesg.txt` beside it is not. The parts of
a `makedumpfile --split` set (same crash: same utsname, time and page count in their headers) are
one item. A directory named on the command line that holds no dump is an error row.
"""

from __future__ import annotations

import fnmatch
import glob
import os
import struct
from dataclasses import dataclass

MAX_FILES = 1_000_000  # files looked at in one walk: a fleet, not a whole file system
MAX_DEPTH = 16
DUMP_NAMES = ("vmcore*", "*.vmcore", "*.vmcore.*", "dump.*", "*.kdump", "*.kdump-*")
_MAGICS = (b"\x7fELF", b"KDUMP   ", b"DISKDUMP", b"makedumpfile")
_SPLIT_HEAD = 8192  # disk_dump_header (one block) and the start of the sub-header


@dataclass(frozen=True)
class Item:
    """One thing to triage: a dump (the parts of a split set), or a path that is an error."""

    paths: tuple[str, ...]
    error: str | None = None

    @property
    def path(self) -> str:
        """The first (or only) file."""
        return self.paths[0]


def looks_like_dump(path: str) -> bool:
    """Whether a file starts like a crash dump, or is named like one."""
    name = os.path.basename(path)
    if any(fnmatch.fnmatch(name, pat) for pat in DUMP_NAMES):
        return True
    try:
        with open(path, "rb") as f:
            head = f.read(18)
    except OSError:
        return False
    if head.startswith(b"\x7fELF"):  # only ET_CORE: not the binaries, modules, vmlinux beside
        return len(head) == 18 and head[16:18] == (b"\x04\x00" if head[5] == 1 else b"\x00\x04")
    return head.startswith(_MAGICS)


def split_key(path: str) -> tuple | None:
    """What the parts of one split kdump set share (utsname, crash time, max_mapnr), or None for
    a file that is not a part of a split set. Reads the first 8 KiB only."""
    try:
        with open(path, "rb") as f:
            head = f.read(_SPLIT_HEAD)
    except OSError:
        return None
    if head[:8] not in (b"KDUMP   ", b"DISKDUMP") or len(head) < 464:
        return None
    version, = struct.unpack_from("<i", head, 8)
    sec, usec, _, block_size, _, _, max_mapnr = struct.unpack_from("<qqIiiII", head, 408)
    if not 512 <= block_size <= 4096 or len(head) < block_size + 16:
        return None
    split, = struct.unpack_from("<i", head, block_size + 12)
    if version < 2 or not split:
        return None
    return (os.path.dirname(os.path.abspath(path)), head[12:12 + 65 * 6], sec, usec, max_mapnr)


def _walk(root: str, budget: list[int]) -> list[str]:
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        if dirpath[len(root):].count(os.sep) >= MAX_DEPTH:
            dirnames[:] = []
        dirnames.sort()
        for name in sorted(filenames):
            budget[0] -= 1
            if budget[0] < 0:
                return found
            full = os.path.join(dirpath, name)
            if os.path.isfile(full) and looks_like_dump(full):
                found.append(full)
    return found


def _expand(arg: str, budget: list[int]) -> list[Item]:
    if os.path.isdir(arg):
        files = _walk(arg, budget)
        return [Item((f,)) for f in files] or \
            [Item((arg,), f"{arg}: a directory that holds no crash dump")]
    if os.path.lexists(arg) or not glob.has_magic(arg):
        return [Item((arg,))]
    matches = sorted(glob.glob(arg, recursive=True))
    if not matches:
        return [Item((arg,), f"{arg}: no file matches this pattern")]
    out: list[Item] = []
    for m in matches:
        out += _expand(m, budget)
    return out


def discover(paths: str | os.PathLike | list) -> list[Item]:
    """The items to triage for dump files, directories and glob patterns, in a stable order;
    each path once (links to one file stay apart: they stand for different machines), the parts
    of a split set as one item."""
    args = [os.fspath(paths)] if isinstance(paths, (str, os.PathLike)) else \
        [os.fspath(p) for p in paths]
    budget = [MAX_FILES]
    items: list[Item] = []
    seen: set[str] = set()
    for arg in args:
        for item in _expand(arg, budget):
            key = os.path.abspath(item.path)
            if key not in seen or item.error is not None:
                seen.add(key)
                items.append(item)
    return _group_splits(items)


def _group_splits(items: list[Item]) -> list[Item]:
    groups: dict[tuple, list[str]] = {}
    out: list[Item | tuple] = []
    for item in items:
        key = split_key(item.path) if item.error is None and os.path.isfile(item.path) else None
        if key is None:
            out.append(item)
            continue
        if key not in groups:
            groups[key] = []
            out.append(key)
        groups[key].append(item.path)
    return [Item(tuple(groups[x])) if isinstance(x, tuple) else x for x in out]
