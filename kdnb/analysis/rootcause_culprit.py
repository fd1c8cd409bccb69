"""The culprit (who and where) and the evidence rows of a root cause, from the log and memory."""

from __future__ import annotations

import pandas as pd

from .panic_log import PanicLog, Report
from .rootcause_model import OOM_FUNCS, PANIC_FUNCS, WAIT_FUNCS, Analysis, Culprit

def add_taints(an: Analysis, c: Culprit) -> None:
    """The taint letters of the culprit's module (O out-of-tree, E unsigned, ...)."""
    if not c.module:
        return
    mods = an.get("modules", lambda: an.dump.modules)
    if mods is not None and "taints" in mods:
        row = mods[mods["name"] == c.module]
        if len(row):
            c.module_taints = str(row["taints"].iloc[0])


def culprit_of(an: Analysis, category: str, report: Report | None, plog: PanicLog) -> Culprit:
    c = Culprit()
    ctx = report if report is not None and report.cpu is not None else plog.panic
    if ctx is not None and ctx.cpu is not None:
        c.cpu, c.pid, c.comm = ctx.cpu, ctx.pid, ctx.comm
    if category == "hung-task" and report is not None and "pid" in report.fields:
        c.pid, c.comm, c.cpu = int(report.fields["pid"]), report.fields["comm"], None
        frame = first_not(report.reliable_trace(), WAIT_FUNCS)
        if frame is not None:
            c.function, c.module = f"{frame.function}+{frame.offset:#x}", frame.module
        tasks = an.get("tasks", lambda: an.dump.tasks)
        if tasks is not None:
            row = tasks[tasks["pid"] == c.pid]
            if len(row):
                c.cpu = int(row["cpu"].iloc[0])
        return c
    if category == "soft-lockup" and report is not None and "pid" in report.fields:
        c.pid, c.comm = int(report.fields["pid"]), report.fields["comm"]
        c.cpu = int(report.fields["cpu"])
    if report is not None and report.rip:
        func, _, _ = report.rip.partition("/")
        c.function, c.module = func, report.rip_module
    elif report is not None or plog.panic is not None:
        trace = (report if report is not None and report.trace else plog.panic).reliable_trace() \
            if (report is not None and report.trace) or plog.panic is not None else []
        frame = first_not(trace, PANIC_FUNCS + (OOM_FUNCS if category == "oom" else ()))
        if frame is not None:
            c.function, c.module = f"{frame.function}+{frame.offset:#x}", frame.module
    if c.cpu is None or c.function is None:
        culprit_from_memory(an, c)
    return c


def first_not(frames: list, skip: tuple[str, ...]):
    for f in frames:
        if not f.function.startswith(skip) and f.function not in skip:
            return f
    return None


def culprit_from_memory(an: Analysis, c: Culprit) -> None:
    """When the log is silent: the panic CPU's registers and stack."""
    bt = an.get("panic backtrace", lambda: an.dump.panic_backtrace)
    if bt is None or not len(bt):
        return
    if c.cpu is None and "cpu" in bt.attrs.get("kdnb", {}):
        c.cpu = bt.attrs["kdnb"]["cpu"]
    for row in bt.itertuples():
        fn = str(row.function)
        if fn and fn not in PANIC_FUNCS and not fn.startswith(PANIC_FUNCS):
            c.function = f"{fn}+{int(row.offset):#x}" if pd.notna(row.offset) else fn
            c.module = None if pd.isna(row.module) else str(row.module)
            break


# -- evidence ----------------------------------------------------------------------------------

LINE_WHY = {
    "CPU: ": "the CPU and task that were running",
    "RIP: 0010:": "where the CPU was in the kernel",
    "Oops:": "the fault's error code",
    "invalid opcode": "BUG() traps with an invalid instruction",
    "Modules linked in": "loaded modules and their taints",
}


def log_evidence(an: Analysis, plog: PanicLog, report: Report | None) -> None:
    shown = [r for r in (report, plog.panic) if r is not None]
    if len(shown) == 2 and shown[0] is shown[1]:
        shown = shown[:1]
    for r in shown:
        why = "the panic the machine died of" if r is plog.panic else "the line that names the failure"
        an.add("log", r.headline, why, r.seq, r.time, r.cpu, r.pid)
        for seq, text in r.lines[1:]:
            key = next((k for k in LINE_WHY if text.startswith(k)), None)
            if key is not None:
                an.add("log", text, LINE_WHY[key], seq, r.time)
        for f in r.reliable_trace()[:8]:
            an.add("frame", f.text, "call trace the kernel printed", r.seq, r.time, r.cpu, r.pid)


def module_evidence(an: Analysis, c: Culprit) -> None:
    mods = an.get("modules", lambda: an.dump.modules)
    if mods is None:
        return
    row = mods[mods["name"] == c.module]
    if len(row):
        taints = str(row["taints"].iloc[0]) if "taints" in row else ""
        meaning = []
        if "O" in taints:
            meaning.append("out-of-tree")
        if "E" in taints:
            meaning.append("unsigned")
        an.add("module", f"module {c.module} taints {taints or '-'}",
               "the faulting code lives in this module" + (f" ({', '.join(meaning)})"
                                                           if meaning else ""))


def memory_evidence(an: Analysis) -> None:
    mem = an.get("meminfo", lambda: an.dump.meminfo)
    if mem is not None and len(mem):
        for item in ("total", "free", "used", "anon", "slab_unreclaimable", "page_tables"):
            if item in mem.index:
                an.add("memory", f"{item}: {int(mem.loc[item, 'bytes']) >> 20} MiB",
                       "memory counters at the crash")
    tasks = an.get("tasks", lambda: an.dump.tasks)
    if tasks is not None and "rss_pages" in tasks:
        for row in tasks.dropna(subset=["rss_pages"]).nlargest(3, "rss_pages").itertuples():
            an.add("memory", f"{row.comm} (pid {row.pid}) holds {int(row.rss_pages)} resident pages",
                   "largest memory users at the crash", pid=int(row.pid))
    slab = an.get("slab", lambda: an.dump.slab)
    if slab is not None and len(slab):
        for row in slab.sort_values("total_bytes", ascending=False).head(5).itertuples():
            an.add("memory", f"slab {row.name}: {int(row.total_bytes)} bytes",
                   "largest slab caches (a leak shows here)")


def simple_chain(category: str, c: Culprit, plog: PanicLog, report: Report | None) -> list[dict]:
    chain = []
    if report is not None and report is not plog.panic:
        chain.append({"role": "root", "what": f"{report.headline} ({c})"})
    elif category != "unknown":
        chain.append({"role": "root", "what": f"{category} in {c}"})
    if plog.panic is not None:
        chain.append({"role": "end", "what": plog.panic.headline})
    elif report is not None:
        chain.append({"role": "end", "what": "the kernel went straight to the capture kernel "
                      "(crash_kexec from the Oops path, before panic())"})
    return chain

