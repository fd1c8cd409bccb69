"""Backtraces: a CPU's active stack, a task's stack, the panic CPU's stack, the hung-task view.

Columns of `backtrace_frame`: `frame` (Int16, 0 = innermost), `pc`, `sp` (UInt64), `function`
(the source-level function: kallsyms name without GCC clone suffixes such as `.cold`,
`.isra.0`), `offset` (Int64, from the kallsyms symbol), `module` (NA for vmlinux), `kind`
(category: normal, exception, interrupt, user — how the frame's pc was found: a return address,
a pt_regs saved by an exception or interrupt, or the user-mode registers the kernel was entered
from), `text` (`func+0x1a/0x40 [mod]`, the kernel's own spelling). `df.attrs["kdnb"]` holds the
walk's `stop_reason`, whether it is `complete` (ended at user mode or the end of the kernel stack)
and which frames came from a fallback (`unreliable_frames`).

Inlined functions have no frame of their own in ORC (or in the kernel's own traces); drgn with
DWARF lists them, kdnb does not.
"""

from __future__ import annotations

import re
import weakref
from typing import TYPE_CHECKING, Any, Sequence

import pandas as pd

from ..errors import KdnbError
from ..kernel.unwind import KINDS, Backtrace, Unwinder

if TYPE_CHECKING:  # pragma: no cover
    from ..api import Dump
    from ..kernel.kernel import Kernel

COLUMNS = ["frame", "pc", "sp", "function", "offset", "module", "kind", "text"]
KEY_COLUMNS = ["pid", "cpu", "comm", "state", "source"]
_CLONE_SUFFIX = re.compile(r"\.(?:cold|part|isra|constprop|lto_priv|llvm|localalias)(?:\.|$).*")
# where crash_setup_regs() runs on the panicking CPU (kexec_core.c / crash_core.c)
CRASH_FUNCTIONS = ("__crash_kexec", "crash_kexec", "crash_setup_regs", "machine_crash_shutdown",
                   "native_machine_crash_shutdown", "panic")

_unwinders: "weakref.WeakKeyDictionary[Any, _Context]" = weakref.WeakKeyDictionary()


def source_function(name: str) -> str:
    """`trigger_write.cold` -> `trigger_write`: the C function a compiler clone belongs to."""
    return _CLONE_SUFFIX.sub("", name)


class _Context:
    """Per-kernel unwinder plus a symbolization cache."""

    def __init__(self, kernel: "Kernel") -> None:
        self.kernel = kernel
        self.unwinder = Unwinder(kernel)
        self._sym: dict[Any, Any] = {}  # pc -> symbol columns; ("size", addr) -> printed size
        self._task_layout = None

    def symbolize(self, pc: int, exact: bool, user: bool) -> tuple:
        key = pc if exact else -pc
        hit = self._sym.get(key)
        if hit is not None:
            return hit
        if user:
            out = (pd.NA, pd.NA, pd.NA, f"{pc:#x}")
        else:
            try:
                s = self.kernel.lookup(pc if exact else pc - 1)
            except KdnbError:
                s = None
            if s is None:
                out = (pd.NA, pd.NA, pd.NA, f"{pc:#x}")
            else:
                offset = pc - s.address
                size = f"/{s.size:#x}" if s.size and s.size > 0 else ""
                mod = f" [{s.module}]" if s.module else ""
                out = (source_function(s.name), offset, s.module if s.module else pd.NA,
                       f"{s.name}+{offset:#x}{size}{mod}")
        self._sym[key] = out
        return out

    def task_context(self, address: int) -> tuple[int, int]:
        """(thread.sp, stack) of a task_struct."""
        if self._task_layout is None:
            self._task_layout = self.kernel.layout("struct task_struct", ["thread.sp", "stack"])
        lay = self._task_layout
        data = self.unwinder.mem.read(address, lay.size)
        sp, stack = lay.unpack(data)
        return sp, stack


def _context(dump: "Dump") -> _Context:
    kernel = dump.kernel
    ctx = _unwinders.get(kernel)
    if ctx is None:
        ctx = _Context(kernel)
        _unwinders[kernel] = ctx
    return ctx


# -- start points --------------------------------------------------------------------------
def _cpu_row(dump: "Dump", cpu: int) -> dict:
    cpus = dump.cpus
    rows = cpus[cpus["cpu"] == cpu]
    if rows.empty:
        raise KdnbError(f"no NT_PRSTATUS note for cpu {cpu} (the dump has cpus "
                        f"{sorted(int(c) for c in cpus['cpu'])})")
    out = {}
    for c in cpus.columns:  # column by column: a row Series would be Float64 and lose bits
        v = rows[c].iloc[0]
        if c != "cpu" and not pd.isna(v):
            out[c] = int(v)
    return out


