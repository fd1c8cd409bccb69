"""Recognise a dump file by its first bytes, and say what a file is when it is not a dump."""

from __future__ import annotations

import os

from ..errors import FormatError

ELF_MAGIC = b"\x7fELF"
COMPRESSED_MAGICS = (
    (b"\x1f\x8b", "gzip-compressed", "gunzip"),
    (b"\x28\xb5\x2f\xfd", "zstd-compressed", "zstd -d"),
    (b"\xfd7zXZ\x00", "xz-compressed", "unxz"),
    (b"BZh", "bzip2-compressed", "bunzip2"),
    (b"\x04\x22\x4d\x18", "lz4-compressed", "lz4 -d"),
)


def sniff(path: str) -> str:
    """'elf', 'kdump' or 'flattened' for a dump; FormatError naming what the file is otherwise."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(4096)
    except IsADirectoryError:
        raise FormatError(f"{path}: is a directory, not a dump file") from None
    except FileNotFoundError:
        raise FormatError(f"{path}: no such file") from None
    except OSError as exc:
        raise FormatError(f"{path}: cannot be read ({exc.strerror})") from None
    if size == 0:
        raise FormatError(f"{path}: empty file (0 bytes); the capture wrote nothing")
    if head.startswith(ELF_MAGIC):
        return "elf"
    if head[:8] in (b"KDUMP   ", b"DISKDUMP"):
        return "kdump"
    if head.startswith(b"makedumpfile"):
        return "flattened"
    for magic, what, tool in COMPRESSED_MAGICS:
        if head.startswith(magic):
            raise FormatError(f"{path}: {what}: decompress it first ({tool}), then open the result")
    raise FormatError(f"{path}: not a crash dump ({describe(head)}); kdnb reads ELF vmcores, "
                      "makedumpfile kdump-compressed/flattened files and QEMU dumps")


def describe(head: bytes) -> str:
    """A few words on what some bytes look like."""
    if not head.strip(b"\0"):
        return "all zero bytes"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return f"binary data starting {head[:8].hex()}"
    printable = sum(c.isprintable() or c in "\r\n\t" for c in text) / max(len(text), 1)
    if printable > 0.95:
        first = text.strip().splitlines()[0][:60] if text.strip() else ""
        return f"text starting {first!r}"
    return f"binary data starting {head[:8].hex()}"
