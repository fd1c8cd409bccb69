"""Find the shared libraries an ELF program needs by following DT_NEEDED (like ldd, offline)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from elftools.elf.dynamic import DynamicSection
from elftools.elf.elffile import ELFFile

HOST_LIB_DIRS = (Path("/lib/x86_64-linux-gnu"), Path("/usr/lib/x86_64-linux-gnu"),
                 Path("/lib64"), Path("/usr/lib64"))


def elf_needed(path: Path) -> tuple[list[str], str | None]:
    """DT_NEEDED sonames and the PT_INTERP program interpreter of an ELF file."""
    with open(path, "rb") as f:
        elf = ELFFile(f)
        interp = None
        for seg in elf.iter_segments():
            if seg["p_type"] == "PT_INTERP":
                interp = seg.get_interp_name()
        needed: list[str] = []
        for sec in elf.iter_sections():
            if isinstance(sec, DynamicSection):
                needed += [t.needed for t in sec.iter_tags() if t.entry.d_tag == "DT_NEEDED"]
    return needed, interp


def lib_dirs_under(roots: Iterable[Path]) -> list[Path]:
    """The multiarch library folders inside unpacked package roots."""
    out = []
    for r in roots:
        for sub in ("lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu", "lib64", "usr/lib64", "usr/lib"):
            if (r / sub).is_dir():
                out.append(r / sub)
    return out


def resolve_libraries(programs: Iterable[Path], search: Iterable[Path],
                      host: bool = True) -> tuple[dict[str, Path], list[str]]:
    """Map every soname needed (transitively) by ``programs`` to a file, searching ``search``
    then (with ``host``) the host's library folders. Returns (found {soname: path}, missing
    sonames). The program interpreter (ld-linux) is included under its soname."""
    dirs = list(search) + ([d for d in HOST_LIB_DIRS if d.is_dir()] if host else [])
    found: dict[str, Path] = {}
    missing: list[str] = []
    todo = list(programs)
    seen: set[Path] = set()
    while todo:
        prog = todo.pop()
        if prog in seen:
            continue
        seen.add(prog)
        needed, interp = elf_needed(prog)
        if interp:
            needed.append(Path(interp).name)
        for so in needed:
            if so in found or so in missing:
                continue
            hit = next((d / so for d in dirs if (d / so).exists()), None)
            if hit is None:
                missing.append(so)
                continue
            found[so] = hit
            todo.append(hit.resolve())
    return found, missing
