"""What a task's own kernel state says about its next core dump, read from a vmcore: the
RLIMIT_CORE / RLIMIT_FSIZE soft limits (`signal->rlim[]`), the dumpable flag and the
coredump_filter bits (`mm->flags`: bits 0-1 and 2-10), the credentials (`cred`), the working
directory (`fs->pwd`) and the executable (`mm->exe_file`). Also whether the kernel was built
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
DUMPABLE_UNTRUSTED_FROM = 7  # kernel major version
CORE_FUNCTIONS = ("vfs_coredump", "do_coredump")
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


def _dumpable_trusted(dump: "Dump") -> bool:
    """Whether mm->flags bits 0-1 hold the dumpable state on this kernel: verified on 5.10 to
    6.12 (every exec'd task reads 1); on 7.2 every task reads 0 although its cores are written,
    so the state lives elsewhere there and is not reported."""
    release = dump.kernel.utsname().get("release", "")
    major = release.split(".", 1)[0]
    return major.isdigit() and int(major) < DUMPABLE_UNTRUSTED_FROM


def task_coredump_state(dump: "Dump", pid: int) -> dict[str, Any]:
    """pid, comm, rlimit_core, rlimit_fsize, dumpable, coredump_filter, uids, gids, cwd, exe of
    one task; a value that cannot be read is None and its reason is in `errors`."""
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
    out["dumpable"] = flags & MMF_DUMPABLE_MASK if flags is not None and _dumpable_trusted(dump) else None
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

    def exe() -> str | None:
        file = k.read_u64(mm + k.type("struct mm_struct").offsetof("exe_file"))
        return paths.file_path(file) if file else None

    out["exe"] = attempt("mm->exe_file", exe) if mm else None
    return out