def _cpu_stacks(ctx: _Context, dump: "Dump", cpu: int, pid: int | None) -> tuple[int | None, list]:
    """Known stacks of a CPU: its task's stack base, and its IRQ stack range."""
    task_stack = None
    stacks: list[tuple[int, int]] = []
    if pid:
        task = _task_address(dump, pid, cpu)
        if task is not None:
            try:
                _sp, stack = ctx.task_context(task)
                task_stack = stack or None
            except KdnbError:
                pass
    k = ctx.kernel
    for var, member in (("hardirq_stack_ptr", None), ("pcpu_hot", "hardirq_stack_ptr")):
        try:
            addr = k.per_cpu(var, cpu)
            if member is not None:
                addr += k.type("struct pcpu_hot").offsetof(member)
            top = k.read_u64(addr) + 8
            if top > 8:
                stacks.append((top - 16384, top))
            break
        except KdnbError:
            continue
    return task_stack, stacks


def _task_address(dump: "Dump", pid: int, cpu: int | None = None) -> int | None:
    try:
        tasks = dump.tasks
    except KdnbError:
        return None
    rows = tasks[tasks["pid"] == pid]
    if cpu is not None and len(rows) > 1:
        on = rows[rows["cpu"] == cpu]
        rows = on if not on.empty else rows
    return int(rows["address"].iloc[0]) if not rows.empty else None


def _first_kind(dump: "Dump", ctx: _Context, cpu: int, rip: int, panic_cpu: int | None) -> str:
    """How the CPU's saved registers were taken: crash_setup_regs (normal), the oops' pt_regs
    (exception, on the panic CPU), or the NMI that stopped the other CPUs (interrupt)."""
    if cpu != panic_cpu:
        return "interrupt"
    try:
        hit = ctx.kernel.lookup(rip)
    except KdnbError:
        hit = None
    if hit is not None and hit.name in CRASH_FUNCTIONS:
        return "normal"
    return "exception"


def _unwind_cpu(dump: "Dump", ctx: _Context, cpu: int, panic_cpu: int | None) -> tuple[Backtrace, int]:
    regs = _cpu_row(dump, cpu)
    pid = regs.get("pid")
    kind = _first_kind(dump, ctx, cpu, regs.get("rip", 0), panic_cpu)
    task_stack, stacks = _cpu_stacks(ctx, dump, cpu, pid)
    bt = ctx.unwinder.from_regs({k: v for k, v in regs.items() if k != "pid"}, stacks, kind, task_stack)
    return bt, pid


def _unwind_task(ctx: _Context, address: int) -> Backtrace:
    try:
        thread_sp, stack = ctx.task_context(address)
    except KdnbError as exc:
        return Backtrace([], f"task_struct at {address:#x} unreadable: {exc}", False)
    return ctx.unwinder.from_task(thread_sp, stack)


# -- frames ---------------------------------------------------------------------------------
def _rows(ctx: _Context, bt: Backtrace) -> dict[str, list]:
    out: dict[str, list] = {c: [] for c in COLUMNS}
    for i, f in enumerate(bt.frames):
        function, offset, module, text = ctx.symbolize(f.pc, f.exact, f.kind == "user")
        out["frame"].append(i)
        out["pc"].append(f.pc)
        out["sp"].append(f.sp)
        out["function"].append(function)
        out["offset"].append(offset)
        out["module"].append(module)
        out["kind"].append(f.kind)
        out["text"].append(text)
    return out


def _frame(cols: dict[str, list], extra: dict[str, Any] | None = None) -> pd.DataFrame:
    data: dict[str, Any] = dict(extra or {})
    data.update({
        "frame": pd.array(cols["frame"], dtype="Int16"),
        "pc": pd.array(cols["pc"], dtype="UInt64"),
        "sp": pd.array(cols["sp"], dtype="UInt64"),
        "function": pd.array(cols["function"], dtype="string"),
        "offset": pd.array(cols["offset"], dtype="Int64"),
        "module": pd.array(cols["module"], dtype="string"),
        "kind": pd.Categorical(cols["kind"], categories=list(KINDS)),
        "text": pd.array(cols["text"], dtype="string"),
    })
    return pd.DataFrame(data)


