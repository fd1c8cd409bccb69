"""What a task's own kernel state says about its next core dump, read from a vmcore: the
RLIMIT_CORE / RLIMIT_FSIZE soft limits (`signal->rlim[]`), the dumpable flag (`mm->flags` bits
0-1, or `task->exec_state->dumpable` on 7.x), the coredump_filter bits (`mm->flags` bits 2-10), the credentials (`cred`), the working
directory (`fs->pwd`, with its inode's mode and owner) and the executable (`mm->exe_file`). Also whether the kernel was built
with CONFIG_COREDUMP (its `do_coredump`, renamed `vfs_coredump` in 6.16, is in kallsyms).
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Any

from ..errors import KdnbError, SymbolNotFound
from .paths import Paths
from .vmas import mm_of, task_of

if TYPE_CHECKING:  # pragma: no cover
    from ..api import Dump

RLIMIT_FSIZE, RLIMIT_CORE = 1, 4
MMF_DUMPABLE_MASK = 0x3
MMF_DUMP_FILTER_SHIFT, MMF_DUMP_FILTER_MASK = 2, 0x1FF
CORE_FUNCTIONS = ("vfs_coredump", "do_coredump")
MNT_READONLY, SB_RDONLY = 0x40, 0x1
CRED_IDS = ("uid", "euid", "suid", "fsuid", "gid", "egid", "sgid", "fsgid")


def has_coredump(dump: "Dump") -> bool:
    """Whether the kernel has core dump support (CONFIG_COREDUMP): its dump function exists."""
    for name in CORE_FUNCTIONS:
        try:
            dump.kernel.symbol(name)
            return True
        except SymbolNotFound:
            continue
    return False


def _exec_state_dumpable(dump: "Dump", task: int) -> int:
    """The dumpable state kept in `task->exec_state->dumpable` (enum task_dumpable), where 7.x
    keeps it."""
    k = dump.kernel
    es = k.read_u64(task + k.type("struct task_struct").offsetof("exec_state"))
    if not es:
        raise KdnbError(f"{dump.path}: task {task:#x} has a NULL exec_state")
    value = k.read_u32(es + k.type("struct task_exec_state").offsetof("dumpable"))
    if value > MMF_DUMPABLE_MASK:
        raise KdnbError(f"{dump.path}: exec_state->dumpable of task {task:#x} is {value}; the "
                        "kernel's states are 0, 1 and 2")
    return value


def _cwd_stat(dump: "Dump", task: int) -> dict[str, Any] | None:
    """mode, uid, gid of the task's working directory's inode, and whether its mount or
    superblock is read-only (MNT_READONLY, SB_RDONLY): what the kernel checks before it creates
    a core there."""
    k = dump.kernel
    fs = k.read_u64(task + k.type("struct task_struct").offsetof("fs"))
    if not fs:
        return None
    pwd = fs + k.type("struct fs_struct").offsetof("pwd")
    mnt, dentry = k.read_u64(pwd), k.read_u64(pwd + k.type("struct path").offsetof("dentry"))
    inode = k.read_u64(dentry + k.type("struct dentry").offsetof("d_inode")) if dentry else 0
    if not inode:
        return None
    it = k.type("struct inode")
    offs = {f: it.offsetof(f) for f in ("i_mode", "i_uid", "i_gid", "i_sb")}
    raw = k.read(inode, max(offs.values()) + 8)  # the inode's head, once
    sb = struct.unpack_from("<Q", raw, offs["i_sb"])[0]
    return {"mode": struct.unpack_from("<H", raw, offs["i_mode"])[0],
            "uid": struct.unpack_from("<I", raw, offs["i_uid"])[0],
            "gid": struct.unpack_from("<I", raw, offs["i_gid"])[0],
            "read_only": bool(k.read_u32(mnt + k.type("struct vfsmount").offsetof("mnt_flags")) & MNT_READONLY)
            or bool(k.read_u64(sb + k.type("struct super_block").offsetof("s_flags")) & SB_RDONLY)}


def task_coredump_state(dump: "Dump", pid: int) -> dict[str, Any]:
    """pid, comm, rlimit_core, rlimit_fsize, dumpable, coredump_filter, uids, gids, cwd,
    cwd_stat, exe of one task; a value that cannot be read is None and its reason is in `errors`."""
    k = dump.kernel
    task, comm = task_of(dump, pid)
    t = k.type("struct task_struct")
    out: dict[str, Any] = {"pid": pid, "comm": comm, "errors": []}

    def attempt(what: str, fn) -> Any:
        try:
            return fn()
        except (KdnbError, struct.error) as exc:
            out["errors"].append(f"{what}: {exc}")
            return None

    def rlimits() -> tuple[int, int]:
        sig = k.read_u64(task + t.offsetof("signal"))
        rlim = sig + k.type("struct signal_struct").offsetof("rlim")
        size = k.type("struct rlimit").size
        return (k.read_u64(rlim + RLIMIT_CORE * size), k.read_u64(rlim + RLIMIT_FSIZE * size))

    limits = attempt("signal->rlim", rlimits)
    out["rlimit_core"], out["rlimit_fsize"] = limits if limits else (None, None)
    mm = attempt("mm", lambda: mm_of(k, task))
    flags = attempt("mm->flags", lambda: k.read_u64(mm + k.type("struct mm_struct").offsetof("flags"))) \
        if mm else None
    if t.has_member("exec_state"):  # 7.x moved the dumpable state out of mm->flags
        out["dumpable"] = attempt("exec_state->dumpable", lambda: _exec_state_dumpable(dump, task))
    else:
        out["dumpable"] = flags & MMF_DUMPABLE_MASK if flags is not None else None
    out["coredump_filter"] = (flags >> MMF_DUMP_FILTER_SHIFT) & MMF_DUMP_FILTER_MASK \
        if flags is not None else None

    def creds() -> tuple[int, ...]:
        cred = k.read_u64(task + t.offsetof("cred"))
        c = k.type("struct cred")
        return tuple(k.read_u32(cred + c.offsetof(f)) for f in CRED_IDS)

    ids = attempt("cred", creds)
    out["uids"], out["gids"] = (ids[:4], ids[4:]) if ids else (None, None)
    paths = Paths(k)

    def cwd() -> str | None:
        fs = k.read_u64(task + t.offsetof("fs"))
        if not fs:
            return None
        pwd = fs + k.type("struct fs_struct").offsetof("pwd")
        return paths.path(k.read_u64(pwd), k.read_u64(pwd + k.type("struct path").offsetof("dentry")))

    out["cwd"] = attempt("fs->pwd", cwd)
    out["cwd_stat"] = attempt("fs->pwd inode", lambda: _cwd_stat(dump, task))

    def exe() -> str | None:
        file = k.read_u64(mm + k.type("struct mm_struct").offsetof("exe_file"))
        return paths.file_path(file) if file else None

    out["exe"] = attempt("mm->exe_file", exe) if mm else None
    return out
