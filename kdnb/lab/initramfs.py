"""A small newc-cpio (+gzip) writer and reader for the guests' initramfs images."""

from __future__ import annotations

import gzip
import io
import stat
from dataclasses import dataclass, field
from pathlib import Path

NEWC_MAGIC = b"070701"
TRAILER = "TRAILER!!!"


@dataclass
class Entry:
    """One cpio member: a directory, regular file, symlink or character device."""

    name: str
    mode: int
    data: bytes = b""
    rdev: tuple[int, int] = (0, 0)


@dataclass
class Initramfs:
    """An in-memory initramfs; add members, then `write()` a gzip'd newc archive."""

    entries: dict[str, Entry] = field(default_factory=dict)

    def _parents(self, name: str) -> None:
        parts = name.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i])
            if d and d not in self.entries:
                self.entries[d] = Entry(d, stat.S_IFDIR | 0o755)

    def add_dir(self, name: str, mode: int = 0o755) -> None:
        name = name.strip("/")
        self._parents(name)
        self.entries[name] = Entry(name, stat.S_IFDIR | mode)

    def add_file(self, name: str, data: bytes | str, mode: int = 0o644) -> None:
        name = name.strip("/")
        self._parents(name)
        if isinstance(data, str):
            data = data.encode()
        self.entries[name] = Entry(name, stat.S_IFREG | mode, data)

    def add_host_file(self, name: str, path: Path, mode: int | None = None) -> None:
        """Copy a host file (following symlinks) into the image."""
        path = Path(path)
        m = mode if mode is not None else (0o755 if path.stat().st_mode & 0o111 else 0o644)
        self.add_file(name, path.read_bytes(), m)

    def add_symlink(self, name: str, target: str) -> None:
        name = name.strip("/")
        self._parents(name)
        self.entries[name] = Entry(name, stat.S_IFLNK | 0o777, target.encode())

    def add_chardev(self, name: str, major: int, minor: int, mode: int = 0o600) -> None:
        name = name.strip("/")
        self._parents(name)
        self.entries[name] = Entry(name, stat.S_IFCHR | mode, b"", (major, minor))

    def to_cpio(self) -> bytes:
        """The uncompressed newc archive (directories before their contents)."""
        out = io.BytesIO()
        ino = 1
        for name in sorted(self.entries, key=lambda n: (n.count("/"), n)):
            e = self.entries[name]
            _write_member(out, ino, e)
            ino += 1
        _write_member(out, ino, Entry(TRAILER, 0))
        pad = (-out.tell()) % 512
        out.write(b"\0" * pad)
        return out.getvalue()

    def write(self, path: Path, level: int = 6) -> int:
        """Write the gzip'd archive to ``path``; returns its size."""
        data = gzip.compress(self.to_cpio(), compresslevel=level, mtime=0)
        Path(path).write_bytes(data)
        return len(data)


def _write_member(out: io.BytesIO, ino: int, e: Entry) -> None:
    name = e.name.encode() + b"\0"
    nlink = 2 if stat.S_ISDIR(e.mode) else 1
    fields = [ino, e.mode, 0, 0, nlink, 0, len(e.data), 0, 0, e.rdev[0], e.rdev[1], len(name), 0]
    out.write(NEWC_MAGIC + b"".join(b"%08X" % v for v in fields))
    out.write(name)
    out.write(b"\0" * ((-(110 + len(name))) % 4))
    out.write(e.data)
    out.write(b"\0" * ((-len(e.data)) % 4))


def read_cpio(data: bytes) -> list[Entry]:
    """Parse a newc archive (gzip'd or not) back into entries (trailer excluded)."""
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    pos = 0
    out: list[Entry] = []
    while pos + 110 <= len(data):
        hdr = data[pos:pos + 110]
        if hdr[:6] != NEWC_MAGIC:
            raise ValueError(f"bad cpio magic at offset {pos}: {hdr[:6]!r}")
        f = [int(hdr[6 + 8 * i:14 + 8 * i], 16) for i in range(13)]
        mode, filesize, rmaj, rmin, namesize = f[1], f[6], f[9], f[10], f[11]
        pos += 110
        name = data[pos:pos + namesize - 1].decode()
        pos += namesize
        pos += (-(110 + namesize)) % 4
        body = data[pos:pos + filesize]
        pos += filesize + ((-filesize) % 4)
        if name == TRAILER:
            break
        out.append(Entry(name, mode, body, (rmaj, rmin)))
    return out
