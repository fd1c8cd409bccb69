"""The ELF images a process had mapped (executable, libraries, the vDSO): where each sits, its
build-id as the core's memory holds it, and the file on disk that matches it.

A Linux core keeps the first page of every mapped ELF file (coredump_filter bit 4, on by
default), so the ELF header, program headers and usually the GNU build-id note can be read from
the core itself. The file used for symbols and call-frame information is looked up in the
`binaries` given (files, folders, or a dict from mapped path or basename to a file), then at the
mapped path; a file whose build-id differs from the core's is refused and said so. Debug files
are looked up by build-id under `.build-id/xx/rest.debug` of /usr/lib/debug and each folder.
"""

from __future__ import annotations

import io
import os
import struct
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import IO, Iterator, Mapping, Sequence, Union

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

from .. import bounds
from ..dump.notes import parse_notes
from .memory import EHDR, PF_X, PHDR, PT_LOAD, PT_NOTE, CoreMemory, NotInCore
from .notes import FileMapping

Binaries = Union[None, str, os.PathLike, Sequence[Union[str, os.PathLike]], Mapping[str, Union[str, os.PathLike]]]
DEBUG_ROOTS = ("/usr/lib/debug",)
NT_GNU_BUILD_ID = 3
PAGE = 4096
PHNUM_IMAGE_MAX = 256  # program headers of a real executable or library: ~ 15
NOTE_MAX = 1 << 16
AT_SYSINFO_EHDR = 33
VDSO_MAX = 1 << 20


@dataclass
class Image:
    """One mapped ELF image. `bias` turns a link-time address into a runtime one."""

    path: str
    start: int
    end: int
    bias: int = 0
    build_id: str | None = None  # read from the core's memory
    file: str | None = None  # the file on disk used for symbols and CFI
    file_build_id: str | None = None
    debug_file: str | None = None
    status: str = "not found"  # found, build-id mismatch, not found, in core (vDSO)
    notes: list[str] = field(default_factory=list)
    elf_bytes: bytes | None = field(default=None, repr=False)  # the vDSO, read whole from the core
    code: list[tuple[int, int]] = field(default_factory=list)  # runtime ranges of its PF_X segments

    @property
    def name(self) -> str:
        return os.path.basename(self.path) if not self.path.startswith("[") else self.path

    def contains(self, addr: int) -> bool:
        return self.start <= addr < self.end

    def is_code(self, addr: int) -> bool:
        """Whether an address lies in one of the image's executable segments."""
        return any(lo <= addr < hi for lo, hi in self.code)

    def elf_sources(self) -> list[str | bytes]:
        """Where symbols and CFI are read from: the vDSO's bytes, the file, the debug file."""
        out: list[str | bytes] = [self.elf_bytes] if self.elf_bytes is not None else []
        return out + [p for p in (self.file, self.debug_file) if p]


@contextmanager
def open_elf(source: str | bytes) -> Iterator[ELFFile | None]:
    """A pyelftools ELFFile on a path or on bytes, None when it does not parse; closed after."""
    try:
        f: IO[bytes] = io.BytesIO(source) if isinstance(source, bytes) else open(source, "rb")
    except OSError:
        yield None
        return
    with f:
        try:
            elf = ELFFile(f)
        except (ELFError, ValueError, struct.error):
            elf = None
        yield elf


def _build_id_from_notes(blob: bytes) -> str | None:
    for note in parse_notes(blob):
        if note.name == "GNU" and note.type == NT_GNU_BUILD_ID and 1 <= len(note.desc) <= 64:
            return note.desc.hex()
    return None


def _layout_from_memory(mem: CoreMemory, base: int) -> tuple[int, str | None, list[tuple[int, int]]] | None:
    """(bias, build-id, code ranges) from the ELF header page the core kept at `base`, or None."""
    try:
        ehdr = EHDR.unpack(mem.read(base, EHDR.size))
    except NotInCore:
        return None
    ident, _t, _m, _v, _e, phoff, _s, _f, _eh, phentsize, phnum = ehdr[:11]
    if not ident.startswith(b"\x7fELF") or ident[4] != 2 or phentsize < PHDR.size:
        return None
    phnum = bounds.count(phnum, "image e_phnum", PHNUM_IMAGE_MAX, mem.path)
    try:
        table = mem.read(base + phoff, phnum * phentsize)
    except NotInCore:
        return None
    phdrs = [PHDR.unpack_from(table, i * phentsize) for i in range(phnum)]
    loads = [p for p in phdrs if p[0] == PT_LOAD]
    if not loads:
        return None
    bias = base - (min(p[3] for p in loads) & ~(PAGE - 1))
    code = [(p[3] + bias, p[3] + bias + p[6]) for p in loads if p[1] & PF_X]
    build_id = None
    for p in phdrs:
        if p[0] == PT_NOTE and p[5] <= NOTE_MAX:
            try:
                build_id = _build_id_from_notes(mem.read(p[3] + bias, p[5]))
            except NotInCore:
                continue
            if build_id:
                break
    return bias, build_id, code


