"""Container-level mutators: each writes a mutated copy of a sample to `out` and says what it did.

A mutator is `fn(rng, base, out) -> description`; `base` is a KdumpLayout or ElfLayout (or, for
stream-level edits, the path of a flattened sample). Everything a mutator picks comes from `rng`,
so (seed, case number) reproduces a case.
"""

from __future__ import annotations

import os
import random
import shutil
import struct
from pathlib import Path
from typing import Callable

from tests.builders import Spec, write_elf
from tests.fuzz.samples import (
    HEADER_FIELDS,
    PHDR_NAMES,
    SUB_FIELDS,
    ElfLayout,
    KdumpLayout,
)

Mutator = Callable[[random.Random, object, Path], str]
BOUNDARY = (0, 1, 2, 7, 8, 0x7F, 0x80, 0xFF, 0x100, 0xFFF, 0x1000, 0x1001, 0x7FFF, 0xFFFF, 0x10000,
            0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 1 << 32, 1 << 40, 1 << 52, (1 << 63) - 1, 1 << 63,
            (1 << 64) - 1, (1 << 64) - 4096)


def _patch(path: Path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def _read(path: Path, offset: int, size: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(size)


def number(rng: random.Random, old: int, bits: int) -> tuple[int, str]:
    """An interesting replacement for a `bits`-wide field holding `old` (wrapped to the width)."""
    choice = rng.randrange(6)
    if choice == 0:
        new, how = rng.choice(BOUNDARY), "boundary"
    elif choice == 1:
        new, how = old ^ (1 << rng.randrange(bits)), "bit flip"
    elif choice == 2:
        new, how = old + rng.choice((-4096, -1, 1, 4096, old)), "off by a little"
    elif choice == 3:
        new, how = -rng.choice((1, 2, 4096, 1 << 31)), "negative"
    elif choice == 4:
        new, how = rng.getrandbits(bits), "random"
    else:
        new, how = old << rng.choice((1, 8, 16)), "scaled"
    return new & ((1 << bits) - 1), how


def _field_edit(rng: random.Random, path: Path, base: int, fields: dict[str, tuple[int, str]],
                what: str) -> str:
    name = rng.choice(sorted(fields))
    off, fmt = fields[name]
    size = struct.calcsize(fmt)
    old = int.from_bytes(_read(path, base + off, size), "little")
    new, how = number(rng, old, size * 8)
    _patch(path, base + off, new.to_bytes(size, "little"))
    return f"{what} {name}: {old:#x} -> {new:#x} ({how})"


def _flip_bits(rng: random.Random, path: Path, lo: int, hi: int, what: str) -> str:
    n = rng.choice((1, 1, 2, 8))
    spots = []
    for _ in range(n):
        pos = rng.randrange(lo, max(lo + 1, hi))
        bit = rng.randrange(8)
        byte = _read(path, pos, 1)
        if byte:
            _patch(path, pos, bytes([byte[0] ^ (1 << bit)]))
            spots.append(f"{pos:#x}.{bit}")
    return f"{what}: flipped bits at {', '.join(spots)}"


# -- kdump-compressed ------------------------------------------------------------------------
def kd_truncate(rng: random.Random, lay: KdumpLayout, out: Path) -> str:
    """Cut the file inside its header, sub-header, bitmaps, descriptors, data or near its end."""
    regions = [(0, lay.bs), (lay.bs, lay.sub_end), (lay.bitmap_off, lay.desc_off),
               (lay.desc_off, lay.desc_off + 24 * lay.present), (lay.desc_off + 24 * lay.present, lay.size),
               (max(0, lay.size - 65536), lay.size)]
    lo, hi = rng.choice(regions)
    cut = rng.randrange(lo, max(lo + 1, hi))
    shutil.copyfile(lay.path, out)
    os.truncate(out, cut)
    return f"truncated to {cut:#x} of {lay.size:#x} bytes"


def kd_header(rng: random.Random, lay: KdumpLayout, out: Path) -> str:
    """Change one disk_dump_header field, or flip bits anywhere in it."""
    shutil.copyfile(lay.path, out)
    if rng.random() < 0.7:
        return _field_edit(rng, out, 0, HEADER_FIELDS, "disk_dump_header")
    return _flip_bits(rng, out, 0, 464, "disk_dump_header")


def kd_sub_header(rng: random.Random, lay: KdumpLayout, out: Path) -> str:
    """Change one kdump_sub_header field (max_mapnr_64, offset_vmcoreinfo, ...) or flip bits."""
    shutil.copyfile(lay.path, out)
    if rng.random() < 0.7:
        return _field_edit(rng, out, lay.bs, SUB_FIELDS, "kdump_sub_header")
    return _flip_bits(rng, out, lay.bs, lay.bs + 104, "kdump_sub_header")


def kd_bitmap(rng: random.Random, lay: KdumpLayout, out: Path) -> str:
    """Flip bits in either bitmap, or fill a run of it with ones or zeros."""
    shutil.copyfile(lay.path, out)
    half = rng.randrange(2)
    lo = lay.bitmap_off + half * lay.bitmap_half
    if rng.random() < 0.7:
        return _flip_bits(rng, out, lo, lo + lay.bitmap_half, f"bitmap {half + 1}")
    start = rng.randrange(lo, lo + lay.bitmap_half)
    n = rng.choice((1, 64, 4096, lay.bitmap_half))
    fill = rng.choice((0x00, 0xFF))
    n = min(n, lo + lay.bitmap_half - start)
    _patch(out, start, bytes([fill]) * n)
    return f"bitmap {half + 1}: {n} bytes at {start:#x} set to {fill:#x}"


def kd_descriptor(rng: random.Random, lay: KdumpLayout, out: Path) -> str:
    """Change a field of one or several page descriptors (offset, size, flags, page_flags)."""
    shutil.copyfile(lay.path, out)
    fields = {"offset": (0, "<q"), "size": (8, "<I"), "flags": (12, "<I"), "page_flags": (16, "<Q")}
    done = []
    for _ in range(rng.choice((1, 1, 3, 50))):
        index = rng.randrange(lay.present)
        done.append(f"#{index} " + _field_edit(rng, out, lay.desc_off + 24 * index, fields, "descriptor"))
    return "; ".join(done[:3]) + (f" (+{len(done) - 3} more)" if len(done) > 3 else "")


def kd_page_data(rng: random.Random, lay: KdumpLayout, out: Path) -> str:
    """Flip bits inside the stored (compressed) bytes of a few pages."""
    shutil.copyfile(lay.path, out)
    data_start = lay.desc_off + 24 * lay.present
    return _flip_bits(rng, out, data_start, lay.size, "page data")


def kd_note(rng: random.Random, lay: KdumpLayout, out: Path) -> str:
    """Change a note header (namesz, descsz, type) in the sub-header's ELF note blob."""
    shutil.copyfile(lay.path, out)
    blob = _read(out, lay.note_off, lay.note_size)
    heads, pos = [], 0
    while pos + 12 <= len(blob):
        namesz, descsz, _ = struct.unpack_from("<III", blob, pos)
        heads.append(pos)
        pos += 12 + ((namesz + 3) & ~3) + ((descsz + 3) & ~3)
    at = rng.choice(heads or [0])
    fields = {"namesz": (0, "<I"), "descsz": (4, "<I"), "type": (8, "<I")}
    return _field_edit(rng, out, lay.note_off + at, fields, f"note at +{at:#x}")


def edit_vmcoreinfo(rng: random.Random, info: dict[str, str]) -> tuple[dict[str, str], str]:
    """A copy of VMCOREINFO with one value replaced (huge, negative, zero, not a number, off by a
    page, ...) or a key dropped."""
    info = dict(info)
    keys = sorted(info)
    key = rng.choice(keys)
    old = info[key]
    is_hex = key.startswith("SYMBOL(") or key in ("KERNELOFFSET",)
    try:
        value = int(old, 16 if is_hex else 10)
    except ValueError:
        value = 0
    fmt = (lambda v: f"{v & ((1 << 64) - 1):x}") if is_hex else str
    choices = [
        ("huge", fmt(rng.choice((1 << 40, 1 << 63, (1 << 64) - 1, 10 ** 30)))),
        ("negative", "-" + rng.choice(("1", "4096", "9223372036854775808"))),
        ("zero", "0"), ("empty", ""),
        ("not a number", rng.choice(("abc", "0x1000", "12k", " ", "1e3", "\u0661\u0662", "--5", "ffff"))),
        ("off by a page", fmt(value + rng.choice((-4096, 4096)))),
        ("off by one", fmt(value + rng.choice((-1, 1)))),
        ("scaled", fmt(value * rng.choice((2, 8, 1 << 20)))),
        ("dropped", None),
    ]
    how, new = rng.choice(choices)
    if new is None:
        del info[key]
        return info, f"VMCOREINFO {key} dropped (was {old!r})"
    info[key] = new
    return info, f"VMCOREINFO {key}: {old!r} -> {new!r} ({how})"


def _vmcoreinfo_text(info: dict[str, str]) -> bytes:
    return "".join(f"{k}={v}\n" for k, v in info.items()).encode()


def kd_vmcoreinfo(rng: random.Random, lay: KdumpLayout, out: Path) -> str:
    """Edit a VMCOREINFO value in both copies the file holds (the sub-header's text and the
    VMCOREINFO note), growing them into the sub-header's free room when needed."""
    info, what = edit_vmcoreinfo(rng, lay.vmcoreinfo)
    text = _vmcoreinfo_text(info)
    shutil.copyfile(lay.path, out)
    blob = _read(out, lay.note_off, lay.note_size)
    at = blob.find(b"VMCOREINFO\0")
    if at < 12 or lay.vmci_off + len(text) > lay.sub_end:
        return what + " (no room: unchanged)"
    note_head = at - 12
    _patch(out, lay.note_off + note_head + 4, struct.pack("<I", len(text)))
    desc_at = lay.note_off + note_head + 12 + 12  # "VMCOREINFO\0" padded to 12 bytes
    if desc_at != lay.vmci_off:
        return what + " (note layout unexpected: unchanged)"
    old_len = lay.vmci_size
    _patch(out, lay.vmci_off, text + bytes(max(0, old_len - len(text))))
    _patch(out, lay.bs + SUB_FIELDS["size_vmcoreinfo"][0], struct.pack("<Q", len(text)))
    grown = ((len(text) + 3) & ~3) - ((old_len + 3) & ~3)
    _patch(out, lay.bs + SUB_FIELDS["size_note"][0], struct.pack("<Q", lay.note_size + grown))
    return what


# -- ELF --------------------------------------------------------------------------------------
def elf_truncate(rng: random.Random, lay: ElfLayout, out: Path) -> str:
    """Cut the ELF file in its headers, notes or loads."""
    regions = [(0, 64), (lay.phoff, lay.note_off), (lay.note_off, lay.note_off + lay.note_size),
               (lay.note_off + lay.note_size, lay.size), (max(0, lay.size - 65536), lay.size)]
    lo, hi = rng.choice(regions)
    cut = rng.randrange(lo, max(lo + 1, hi))
    shutil.copyfile(lay.path, out)
    os.truncate(out, cut)
    return f"ELF truncated to {cut:#x} of {lay.size:#x} bytes"


def elf_header(rng: random.Random, lay: ElfLayout, out: Path) -> str:
    """Change an ELF header field (e_phoff, e_phnum, e_phentsize, e_type, e_flags, ...)."""
    shutil.copyfile(lay.path, out)
    fields = {"e_type": (16, "<H"), "e_machine": (18, "<H"), "e_phoff": (32, "<Q"), "e_flags": (48, "<I"),
              "e_phentsize": (54, "<H"), "e_phnum": (56, "<H"), "ei_class": (4, "<B")}
    return _field_edit(rng, out, 0, fields, "ELF header")


def elf_phdr(rng: random.Random, lay: ElfLayout, out: Path) -> str:
    """Change one program header field: p_memsz 2^64-1, p_offset past the end, a load moved to
    overlap another, filesz > memsz, ..."""
    shutil.copyfile(lay.path, out)
    ph = rng.choice(lay.phdrs)
    loads = [p for p in lay.phdrs if p["p_type"] == 1 and p is not ph]
    if loads and ph["p_type"] == 1 and rng.random() < 0.3:
        other = rng.choice(loads)
        new = other["p_paddr"] + rng.choice((0, 4096, other["p_filesz"] // 2))
        _patch(out, ph["at"] + 24, struct.pack("<Q", new))
        return f"PT_LOAD at {ph['at']:#x} moved to p_paddr {new:#x} (overlaps the load at {other['at']:#x})"
    fields = {name: (8 * (i - 1) if i > 1 else 4 * i, "<Q" if i > 1 else "<I")
              for i, name in enumerate(PHDR_NAMES)}
    return _field_edit(rng, out, ph["at"], fields, f"phdr at {ph['at']:#x}")


def elf_note(rng: random.Random, lay: ElfLayout, out: Path) -> str:
    """Change a note header in the PT_NOTE, or flip bits in a PRSTATUS note."""
    shutil.copyfile(lay.path, out)
    if rng.random() < 0.3:
        return _flip_bits(rng, out, lay.note_off, lay.note_off + lay.note_size, "PT_NOTE")
    fields = {"namesz": (0, "<I"), "descsz": (4, "<I"), "type": (8, "<I")}
    blob = _read(out, lay.note_off, lay.note_size)
    heads, pos = [], 0
    while pos + 12 <= len(blob):
        namesz, descsz, _ = struct.unpack_from("<III", blob, pos)
        heads.append(pos)
        pos += 12 + ((namesz + 3) & ~3) + ((descsz + 3) & ~3)
    at = rng.choice(heads or [0])
    return _field_edit(rng, out, lay.note_off + at, fields, f"ELF note at +{at:#x}")


def elf_vmcoreinfo(rng: random.Random, lay: ElfLayout, out: Path) -> str:
    """Rewrite the ELF with one VMCOREINFO value edited (the note is rebuilt at its new length)."""
    info, what = edit_vmcoreinfo(rng, lay.vmcoreinfo)
    spec = lay.spec
    write_elf(out, Spec(pages=spec.pages, excluded=spec.excluded, max_pfn=spec.max_pfn, vmcoreinfo=info,
                        cpus=spec.cpus))
    return what


def elf_sparse(rng: random.Random, lay: ElfLayout, out: Path) -> str:
    """A valid ELF header on a huge sparse file: the last PT_LOAD grown to cover a 1 TiB hole."""
    shutil.copyfile(lay.path, out)
    last = [p for p in lay.phdrs if p["p_type"] == 1][-1]
    size = 1 << rng.choice((36, 40))
    grow = size - last["p_offset"]
    _patch(out, last["at"] + 32, struct.pack("<QQ", grow, grow))
    os.truncate(out, size)
    return f"sparse file of {size:#x} bytes, last PT_LOAD p_filesz = p_memsz = {grow:#x}"


# -- flattened streams -------------------------------------------------------------------------
def flat_record(rng: random.Random, path: Path, out: Path) -> str:
    """Change the offset or size of one flattened record, or cut the stream."""
    shutil.copyfile(path, out)
    size = out.stat().st_size
    heads, pos = [], 4096
    with open(out, "rb") as f:
        while pos + 16 <= size and len(heads) < 100000:
            f.seek(pos)
            off, n = struct.unpack(">qq", f.read(16))
            heads.append(pos)
            if off < 0 or n < 0:
                break
            pos += 16 + n
    if rng.random() < 0.3:
        cut = rng.randrange(0, size)
        os.truncate(out, cut)
        return f"flattened stream truncated to {cut:#x} of {size:#x}"
    at = rng.choice(heads)
    name = rng.choice(("offset", "size"))
    field_at = at + (0 if name == "offset" else 8)
    old = struct.unpack(">q", _read(out, field_at, 8))[0]
    new, how = number(rng, old & ((1 << 64) - 1), 64)
    _patch(out, field_at, new.to_bytes(8, "big"))
    return f"flattened record at {at:#x} {name}: {old:#x} -> {new:#x} ({how})"


KDUMP_MUTATORS: list[Mutator] = [kd_truncate, kd_header, kd_sub_header, kd_bitmap, kd_descriptor,
                                 kd_page_data, kd_note, kd_vmcoreinfo, kd_vmcoreinfo]
ELF_MUTATORS: list[Mutator] = [elf_truncate, elf_header, elf_phdr, elf_phdr, elf_note, elf_vmcoreinfo,
                               elf_sparse]
FLAT_MUTATORS: list[Mutator] = [flat_record]
