"""Why the kernel died: the class of the root cause, the culprit and the evidence.

The log names the symptom (a panic string, an Oops, a hung-task report); memory says more: which
CPU was spinning, who owned the lock a blocked task waits for. A cascade is followed back to the
root, and `.category` is always the class of the root, not of the symptom.
"""

from __future__ import annotations

import html
import struct
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

import pandas as pd

from ..errors import KdnbError
from .panic_log import PanicLog, Report, panic_reason, parse_panic_log

if TYPE_CHECKING:  # pragma: no cover
    from ..api import Dump

EXPLANATIONS = {
    "sysrq": "Someone crashed the kernel on purpose through the magic SysRq key (echo c > "
             "/proc/sysrq-trigger): a test or an administrator, not a bug.",
    "null-deref": "Kernel code followed a NULL pointer; the CPU faulted and the kernel stopped "
                  "with an Oops.",
    "page-fault": "Kernel code touched an address that is not mapped (a bad or stale pointer); "
                  "the CPU faulted and the kernel stopped with an Oops.",
    "bug": "Kernel code hit a BUG() assertion: it found its own state impossible and stopped.",
    "panic-call": "Code called panic() itself because it decided it could not go on.",
    "warn": "A WARN() fired and panic_on_warn turned the warning into a crash.",
    "soft-lockup": "A CPU kept running kernel code without ever scheduling, so nothing else could "
                   "run there and work that needed it piled up.",
    "hard-lockup": "A CPU stopped taking interrupts for too long: it was stuck with interrupts "
                   "disabled.",
    "rcu-stall": "A CPU or task held up RCU grace periods for too long, typically by looping "
                 "with preemption or interrupts disabled.",
    "hung-task": "A task slept uninterruptibly (D state) longer than the hung-task timeout, "
                 "waiting for something that never came.",
    "oom": "Memory ran out and the kernel was told to panic instead of killing a process (or "
           "had no process left to kill).",
    "mce": "The hardware reported an uncorrectable machine-check error (CPU, memory or bus).",
    "init-died": "PID 1 (init) exited or was killed, and the kernel cannot run without it.",
    "unknown": "kdnb found no crash report in the log and no decisive sign in memory.",
}
CATEGORIES = list(EXPLANATIONS)
OOPS_CLASSES = ("null-deref", "page-fault", "bug", "warn")
# Scheduler, wait and lock primitives: a blocked task's culprit is the code that called them.
WAIT_FUNCS = ("__schedule", "schedule", "io_schedule", "preempt_schedule", "__pfx_",
              "__wait_for_common", "wait_for_completion", "__wait_event", "wait_woken",
              "__mutex_lock", "mutex_lock", "__rt_mutex", "rt_mutex", "rwsem_down", "down_read",
              "down_write", "__down", "down", "percpu_rwsem_wait", "__percpu_down_read",
              "percpu_down_read", "folio_wait", "wait_on_page", "bit_wait", "out_of_line_wait")
# The allocator and OOM-killer path: an OOM culprit is what asked for the memory.
OOM_FUNCS = ("dump_header", "out_of_memory", "oom_kill", "__alloc_pages", "alloc_pages",
             "__folio_alloc", "folio_alloc", "vma_alloc_folio", "alloc_pages_mpol",
             "__handle_mm_fault", "handle_mm_fault", "do_user_addr_fault", "exc_page_fault",
             "do_anonymous_page", "policy_node", "pagefault_out_of_memory")
RESCHED_FUNCS = ("_cond_resched", "__cond_resched", "preempt_schedule_common", "cond_resched")
PANIC_FUNCS = ("panic", "dump_stack", "dump_stack_lvl", "crash_setup_regs", "__crash_kexec",
               "crash_kexec", "vpanic", "__warn", "report_bug", "handle_bug", "exc_invalid_op",
               "asm_exc_invalid_op", "warn_slowpath_fmt")
IDLE_FUNCS = ("default_idle", "native_safe_halt", "pv_native_safe_halt", "mwait_idle",
              "cpu_idle_poll", "acpi_idle_do_entry", "intel_idle", "do_idle", "cpu_startup_entry",
              "default_idle_call", "arch_cpu_idle")
SPIN_SECONDS = 2.0  # a CPU in one kernel task this long without scheduling is spinning
THREAD_SIZE = 16384  # x86_64 kernel stack
KERNEL_SPACE = 0xFFFF800000000000
EVIDENCE_COLUMNS = ["kind", "seq", "time", "cpu", "pid", "text", "why"]


