"""Where a core file would be written, and whether it can be: the directory (exists, writable by
the process, not read-only, not full) and an existing file of the same name."""

from __future__ import annotations

import os
import re
import stat
from typing import TYPE_CHECKING

from .checks import Check

if TYPE_CHECKING:  # pragma: no cover
    from .coredump_settings import CoredumpSettings

AREA = "coredump"
FREE_MIN = 1 << 20  # below a MiB free no useful core fits
MOUNTS_MAX = 4096


def target_dir(s: "CoredumpSettings") -> str | None:
    """The directory a file core_pattern writes into for this process; None when it depends
    on something unknown (the cwd, a %-specifier in the directory part)."""
    pat = s.core_pattern or ""
    folder = os.path.dirname(pat)
    if "%" in folder:
        return None
    if pat.startswith("/"):
        return folder or "/"
    if not s.cwd:
        return None
    return os.path.normpath(os.path.join(s.cwd, folder))


def target_name(s: "CoredumpSettings") -> str | None:
    """The core file's name when the pattern fixes it (only %p, %P, %e, %% and the
    core_uses_pid suffix); None when it holds a time, a signal or another specifier."""
    base = os.path.basename(s.core_pattern or "")
    subs = {"%%": "%", "%p": str(s.pid) if s.pid is not None else None,
            "%P": str(s.pid) if s.pid is not None else None, "%e": s.comm}
    out = base
    for spec in re.findall(r"%.", base):
        if subs.get(spec) is None:
            return None
        out = out.replace(spec, subs[spec])
    if s.core_uses_pid and "%p" not in base:
        if s.pid is None:
            return None
        out += f".{s.pid}"
    return out


def _fs_type(path: str, mounts: str) -> str | None:
    best, kind = "", None
    for line in mounts.splitlines()[:MOUNTS_MAX]:
        parts = line.split()
        if len(parts) >= 3 and (path == parts[1] or path.startswith(parts[1].rstrip("/") + "/")):
            if len(parts[1]) >= len(best):
                best, kind = parts[1], parts[2]
    return kind


def _writable(mode: int, owner: int, group: int, uid: int, gid: int) -> bool:
    """Write and search permission by the mode bits (ACLs and supplementary groups aside)."""
    if uid == 0:
        return True
    if owner == uid:
        return mode & 0o300 == 0o300
    if group == gid:
        return mode & 0o030 == 0o030
    return mode & 0o003 == 0o003


def _unwritable(folder: str, mode: int, owner: int, uid: int, ev: dict) -> Check:
    ev.update(uid=uid, mode=f"{stat.S_IMODE(mode):o}", owner=owner)
    return Check("coredump.directory", AREA, "fail", f"{folder} is not writable by uid {uid} "
                 f"(mode {stat.S_IMODE(mode):o}, owner {owner}): the kernel cannot create the core",
                 "run the program from a writable directory or use an absolute core_pattern", ev)


def _directory_in_dump(s: "CoredumpSettings", folder: str, ev: dict) -> Check:
    """The cwd as the vmcore's inode shows it (the kernel's own permission inputs)."""
    st = s.cwd_stat
    ev.update(source="the cwd's inode in the dump")
    if st["read_only"]:
        return Check("coredump.directory", AREA, "fail", f"{folder} is on a read-only mount",
                     "point core_pattern at a writable directory or a pipe", ev)
    if s.uids and s.gids and not _writable(st["mode"], st["uid"], st["gid"], s.uids[3], s.gids[3]):
        return _unwritable(folder, st["mode"], st["uid"], s.uids[3], ev)
    return Check("coredump.directory", AREA, "pass", f"{folder} is writable by uid "
                 f"{s.uids[3] if s.uids else '?'} (mode {stat.S_IMODE(st['mode']):o}; free space "
                 "is not in a dump)", "", ev)