def _attrs(bt: Backtrace, source: str, ctx: _Context | None = None) -> dict:
    info = {"source": source, "stop_reason": bt.reason, "complete": bt.complete,
            "unreliable_frames": [i for i, f in enumerate(bt.frames) if not f.reliable]}
    if ctx is not None and ctx.unwinder.problems:
        info["problems"] = list(ctx.unwinder.problems)
    return info


def _with_attrs(df: pd.DataFrame, info: dict) -> pd.DataFrame:
    df.attrs["kdnb"] = {**df.attrs.get("kdnb", {}), **info}
    df.attrs["stop_reason"] = info.get("stop_reason")
    return df


def backtrace_frame(dump: "Dump", cpu: int | None = None, pid: int | None = None) -> pd.DataFrame:
    """The stack of a CPU (its registers at crash time) or of a task (by pid).

    A task running on a CPU at crash time is unwound from that CPU's registers. With neither
    `cpu` nor `pid`, the panic CPU's stack.
    """
    if cpu is None and pid is None:
        return panic_backtrace_frame(dump)
    if cpu is not None and pid is not None:
        raise KdnbError("give cpu= or pid=, not both")
    ctx = _context(dump)
    if cpu is not None:
        bt, _pid = _unwind_cpu(dump, ctx, int(cpu), panic_cpu(dump))
        return _with_attrs(_frame(_rows(ctx, bt)), _attrs(bt, f"cpu {cpu}", ctx))
    tasks = dump.tasks
    rows = tasks[tasks["pid"] == pid]
    if rows.empty:
        raise KdnbError(f"no task with pid {pid}")
    row = rows.iloc[0]
    running = _running_cpu(dump, row)
    if running is not None:
        bt, _pid = _unwind_cpu(dump, ctx, running, panic_cpu(dump))
        source = f"pid {pid} (running on cpu {running})"
    else:
        bt = _unwind_task(ctx, int(row["address"]))
        source = f"pid {pid}"
    return _with_attrs(_frame(_rows(ctx, bt)), _attrs(bt, source, ctx))


def _running_cpu(dump: "Dump", row: pd.Series) -> int | None:
    """The CPU a task was running on at crash time (it has an NT_PRSTATUS note), else None."""
    if not bool(row.get("is_current", False)):
        return None
    cpu = row.get("cpu")
    cpus = dump.cpus
    if cpu is not None and not pd.isna(cpu) and int(cpu) in set(int(c) for c in cpus["cpu"]):
        return int(cpu)
    match = cpus[cpus["pid"] == row["pid"]]
    return int(match["cpu"].iloc[0]) if not match.empty and int(row["pid"]) != 0 else None