@dataclass
class Culprit:
    """Who and where: the task, CPU, function and module the root cause points at."""

    pid: int | None = None
    comm: str | None = None
    cpu: int | None = None
    function: str | None = None
    module: str | None = None
    module_taints: str = ""

    def __str__(self) -> str:
        parts = []
        if self.comm is not None or self.pid is not None:
            parts.append(f"{self.comm or '?'} (pid {self.pid if self.pid is not None else '?'})")
        if self.cpu is not None:
            parts.append(f"CPU {self.cpu}")
        if self.function:
            mod = f" [{self.module}{', taint ' + self.module_taints if self.module_taints else ''}]" \
                if self.module else ""
            parts.append(f"in {self.function}{mod}")
        return ", ".join(parts) or "unknown"


@dataclass
class RootCause:
    """The answer to "why did it die?"; `str()` for text, `_repr_html_` for notebooks."""

    category: str
    message: str
    culprit: Culprit
    evidence: pd.DataFrame
    chain: list[dict] = field(default_factory=list)
    confidence: float = 0.5
    alternatives: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def explanation(self) -> str:
        """One sentence on the category for a person new to kernel crashes."""
        return EXPLANATIONS[self.category]

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON."""
        return {
            "category": self.category, "explanation": self.explanation, "message": self.message,
            "culprit": self.culprit.__dict__, "confidence": self.confidence,
            "chain": self.chain, "alternatives": self.alternatives, "notes": self.notes,
            "evidence": self.evidence.astype(object).where(self.evidence.notna(), None)
            .assign(time=self.evidence["time"].astype(str)).to_dict("records"),
        }

    def __str__(self) -> str:
        lines = [f"Root cause: {self.category} (confidence {self.confidence:.0%})",
                 f"  {self.explanation}",
                 f"Message:  {self.message or '(none in the log)'}",
                 f"Culprit:  {self.culprit}"]
        if self.chain:
            lines.append("Chain:")
            lines += [f"  {i + 1}. [{step['role']}] {step['what']}" for i, step in
                      enumerate(self.chain)]
        if self.alternatives:
            lines.append("Alternatives:")
            lines += [f"  - {cat}: {why}" for cat, why in self.alternatives]
        if len(self.evidence):
            lines.append("Evidence:")
            for row in self.evidence.itertuples():
                lines.append(f"  - {row.text}  ({row.why})")
        lines += [f"Note: {n}" for n in self.notes]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        esc = html.escape
        chain = "".join(f"<li><b>{esc(s['role'])}</b>: {esc(s['what'])}</li>" for s in self.chain)
        alts = "".join(f"<li>{esc(c)}: {esc(w)}</li>" for c, w in self.alternatives)
        ev = self.evidence[["kind", "text", "why"]].to_html(index=False, escape=True) \
            if len(self.evidence) else "<p>none</p>"
        return (f"<div class='kdnb-rootcause'><h3>Root cause: {esc(self.category)} "
                f"<small>({self.confidence:.0%})</small></h3><p>{esc(self.explanation)}</p>"
                f"<p><b>Message:</b> <code>{esc(self.message)}</code></p>"
                f"<p><b>Culprit:</b> {esc(str(self.culprit))}</p>"
                + (f"<p><b>Chain</b></p><ol>{chain}</ol>" if chain else "")
                + (f"<p><b>Alternatives</b></p><ul>{alts}</ul>" if alts else "")
                + f"<p><b>Evidence</b></p>{ev}</div>")


class _Analysis:
    """Collects evidence while the root cause is worked out."""

    def __init__(self, dump: "Dump") -> None:
        self.dump = dump
        self.rows: list[dict] = []
        self.notes: list[str] = []
        self._done: dict[str, Any] = {}

    def get(self, what: str, fn: Callable[[], Any]) -> Any:
        """Run one lookup once; a failure becomes a note, not an exception."""
        if what in self._done:
            return self._done[what]
        try:
            value = fn()
        except (KdnbError, ImportError, AttributeError, KeyError, ValueError, IndexError,
                struct.error) as exc:
            self.notes.append(f"{what} unavailable: {exc}")
            value = None
        self._done[what] = value
        return value

    def add(self, kind: str, text: str, why: str, seq: int | None = None,
            time: pd.Timedelta | None = None, cpu: int | None = None, pid: int | None = None) -> None:
        """One evidence row."""
        self.rows.append({"kind": kind, "seq": seq, "time": time, "cpu": cpu, "pid": pid,
                          "text": text, "why": why})

    def frame(self) -> pd.DataFrame:
        """The evidence as a DataFrame with stable dtypes."""
        df = pd.DataFrame(self.rows, columns=EVIDENCE_COLUMNS)
        df["kind"] = pd.Categorical(df["kind"], categories=["log", "frame", "task", "cpu",
                                                            "lock", "memory", "module"])
        df["seq"] = df["seq"].astype("Int64")
        df["time"] = pd.to_timedelta(df["time"])
        df["cpu"] = df["cpu"].astype("Int16")
        df["pid"] = df["pid"].astype("Int32")
        return df


def root_cause(dump: "Dump") -> RootCause:
    """Classify why the kernel died, name the culprit and gather the evidence."""
    an = _Analysis(dump)
    log = an.get("kernel log", lambda: dump.log)
    plog = parse_panic_log(log) if log is not None else PanicLog([], None)
    category, report = _classify(plog)
    culprit = _culprit(an, category, report, plog)
    message = _message(plog, report)
    _log_evidence(an, plog, report)
    chain: list[dict] = []
    alternatives: list[tuple[str, str]] = []
    confidence = 0.9 if report is not None or plog.panic is not None else 0.3
    if category == "unknown":
        confidence = 0.2
    if category == "hung-task":
        blocker = _find_blocker(an, plog, culprit)
        if blocker is not None:
            chain = _cascade_chain(blocker, culprit, plog)
            if blocker["busy"]:
                alternatives.append((category, "the log reports this symptom; the busy task "
                                     "that blocks it is the cause"))
                category = "soft-lockup"
            culprit = blocker["culprit"]
            confidence = 0.85 if blocker.get("lock") else 0.6
    _add_taints(an, culprit)
    if category in OOPS_CLASSES + ("panic-call",) and culprit.module:
        _module_evidence(an, culprit)
    if category == "oom":
        _memory_evidence(an)
    if not chain:
        chain = _simple_chain(category, culprit, plog, report)
    return RootCause(category, message, culprit, an.frame(), chain, confidence, alternatives,
                     an.notes)


# -- classification ------------------------------------------------------------------------

def _classify(plog: PanicLog) -> tuple[str, Report | None]:
    """The category and the report that shows it."""
    if plog.panic is not None:
        reason = panic_reason(plog.panic.fields.get("msg", ""))
        if reason == "oops-followup":
            report = _last(plog, OOPS_CLASSES)
            return (report.category, report) if report else ("unknown", plog.panic)
        if reason == "panic-call":
            return "panic-call", plog.panic
        report = _last(plog, (reason,))
        return reason, report or plog.panic
    report = _last(plog, OOPS_CLASSES + ("soft-lockup", "hard-lockup", "rcu-stall", "mce", "oom",
                                         "sysrq", "hung-task"))
    if report is None:
        return "unknown", None
    return report.category, report


def _last(plog: PanicLog, categories: tuple[str, ...]) -> Report | None:
    for report in reversed(plog.reports):
        if report.category in categories:
            return report
    return None


def _message(plog: PanicLog, report: Report | None) -> str:
    lines = []
    if report is not None and report is not plog.panic:
        lines.append(report.headline)
        oops = next((t for _, t in report.lines if t.startswith("Oops:") or
                     t.startswith("invalid opcode")), None)
        if oops:
            lines.append(oops)
    if plog.panic is not None:
        lines.append(plog.panic.headline)
    return " / ".join(lines)


# -- the culprit -----------------------------------------------------------------------------

def _add_taints(an: _Analysis, c: Culprit) -> None:
    """The taint letters of the culprit's module (O out-of-tree, E unsigned, ...)."""
    if not c.module:
        return
    mods = an.get("modules", lambda: an.dump.modules)
    if mods is not None and "taints" in mods:
        row = mods[mods["name"] == c.module]
        if len(row):
            c.module_taints = str(row["taints"].iloc[0])


