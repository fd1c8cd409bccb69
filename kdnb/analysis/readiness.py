"""kdump readiness of a live machine: will the next crash be captured, and analysable?

`readiness(root="/")` checks what a kdump guide walks through: the kernel config, the
`crashkernel=` reservation (every syntax) against what the kernel reserved, a loaded capture
kernel, a configured capture service and a makedumpfile new enough for the kernel, free space
at the dump target, and the usual reasons a process leaves "no core dumped"
(kdnb.analysis.coredump_check, for processes the shell starts).

`root` points at a file tree laid out like `/` (tests use fixture trees). A lab snapshot folder
(`cmdline.txt`, `iomem.txt`, `kexec_crash_size.txt`, `uname.txt`, `meminfo.txt`) is also read.
"""

from __future__ import annotations

from .checks import Check, CheckTable, run_check
from .coredump_check import run_checks
from .coredump_settings import from_system
from .crashkernel import Crashkernel, CrashkernelError, parse_crashkernel, parse_size
from .readiness_capture import (check_capture_loaded, check_capture_makedumpfile, check_capture_service,
                                makedumpfile_latest_kernel)
from .readiness_config import config_checks
from .readiness_crashkernel import check_crashkernel_cmdline, check_crashkernel_reserved
from .readiness_machine import FreeSpace, Machine, parse_iomem
from .readiness_storage import check_storage_space
from .system_tree import parse_kconfig

AREAS = ["config", "crashkernel", "capture", "storage", "coredump"]
VERDICTS = ["ready", "at risk", "not ready"]
EXIT_CODES = {"ready": 0, "at risk": 1, "not ready": 2}


class Readiness(CheckTable):
    """Readiness checks of one machine and a verdict: ready, at risk, not ready."""

    AREAS = AREAS
    VERDICTS = VERDICTS
    EXIT_CODES = EXIT_CODES  # 0 ready, 1 at risk, 2 not ready
    title = "kdump readiness"

    def _decide(self) -> str:
        if any(c.status == "fail" for c in self.items):  # a FAIL is never only "at risk"
            return "not ready"
        if any(c.status == "warn" for c in self.items):
            return "at risk"
        return "ready"


def readiness(root: str = "/", *, free_space: FreeSpace | None = None,
              run_commands: bool | None = None) -> Readiness:
    """Check a machine (or a file tree laid out like one) for kdump and core-dump readiness.

    `free_space(path) -> bytes` replaces statvfs (tests); `run_commands` allows running
    `makedumpfile --version` (default: only when root is "/").
    """
    m = Machine(root, free_space, run_commands)
    items: list[Check] = []
    try:
        items += config_checks(m)
    except Exception as exc:  # noqa: BLE001 - a check never stops the others
        items.append(Check("config.found", "config", "skip", f"check could not run: {exc}"))
    for cid, area, fn in (
        ("crashkernel.cmdline", "crashkernel", lambda: check_crashkernel_cmdline(m)),
        ("crashkernel.reserved", "crashkernel", lambda: check_crashkernel_reserved(m)),
        ("capture.loaded", "capture", lambda: check_capture_loaded(m)),
        ("capture.service", "capture", lambda: check_capture_service(m)),
        ("capture.makedumpfile", "capture", lambda: check_capture_makedumpfile(m)),
        ("storage.space", "storage", lambda: check_storage_space(m)),
    ):
        run_check(items, cid, area, fn)
    items += run_checks(from_system(root))
    subject = m.t.root + (f" (Linux {m.release})" if m.release else "")
    return Readiness(items, subject=subject)


__all__ = ["readiness", "Readiness", "parse_crashkernel", "Crashkernel", "CrashkernelError",
           "parse_size", "parse_iomem", "parse_kconfig", "makedumpfile_latest_kernel"]
