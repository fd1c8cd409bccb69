"""Capture validation: is this dump complete, and what analysis can be trusted on it?

`validate(dump)` runs every check (a broken dump still yields every row: checks that need a
missing piece say `skip` and why) and gives a verdict: `usable`, `degraded` or `unusable`;
`validate_path(path)` also handles files that do not open (`not a dump`).

The checks live by area: validate_format and validate_descriptors (the file and its headers),
validate_metadata (notes, VMCOREINFO, registers), validate_coverage (RAM and in-use memory),
validate_kernel (page tables, symbols, BTF, log), validate_views and validate_stacks (what the
tasks, slab, modules, meminfo and backtrace views found: validation never walks the kernel's
lists itself). Only KdnbError is turned into a row; any other exception is a bug and surfaces.
"""

from __future__ import annotations

import os
import struct
import time
from collections.abc import Callable
from typing import Any

from ..errors import FormatError, KdnbError, TruncatedDump
from . import (
    validate_coverage,
    validate_descriptors,
    validate_format,
    validate_kernel,
    validate_metadata,
    validate_stacks,
    validate_views,
)
from .checks import Check, CheckTable, run_check
from .validate_context import Context

AREAS = ["file", "format", "metadata", "coverage", "kernel", "symbols", "log"]
VERDICTS = ["usable", "degraded", "unusable", "not a dump"]
EXIT_CODES = {"usable": 0, "degraded": 1, "unusable": 2, "not a dump": 3}

# Every check validate() reports, in order, with its area.
CHECKS: list[tuple[str, str]] = [
    ("format.identified", "format"),
    ("format.header", "format"),
    ("file.truncated", "file"),
    ("file.incomplete", "file"),
    ("format.descriptors", "format"),
    ("format.elf32", "format"),
    ("metadata.notes", "metadata"),
    ("metadata.vmcoreinfo", "metadata"),
    ("metadata.qemu_vmcoreinfo", "metadata"),
    ("metadata.prstatus", "metadata"),
    ("metadata.crash_registers", "metadata"),
    ("metadata.dump_level", "metadata"),
    ("metadata.crash_time", "metadata"),
    ("coverage.ram", "coverage"),
    ("kernel.page_tables", "kernel"),
    ("symbols.kallsyms", "symbols"),
    ("symbols.btf", "symbols"),
    ("kernel.banner", "kernel"),
    ("log.printk", "log"),
    ("kernel.in_use_memory", "kernel"),
    ("kernel.cpus", "kernel"),
    ("kernel.tasks", "kernel"),
    ("kernel.slab", "kernel"),
    ("kernel.modules", "kernel"),
    ("kernel.stacks", "kernel"),
    ("kernel.meminfo", "kernel"),
]
RUNNERS: dict[str, Callable[[Context], Check]] = {
    **validate_format.CHECKS, **validate_descriptors.CHECKS, **validate_metadata.CHECKS,
    **validate_coverage.CHECKS, **validate_kernel.CHECKS, **validate_views.CHECKS,
    **validate_stacks.CHECKS,
}


class Validation(CheckTable):
    """The checks of one dump and a verdict: usable, degraded, unusable (or not a dump).

    `.checks` is a DataFrame; `.verdict` a str; `.exit_code` what `kdnb validate` returns;
    `to_dict()` for JSON; `str()` a plain-text table; in Jupyter it renders as HTML.
    """

    AREAS = AREAS
    VERDICTS = VERDICTS
    EXIT_CODES = EXIT_CODES  # 0 usable, 1 degraded, 2 unusable, 3 not a dump
    title = "capture validation"

    def __init__(self, checks, subject: str = "", verdict: str | None = None, summary: str = "",
                 seconds: float | None = None) -> None:
        super().__init__(checks, subject, verdict, summary)
        self.seconds = seconds

    def _decide(self) -> str:
        if any(c.status == "fail" and c.blocking for c in self.items):
            return "unusable"
        if any(c.status == "fail" for c in self.items):
            return "degraded"
        return "usable"

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        if self.seconds is not None:
            out["seconds"] = round(self.seconds, 3)
        return out


