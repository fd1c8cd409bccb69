"""`Dump.files(pid)`: the open files of a process (crash `files`, /proc/PID/fd and fdinfo).

`task->files->fdt` is the current `struct fdtable`: the `open_fds` bitmap (max_fds bits) says
which slots of the `fd[]` array hold a `struct file *`. Each file is read once; its path is the
dentry walk across mounts (kdnb.views.paths), its type comes from the inode's mode (a FIFO on
pipefs is a pipe; the shared anon_inode_inode is an anonymous inode: eventfd, epoll, ...).
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .. import bounds
from ..errors import KdnbError
from .common import Gaps, fitting, read_or_none
from .paths import Paths
from .vmas import task_of

if TYPE_CHECKING:  # pragma: no cover
    from ..api import Dump
    from ..kernel.kernel import Kernel

MAX_FDS = 1 << 24  # fs.nr_open is 1 M by default (its ceiling is ~ 2^30); a 16 M table is implausible
O_CLOEXEC = 0o2000000
S_IFMT = 0o170000
MODE_TYPES = {0o140000: "socket", 0o120000: "link", 0o100000: "regular", 0o060000: "block",
              0o040000: "directory", 0o020000: "char", 0o010000: "fifo"}
TYPES = ["regular", "directory", "char", "block", "fifo", "pipe", "socket", "link", "anon_inode",
         "unknown"]
COLUMNS = ["pid", "fd", "path", "type", "flags", "cloexec", "mode", "pos", "inode", "mnt_id", "file"]


def files_frame(dump: "Dump", pid: int) -> pd.DataFrame:
    """One row per open file descriptor of `pid`: pid, fd, path (`/dev/console`, `pipe:[123]`,
    `socket:[456]`, `anon_inode:[eventfd]`), type (regular, directory, char, block, fifo, pipe,
    socket, link, anon_inode, unknown), flags (f_flags with O_CLOEXEC, as fdinfo's `flags:`),
    cloexec, mode (f_mode), pos (f_pos), inode (i_ino), mnt_id, file (the struct file)."""
    k = dump.kernel
    gaps = Gaps()
    task, _comm = task_of(dump, pid)
    files = k.read_u64(task + k.type("struct task_struct").offsetof("files"))
    rows: list[dict[str, Any]] = []
    if files:
        try:
            rows = OpenFiles(k).rows(files, gaps)
        except KdnbError as exc:
            gaps.note(f"files_struct of pid {pid}", files, exc)
    df = pd.DataFrame({
        "pid": fitting([pid] * len(rows), "Int32", "pid", gaps),
        "fd": fitting([r["fd"] for r in rows], "Int32", "fd", gaps),
        "path": pd.array([r["path"] for r in rows], dtype="string"),
        "type": pd.Categorical([r["type"] for r in rows], categories=TYPES),
        "flags": fitting([r["flags"] for r in rows], "UInt32", "flags", gaps),
        "cloexec": np.array([r["cloexec"] for r in rows], dtype=bool),
        "mode": fitting([r["mode"] for r in rows], "UInt32", "mode", gaps),
        "pos": fitting([r["pos"] for r in rows], "Int64", "pos", gaps),
        "inode": fitting([r["inode"] for r in rows], "UInt64", "inode", gaps),
        "mnt_id": fitting([r["mnt_id"] for r in rows], "Int32", "mnt_id", gaps),
        "file": fitting([r["file"] for r in rows], "UInt64", "file", gaps),
    }, columns=COLUMNS)
    return gaps.attach(df, f"files of pid {pid}")


class OpenFiles:
    """Reads processes' file tables; the struct layouts, the path resolver (with its dentry cache)
    and the anonymous inode are looked up once for every table read through it."""

    def __init__(self, k: "Kernel") -> None:
        self.k = k
        self.fs_fdt = k.type("struct files_struct").offsetof("fdt")
        self.table = k.layout(k.type("struct fdtable"), ["max_fds", "fd", "close_on_exec", "open_fds"])
        self.paths = Paths(k)
        self.file = k.layout(k.type("struct file"), ["f_flags", "f_mode", "f_pos", "f_inode", "f_path.mnt"])
        self.inode = k.layout(k.type("struct inode"), ["i_mode", "i_ino"])
        mount_t = k.type("struct mount")
        self.mnt_id_off = mount_t.offsetof("mnt_id") - mount_t.offsetof("mnt")
        try:
            self.anon_inode: int | None = k.read_u64(k.symbol("anon_inode_inode"))
        except KdnbError:
            self.anon_inode = None

    def rows(self, files: int, gaps: Gaps, only: str | None = None) -> list[dict[str, Any]]:
        """One dict per open fd of the `struct files_struct` at `files` (columns of files_frame);
        with `only` (a type the inode alone decides: socket, regular, ..., not pipe) just the files
        of that type, the others' paths unread."""
        k = self.k
        fdt = k.read_u64(files + self.fs_fdt)
        max_fds, fd_array, cloexec_bits, open_bits = self.table.unpack(k.read(fdt, self.table.size))
        n = bounds.count(max_fds, "fdtable.max_fds", MAX_FDS, k.reader.path)
        words = (n + 63) // 64
        open_fds = int.from_bytes(k.read(open_bits, 8 * words), "little")
        cloexec = int.from_bytes(k.read(cloexec_bits, 8 * words), "little")
        out = []
        bits = open_fds & ((1 << n) - 1)
        while bits:
            low = bits & -bits
            bits ^= low
            fd = low.bit_length() - 1
            row = self._row(fd, fd_array, gaps, only)
            if row is not None:
                row["cloexec"] = bool(cloexec >> fd & 1)
                row["flags"] |= O_CLOEXEC if row["cloexec"] else 0
                out.append(row)
        return out

    def _row(self, fd: int, fd_array: int, gaps: Gaps, only: str | None) -> dict[str, Any] | None:
        k = self.k
        raw = read_or_none(k, fd_array + 8 * fd, 8, gaps, f"fd[{fd}]")
        if raw is None:
            return None
        (file,) = struct.unpack("<Q", raw)
        if not file:
            return None  # reserved slot (an fd being installed)
        data = read_or_none(k, file, self.file.size, gaps, f"struct file of fd {fd}")
        if data is None:
            return None
        flags, mode, pos, inode, mnt = self.file.unpack(data)
        row: dict[str, Any] = {"fd": fd, "path": None, "type": "unknown", "flags": flags,
                               "mode": mode, "pos": pos, "inode": None, "mnt_id": None, "file": file}
        try:
            if only is None:
                row["path"] = self.paths.file_path(file)
            i_mode, row["inode"] = self.inode.unpack(k.read(inode, self.inode.size))
            if only is not None:
                if self._kind(inode, i_mode, "") != only:
                    return None  # not wanted: its path is not read
                row["path"] = self.paths.file_path(file)
            row["mnt_id"] = struct.unpack("<i", k.read(mnt + self.mnt_id_off, 4))[0]
        except KdnbError as exc:
            gaps.note(f"path of fd {fd}", file, exc)
            return row if only is None else None
        row["type"] = self._kind(inode, i_mode, row["path"])
        return row if only is None or row["type"] == only else None

    def _kind(self, inode: int, i_mode: int, path: str) -> str:
        """A TYPES name from the inode's mode (a FIFO named `pipe:[…]` is a pipe)."""
        if self.anon_inode is not None and inode == self.anon_inode:
            return "anon_inode"
        kind = MODE_TYPES.get(i_mode & S_IFMT, "unknown")
        return "pipe" if kind == "fifo" and (path or "").startswith("pipe:[") else kind