def check_directory(s: "CoredumpSettings") -> Check:
    """The directory a file pattern writes to: there, writable, not read-only, not full."""
    if s.is_pipe or not (s.core_pattern or "").strip():
        return Check("coredump.directory", AREA, "pass", "no directory involved (a pipe or no pattern)")
    folder = target_dir(s)
    if folder is None:
        return Check("coredump.directory", AREA, "skip", "the target directory is unknown (the "
                     "process's cwd is not known, or the path holds a %-specifier)")
    ev: dict = {"directory": folder}
    if s.tree is None and s.cwd_stat and folder == s.cwd:
        return _directory_in_dump(s, folder, ev)
    if s.tree is None:
        return Check("coredump.directory", AREA, "skip", f"{folder} cannot be looked at from here",
                     "", ev)
    path = s.tree.path(folder)
    try:
        st = os.stat(path)
        vfs = os.statvfs(path)
    except OSError as exc:
        return Check("coredump.directory", AREA, "fail", f"{folder} does not exist or cannot be "
                     f"reached ({exc.strerror})", f"create {folder}", ev)
    if not stat.S_ISDIR(st.st_mode):
        return Check("coredump.directory", AREA, "fail", f"{folder} is not a directory", "", ev)
    ev["filesystem"] = _fs_type(folder, s.tree.read("proc/mounts") or "")
    ev["free_bytes"] = vfs.f_bavail * vfs.f_frsize
    if vfs.f_flag & os.ST_RDONLY:
        return Check("coredump.directory", AREA, "fail", f"{folder} is on a read-only file system "
                     f"({ev['filesystem'] or 'unknown type'})", "point core_pattern at a writable "
                     "directory or a pipe", ev)
    uid = s.uids[3] if s.uids else os.geteuid() if s.live and s.pid == os.getpid() else None
    gid = s.gids[3] if s.gids else os.getegid() if s.live and s.pid == os.getpid() else None
    if uid is not None and gid is not None and not _writable(st.st_mode, st.st_uid, st.st_gid, uid, gid):
        return _unwritable(folder, st.st_mode, st.st_uid, uid, ev)
    if ev["free_bytes"] < FREE_MIN:
        return Check("coredump.directory", AREA, "fail", f"{folder} has {ev['free_bytes']} bytes "
                     "free: the core is cut short or not written", "free space there", ev)
    return Check("coredump.directory", AREA, "pass", f"{folder} is writable, "
                 f"{ev['free_bytes'] >> 20} MiB free ({ev['filesystem'] or 'file system unknown'})",
                 "", ev)


def check_target(s: "CoredumpSettings") -> Check:
    """An existing file where the core would go: a link, another owner, more than one name."""
    fixed = not s.is_pipe and bool((s.core_pattern or "").strip())
    folder = target_dir(s) if fixed else None
    name = target_name(s) if fixed else None
    if folder is None or not name or s.tree is None:
        return Check("coredump.target", AREA, "pass", "no fixed core file name to look at")
    full = os.path.join(folder, name)
    try:
        st = os.lstat(s.tree.path(full))
    except OSError:
        return Check("coredump.target", AREA, "pass", f"{full} does not exist yet", "", {"path": full})
    ev = {"path": full, "nlink": st.st_nlink, "owner": st.st_uid}
    uid = s.uids[3] if s.uids else None
    why = ("a symbolic link" if stat.S_ISLNK(st.st_mode) else
           "not a regular file" if not stat.S_ISREG(st.st_mode) else
           f"a file with {st.st_nlink} hard links" if st.st_nlink > 1 else
           f"owned by uid {st.st_uid}" if uid is not None and st.st_uid != uid else None)
    if why is None:
        return Check("coredump.target", AREA, "pass", f"{full} exists and would be overwritten", "", ev)
    return Check("coredump.target", AREA, "warn", f"{full} exists and is {why}: older kernels "
                 "refuse to write a core over it (Linux 6.18 was seen replacing it)",
                 f"remove {full}", ev)
