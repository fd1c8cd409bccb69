"""Dump formats the capture kernel can write, and the makedumpfile options for each."""

from __future__ import annotations

from dataclasses import dataclass

from .packages import LabError


@dataclass(frozen=True)
class Format:
    """A capture format: its file-name suffix and the capture command (None = plain copy)."""

    name: str
    makedumpfile_opts: tuple[str, ...] | None
    filtered: bool
    elf32_headers: bool = False

    def filename(self, dump_level: int) -> str:
        """File name of the dump in the output folder."""
        if self.name == "elf-d31":
            return f"vmcore.elf-d{dump_level}"
        return f"vmcore.{self.name}"

    def command(self, dump_level: int, out: str) -> str:
        """Shell command run in the capture kernel to write ``out`` from /proc/vmcore."""
        if self.makedumpfile_opts is None:
            return f"cp /proc/vmcore {out}"
        opts = " ".join(self.makedumpfile_opts)
        return f"makedumpfile {opts} -d {dump_level} /proc/vmcore {out}"


FORMATS: dict[str, Format] = {f.name: f for f in [
    Format("kdump-zlib", ("-c",), True),
    Format("kdump-lzo", ("-l",), True),
    Format("kdump-raw", (), True),           # kdump-compressed container, pages uncompressed
    Format("elf-d31", ("-E",), True),        # filtered ELF at the chosen dump level
    Format("elf", None, False),              # the whole /proc/vmcore, unfiltered
    Format("elf32", None, False, True),      # whole /proc/vmcore with --elf32-core-headers
]}

#: Dump level per kernel series: Debian 12's makedumpfile 1.7.2 drops in-use slab pages of
#: 6.12 kernels at -d 31 and -d 15; -d 17 (zero + free pages) keeps every in-use page.
DEFAULT_DUMP_LEVEL = {"6.1": 31, "6.12": 17}


def parse_formats(spec: str | tuple[str, ...] | list[str]) -> list[Format]:
    """'kdump-zlib,elf' or a sequence of names -> Format objects (in order, no duplicates)."""
    names = spec.split(",") if isinstance(spec, str) else list(spec)
    out: list[Format] = []
    for n in (x.strip() for x in names):
        if not n:
            continue
        if n not in FORMATS:
            raise LabError(f"unknown format {n!r}; known: {', '.join(FORMATS)}")
        if FORMATS[n] not in out:
            out.append(FORMATS[n])
    if not out:
        raise LabError("no dump format given")
    return out


def default_dump_level(series: str) -> int:
    """The safe default dump level for a kernel series (31 when unknown)."""
    return DEFAULT_DUMP_LEVEL.get(series, 31)