def file_build_id(path: str) -> str | None:
    """The GNU build-id of an ELF file on disk, or None."""
    try:
        with open(path, "rb") as f:
            elf = ELFFile(f)
            for seg in elf.iter_segments():
                if seg["p_type"] == "PT_NOTE":
                    for note in seg.iter_notes():
                        if note["n_type"] == "NT_GNU_BUILD_ID":
                            return note["n_desc"]
    except (OSError, ELFError, ValueError):
        return None
    return None


def _file_layout(path: str, base: int) -> tuple[int, list[tuple[int, int]]] | None:
    """(bias, code ranges) of an ELF file on disk mapped at `base`, or None."""
    try:
        with open(path, "rb") as f:
            loads = [(s["p_vaddr"], s["p_memsz"], s["p_flags"]) for s in ELFFile(f).iter_segments()
                     if s["p_type"] == "PT_LOAD"]
    except (OSError, ELFError, ValueError):
        return None
    if not loads:
        return None
    bias = base - (min(v for v, _, _ in loads) & ~(PAGE - 1))
    return bias, [(v + bias, v + bias + n) for v, n, fl in loads if fl & PF_X]


def _candidates(mapped: str, binaries: Binaries, use_mapped: bool) -> list[str]:
    base = os.path.basename(mapped)
    out: list[str] = []
    if isinstance(binaries, Mapping):
        for key in (mapped, base):
            if key in binaries:
                out.append(os.fspath(binaries[key]))
    elif binaries is not None:
        items = [binaries] if isinstance(binaries, (str, os.PathLike)) else list(binaries)
        for item in map(os.fspath, items):
            if os.path.isdir(item):
                out += [os.path.join(item, base), os.path.join(item, mapped.lstrip("/"))]
            elif os.path.basename(item) == base:
                out.append(item)
    if use_mapped:
        out.append(mapped)
    return [p for p in dict.fromkeys(out) if os.path.isfile(p)]


def _debug_file(build_id: str | None, binaries: Binaries) -> str | None:
    if not build_id or len(build_id) < 3:
        return None
    roots = list(DEBUG_ROOTS)
    if binaries is not None and not isinstance(binaries, Mapping):
        items = [binaries] if isinstance(binaries, (str, os.PathLike)) else list(binaries)
        roots += [os.fspath(i) for i in items if os.path.isdir(i)]
    for root in roots:
        path = os.path.join(root, ".build-id", build_id[:2], build_id[2:] + ".debug")
        if os.path.isfile(path):
            return path
    return None


def find_images(mem: CoreMemory, files: list[FileMapping], auxv: dict[int, int],
                binaries: Binaries = None, use_mapped_paths: bool = True) -> list[Image]:
    """Every ELF image among the file mappings (those whose offset-0 page is an ELF header,
    or whose file on disk is an ELF file), plus the vDSO, each matched with its file."""
    by_path: dict[str, list[FileMapping]] = {}
    for fm in files:
        by_path.setdefault(fm.path, []).append(fm)
    images = []
    for path, maps in by_path.items():
        first = next((m for m in maps if m.offset == 0), None)
        if first is None:
            continue
        img = Image(path, first.start, max(m.end for m in maps if m.start >= first.start))
        layout = _layout_from_memory(mem, first.start)
        if layout is not None:
            img.bias, img.build_id, img.code = layout
        _match_file(img, binaries, use_mapped_paths)
        if layout is None:
            on_disk = _file_layout(img.file, first.start) if img.file else None
            if on_disk is None:
                continue  # not an ELF image (a data file mapped at offset 0)
            img.bias, img.code = on_disk
            img.notes.append("the core holds no ELF header for this image: build-id unverified")
        img.debug_file = _debug_file(img.build_id or img.file_build_id, binaries)
        images.append(img)
    vdso = _vdso(mem, auxv.get(AT_SYSINFO_EHDR))
    if vdso is not None:
        images.append(vdso)
    return sorted(images, key=lambda i: i.start)


def _match_file(img: Image, binaries: Binaries, use_mapped: bool) -> None:
    for cand in _candidates(img.path, binaries, use_mapped):
        bid = file_build_id(cand)
        if img.build_id and bid and bid != img.build_id:
            img.status = "build-id mismatch"
            img.notes.append(f"{cand} has build-id {bid}, the core's image has {img.build_id}")
            continue
        img.file, img.file_build_id, img.status = cand, bid, "found"
        return


def _vdso(mem: CoreMemory, base: int | None) -> Image | None:
    """The vDSO, read whole from the core (the kernel always dumps it)."""
    if not base:
        return None
    ld = mem.load_at(base)
    if ld is None or not mem.present(base):
        return None
    size = min(ld.end - base, VDSO_MAX)
    try:
        data = mem.read(base, size)
    except NotInCore:
        return None
    try:
        elf = ELFFile(io.BytesIO(data))
        loads = [s["p_vaddr"] for s in elf.iter_segments() if s["p_type"] == "PT_LOAD"]
    except (ELFError, ValueError, struct.error):
        return None
    bias = base - (min(loads) & ~(PAGE - 1)) if loads else base
    layout = _layout_from_memory(mem, base)
    return Image("[vdso]", base, base + size, bias, layout[1] if layout else None,
                 status="in core", elf_bytes=data, code=layout[2] if layout else [(base, base + size)])
