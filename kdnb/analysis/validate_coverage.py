"""Coverage checks: how much RAM the dump holds, and whether the memory the views needed is in it.

`kernel.in_use_memory` does not walk anything: it reads the gaps the tasks, slab and modules
views recorded (and the log reader's error) and keeps those where the dump lacks the memory
(filtered, truncated, lost or corrupt pages). Gaps in the kernel's own data (cycles, wild
pointers) are the business of the views' own checks (validate_views).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..errors import CorruptDump, PageNotInDump
from .checks import Check
from .validate_context import Context
from .validate_gaps import error_kind, gap_kind, physical_addresses
from .validate_metadata import DL_CACHE, DL_CACHE_PRIVATE, DL_USER

PARTIAL_FRACTION = 0.25
# views whose gaps are counted, the key of their evidence and their name in the detail
VIEWS = [("tasks", "tasks", "tasks"), ("slab", "slab_caches", "slab caches"),
         ("modules", "modules", "modules")]
CAUSES = {"truncated": "the file is truncated", "lost": "the dump is incomplete",
          "corrupt": "page data or descriptors are corrupt", "hole": "pages lie in holes",
          "missing": "pages are missing from the dump",
          "structure": "kernel data structures are inconsistent (a cycle, a NULL or wild pointer)"}


def check_coverage_ram(ctx: Context) -> Check:
    """How much of the RAM the dump describes is present."""
    st = ctx.states()
    pages = st["pages"]
    present = pages.get("present", 0)
    ram = sum(pages.values())
    totalram = ctx.read_symbol("_totalram_pages")
    ev = {"present_pages": present, "ram_pages": ram, "excluded_pages": pages.get("excluded", 0),
          "truncated_pages": pages.get("truncated", 0), "lost_pages": pages.get("lost", 0),
          "kernel_totalram_pages": totalram}
    if totalram and totalram > ram * 4:  # implausible: ignore
        ev["kernel_totalram_pages"] = None
    base = ram or totalram or 0
    if not present:
        return Check("coverage.ram", "coverage", "fail", "the dump holds no readable memory",
                     "nothing in kernel memory can be read", ev, blocking=True)
    frac = present / base if base else 1.0
    ev["percent"] = round(100 * frac, 1)
    mib = present * ctx.reader.page_size >> 20
    if frac < PARTIAL_FRACTION:
        level = ctx.header.get("dump_level")
        why = f" (filtered by dump level {level})" if level else ""
        return Check("coverage.ram", "coverage", "warn",
                     f"partial dump: {present} of {base} RAM pages ({100 * frac:.1f}%, "
                     f"{mib} MiB) are present{why}",
                     "only kernel memory the filter kept can be read", ev)
    return Check("coverage.ram", "coverage", "pass",
                 f"{present} of {base} RAM pages ({100 * frac:.1f}%, {mib} MiB) are present",
                 "", ev)


def _filter_cause(level: int | None, vmci: dict[str, str]) -> tuple[str, str]:
    """(cause, fix) for in-use pages excluded by the dump level."""
    cache_user = level is not None and level & (DL_CACHE | DL_CACHE_PRIVATE | DL_USER)
    release = vmci.get("OSRELEASE", "this kernel")
    page_type_slab = "NUMBER(PAGE_SLAB_MAPCOUNT_VALUE)" in vmci and "NUMBER(PG_slab)" not in vmci
    if cache_user:
        cause = (f"the dump filter (makedumpfile -d {level}, which drops cache and/or user pages) "
                 "classified pages the kernel was using as cache or user pages: the filtering "
                 f"tool is older than the kernel ({release})")
        if page_type_slab:
            cause += ("; this kernel marks slab pages with a page type (VMCOREINFO has "
                      "NUMBER(PAGE_SLAB_MAPCOUNT_VALUE) and no NUMBER(PG_slab)), which older "
                      "makedumpfile releases do not recognise (Debian 12's 1.7.2 on Linux 6.12)")
        fix = ("recapture with `makedumpfile -d 1` or `-d 17` (exclude only zero/free pages), "
               f"or install a makedumpfile release that supports {release}")
        return cause, fix
    cause = f"the dump filter (dump level {level}) excluded pages the kernel was using"
    fix = "recapture with `makedumpfile -d 1` (or -d 0), or a makedumpfile that supports this kernel"
    return cause, fix


def check_kernel_in_use_memory(ctx: Context) -> Check:
    """Is the memory the kernel views read in the dump? Names the dump filter when it is not."""
    k = ctx.kernel()
    walks: dict[str, dict[str, Any]] = {}
    missing: list[str] = []
    if k is not None:
        for view, key, _label in VIEWS:
            f = ctx.view(view)
            if f.error is None:
                missing += f.missing
                walks[key] = {"read": f.rows, "failed": len(f.missing), "complete": not f.problems}
            elif error_kind(f.error) != "structure":
                missing.append(str(f.error))
                walks[key] = {"read": 0, "failed": 1, "complete": False}
            else:
                walks[key] = {"skipped": str(f.error)}
        nr_threads = ctx.read_symbol("nr_threads", 4)
        if "read" in walks["tasks"] and nr_threads is not None:
            walks["tasks"]["nr_threads"] = nr_threads
    if isinstance(ctx.log_error, (PageNotInDump, CorruptDump)):
        missing.append(str(ctx.log_error))
        walks["log"] = {"read": 0, "failed": 1}
    elif ctx.log_read:
        walks["log"] = {"read": 1, "failed": 0}
    if k is None and not walks:
        return ctx.kernel_skip("kernel.in_use_memory", "in-use kernel memory")
    return _judge(walks, missing, ctx)


def _summary(walks: dict[str, dict[str, Any]]) -> str:
    parts = []
    for _view, key, label in VIEWS:
        w = walks.get(key, {})
        if "read" in w:
            expect = f" (nr_threads {w['nr_threads']})" if "nr_threads" in w else ""
            parts.append(f"{label}: {w['read']} read{expect}, {w['failed']} unreadable")
    if "log" in walks:
        parts.append("log: " + ("unreadable" if walks["log"]["failed"] else "readable"))
    return "; ".join(parts)


def _judge(walks: dict[str, dict[str, Any]], missing: list[str], ctx: Context) -> Check:
    kinds: dict[str, int] = {}
    for text in missing:
        kinds[gap_kind(text)] = kinds.get(gap_kind(text), 0) + 1
    ev: dict[str, Any] = {**walks, "unreadable_reads": kinds}
    summary = _summary(walks)
    if ctx.kernel_error:
        summary = (summary + "; " if summary else "") + \
            f"kernel structures not read ({ctx.kernel_error})"
    skipped = [f"{key} ({w['skipped']})" for key, w in walks.items() if "skipped" in w]
    if not missing:
        if skipped and not summary:
            return Check("kernel.in_use_memory", "kernel", "skip",
                         "key structures not read: " + ", ".join(skipped), "", ev)
        extra = f"; not read: {', '.join(skipped)}" if skipped else ""
        return Check("kernel.in_use_memory", "kernel", "pass",
                     f"every key structure the views read is in the dump ({summary}){extra}",
                     "", ev)
    ev["first_error"] = missing[0][:200]
    ev["physical_addresses"] = physical_addresses(missing)
    dominant = max(kinds, key=kinds.__getitem__)
    if dominant == "excluded":
        cause, fix = _filter_cause(ctx.header.get("dump_level"), ctx.vmci)
        ev["cause"] = cause
        ev["fix"] = fix
        return Check("kernel.in_use_memory", "kernel", "fail",
                     f"in-use kernel memory was excluded from the dump ({summary}). Likely cause: "
                     f"{cause}. Fix: {fix}",
                     "task, slab and module views are incomplete; walks stop at excluded pages", ev)
    return Check("kernel.in_use_memory", "kernel", "fail",
                 f"key kernel structures are partly unreadable ({summary}): {CAUSES[dominant]}",
                 "task, slab and module views are incomplete", ev)


CHECKS: dict[str, Callable[[Context], Check]] = {
    "coverage.ram": check_coverage_ram,
    "kernel.in_use_memory": check_kernel_in_use_memory,
}
