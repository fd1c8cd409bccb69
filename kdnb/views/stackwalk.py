"""The stack walks behind every backtrace view: one unwinder per dump, each stack unwound once.

`collect_stacks(dump, states, cpus)` returns the stacks of CPUs (from their NT_PRSTATUS
registers) and tasks (from their saved context); d.backtraces, d.stacks, d.locks and the root
cause all read them from the same per-kernel cache. Lookups of symbols and ORC entries are
memoised by address: thousands of sleeping tasks share a few hundred call sites, so a 5,000-task
dump costs a few hundred symbol and ORC searches, not tens of thousands.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, NamedTuple, Sequence

import pandas as pd

from ..errors import KdnbError
from ..kernel.unwind import Unwinder
from ..kernel.unwind_frames import Backtrace
from ..kernel.unwind_orc import LAYOUT_6_3, OrcTables, read_orc_tables

if TYPE_CHECKING:  # pragma: no cover
    from ..api import Dump
    from ..kernel.kernel import Kernel

_CLONE_SUFFIX = re.compile(r"\.(?:cold|part|isra|constprop|lto_priv|llvm|localalias)(?:\.|$).*")
# where crash_setup_regs() runs on the panicking CPU (kexec_core.c / crash_core.c)
CRASH_FUNCTIONS = ("__crash_kexec", "crash_kexec", "crash_setup_regs", "machine_crash_shutdown",
                   "native_machine_crash_shutdown", "panic")

CONTEXT_KEY = "_stack_context"


def source_function(name: str) -> str:
    """`trigger_write.cold` -> `trigger_write`: the C function a compiler clone belongs to."""
    return _CLONE_SUFFIX.sub("", name)


class _MemoKernel:
    """The kernel with `lookup` memoised by address: the stacks of thousands of tasks keep
    returning to the same few hundred call sites."""

    def __init__(self, kernel: "Kernel") -> None:
        self._kernel = kernel
        self._hits: dict[int, Any] = {}

    def lookup(self, addr: int) -> Any:
        try:
            return self._hits[addr]
        except KeyError:
            hit = self._hits[addr] = self._kernel.lookup(addr)
            return hit

    def __getattr__(self, name: str) -> Any:
        return getattr(self._kernel, name)


class _MemoOrc(OrcTables):
    """ORC tables whose `find` is memoised by ip (same reason as _MemoKernel)."""

    def __init__(self, tables: OrcTables) -> None:
        super().__init__(tables.tables, tables.layout, list(tables.problems))
        self._found: dict[int, Any] = {}

    def find(self, ip: int) -> Any:
        try:
            return self._found[ip]
        except KeyError:
            hit = self._found[ip] = super().find(ip)
            return hit


class StackContext:
    """Per-kernel unwinder, a symbolization cache and every stack unwound so far (one walk:
    d.backtraces, d.stacks, d.locks and the root cause share them)."""

    def __init__(self, kernel: "Kernel") -> None:
        self.kernel = kernel
        memo = _MemoKernel(kernel)
        try:
            orc = read_orc_tables(memo)
            problems = list(orc.problems)
        except KdnbError as exc:
            orc, problems = OrcTables([], LAYOUT_6_3), [f"no ORC unwind tables: {exc}"]
        self.unwinder = Unwinder(memo, orc=_MemoOrc(orc))
        self.unwinder.problems += problems
        self._sym: dict[Any, Any] = {}  # pc (exact) / -pc (return address) -> symbol columns
        self._sp_off: int | None = None
        self.task_stacks: dict[int, Backtrace] = {}  # task address -> its saved-context stack
        self.stack_base: dict[int, int] = {}  # task address -> task->stack
        self.cpu_stacks: dict[int, tuple[Backtrace, int | None]] = {}

    def symbolize(self, pc: int, exact: bool, user: bool) -> tuple:
        key = pc if exact else -pc
        hit = self._sym.get(key)
        if hit is not None:
            return hit
        if user:
            out = (pd.NA, pd.NA, pd.NA, f"{pc:#x}")
        else:
            try:
                s = self.unwinder.kernel.lookup(pc if exact else pc - 1)
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
        """(thread.sp, stack) of a task_struct. Only thread.sp is read: kernel stacks are
        THREAD_SIZE-aligned (vmalloc'ed with THREAD_ALIGN, or a naturally aligned page block),
        so the base is thread.sp rounded down, and the page holding `task->stack` (which the
        tasks view read long ago, and the page cache may have dropped) is not read again."""
        if self._sp_off is None:
            self._sp_off = self.kernel.type("struct task_struct").offsetof("thread.sp")
        thread_sp = self.unwinder.mem.u64(address + self._sp_off)
        stack = thread_sp & ~(self.unwinder.thread_size - 1)
        self.stack_base[address] = stack
        return thread_sp, stack

    def task_stack(self, address: int) -> Backtrace:
        """The stack of a task that is not running (its saved context), unwound once."""
        bt = self.task_stacks.get(address)
        if bt is None:
            try:
                thread_sp, stack = self.task_context(address)
            except KdnbError as exc:
                bt = Backtrace([], f"task_struct at {address:#x} unreadable: {exc}", False)
            else:
                bt = self.unwinder.from_task(thread_sp, stack)
            self.task_stacks[address] = bt
        return bt


def context(dump: "Dump") -> StackContext:
    """The dump's stack-walk context, made once and kept on the dump (it goes with it)."""
    ctx = dump.__dict__.get(CONTEXT_KEY)
    if ctx is None:
        ctx = dump.__dict__[CONTEXT_KEY] = StackContext(dump.kernel)
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


def _cpu_stacks(ctx: StackContext, dump: "Dump", cpu: int, pid: int | None) -> tuple[int | None, list]:
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


def _first_kind(dump: "Dump", ctx: StackContext, cpu: int, rip: int, panic_cpu: int | None) -> str:
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


def unwind_cpu(dump: "Dump", ctx: StackContext, cpu: int, panic_cpu: int | None) -> tuple[Backtrace, int]:
    hit = ctx.cpu_stacks.get(cpu)
    if hit is not None:
        return hit
    regs = _cpu_row(dump, cpu)
    pid = regs.get("pid")
    kind = _first_kind(dump, ctx, cpu, regs.get("rip", 0), panic_cpu)
    task_stack, stacks = _cpu_stacks(ctx, dump, cpu, pid)
    bt = ctx.unwinder.from_regs({k: v for k, v in regs.items() if k != "pid"}, stacks, kind, task_stack)
    ctx.cpu_stacks[cpu] = (bt, pid)
    return bt, pid


class Stack(NamedTuple):
    """One unwound stack and whose it is."""

    key: str  # "cpu N" or "pid N" (the stop_reasons key)
    pid: int | None
    cpu: int | None  # the CPU whose registers it was unwound from; None for a saved context
    comm: str | None
    state: str | None
    source: str  # "cpu" or "task"
    address: int | None  # the task_struct
    bt: Backtrace


def _chosen_cpus(cpus: str | Sequence[int] | None, all_cpus: list[int]) -> list[int]:
    if cpus is None:
        return []
    if isinstance(cpus, str):
        if cpus != "all":
            raise KdnbError(f"cpus must be 'all' or a list of cpu numbers, not {cpus!r}")
        return all_cpus
    return [int(c) for c in cpus]


def collect_stacks(dump: "Dump", states: Sequence[str] | str = ("D",),
                   cpus: str | Sequence[int] | None = "all") -> list[Stack]:
    """The stacks of the asked CPUs and of every task in `states` (/proc letters or "all");
    a task running on a CPU has that CPU's stack, and is listed once. Each stack is unwound
    once per dump and shared by every caller."""
    ctx = context(dump)
    pcpu = panic_cpu(dump)
    all_cpus = [int(c) for c in dump.cpus["cpu"]]
    chosen = _chosen_cpus(cpus, all_cpus)
    if isinstance(states, str):
        states = ["all"] if states == "all" else list(states)
    try:
        tasks = dump.tasks
    except KdnbError:
        tasks = None
    cols = {c: tasks[c].tolist() for c in ("pid", "comm", "state", "cpu", "is_current", "address")} \
        if tasks is not None else {c: [] for c in ("pid", "comm", "state", "cpu", "is_current", "address")}
    t_pid, t_comm, t_state, t_cpu, t_cur, t_addr = (cols[c] for c in ("pid", "comm", "state", "cpu",
                                                                      "is_current", "address"))
    n = len(t_pid)
    current = {t_cpu[i]: i for i in range(n) if t_cur[i] and t_cpu[i] is not pd.NA}
    first_of_pid: dict[int, int] = {}
    for i, p in enumerate(t_pid):
        first_of_pid.setdefault(p, i)
    out: list[Stack] = []
    for cpu in chosen:
        try:
            bt, pid = unwind_cpu(dump, ctx, cpu, pcpu)
        except KdnbError as exc:  # no registers for it: listed with no frames and the reason
            out.append(Stack(f"cpu {cpu}", None, cpu, None, None, "cpu", None, Backtrace([], str(exc))))
            continue
        i = current.get(cpu)
        if i is None or (pid is not None and t_pid[i] != pid):
            i = first_of_pid.get(pid) if pid else None
        out.append(Stack(f"cpu {cpu}", pid, cpu, t_comm[i] if i is not None else None,
                         t_state[i] if i is not None else None, "cpu",
                         int(t_addr[i]) if i is not None else None, bt))
    wanted = set(states or ())
    if tasks is not None and wanted:
        cpu_set = set(all_cpus)
        keys: set[str] = set()
        for i in range(n):
            if "all" not in wanted and t_state[i] not in wanted:
                continue
            pid, addr = t_pid[i], int(t_addr[i])
            if t_cur[i] and t_cpu[i] is not pd.NA and int(t_cpu[i]) in cpu_set:
                cpu = int(t_cpu[i])
                if cpu in chosen:
                    continue  # its stack is that CPU's, already listed
                bt, _pid = unwind_cpu(dump, ctx, cpu, pcpu)
                out.append(Stack(f"pid {pid}", pid, cpu, t_comm[i], t_state[i], "cpu", addr, bt))
                continue
            key = f"pid {pid}" if f"pid {pid}" not in keys else f"pid {pid} @{addr:#x}"
            keys.add(key)
            out.append(Stack(key, pid, None, t_comm[i], t_state[i], "task", addr, ctx.task_stack(addr)))
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