def _culprit(an: _Analysis, category: str, report: Report | None, plog: PanicLog) -> Culprit:
    c = Culprit()
    ctx = report if report is not None and report.cpu is not None else plog.panic
    if ctx is not None and ctx.cpu is not None:
        c.cpu, c.pid, c.comm = ctx.cpu, ctx.pid, ctx.comm
    if category == "hung-task" and report is not None and "pid" in report.fields:
        c.pid, c.comm, c.cpu = int(report.fields["pid"]), report.fields["comm"], None
        frame = _first_not(report.reliable_trace(), WAIT_FUNCS)
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
        frame = _first_not(trace, PANIC_FUNCS + (OOM_FUNCS if category == "oom" else ()))
        if frame is not None:
            c.function, c.module = f"{frame.function}+{frame.offset:#x}", frame.module
    if c.cpu is None or c.function is None:
        _culprit_from_memory(an, c)
    return c


def _first_not(frames: list, skip: tuple[str, ...]):
    for f in frames:
        if not f.function.startswith(skip) and f.function not in skip:
            return f
    return None


def _culprit_from_memory(an: _Analysis, c: Culprit) -> None:
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


def _log_evidence(an: _Analysis, plog: PanicLog, report: Report | None) -> None:
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


def _module_evidence(an: _Analysis, c: Culprit) -> None:
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


