"""What the validation checks share: the dump, and lazily its kernel, page tables and views.

The checks never walk kernel lists themselves: they read what the views (`dump.tasks`,
`dump.slab`, `dump.modules`, `dump.meminfo`, the backtraces) found, through `Context.view()`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from ..errors import KdnbError
from ..views.common import IncompleteViewWarning
from .checks import Check
from .validate_gaps import ViewFindings

START_KERNEL_MAP = 0xFFFFFFFF80000000
MAX_RANGES = 8  # physical ranges listed in evidence
KALLSYMS_TABLES = ("names", "num_syms", "token_table", "token_index", "offsets", "relative_base")


def show_ranges(segs: list[tuple[int, int]]) -> list[str]:
    """`start-end` strings of the first few physical ranges."""
    return [f"{s:#x}-{e:#x}" for s, e in segs[:MAX_RANGES]]


def pct(a: int, b: int) -> float:
    """a as a percentage of b (0 when b is 0)."""
    return 100.0 * a / b if b else 0.0


class Context:
    """The dump under validation and what several checks need from it, computed once."""

    def __init__(self, dump: Any) -> None:
        self.d = dump
        self.reader = dump.reader
        self.header: dict = dict(dump.header or {})
        self.vmci: dict[str, str] = dict(dump.vmcoreinfo or {})
        self.problems: list[str] = list(self.header.get("problems") or [])
        self.memo: dict[str, Any] = {}
        self._kernel: Any = None
        self._kernel_error: str | None = None
        self._kernel_tried = False
        self._pagetable: Any = None
        self._pagetable_error: str | None = None
        self._views: dict[str, ViewFindings] = {}
        self.log_error: KdnbError | None = None
        self.log_read = False

    # -- the dump ----------------------------------------------------------------------
    @property
    def is_elf(self) -> bool:
        """True for ELF vmcores (their memory is described by PT_LOADs)."""
        return hasattr(self.reader, "elfclass")

    def kdump_parts(self) -> list:
        """The kdump-compressed files of the dump (several for a split set; none for ELF)."""
        from ..dump.kdump import KdumpDump
        from ..dump.split import SplitDump

        r = self.reader
        if isinstance(r, SplitDump):
            return list(r.parts)
        return [r] if isinstance(r, KdumpDump) else []

    def states(self) -> dict[str, Any]:
        """Pages per state and the ranges of the truncated, lost and excluded ones."""
        if "states" in self.memo:
            return self.memo["states"]
        table = self.reader.segments()
        if self.is_elf and len(table) > 1 and table.vaddr is not None:
            # the kernel text PT_LOAD maps memory the direct-map PT_LOADs also describe
            direct = table.select(table.vaddr < np.uint64(START_KERNEL_MAP))
            if len(direct):
                table = direct
        pages = table.pages_by_state(self.reader.page_size)
        spans = {state: table.ranges(state) for state in ("truncated", "lost", "excluded")}
        self.memo["states"] = {"pages": pages, "ranges": spans}
        return self.memo["states"]

    def cpus(self) -> pd.DataFrame:
        """The NT_PRSTATUS notes as a frame (cpu, pid, registers)."""
        from ..dump.notes import cpus_frame

        return cpus_frame(list(getattr(self.reader, "notes", []) or []))

    # -- the kernel --------------------------------------------------------------------
    def kernel(self) -> Any:
        """The Kernel, or None (the reason in `kernel_error`)."""
        if not self._kernel_tried:
            self._kernel_tried = True
            why = self._kallsyms_implausible()
            if why:
                self._kernel_error = why
            else:
                try:
                    self._kernel = self.d.kernel
                except KdnbError as exc:
                    self._kernel_error = str(exc)
        return self._kernel

    def adopt_discovered(self) -> bool:
        """With no VMCOREINFO note but the kernel located from the CPUs' CR3 (tier 3), check
        against what was found (its synthetic VMCOREINFO, printk entries from BTF)."""
        k = self.kernel()
        if k is None or "KDNB(discovered)" not in k.vmcoreinfo:
            return False
        try:
            self.vmci = dict(k.log_vmcoreinfo())
        except KdnbError:
            self.vmci = dict(k.vmcoreinfo)
        return True

    @property
    def kernel_error(self) -> str | None:
        """Why the kernel layer is unavailable (None when it is, or was not tried)."""
        return self._kernel_error

    def _kallsyms_implausible(self) -> str:
        """Refuse kallsyms table addresses that would make the decoder read gigabytes."""
        keys = [f"SYMBOL(kallsyms_{t})" for t in KALLSYMS_TABLES]
        try:
            addrs = [int(self.vmci[k], 16) for k in keys if k in self.vmci]
            stext = int(self.vmci.get("SYMBOL(_stext)", "0"), 16)
        except ValueError as exc:
            return f"VMCOREINFO kallsyms entries are garbled ({exc})"
        if not addrs or not stext:
            return ""
        if any(not stext <= a < stext + (1 << 30) for a in addrs):
            return "VMCOREINFO kallsyms addresses lie outside the kernel image (corrupt notes?)"
        if "SYMBOL(kallsyms_names)" in self.vmci:
            names = addrs[0]
            after = [a for a in addrs if a > names]
            if after and min(after) - names > 64 << 20:
                return "VMCOREINFO kallsyms_names spans more than 64 MiB (corrupt notes?)"
        return ""

    def pagetable(self) -> Any:
        """A PageTable built from VMCOREINFO alone (independent of kallsyms), or None."""
        if self._pagetable is None and self._pagetable_error is None:
            from ..kernel.pagetable import PageTable

            try:
                self._pagetable = PageTable(self.reader.read_phys, self.vmci)
            except KdnbError as exc:
                self._pagetable_error = str(exc)
        return self._pagetable

    @property
    def pagetable_error(self) -> str | None:
        """Why the page tables could not be located."""
        return self._pagetable_error

    def kernel_skip(self, check_id: str, what: str) -> Check:
        """A `skip` row for a check that needs the kernel layer."""
        reason = self._kernel_error or "the kernel layer is not available"
        return Check(check_id, check_id.split(".")[0], "skip", f"{what} not checked: {reason}")

    def read_symbol(self, name: str, size: int = 8) -> int | None:
        """The unsigned `size`-byte value of a kernel variable, or None when unreadable."""
        k = self.kernel()
        if k is None:
            return None
        try:
            return int.from_bytes(k.read(k.symbol(name), size), "little")
        except KdnbError:
            return None

    # -- the views ---------------------------------------------------------------------
    def view(self, name: str) -> ViewFindings:
        """What a Dump view (`tasks`, `slab`, `modules`, `meminfo`) found, computed once."""
        return self._findings(name, lambda: getattr(self.d, name))

    def stacks(self) -> ViewFindings:
        """Every CPU's active stack and every task's stack (`dump.backtraces(states="all")`)."""
        return self._findings("backtraces", lambda: self.d.backtraces(states="all"))

    def _findings(self, name: str, compute: Callable[[], pd.DataFrame]) -> ViewFindings:
        """Run a view once; its own IncompleteViewWarning is not repeated (the checks say it)."""
        if name not in self._views:
            df, error = None, None
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", IncompleteViewWarning)
                try:
                    df = compute()
                except KdnbError as exc:
                    error = exc
            self._views[name] = ViewFindings(name, df, error)
        return self._views[name]