def backtraces_frame(dump: "Dump", states: Sequence[str] = ("D",),
                     cpus: str | Sequence[int] | None = "all") -> pd.DataFrame:
    """Every asked CPU's active stack plus the stack of every task in `states`, one long frame.

    `states` are /proc letters (R S D T t X Z P I), or "all". Key columns: `pid` (Int32), `cpu`
    (Int16; NA for a task that was not running), `comm`, `state`, `source` ("cpu" or "task").
    A task running on a CPU is listed once, with that CPU's stack. `attrs["kdnb"]["stop_reasons"]`
    maps "cpu N" / "pid N" to why each walk ended.
    """
    ctx = _context(dump)
    ctx.unwinder.orc  # noqa: B018 - load the tables (and module symbols) before symbol lookups
    pcpu = panic_cpu(dump)
    all_cpus = [int(c) for c in dump.cpus["cpu"]]
    if cpus is None:
        chosen: list[int] = []
    elif isinstance(cpus, str):
        if cpus != "all":
            raise KdnbError(f"cpus must be 'all' or a list of cpu numbers, not {cpus!r}")
        chosen = all_cpus
    else:
        chosen = [int(c) for c in cpus]
    if isinstance(states, str):
        states = ["all"] if states == "all" else list(states)
    try:
        tasks = dump.tasks
    except KdnbError:
        tasks = None
    keys: dict[str, list] = {c: [] for c in KEY_COLUMNS}
    cols: dict[str, list] = {c: [] for c in COLUMNS}
    reasons: dict[str, str] = {}
    unreliable: dict[str, list[int]] = {}

    def add(bt: Backtrace, key: str, pid: Any, cpu: Any, comm: Any, state: Any, source: str) -> None:
        rows = _rows(ctx, bt)
        n = len(rows["frame"])
        reasons[key] = bt.reason
        bad = [i for i, f in enumerate(bt.frames) if not f.reliable]
        if bad:
            unreliable[key] = bad
        for c, v in (("pid", pid), ("cpu", cpu), ("comm", comm), ("state", state), ("source", source)):
            keys[c].extend([v] * n)
        for c in COLUMNS:
            cols[c].extend(rows[c])

    t_pid, t_comm, t_state, t_cpu, t_cur, t_addr = [], [], [], [], [], []
    if tasks is not None:
        t_pid = tasks["pid"].tolist()
        t_comm = tasks["comm"].tolist()
        t_state = tasks["state"].tolist()
        t_cpu = tasks["cpu"].tolist()
        t_cur = tasks["is_current"].tolist()
        t_addr = tasks["address"].tolist()
    current = {t_cpu[i]: i for i in range(len(t_pid)) if t_cur[i] and t_cpu[i] is not pd.NA}
    first_of_pid: dict[int, int] = {}
    for i, p in enumerate(t_pid):
        first_of_pid.setdefault(p, i)
    for cpu in chosen:
        try:
            bt, pid = _unwind_cpu(dump, ctx, cpu, pcpu)
        except KdnbError as exc:
            reasons[f"cpu {cpu}"] = str(exc)
            continue
        i = current.get(cpu)
        if i is None or (pid is not None and t_pid[i] != pid):
            i = first_of_pid.get(pid) if pid else None
        add(bt, f"cpu {cpu}", pid, cpu, t_comm[i] if i is not None else None,
            t_state[i] if i is not None else None, "cpu")
    if tasks is not None and states:
        wanted = set(states)
        cpu_set = set(all_cpus)
        for i, pid in enumerate(t_pid):
            if "all" not in wanted and t_state[i] not in wanted:
                continue
            if t_cur[i] and t_cpu[i] is not pd.NA and int(t_cpu[i]) in cpu_set:
                cpu = int(t_cpu[i])
                if cpu in chosen:
                    continue  # its stack is that CPU's, already listed
                bt, _pid = _unwind_cpu(dump, ctx, cpu, pcpu)
                add(bt, f"pid {pid}", pid, cpu, t_comm[i], t_state[i], "cpu")
                continue
            bt = _unwind_task(ctx, int(t_addr[i]))
            key = f"pid {pid}" if f"pid {pid}" not in reasons else f"pid {pid} @{int(t_addr[i]):#x}"
            add(bt, key, pid, None, t_comm[i], t_state[i], "task")
    state_cats = list(tasks["state"].cat.categories) if tasks is not None else None
    extra = {
        "pid": pd.array(keys["pid"], dtype="Int32"),
        "cpu": pd.array(keys["cpu"], dtype="Int16"),
        "comm": pd.Categorical(keys["comm"]),
        "state": pd.Categorical(keys["state"], categories=state_cats),
        "source": pd.Categorical(keys["source"], categories=["cpu", "task"]),
    }
    out = _frame(cols, extra)
    info = {"stop_reasons": reasons, "unreliable_frames": unreliable, "panic_cpu": pcpu}
    if ctx.unwinder.problems:
        info["problems"] = list(ctx.unwinder.problems)
    out.attrs["kdnb"] = {**out.attrs.get("kdnb", {}), **info}
    return out


# -- the panic CPU ---------------------------------------------------------------------------
def panic_cpu(dump: "Dump") -> int | None:
    """The CPU that panicked: `panic_cpu`, else the kdump header's current_cpu, else the CPU
    whose saved rip is in the crash path (crash_setup_regs / __crash_kexec)."""
    k = dump.kernel
    cpus = [int(c) for c in dump.cpus["cpu"]]
    try:
        value = int.from_bytes(k.read(k.symbol("panic_cpu"), 4), "little", signed=True)
        if value in cpus:
            return value
    except KdnbError:
        pass
    current = dump.header.get("current_cpu") if isinstance(dump.header, dict) else None
    if current is not None and int(current) in cpus and len(cpus) > 1:
        return int(current)
    for cpu in cpus:
        rip = _cpu_row(dump, cpu).get("rip", 0)
        try:
            hit = k.lookup(rip)
        except KdnbError:
            hit = None
        if hit is not None and hit.name in CRASH_FUNCTIONS:
            return cpu
    if current is not None and int(current) in cpus:
        return int(current)
    return cpus[0] if len(cpus) == 1 else None


def panic_backtrace_frame(dump: "Dump") -> pd.DataFrame:
    """The stack of the CPU that panicked (see `panic_cpu`)."""
    cpu = panic_cpu(dump)
    if cpu is None:
        raise KdnbError("cannot tell which CPU panicked (no panic_cpu, no current_cpu, no CPU in the "
                        "crash path)")
    df = backtrace_frame(dump, cpu=cpu)
    df.attrs["kdnb"]["panic_cpu"] = cpu
    return df