def _memory_evidence(an: _Analysis) -> None:
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


# -- cascades ----------------------------------------------------------------------------------

def _find_blocker(an: _Analysis, plog: PanicLog, blocked: Culprit) -> dict | None:
    """What a hung task waits behind: the owner of the lock it waits for (found from its stack),
    else a CPU that ran one kernel task for seconds without scheduling.

    Returns {culprit, busy (it was running or runnable), seconds, lock} or None.
    """
    tasks = an.get("tasks", lambda: an.dump.tasks)
    if tasks is None:
        return None
    busy = {b["task_address"]: b for b in _busy_cpus(an, plog)}
    found = None
    if blocked.pid is not None:
        addresses = set(int(a) for a in tasks["address"].dropna())
        hit = _lock_owner(an, blocked.pid, addresses)
        if hit is not None:
            lock, owner = hit
            found = busy.get(owner) or _task_blocker(an, tasks, owner)
            if found is not None:
                found["lock"] = lock
    if found is None:
        long_runs = [b for b in busy.values() if b["seconds"] is not None and b["seconds"] >= SPIN_SECONDS]
        if not long_runs:
            return None
        found = max(long_runs, key=lambda b: b["seconds"])
    c = found["culprit"]
    where = f" on CPU {c.cpu}" if found.get("on_cpu") else ""
    held = f" for {found['seconds']:.1f} s" if found.get("seconds") is not None else ""
    an.add("task", f"{c.comm} (pid {c.pid}, state {found['state']}) is at {c.function}"
           + (f" [{c.module}]" if c.module else "") + where
           + (f", running{held} since it last arrived on the CPU" if found.get("on_cpu") else ""),
           "the task the blocked one waits behind", cpu=c.cpu, pid=c.pid)
    if found.get("lock") is not None:
        name = an.get("lock symbol", lambda: an.dump.symbolize(found["lock"]))
        an.add("lock", f"{blocked.comm} (pid {blocked.pid}) waits on the lock at {found['lock']:#x}"
               + (f" ({name})" if name and not name.startswith("0x") else "") + " "
               f"owned by {c.comm} (pid {c.pid})", "ties the blocked task to its blocker",
               pid=blocked.pid)
    return found


def _task_blocker(an: _Analysis, tasks: pd.DataFrame, address: int) -> dict | None:
    """A lock owner that was not on a CPU at the crash: where its own stack says it is."""
    row = tasks[tasks["address"] == address]
    if not len(row):
        return None
    task = row.iloc[0]
    pid = int(task["pid"])
    c = Culprit(pid=pid, comm=str(task["comm"]), cpu=int(task["cpu"]) if pd.notna(task["cpu"]) else None)
    bt = an.get(f"backtrace of pid {pid}", lambda: an.dump.backtrace(pid=pid))
    if bt is not None:
        for fr in bt.itertuples():
            fn = str(fr.function)
            if fn and not fn.startswith(WAIT_FUNCS + RESCHED_FUNCS):
                c.function = f"{fn}+{int(fr.offset):#x}" if pd.notna(fr.offset) else fn
                c.module = None if pd.isna(fr.module) else str(fr.module)
                break
    state = str(task["state"])
    return {"culprit": c, "busy": state == "R", "seconds": None, "task_address": address,
            "state": state, "on_cpu": False}


