"""`Dump`: the one object a user holds. It ties the layers together and caches their results."""

from __future__ import annotations

import os
from functools import cached_property
from typing import TYPE_CHECKING, Iterable, Sequence

from .api_depth import DepthViews
from .api_system import SystemViews

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from .analysis.rootcause import RootCause
    from .analysis.validate import Validation
    from .dump.base import DumpReader
    from .kernel.kernel import Kernel


class Dump(SystemViews, DepthViews):
    """An opened crash dump. Use `kdnb.open(path)`; also a context manager."""

    def __init__(
        self,
        paths: str | os.PathLike | Sequence[str | os.PathLike],
        vmlinux: str | os.PathLike | None = None,
        system_map: str | os.PathLike | None = None,
    ) -> None:
        from .dump import open_dump  # the readers (and pandas) load with the first Dump

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

    def _repr_html_(self) -> str:
        from .ui.summary import dump_html

        return dump_html(self)

    def show(self):
        """The tabbed viewer (Summary, Tasks, Slab, Log, Backtraces, Validation, Root cause)."""
        from .ui.viewer import show

        return show(self)

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

    @cached_property
    def log(self) -> pd.DataFrame:
        """The kernel log: seq, time, level, level_name, facility, caller, text, subsystem, device."""
        from .views.log import read_log

        log, problems = read_log(self.kernel.read, self.kernel.log_vmcoreinfo(), self.path)
        extra = {"problems": problems} if problems else {}
        return self._provenance(log, **extra)

    @cached_property
    def tasks(self) -> pd.DataFrame:
        """Every task (threads and per-CPU idle tasks included); see kdnb.views.tasks."""
        from .views.tasks import tasks_frame

        return self._provenance(tasks_frame(self))

    @cached_property
    def slab(self) -> pd.DataFrame:
        """SLUB cache usage, one row per kmem_cache; see kdnb.views.slab."""
        from .views.slab import slab_frame

        return self._provenance(slab_frame(self))

    @cached_property
    def modules(self) -> pd.DataFrame:
        """Loaded modules; see kdnb.views.modules."""
        from .views.modules import modules_frame

        return self._provenance(modules_frame(self))

    @cached_property
    def sys_info(self) -> dict:
        """The crash-time system summary as a dict; see kdnb.views.sys."""
        from .views.sys import sys_info

        return sys_info(self)

    @property
    def sys(self) -> pd.DataFrame:
        """The system summary as a one-row DataFrame."""
        import pandas as pd

        return self._provenance(pd.DataFrame([self.sys_info]))

    def backtrace(self, cpu: int | None = None, pid: int | None = None) -> pd.DataFrame:
        """The stack of a CPU (its active stack at crash time) or of a task."""
        from .views.backtrace import backtrace_frame

        return self._provenance(backtrace_frame(self, cpu=cpu, pid=pid))

    def backtraces(self, states: Sequence[str] = ("D",), cpus: str | Sequence[int] = "all") -> pd.DataFrame:
        """Every CPU's active stack plus every task in `states`, keyed by pid/cpu."""
        from .views.backtrace import backtraces_frame

        return self._provenance(backtraces_frame(self, states=states, cpus=cpus))

    @cached_property
    def panic_backtrace(self) -> pd.DataFrame:
        """The stack of the CPU that panicked."""
        from .views.backtrace import panic_backtrace_frame

        return self._provenance(panic_backtrace_frame(self))

    @cached_property
    def stacks(self) -> pd.DataFrame:
        """Every task's stack grouped by identical call chain (crash `foreach bt`): count, top,
        frames, states, pids, comms, cpus, functions, chain, complete; see kdnb.views.stacks."""
        from .views.stacks import stacks_frame

        return self._provenance(stacks_frame(self))

    # -- analysis -------------------------------------------------------------------------
    def validate(self) -> "Validation":
        """Is this capture complete and usable? Checks and a verdict (see kdnb.analysis.validate);
        made once per Dump, like the views it reads."""
        if "_validation" not in self.__dict__:
            from .analysis.validate import validate

            self.__dict__["_validation"] = validate(self)
        return self.__dict__["_validation"]

    def root_cause(self) -> "RootCause":
        """Why the kernel died: category, culprit, evidence (a RootCause); made once per Dump."""
        if "_root_cause" not in self.__dict__:
            from .analysis.rootcause import root_cause

            self.__dict__["_root_cause"] = root_cause(self)
        return self.__dict__["_root_cause"]

    def _provenance(self, df: pd.DataFrame, **extra: object) -> pd.DataFrame:
        release = self.kernel.release if "kernel" in self.__dict__ else self.vmcoreinfo.get("OSRELEASE", "")
        info = {"path": self.path, "format": self.format, "release": release}
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
    def symbol_source(self) -> dict:
        """How the symbols were found: tier (0 given files, 1 VMCOREINFO's kallsyms tables, 2 a
        scan of the kernel image, 3 no VMCOREINFO: kernel located from CR3), method, address
        encoding, the VMCOREINFO symbols they were verified against, the tables' addresses."""
        self.kernel.symbol("_stext")  # symbols load on first need
        return dict(self.kernel.symbol_source)

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
    paths: str | os.PathLike | Sequence[str | os.PathLike],
    vmlinux: str | os.PathLike | None = None,
    system_map: str | os.PathLike | None = None,
    binaries: "Binaries" = None,
    journal: str | os.PathLike | None = None,
) -> "Dump | Core":
    """Open a crash dump (one file, or the parts of a split dump), or a userspace process
    core (told apart by its contents; plain or zstd/xz/lz4/gzip-compressed), which gives a
    `kdnb.process.Core`, or a Linux minidump, which gives a `kdnb.process.Minidump`; `binaries`
    (files or folders) helps them find the mapped ELF files; `journal` is systemd-coredump's
    journal entry for a core (`journalctl -o json COREDUMP_PID=PID > FILE`)."""
    from .process.source import looks_like_process_core

    if isinstance(paths, (str, os.PathLike)) and looks_like_process_core(os.fspath(paths)):
        from .process import open_process

        return open_process(paths, binaries=binaries, journal=journal)
    return Dump(paths, vmlinux=vmlinux, system_map=system_map)
