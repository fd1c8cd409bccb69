"""Dump formats: what the capture kernel's makedumpfile writes, or (scenario ``idle``) what
QEMU's own ``dump-guest-memory`` writes; the options for each."""

from __future__ import annotations

from dataclasses import dataclass

from .kernels import SERIES
from .packages import LabError


@dataclass(frozen=True)
class Format:
    """A dump format: its file-name suffix and how it is written.

    ``makedumpfile_opts`` None with ``qemu`` None is a plain copy of /proc/vmcore;
    ``flattened`` formats go to makedumpfile's standard output (-F); ``qemu`` names the
    dump-guest-memory format of a host-side QEMU dump (no capture kernel involved).
    """

    name: str
    makedumpfile_opts: tuple[str, ...] | None
    filtered: bool
    elf32_headers: bool = False
    flattened: bool = False
    qemu: str | None = None

    def filename(self, dump_level: int) -> str:
        """File name of the dump in the output folder."""
        if self.name == "elf-d31":
            return f"vmcore.elf-d{dump_level}"
        return f"vmcore.{self.name}"

    def command(self, dump_level: int, out: str) -> str:
        """Shell command run in the capture kernel to write ``out`` from /proc/vmcore."""
        if self.qemu is not None:
            raise LabError(f"format {self.name} is written by QEMU, not in the capture kernel")
        if self.makedumpfile_opts is None:
            return f"cp /proc/vmcore {out}"
        opts = " ".join(self.makedumpfile_opts)
        if self.flattened:
            return f"makedumpfile {opts} -d {dump_level} /proc/vmcore > {out}"
        return f"makedumpfile {opts} -d {dump_level} /proc/vmcore {out}"


FORMATS: dict[str, Format] = {f.name: f for f in [
    Format("kdump-zlib", ("-c",), True),
    Format("kdump-lzo", ("-l",), True),
    Format("kdump-raw", (), True),           # kdump-compressed container, pages uncompressed
    Format("kdump-zlib-flat", ("-F", "-c"), True, flattened=True),  # makedumpfile -F stream
    Format("elf-d31", ("-E",), True),        # filtered ELF at the chosen dump level
    Format("elf", None, False),              # the whole /proc/vmcore, unfiltered
    Format("elf32", None, False, True),      # whole /proc/vmcore with --elf32-core-headers
    Format("qemu-elf", None, False, qemu="elf"),              # QEMU dump-guest-memory, ELF
    Format("qemu-kdump-zlib", None, False, qemu="kdump-zlib"),  # QEMU's flattened kdump-zlib
]}

#: Dump level per kernel series (kernels.SERIES): 31 where makedumpfile filters correctly;
#: 17 on 6.12 (Debian 12's makedumpfile 1.7.2 drops in-use slab pages at -d 31 and -d 15);
#: 23 on 7.2 (sid's makedumpfile 1.7.8 drops in-use slab pages with the user-data bit 8).
DEFAULT_DUMP_LEVEL = {s.name: s.dump_level for s in SERIES.values()}


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