def _busy_cpus(an: _Analysis, plog: PanicLog) -> list[dict]:
    """CPUs other than the panic one that were in kernel code, not idle, at the crash."""
    dump = an.dump
    cpus = an.get("CPU registers", lambda: dump.cpus)
    tasks = an.get("tasks", lambda: dump.tasks)
    if cpus is None or tasks is None or not len(cpus):
        return []
    panic_cpu = plog.panic.cpu if plog.panic is not None else None
    crash_time = plog.panic.time if plog.panic is not None else \
        (plog.reports[-1].time if plog.reports else None)
    busy = []
    for row in cpus.itertuples():
        cpu = int(row.cpu)
        if cpu == panic_cpu or int(row.cs) & 3:  # the panic CPU, or a CPU in user mode
            continue
        sym = an.get(f"CPU {cpu} pc", lambda r=row: dump.kernel.lookup(int(r.rip)))
        if sym is None or sym.name in IDLE_FUNCS:
            continue
        cur = tasks[(tasks["cpu"] == cpu) & tasks["is_current"]]
        if not len(cur) or int(cur["pid"].iloc[0]) == 0:
            continue
        task = cur.iloc[0]
        seconds = None
        if crash_time is not None and pd.notna(task.get("last_run")):
            seconds = (crash_time - task["last_run"]).total_seconds()
        busy.append({"culprit": Culprit(pid=int(task["pid"]), comm=str(task["comm"]), cpu=cpu,
                                        function=f"{sym.name}+{sym.offset:#x}", module=sym.module),
                     "busy": True, "seconds": seconds, "task_address": int(task["address"]),
                     "state": str(task["state"]), "on_cpu": True})
    return busy


def _lock_owner(an: _Analysis, pid: int, owners: set[int]) -> tuple[int, int] | None:
    """(lock address, owner task) of the mutex or rw-semaphore the blocked task waits on.

    Candidates are the pointers on the blocked task's stack. A candidate is that lock only if
    its `wait_list` links to a waiter on this very stack (the kernel queues the waiter there)
    and its `owner` (a task_struct pointer with flag bits in the low 3 bits) is one of
    `owners`, other than the blocked task itself.
    """
    dump = an.dump
    k = dump.kernel
    tasks = dump.tasks
    row = tasks[tasks["pid"] == pid]
    if not len(row):
        return None
    task_addr = int(row["address"].iloc[0])
    layouts = []
    for tname in ("struct mutex", "struct rw_semaphore"):
        offs = an.get(f"{tname} layout", lambda t=tname: (k.type(t).offsetof("owner"),
                                                            k.type(t).offsetof("wait_list")))
        if offs is not None:
            layouts.append(offs)
    stack = an.get("task stack", lambda: k.object(task_addr, "struct task_struct").member("stack"))
    if not stack or not layouts:
        return None
    data = an.get("stack contents", lambda: k.read(stack, THREAD_SIZE))
    if data is None:
        return None

    def on_stack(addr: int) -> bool:
        return stack <= addr < stack + THREAD_SIZE

    seen: set[int] = set()
    for (word,) in struct.iter_unpack("<Q", data):
        if word < KERNEL_SPACE or word in seen or on_stack(word):
            continue
        seen.add(word)
        for owner_off, wait_off in layouts:
            try:
                owner = k.read_u64(word + owner_off) & ~7
                nxt, prv = struct.unpack("<QQ", k.read(word + wait_off, 16))
            except KdnbError:
                break
            if owner in owners and owner != task_addr and (on_stack(nxt) or on_stack(prv)):
                return word, owner
    return None


def _cascade_chain(blocker: dict, blocked: Culprit, plog: PanicLog) -> list[dict]:
    bc = blocker["culprit"]
    if blocker.get("on_cpu"):
        held = f" for {blocker['seconds']:.1f} s" if blocker["seconds"] is not None else ""
        what = f"{bc.comm} (pid {bc.pid}) keeps CPU {bc.cpu} busy in kernel mode at {bc.function}{held}"
    elif blocker["busy"]:
        what = f"{bc.comm} (pid {bc.pid}) loops in kernel mode at {bc.function}, only yielding the CPU"
    else:
        what = f"{bc.comm} (pid {bc.pid}) sleeps (state {blocker['state']}) at {bc.function}"
    chain = [{"role": "root", "what": what}]
    if blocker.get("lock") is not None:
        chain.append({"role": "effect", "what": f"{blocked.comm} (pid {blocked.pid}) waits for "
                      f"the lock at {blocker['lock']:#x} that {bc.comm} holds"})
    elif blocked.pid is not None:
        chain.append({"role": "effect", "what": f"{blocked.comm} (pid {blocked.pid}) cannot make "
                      "progress while that CPU never schedules"})
    chain.append({"role": "symptom", "what": "the hung-task detector reported it"
                  + (f": {plog.reports[-1].headline}" if plog.reports else "")})
    if plog.panic is not None:
        chain.append({"role": "end", "what": plog.panic.headline})
    return chain


def _simple_chain(category: str, c: Culprit, plog: PanicLog, report: Report | None) -> list[dict]:
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