def validate(dump: Any) -> Validation:
    """Validate an opened `kdnb.Dump` (or a path, see validate_path).

    A KdnbError inside a check becomes that check's `skip` row; any other exception is a bug
    and is raised."""
    if isinstance(dump, (str, os.PathLike)):
        return validate_path(dump)
    t0 = time.perf_counter()
    ctx = Context(dump)
    items: list[Check] = []
    for check_id, area in CHECKS:
        run_check(items, check_id, area, lambda fn=RUNNERS[check_id]: fn(ctx), errors=(KdnbError,))
    return Validation(items, subject=str(dump.path), seconds=time.perf_counter() - t0)


def validate_path(path: str | os.PathLike[str]) -> Validation:
    """Open and validate a file; a file that does not open still yields a Validation."""
    from ..api import Dump as open_dump  # a process core is "not a dump" here

    t0 = time.perf_counter()
    name = os.fspath(path)
    try:
        dump = open_dump(name)
    except FormatError as exc:
        cut = _cut_signature(name)
        if cut:
            return _not_opened(name, "file.truncated", f"the file ends after {cut[1]} bytes, "
                               f"inside the {cut[0]} signature", "unusable", t0,
                               {"file_size": cut[1]})
        return _not_opened(name, "format.identified", str(exc), "not a dump", t0, {})
    except TruncatedDump as exc:
        return _not_opened(name, "file.truncated", str(exc), "unusable", t0, _size_of(name))
    except KdnbError as exc:
        cut = _headers_cut(name)
        if cut:
            return _not_opened(name, "file.truncated", f"{cut}; {exc}", "unusable", t0,
                               _size_of(name))
        return _not_opened(name, "format.header", str(exc), "unusable", t0, _size_of(name))
    try:
        result = validate(dump)
    finally:
        dump.close()
    result.seconds = time.perf_counter() - t0
    return result


def _size_of(path: str) -> dict[str, Any]:
    try:
        return {"file_size": os.path.getsize(path)}
    except OSError:
        return {}


def _not_opened(path: str, failing: str, detail: str, verdict: str, t0: float,
                evidence: dict[str, Any]) -> Validation:
    items = []
    for check_id, area in CHECKS:
        if check_id == failing:
            items.append(Check(check_id, area, "fail", detail,
                               "nothing can be read from this file", evidence, blocking=True))
        elif check_id == "format.identified" and verdict != "not a dump":
            items.append(Check(check_id, area, "pass", "the file starts like a crash dump"))
        else:
            items.append(Check(check_id, area, "skip", "the dump could not be opened"))
    return Validation(items, subject=path, verdict=verdict, seconds=time.perf_counter() - t0)


_SIGNATURES = ((b"\x7fELF", "ELF"), (b"KDUMP   ", "kdump"), (b"DISKDUMP", "diskdump"),
               (b"makedumpfile", "flattened makedumpfile"))


def _cut_signature(path: str) -> tuple[str, int] | None:
    """(format, size) when the whole file is a proper prefix of a dump signature."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError:
        return None
    if 0 < size < 16:
        for magic, what in _SIGNATURES:
            if len(head) < len(magic) and magic.startswith(head):
                return what, size
    return None


def _headers_cut(path: str) -> str:
    """Why the headers of a dump that failed to open are cut short ("" when they are not)."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError:
        return ""
    if head.startswith(b"\x7fELF"):
        is64 = len(head) > 4 and head[4] == 2
        ehsize = 64 if is64 else 52
        if size < ehsize:
            return f"the file ends after {size} bytes, inside the {ehsize}-byte ELF header"
        if is64:
            phoff, = struct.unpack_from("<Q", head, 32)
            phentsize, phnum = struct.unpack_from("<HH", head, 54)
        else:
            phoff, = struct.unpack_from("<I", head, 28)
            phentsize, phnum = struct.unpack_from("<HH", head, 42)
        need = phoff + phentsize * phnum
        if size < need:
            return f"the file ends at {size} bytes, inside the program headers (which need {need})"
    elif head.startswith(b"makedumpfile") and size < 4096:
        return f"the file ends after {size} bytes, inside the 4096-byte flattened header"
    elif head[:8] in (b"KDUMP   ", b"DISKDUMP") and size < 4096:
        return f"the file ends after {size} bytes, inside the kdump header block"
    return ""


__all__ = ["CHECKS", "EXIT_CODES", "Validation", "validate", "validate_path"]
