"""A file tree laid out like `/` (this machine, a copy of one, or a lab snapshot folder) and
what checks of a live system read from it: files, the kernel release and the kernel config.
Shared by the kdump readiness and the core-dump checks."""

from __future__ import annotations

import gzip
import os
import re

READ_MAX = 1 << 22
READ_CHUNK = 1 << 16
# Snapshot folders (the lab's /proc copies) name files differently from a root tree.
SNAPSHOT_NAMES = {
    "proc/cmdline": "cmdline.txt",
    "proc/iomem": "iomem.txt",
    "sys/kernel/kexec_crash_size": "kexec_crash_size.txt",
    "sys/kernel/kexec_crash_loaded": "kexec_crash_loaded.txt",
    "proc/meminfo": "meminfo.txt",
    "proc/sys/kernel/core_pattern": "core_pattern.txt",
    "proc/sys/fs/suid_dumpable": "suid_dumpable.txt",
}

class RootTree:
    """Reads files of a root tree (`/` for this machine), or of a lab snapshot folder."""

    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root)
        self.live = self.root == "/"
        self.snapshot = os.path.isfile(os.path.join(self.root, "cmdline.txt")) and \
            not os.path.isdir(os.path.join(self.root, "proc"))

    def path(self, rel: str) -> str:
        """Where `rel` (a path as on `/`) is in this tree."""
        rel = rel.lstrip("/")
        if self.snapshot and rel in SNAPSHOT_NAMES:
            return os.path.join(self.root, SNAPSHOT_NAMES[rel])
        return os.path.join(self.root, rel)

    def exists(self, rel: str) -> bool:
        """Whether `rel` exists in this tree."""
        return os.path.exists(self.path(rel))

    def read(self, rel: str) -> str | None:
        """The text of a file of the tree (gunzipped for .gz), at most READ_MAX bytes; None
        when it cannot be read. Read in chunks: /proc/sys refuses one read of READ_MAX."""
        chunks: list[bytes] = []
        try:
            with open(self.path(rel), "rb", buffering=0) as f:
                size = 0
                while size < READ_MAX:
                    chunk = f.read(READ_CHUNK)
                    if not chunk:
                        break
                    chunks.append(chunk)
                    size += len(chunk)
        except OSError:
            return None
        data = b"".join(chunks)[:READ_MAX]
        if rel.endswith(".gz"):
            try:
                data = gzip.decompress(data)
            except OSError:
                return None
        return data.decode("utf-8", "replace")

    def release(self) -> str:
        """The kernel release of the tree ("" when unknown)."""
        text = self.read("proc/sys/kernel/osrelease")
        if text and text.strip():
            return text.strip()
        if self.snapshot:
            uname = self.read("uname.txt") or ""
            parts = uname.split()
            if len(parts) >= 3:
                return parts[2]
        if self.live:
            return os.uname().release
        return ""


def parse_kconfig(text: str) -> dict[str, str]:
    """CONFIG_X=value lines (and `# CONFIG_X is not set` as 'n')."""
    cfg = {}
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("CONFIG_"):
            k, _, v = line.partition("=")
            cfg[k] = v.strip('"')
        else:
            m = re.match(r"# (CONFIG_\w+) is not set", line)
            if m:
                cfg[m.group(1)] = "n"
    return cfg


def kernel_config(tree: RootTree, release: str) -> tuple[dict[str, str], str]:
    """The kernel's config options and where they were read (`/boot/config-REL`,
    `/proc/config.gz`, a snapshot's `config.txt`); ({}, "") when none is found."""
    candidates = [f"boot/config-{release}"] if release else []
    candidates += ["proc/config.gz", "config.txt", "config.gz"]
    for rel in candidates:
        text = tree.read(rel)
        if text:
            return parse_kconfig(text), "/" + rel
    return {}, ""
