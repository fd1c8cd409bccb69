"""`Dump`: the one object a user holds. It ties the layers together and caches their results."""

from __future__ import annotations

import os
from functools import cached_property
from typing import TYPE_CHECKING, Iterable, Sequence

import pandas as pd

from .dump import open_dump
from .dump.base import DumpReader

if TYPE_CHECKING:  # pragma: no cover
    from .kernel.kernel import Kernel

PathLike = "str | os.PathLike[str]"


class Dump:
    """An opened crash dump. Use `kdnb.open(path)`; also a context manager."""

    def __init__(
        self,
        paths: str | os.PathLike | Sequence[str | os.PathLike],
        vmlinux: str | os.PathLike | None = None,
        system_map: str | os.PathLike | None = None,
    ) -> None:
        self._reader: DumpReader = open_dump(paths)
        self.path: str = self._reader.path
        self._vmlinux = os.fspath(vmlinux) if vmlinux is not None else None
        self._system_map = os.fspath(system_map) if system_map is not None else None

    # -- context manager --------------------------------------------------------------
    def __enter__(self) -> "Dump":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the dump's files."""
        self._reader.close()

    def __repr__(self) -> str:
        release = self.vmcoreinfo.get("OSRELEASE", "?")
        return f"<kdnb.Dump {self.format} {release} {self.path!r}>"

    # -- the dump layer -----------------------------------------------------------------
    @property
    def reader(self) -> DumpReader:
        """The format reader underneath (physical memory, notes)."""
        return self._reader

    @property
    def format(self) -> str:
        """Detected format: elf64, elf32, kdump, kdump-flattened, kdump-split, qemu-elf, ..."""
        return self._reader.format

    @property
    def header(self) -> dict:
        """Format header facts (compression, dump_level, status flags, utsname, nr_cpus, ...)."""
        return self._reader.header

    @property
    def vmcoreinfo(self) -> dict[str, str]:
        """The VMCOREINFO note as a dict of str to str (empty when the dump has none)."""
        return self._reader.vmcoreinfo

    @property
    def page_size(self) -> int:
        """Page size of the dumped machine in bytes."""
        return self._reader.page_size

    def read_phys(self, paddr: int, size: int) -> bytes:
        """Read physical memory; raises PageNotInDump for a page the dump lacks."""
        return self._reader.read_phys(paddr, size)

    @cached_property
    def cpus(self) -> pd.DataFrame:
        """One row per NT_PRSTATUS note: cpu, pid and the x86_64 registers."""
        from .dump.notes import cpus_frame

        return self._provenance(cpus_frame(self._reader.notes))

    @cached_property
    def segments(self) -> pd.DataFrame:
        """Physical ranges: start, end, pages, state, vaddr, file_offset, source."""
        from .views.segments import segments_frame

        return self._provenance(segments_frame(self._reader))

    def _provenance(self, df: pd.DataFrame, **extra: object) -> pd.DataFrame:
        info = {"path": self.path, "format": self.format,
                "release": self.vmcoreinfo.get("OSRELEASE", "")}
        info.update(extra)
        df.attrs["kdnb"] = {**df.attrs.get("kdnb", {}), **info}
        return df

    # -- the kernel layer ---------------------------------------------------------------
    @cached_property
    def kernel(self) -> "Kernel":
        """Symbols, types and virtual memory of the dumped kernel."""
        from .kernel.kernel import Kernel

        return Kernel(self._reader, vmlinux=self._vmlinux, system_map=self._system_map)

    def read(self, vaddr: int, size: int) -> bytes:
        """Read kernel virtual memory; raises FaultError or PageNotInDump."""
        return self.kernel.read(vaddr, size)

    def vtop(self, vaddr: int) -> int:
        """Translate a kernel virtual address to a physical one."""
        return self.kernel.vtop(vaddr)

    @property
    def symbols(self) -> pd.DataFrame:
        """Every kernel and module symbol: name, address, type, size, module."""
        return self.kernel.symbols

    def symbol(self, name: str) -> int:
        """Address of a kernel symbol; raises SymbolNotFound."""
        return self.kernel.symbol(name)

    def symbolize(self, addr: int) -> str:
        """`func+0x1a/0x40 [mod]` for an address."""
        return self.kernel.symbolize(addr)

    def type(self, name: str):
        """A kernel type by name (`struct task_struct`); raises TypeNotFound."""
        return self.kernel.type(name)

    def for_each_entry(self, head: int, type_name: str, member: str) -> Iterable:
        """Walk a `list_head` list of `type_name` objects linked through `member`."""
        return self.kernel.for_each_entry(head, type_name, member)


def open(  # noqa: A001 - the public name is kdnb.open
    paths: "str | os.PathLike | Sequence[str | os.PathLike]",
    vmlinux: "str | os.PathLike | None" = None,
    system_map: "str | os.PathLike | None" = None,
) -> Dump:
    """Open a crash dump (one file, or the parts of a split dump)."""
    return Dump(paths, vmlinux=vmlinux, system_map=system_map)
