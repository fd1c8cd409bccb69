"""Readiness: room for a dump at the capture service's target."""

from __future__ import annotations

import re
from typing import Any

from .checks import Check
from .readiness_machine import Machine, mib


def check_storage_space(m: Machine) -> Check:
    """Free space at the dump target against the expected size of a dump."""
    target = m.service.get("target") or "/var/crash"
    mi = m.meminfo
    total = mi.get("MemTotal")
    ev: dict[str, Any] = {"target": target, "mem_total": total}
    if not total:
        return Check("storage.space", "storage", "skip",
                     "/proc/meminfo not readable: the expected dump size is unknown", "", ev)
    # kernel memory in use: what a -d 31 dump keeps (before compression)
    kernel_used = total - mi.get("MemFree", 0) - mi.get("Cached", 0) - mi.get("Buffers", 0) \
        - mi.get("AnonPages", 0)
    kernel_used = max(kernel_used, total // 20)
    args = m.service.get("makedumpfile_args") or "-c -d 31"
    level_m = re.search(r"-d\s*(\d+)", args)
    level = int(level_m.group(1)) if level_m else 31
    compressed = any(f in args for f in ("-c", "-l", "-p", "-z"))
    if level & (2 | 4 | 8):
        expected = kernel_used
    else:
        expected = total - (mi.get("MemFree", 0) if level & 16 else 0)
    if compressed:
        expected //= 2
    ev.update(expected=expected, dump_level=level, compressed=compressed)
    if m.t.snapshot:
        return Check("storage.space", "storage", "skip",
                     f"a snapshot folder has no dump target; a dump would need about "
                     f"{mib(expected)}", "", ev)
    free = m.free_space(m.t.path(target))
    ev["free"] = free
    if free is None:
        return Check("storage.space", "storage", "skip",
                     f"free space at {target} unknown", "", ev)
    if free < expected:
        return Check("storage.space", "storage", "fail",
                     f"{mib(free)} free at {target}, a dump needs about {mib(expected)}",
                     "the capture will run out of space (an incomplete dump, or none)", ev)
    if free < total:
        return Check("storage.space", "storage", "warn",
                     f"{mib(free)} free at {target}: enough for a filtered dump (~"
                     f"{mib(expected)}) but not for all {mib(total)} of RAM",
                     "a capture with -d 0/-d 1 or without compression would not fit", ev)
    return Check("storage.space", "storage", "pass",
                 f"{mib(free)} free at {target} (dump ~{mib(expected)}, RAM {mib(total)})",
                 "", ev)
