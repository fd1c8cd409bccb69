"""Recognise a dump file by its first bytes, and say what a file is when it is not a dump."""

from __future__ import annotations

import os
import stat
import struct
from typing import Callable

from ..errors import FormatError
from .notes import parse_notes

ELF_MAGIC = b"\x7fELF"
COMPRESSED_MAGICS = (
    (b"\x1f\x8b", "gzip-compressed", "gunzip"),
    (b"\x28\xb5\x2f\xfd", "zstd-compressed", "zstd -d"),
    (b"\xfd7zXZ\x00", "xz-compressed", "unxz"),
    (b"BZh", "bzip2-compressed", "bunzip2"),
    (b"\x04\x22\x4d\x18", "lz4-compressed", "lz4 -d"),
)
PROCESS_NOTE_TYPES = frozenset({3, 6, 0x46494C45, 0x53494749})  # NT_PRPSINFO/AUXV/FILE/SIGINFO
CORE_NOTES_READ = 1 << 16  # the first notes say enough: the process notes come first


def sniff(path: str) -> str:
    """'elf', 'kdump' or 'flattened' for a dump; FormatError naming what the file is otherwise.

    Only regular files are opened: a FIFO, socket or device is refused from its stat, before
    any read could block on it or never end."""
    size = regular_file_size(path)
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
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


def regular_file_size(path: str) -> int:
    """The size of `path` when it is a regular file; FormatError (from its stat, nothing is
    opened) for a missing file, a directory, FIFO, socket or device."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise FormatError(f"{path}: no such file") from None
    except OSError as exc:
        raise FormatError(f"{path}: cannot be read ({exc.strerror})") from None
    if not stat.S_ISREG(st.st_mode):
        raise FormatError(f"{path}: {_kind(st.st_mode)}, not a dump file")
    return st.st_size


_KINDS = ((stat.S_ISDIR, "is a directory"), (stat.S_ISFIFO, "is a FIFO (named pipe)"),
          (stat.S_ISSOCK, "is a socket"), (stat.S_ISCHR, "is a character device"),
          (stat.S_ISBLK, "is a block device"))


def _kind(mode: int) -> str:
    """What a non-regular file is, from its st_mode."""
    return next((what for test, what in _KINDS if test(mode)), "is not a regular file")


def special_file(path: str) -> str | None:
    """"is a FIFO (named pipe)" & co. for a file whose reads could block or never end (FIFO,
    socket, device), from its stat; None for anything else (missing files included)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    return None if stat.S_ISREG(mode) or stat.S_ISDIR(mode) else _kind(mode)


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


def is_process_core(read: Callable[[int, int], bytes]) -> bool:
    """Whether an ELF file, read through `read(offset, size)`, is a userspace process core
    rather than a kernel vmcore: ET_CORE, no VMCOREINFO or QEMU note, and process notes
    (NT_PRPSINFO, NT_AUXV, NT_FILE or NT_SIGINFO) in its first PT_NOTE."""
    ehdr = read(0, 64)
    if len(ehdr) < 64 or not ehdr.startswith(ELF_MAGIC) or ehdr[4] != 2 or ehdr[5] != 1:
        return False
    e_type, = struct.unpack_from("<H", ehdr, 16)
    e_phoff, = struct.unpack_from("<Q", ehdr, 32)
    e_phentsize, e_phnum = struct.unpack_from("<HH", ehdr, 54)
    if e_type != 4 or e_phentsize < 56:
        return False
    for i in range(min(e_phnum, 16)):  # Linux and gdb write the PT_NOTE first
        ph = read(e_phoff + i * e_phentsize, 56)
        if len(ph) < 56 or struct.unpack_from("<I", ph, 0)[0] != 4:
            continue
        offset, = struct.unpack_from("<Q", ph, 8)
        filesz, = struct.unpack_from("<Q", ph, 32)
        notes = parse_notes(read(offset, min(filesz, CORE_NOTES_READ)))
        if any(n.name in ("VMCOREINFO", "QEMU") for n in notes):
            return False
        return any(n.name == "CORE" and n.type in PROCESS_NOTE_TYPES for n in notes)
    return False
