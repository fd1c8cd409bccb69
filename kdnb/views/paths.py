"""Path names of open files and mapped files: the dentry walk of the kernel's d_path() across
mounts (`struct mount` → mnt_parent / mnt_mountpoint), and the names of pseudo files whose dentry
has a `d_dname` operation (`pipe:[ino]`, `socket:[ino]`, `anon_inode:[eventpoll]`).

Paths are relative to the global root (the initial mount namespace's root), not to a task's
chroot. A name that cannot be read makes the path None; the caller notes the gap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import KdnbError

if TYPE_CHECKING:  # pragma: no cover
    from ..kernel.kernel import Kernel

MAX_DEPTH = 4096  # path components: PATH_MAX (4096) / 1 + separators
MAX_MOUNT_DEPTH = 1024
NAME_MAX = 255
#: d_dname operations and the names they make (fs/pipe.c, net/socket.c, fs/anon_inodes.c, ...)
PSEUDO = {"pipefs_dname": "pipe:[{ino}]", "sockfs_dname": "socket:[{ino}]",
          "anon_inodefs_dname": "anon_inode:{name}", "simple_dname": "/{name} (deleted)",
          "dmabuf_dname": "/dmabuf:{name}"}


class Paths:
    """Resolves `struct path`s ({vfsmount, dentry}) and `struct file`s to path names."""

    def __init__(self, k: "Kernel") -> None:
        self.k = k
        d = k.type("struct dentry")
        self.dentry = k.layout(d, ["d_parent", "d_name.hash_len", "d_name.name", "d_op", "d_inode",
                                   "d_hash.pprev"])
        m = k.type("struct mount")
        self.mnt_off = m.offsetof("mnt")
        self.mount = k.layout(m, ["mnt_parent", "mnt_mountpoint", "mnt.mnt_root", "mnt.mnt_sb"])
        self.dname_off = k.type("struct dentry_operations").offsetof("d_dname")
        f = k.type("struct file")
        self.file = k.layout(f, ["f_path.mnt", "f_path.dentry", "f_inode"])
        self.ino_off = k.type("struct inode").offsetof("i_ino")
        self._dentries: dict[int, tuple] = {}
        self._dname: dict[int, str | None] = {}

    def _d(self, dentry: int) -> tuple:
        row = self._dentries.get(dentry)
        if row is None:
            row = self.dentry.unpack(self.k.read(dentry, self.dentry.size))
            self._dentries[dentry] = row
        return row

    def file_path(self, file: int) -> str:
        """The path of an open `struct file` (raises KdnbError when unreadable)."""
        mnt, dentry, _inode = self.file.unpack(self.k.read(file, self.file.size))
        return self.path(mnt, dentry)

    def path(self, vfsmount: int, dentry: int) -> str:
        """d_path() of {vfsmount, dentry}: pseudo-file names, " (deleted)" for an unlinked file."""
        parent, hash_len, name_ptr, d_op, inode, pprev = self._d(dentry)
        pseudo = self._pseudo(d_op)
        if pseudo is not None:
            ino = self.k.read_u64(inode + self.ino_off) if inode else 0
            return pseudo.format(ino=ino, name=self._name(hash_len, name_ptr))
        deleted = not pprev and parent != dentry  # d_unlinked(): unhashed and not a root
        parts: list[str] = []
        mount = vfsmount - self.mnt_off
        mnt_row = self.mount.unpack(self.k.read(mount, self.mount.size))
        hops = 0
        while len(parts) < MAX_DEPTH:
            mnt_parent, mountpoint, mnt_root, _sb = mnt_row
            if dentry == mnt_root or dentry == self._d(dentry)[0]:
                if mnt_parent == mount or not mnt_parent or hops >= MAX_MOUNT_DEPTH:
                    break  # the global root (or a detached mount's root)
                dentry, mount = mountpoint, mnt_parent
                mnt_row = self.mount.unpack(self.k.read(mount, self.mount.size))
                hops += 1
                continue
            d_parent, d_hash_len, d_name, _op, _inode, _pprev = self._d(dentry)
            parts.append(self._name(d_hash_len, d_name))
            dentry = d_parent
        else:
            raise KdnbError(f"dentry chain longer than {MAX_DEPTH} components")
        path = "/" + "/".join(reversed(parts))
        return path + " (deleted)" if deleted else path

    def _name(self, hash_len: int, name_ptr: int) -> str:
        n = min(hash_len >> 32, NAME_MAX)
        return self.k.read(name_ptr, n).decode("utf-8", "replace") if n else ""

    def _pseudo(self, d_op: int) -> str | None:
        """The name pattern of a d_dname operation, or None for a normal dentry."""
        if not d_op:
            return None
        if d_op not in self._dname:
            fn = self.k.read_u64(d_op + self.dname_off)
            hit = self.k.lookup(fn) if fn else None
            self._dname[d_op] = None if not fn else \
                PSEUDO.get(hit.name if hit is not None else "", "[{name}]")
        return self._dname[d_op]
