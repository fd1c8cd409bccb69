"""Read the VMCOREINFO text out of a finished dump (ELF or kdump-compressed), host side.

The lab uses this only to fill ground-truth.json; kdnb's real readers live in kdnb.dump.
"""

from __future__ import annotations

import struct
from pathlib import Path


def parse_vmcoreinfo(text: str) -> dict[str, str]:
    """'KEY=VALUE' lines -> dict (first occurrence wins)."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        if "=" in line:
            k, v = line.split("=", 1)
            out.setdefault(k, v)
    return out


def _elf_notes(blob: bytes, align: int = 4):
    pos = 0
    while pos + 12 <= len(blob):
        namesz, descsz, ntype = struct.unpack_from("<III", blob, pos)
        pos += 12
        name = blob[pos:pos + namesz].rstrip(b"\0").decode("ascii", "replace")
        pos += (namesz + align - 1) // align * align
        desc = blob[pos:pos + descsz]
        pos += (descsz + align - 1) // align * align
        yield name, ntype, desc


def read_vmcoreinfo(path: Path) -> dict[str, str]:
    """VMCOREINFO of an ELF (32/64) or kdump-compressed dump; {} when not found."""
    with open(path, "rb") as f:
        head = f.read(4096)
        if head[:8] in (b"KDUMP   ", b"DISKDUMP"):
            block = struct.unpack_from("<i", head, 428)[0]
            f.seek(block)
            sub = f.read(48)
            off, size = struct.unpack_from("<QQ", sub, 32)
            f.seek(off)
            return parse_vmcoreinfo(f.read(size).decode("ascii", "replace"))
        if head[:4] == b"\x7fELF":
            is64 = head[4] == 2
            if is64:
                phoff, = struct.unpack_from("<Q", head, 32)
                phentsize, phnum = struct.unpack_from("<HH", head, 54)
            else:
                phoff, = struct.unpack_from("<I", head, 28)
                phentsize, phnum = struct.unpack_from("<HH", head, 42)
            f.seek(phoff)
            ph = f.read(phentsize * phnum)
            for i in range(phnum):
                if is64:
                    ptype, _fl, offset, _va, _pa, filesz = struct.unpack_from("<IIQQQQ", ph, i * phentsize)
                else:
                    ptype, offset, _va, _pa, filesz = struct.unpack_from("<IIIII", ph, i * phentsize)
                if ptype == 4:  # PT_NOTE
                    f.seek(offset)
                    for name, _t, desc in _elf_notes(f.read(filesz)):
                        if name == "VMCOREINFO":
                            return parse_vmcoreinfo(desc.decode("ascii", "replace"))
    return {}
