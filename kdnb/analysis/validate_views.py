"""View checks: did the tasks, slab and modules views read what the kernel really had?

Each check reads the view's DataFrame and what its walk recorded (`attrs["kdnb"]["walk"]` and
`["incomplete"]`); nothing is walked again. A gap in the kernel's own data (a cycle, a wild
pointer, a list head pointing at itself while the kernel has entries) fails the check; memory
the dump lacks only warns here, `kernel.in_use_memory` names its cause.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pandas as pd

from ..errors import KdnbError
from ..views.meminfo import RAM_ROWS
from .checks import Check
from .validate_context import Context
from .validate_gaps import MAX_SHOWN, ViewFindings

MAX_TASKS_PLAUSIBLE = 1 << 22  # PID_MAX_LIMIT


def _failed(check_id: str, f: ViewFindings, consequence: str) -> Check:
    return Check(check_id, "kernel", "fail", f"the {f.name} view failed: {f.error}", consequence,
                 {"error": str(f.error)[:200]})


def _judge(check_id: str, f: ViewFindings, wrong: list[str], ev: dict[str, Any], ok: str,
           consequence: str) -> Check:
    """fail on `wrong` or structural gaps, warn on memory the dump lacks, else pass with `ok`."""
    wrong = wrong + f.structural[:3]
    if f.structural:
        ev["problems"] = f.structural[:MAX_SHOWN]
    if wrong:
        return Check(check_id, "kernel", "fail", f"the {f.name} view is wrong or incomplete: "
                     + "; ".join(wrong), consequence, ev)
    if f.missing:
        ev["missing"] = len(f.missing)
        return Check(check_id, "kernel", "warn",
                     f"{ok}; {len(f.missing)} of the structures it needs are not in the dump "
                     "(see kernel.in_use_memory)", consequence, ev)
    return Check(check_id, "kernel", "pass", ok, "", ev)


# -- tasks ---------------------------------------------------------------------------------
def check_kernel_tasks(ctx: Context) -> Check:
    """The task list: walked to its end, linking every process, agreeing with nr_threads."""
    if ctx.kernel() is None:
        return ctx.kernel_skip("kernel.tasks", "the task list")
    f = ctx.view("tasks")
    consequence = "tasks are missing: their backtraces, states and the hung-task analysis too"
    if f.error is not None:
        return _failed("kernel.tasks", f, "no task list, no task backtraces")
    df = f.df
    idle = int((df["pid"] == 0).sum())
    others = f.rows - idle
    processes = int(((df["pid"] == df["tgid"]) & (df["pid"] != 0)).sum())
    listed = f.walk.get("entries")
    nr_threads = ctx.read_symbol("nr_threads", 4)
    if nr_threads is not None and nr_threads > MAX_TASKS_PLAUSIBLE:
        nr_threads = None
    ev = {"tasks": f.rows, "idle": idle, "processes": processes, "on_task_list": listed,
          "nr_threads": nr_threads, "unreadable": f.walk.get("unreadable")}
    wrong = []
    if listed == 0:
        wrong.append("init_task.tasks is empty (it points back at init_task)"
                     + (f", yet {processes} processes were found through their parents' "
                        "children lists" if processes else ""))
    elif listed is not None and listed < processes and not f.missing:
        wrong.append(f"init_task.tasks links only {listed} of the {processes} processes found "
                     "(the others only through their parents' children lists)")
    if others <= 1:
        wrong.append(f"only {others} task(s) besides the idle tasks: a booted kernel always has "
                     "init and kernel threads")
    elif nr_threads and others < nr_threads and not f.missing:
        wrong.append(f"{others} tasks found, but the kernel counts nr_threads {nr_threads}")
    expect = f", nr_threads {nr_threads}" if nr_threads is not None else ""
    ok = (f"{f.rows} tasks: {processes} processes on init_task.tasks and their threads "
          f"({others} tasks{expect}) + {idle} idle")
    return _judge("kernel.tasks", f, wrong, ev, ok, consequence)


def check_kernel_cpus(ctx: Context) -> Check:
    """The views see every CPU the dump has registers of (nr_cpu_ids, __cpu_online_mask)."""
    k = ctx.kernel()
    if k is None:
        return ctx.kernel_skip("kernel.cpus", "the CPUs the views read")
    noted = sorted(int(c) for c in ctx.cpus()["cpu"].dropna())
    try:
        nr = k.nr_cpu_ids
    except KdnbError as exc:
        return Check("kernel.cpus", "kernel", "fail", f"nr_cpu_ids is unusable: {exc}",
                     "no per-CPU data: runqueues, idle and running tasks, per-CPU slab counts",
                     {"cpus_with_registers": noted})
    f = ctx.view("tasks")
    if f.error is not None:
        return Check("kernel.cpus", "kernel", "skip",
                     f"the CPUs were not checked: the tasks view failed ({f.error})")
    seen = [int(c) for c in f.walk.get("cpus", [])]
    ev = {"nr_cpu_ids": nr, "cpus_read": seen, "cpus_with_registers": noted}
    unread = [c for c in noted if c not in seen
              and not any(f"runqueue of cpu {c} " in p for p in f.missing)]
    wrong = []
    if nr < max(len(noted), 1):
        wrong.append(f"nr_cpu_ids is {nr}, but the dump holds registers of {len(noted)} CPU(s)")
    if unread:
        wrong.append(f"the views read the runqueues of CPU(s) {seen or 'none'} (from nr_cpu_ids "
                     f"and __cpu_online_mask), but the dump holds registers of CPU(s) {noted}")
    if wrong:
        return Check("kernel.cpus", "kernel", "fail", "; ".join(wrong),
                     f"CPU(s) {unread or noted} unseen: their idle and running tasks and per-CPU "
                     "data are missing from the views (nr_cpu_ids or the online mask is corrupt)",
                     ev)
    return Check("kernel.cpus", "kernel", "pass",
                 f"the views read all {len(seen)} online CPUs (nr_cpu_ids {nr}); "
                 f"{len(noted)} have registers", "", ev)


# -- slab and modules ----------------------------------------------------------------------
def check_kernel_slab(ctx: Context) -> Check:
    """slab_caches: walked to its end, not empty, with sizes that make sense."""
    if ctx.kernel() is None:
        return ctx.kernel_skip("kernel.slab", "slab_caches")
    f = ctx.view("slab")
    consequence = "slab usage is missing or wrong (memory-leak and slab analysis)"
    if f.error is not None:
        return _failed("kernel.slab", f, "no slab usage")
    df = f.df
    ev = {"caches": f.rows, "on_list": f.walk.get("entries"), "closed": f.walk.get("closed")}
    wrong = []
    if not f.rows and not f.problems:
        wrong.append("slab_caches is empty (its head points at itself): a booted kernel always "
                     "has slab caches, so the list head is corrupt")
    impossible = int(((df["size"] <= 0) | (df["object_size"] > df["size"])).fillna(False).sum())
    if impossible:
        ev["impossible_sizes"] = impossible
        wrong.append(f"{impossible} of {f.rows} caches have impossible sizes (size <= 0 or "
                     "object_size > size)")
    ok = f"{f.rows} slab caches read from slab_caches"
    return _judge("kernel.slab", f, wrong, ev, ok, consequence)


def _mod_tree_nonempty(k: Any) -> bool | None:
    """Whether `mod_tree` (the module address tree) holds modules; None when unreadable."""
    try:
        t = k.type("struct mod_tree_root")
        return k.read_u64(k.symbol("mod_tree") + t.offsetof("root.tree")) != 0
    except KdnbError:
        return None


def check_kernel_modules(ctx: Context) -> Check:
    """The modules list: walked to its end; empty only when mod_tree is empty too."""
    k = ctx.kernel()
    if k is None:
        return ctx.kernel_skip("kernel.modules", "the module list")
    f = ctx.view("modules")
    consequence = "modules are missing: module symbols in backtraces, taints, the module view"
    if f.error is not None:
        return _failed("kernel.modules", f, "no module list; module frames are not symbolized")
    ev: dict[str, Any] = {"modules": f.rows, "on_list": f.walk.get("entries"),
                          "closed": f.walk.get("closed")}
    wrong = []
    ok = f"{f.rows} modules read from the modules list"
    if not f.rows and not f.problems:
        tree = _mod_tree_nonempty(k)
        ev["mod_tree_nonempty"] = tree
        if tree:
            wrong.append("the modules list is empty (its head points at itself), yet mod_tree "
                         "indexes loaded modules: the list head is corrupt")
        elif tree is None:
            return Check("kernel.modules", "kernel", "warn",
                         "the modules list is empty and nothing else in the dump confirms that "
                         "no module was loaded (mod_tree unreadable)", consequence, ev)
        else:
            ok = "no modules loaded (the modules list and mod_tree are both empty)"
    return _judge("kernel.modules", f, wrong, ev, ok, consequence)


# -- memory counters -----------------------------------------------------------------------
def check_kernel_meminfo(ctx: Context) -> Check:
    """The global memory counters: none negative, none above the total."""
    if ctx.kernel() is None:
        return ctx.kernel_skip("kernel.meminfo", "the memory counters")
    f = ctx.view("meminfo")
    consequence = "memory usage figures (meminfo, the out-of-memory analysis) are wrong"
    if f.error is not None:
        return _failed("kernel.meminfo", f, "no memory counters")
    df = f.df
    pages = {str(item): (None if pd.isna(v) else int(v)) for item, v in df["pages"].items()}
    byte_counts = {str(item): (None if pd.isna(v) else int(v)) for item, v in df["bytes"].items()}
    total = pages.get("total")
    ev: dict[str, Any] = {"pages": pages}
    wrong = []
    negative = [f"{item} {v}" for item, v in pages.items() if v is not None and v < 0]
    negative += [f"{item} {v} bytes" for item, v in byte_counts.items()
                 if v is not None and v < 0 and (pages.get(item) or 0) >= 0]
    if negative:
        wrong.append("negative counters: " + ", ".join(negative[:4]))
    if total is not None and total > 0:
        above = [f"{item} {v}" for item, v in pages.items()
                 if item in RAM_ROWS and item != "total" and v is not None and v > total]  # swap/commit may exceed RAM
        if above:
            wrong.append(f"counters above the total of {total} pages: " + ", ".join(above[:4]))
    elif total is not None:
        wrong.append(f"_totalram_pages is {total}")
    if wrong:
        wrong[-1] += " (vm_zone_stat, vm_node_stat or _totalram_pages are corrupt)"
    ok = f"memory counters are consistent: {total} pages in total, {pages.get('free')} free"
    return _judge("kernel.meminfo", f, wrong, ev, ok, consequence)


CHECKS: dict[str, Callable[[Context], Check]] = {
    "kernel.cpus": check_kernel_cpus,
    "kernel.tasks": check_kernel_tasks,
    "kernel.slab": check_kernel_slab,
    "kernel.modules": check_kernel_modules,
    "kernel.meminfo": check_kernel_meminfo,
}
