"""`Dump.mounts`: every mounted filesystem with its superblock and freeze state (crash `mount`).

The walk starts at the global `super_blocks` list (`super_block.s_list`), so superblocks of every
mount namespace are seen, then each superblock's mounts: `s_mounts` chained through
`mount.mnt_instance` (a list_head), or on 7.x a `struct mount *` chained through
`mount.mnt_next_for_sb`. A superblock with no mount left (a lazily unmounted or internal one)
is listed once, with no mount columns, when it is frozen.

| column | dtype | meaning |
|---|---|---|
| `mnt_id` | Int32 | the mount id (/proc/PID/mountinfo) |
| `path` | string | where it is mounted, from the global root (d_path across mounts) |
| `device` | string | the mount's device name (`/dev/vdb`, `tmpfs`, `proc`) |
| `fstype` | category | the filesystem type (`ext4`, `tmpfs`) |
| `frozen` | category | s_writers.frozen: unfrozen, write, pagefault, fs, complete |
| `frozen_by` | category | userspace (FIFREEZE, fsfreeze), kernel, both; NA when unfrozen or unknown (before 6.6) |
| `read_only` | bool | SB_RDONLY on the superblock or MNT_READONLY on the mount |
| `internal` | bool | a kernel-internal mount (kern_mount: no mount namespace, not in /proc/mounts) |
| `s_id` | string | the superblock's id (the block device name for disk filesystems) |
| `dev` | UInt32 | s_dev (major << 20 | minor) |
| `superblock` | UInt64 | the struct super_block |
| `address` | UInt64 | the struct mount |
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ..errors import KdnbError
from .common import Gaps, fitting, read_or_none
from .paths import Paths

if TYPE_CHECKING:  # pragma: no cover
    from ..api import Dump
    from ..kernel.kernel import Kernel

COLUMNS = ["mnt_id", "path", "device", "fstype", "frozen", "frozen_by", "read_only", "internal",
           "s_id", "dev", "superblock", "address"]
#: fs/mount.h: the mnt_ns of a kernel-internal mount (kern_mount: sockfs, pipefs, ...)
MNT_NS_INTERNAL = (1 << 64) - 22  # ERR_PTR(-EINVAL)
#: enum { SB_UNFROZEN, SB_FREEZE_WRITE, SB_FREEZE_PAGEFAULT, SB_FREEZE_FS, SB_FREEZE_COMPLETE }
FREEZE_LEVELS = ["unfrozen", "write", "pagefault", "fs", "complete"]
FROZEN_BY = ["userspace", "kernel", "both"]
SB_RDONLY = 1
MNT_READONLY = 0x40
MAX_SUPERBLOCKS = 1 << 16
MAX_MOUNTS_PER_SB = 1 << 16
NAME_MAX = 255


class _Reader:
    """Layouts of super_block and mount for this kernel."""

    def __init__(self, k: "Kernel") -> None:
        self.k = k
        sb = k.type("struct super_block")
        m = k.type("struct mount")
        # 7.x: sb->s_mounts is a `struct mount *`, mounts chained through mnt_next_for_sb
        self.instance_list = m.has_member("mnt_instance")
        fields = ["s_list.next", "s_dev", "s_flags", "s_type", "s_id", "s_writers.frozen",
                  "s_mounts.next" if self.instance_list else "s_mounts"]
        # 6.6 (fs: "fs: add a new freeze holder"): who froze it, counted per holder
        self.counts = sb.has_member("s_writers.freeze_ucount")
        if self.counts:
            fields += ["s_writers.freeze_kcount", "s_writers.freeze_ucount"]
        self.sb = k.layout(sb, fields)
        self.s_list_off = sb.offsetof("s_list")
        self.s_mounts_off = sb.offsetof("s_mounts")
        link = "mnt_instance.next" if self.instance_list else "mnt_next_for_sb"
        self.mnt_instance_off = m.offsetof("mnt_instance") if self.instance_list else 0
        self.mount = k.layout(m, ["mnt_id", "mnt_devname", "mnt.mnt_root", "mnt.mnt_flags", link,
                                   "mnt_ns"])
        self.mnt_off = m.offsetof("mnt")
        self.fs_name_off = k.type("struct file_system_type").offsetof("name")
        self.paths = Paths(k)
        self._names: dict[int, str | None] = {}

    def fs_name(self, fs_type: int) -> str | None:
        if fs_type not in self._names:
            try:
                self._names[fs_type] = self.k.read_cstring(self.k.read_u64(fs_type + self.fs_name_off), NAME_MAX)
            except KdnbError:
                self._names[fs_type] = None
        return self._names[fs_type]

    def mounts_of(self, sb: int, s_mounts: int, gaps: Gaps) -> list[tuple]:
        """(mount address, mount layout values) of every mount of a superblock."""
        out: list[tuple] = []
        seen: set[int] = set()
        if self.instance_list:
            head = sb + self.s_mounts_off
            node = s_mounts
            while node != head and node and node not in seen and len(seen) < MAX_MOUNTS_PER_SB:
                seen.add(node)
                mount = node - self.mnt_instance_off
                data = read_or_none(self.k, mount, self.mount.size, gaps, "struct mount")
                if data is None:
                    return out
                row = self.mount.unpack(data)
                out.append((mount, row))
                node = row[4]
        else:
            mount = s_mounts
            while mount and mount not in seen and len(seen) < MAX_MOUNTS_PER_SB:
                seen.add(mount)
                data = read_or_none(self.k, mount, self.mount.size, gaps, "struct mount")
                if data is None:
                    return out
                row = self.mount.unpack(data)
                out.append((mount, row))
                mount = row[4]
        if len(seen) >= MAX_MOUNTS_PER_SB:
            gaps.note(f"mounts of superblock {sb:#x}: more than {MAX_MOUNTS_PER_SB}")
        return out


def _frozen_by(counts: bool, kcount: int, ucount: int) -> str | None:
    if not counts:
        return None
    if kcount and ucount:
        return "both"
    return "userspace" if ucount else ("kernel" if kcount else None)


def superblocks(dump: "Dump", gaps: Gaps) -> list[tuple[int, tuple, _Reader]]:
    """(address, layout values, reader) of every superblock on `super_blocks`."""
    k = dump.kernel
    r = _Reader(k)
    head = k.symbol("super_blocks")
    out = []
    for node in k.list_walk(head, max_entries=MAX_SUPERBLOCKS):
        sb = node - r.s_list_off
        data = read_or_none(k, sb, r.sb.size, gaps, "struct super_block")
        if data is not None:
            out.append((sb, r.sb.unpack(data), r))
    return out


def mounts_frame(dump: "Dump") -> pd.DataFrame:
    """The mounts DataFrame (columns: see COLUMNS)."""
    gaps = Gaps()
    walk_rows: list[dict[str, Any]] = []
    sbs = superblocks(dump, gaps)
    for sb, row, r in sbs:
        _next, dev, s_flags, s_type, s_id, frozen, s_mounts = row[:7]
        by = _frozen_by(r.counts, *row[7:9]) if r.counts else None
        level = FREEZE_LEVELS[frozen] if 0 <= frozen < len(FREEZE_LEVELS) else None
        base = {"fstype": r.fs_name(s_type), "frozen": level, "frozen_by": by if frozen else None,
                "s_id": s_id, "dev": dev, "superblock": sb}
        mounts = r.mounts_of(sb, s_mounts, gaps)
        if not mounts and frozen:
            walk_rows.append({**base, "read_only": bool(s_flags & SB_RDONLY)})
        for mount, (mnt_id, devname, root, mnt_flags, _link, ns) in mounts:
            try:
                path = r.paths.path(mount + r.mnt_off, root)
            except KdnbError as exc:
                gaps.note(f"path of mount {mount:#x}", mount, exc)
                path = None
            try:
                device = dump.kernel.read_cstring(devname, 4096) if devname else None
            except KdnbError:
                device = None
            walk_rows.append({**base, "mnt_id": mnt_id, "path": path, "device": device,
                              "read_only": bool(s_flags & SB_RDONLY or mnt_flags & MNT_READONLY),
                              "internal": ns in (0, MNT_NS_INTERNAL), "address": mount})
    df = _frame(walk_rows, gaps)
    df.attrs["kdnb"] = {**df.attrs.get("kdnb", {}), "walk": {"list": "super_blocks",
                                                              "superblocks": len(sbs)}}
    return gaps.attach(df, "mounts")


def _frame(rows: list[dict[str, Any]], gaps: Gaps) -> pd.DataFrame:
    col = {c: [r.get(c) for r in rows] for c in COLUMNS}
    df = pd.DataFrame({
        "mnt_id": fitting(col["mnt_id"], "Int32", "mnt_id", gaps),
        "path": pd.array(col["path"], dtype="string"),
        "device": pd.array(col["device"], dtype="string"),
        "fstype": pd.Categorical(col["fstype"]),
        "frozen": pd.Categorical(col["frozen"], categories=FREEZE_LEVELS),
        "frozen_by": pd.Categorical(col["frozen_by"], categories=FROZEN_BY),
        "read_only": np.array([bool(v) for v in col["read_only"]], dtype=bool),
        "internal": np.array([bool(v) for v in col["internal"]], dtype=bool),
        "s_id": pd.array(col["s_id"], dtype="string"),
        "dev": fitting(col["dev"], "UInt32", "dev", gaps),
        "superblock": fitting(col["superblock"], "UInt64", "superblock", gaps),
        "address": fitting(col["address"], "UInt64", "address", gaps),
    }, columns=COLUMNS)
    return df.sort_values(["mnt_id"], kind="stable", na_position="last").reset_index(drop=True)


def rw_sem_owner(dump: "Dump", address: int) -> tuple[int, int] | None:
    """(superblock, freeze level index) when `address` is one of a superblock's
    `s_writers.rw_sem[]` per-CPU rw-semaphores (level 1 = SB_FREEZE_WRITE), else None."""
    mounts = dump.mounts
    k = dump.kernel
    sb_t = k.type("struct super_block")
    off = sb_t.offsetof("s_writers.rw_sem")
    arr = sb_t.member("s_writers.rw_sem").type.strip()
    size = arr.size or 0
    stride = size // max(arr.length or 1, 1)
    for sb in set(int(s) for s in mounts["superblock"].dropna()):
        if sb + off <= address < sb + off + size and stride:
            return sb, (address - sb - off) // stride + 1
    return None
