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

from typing import TYPE_CHECKING, Any, Sequence

import pandas as pd

from ..errors import KdnbError
from ..kernel.unwind_frames import KINDS, Backtrace
from .stackwalk import (CRASH_FUNCTIONS, Stack, StackContext, collect_stacks, context, panic_cpu,
                        source_function, unwind_cpu)

if TYPE_CHECKING:  # pragma: no cover
    from ..api import Dump

__all__ = ["COLUMNS", "KEY_COLUMNS", "CRASH_FUNCTIONS", "Stack", "backtrace_frame",
           "backtraces_frame", "collect_stacks", "panic_backtrace_frame", "panic_cpu",
           "source_function"]
COLUMNS = ["frame", "pc", "sp", "function", "offset", "module", "kind", "text"]
KEY_COLUMNS = ["pid", "cpu", "comm", "state", "source"]


# -- frames ---------------------------------------------------------------------------------
def _rows(ctx: StackContext, bt: Backtrace) -> dict[str, list]:
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


def _attrs(bt: Backtrace, source: str, ctx: StackContext | None = None) -> dict:
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
    ctx = context(dump)
    if cpu is not None:
        bt, _pid = unwind_cpu(dump, ctx, int(cpu), panic_cpu(dump))
        return _with_attrs(_frame(_rows(ctx, bt)), _attrs(bt, f"cpu {cpu}", ctx))
    tasks = dump.tasks
    rows = tasks[tasks["pid"] == pid]
    if rows.empty:
        raise KdnbError(f"no task with pid {pid}")
    row = rows.iloc[0]
    running = _running_cpu(dump, row)
    if running is not None:
        bt, _pid = unwind_cpu(dump, ctx, running, panic_cpu(dump))
        source = f"pid {pid} (running on cpu {running})"
    else:
        bt = ctx.task_stack(int(row["address"]))
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
    ctx = context(dump)
    stacks = collect_stacks(dump, states, cpus)
    keys: dict[str, list] = {c: [] for c in KEY_COLUMNS}
    cols: dict[str, list] = {c: [] for c in COLUMNS}
    reasons: dict[str, str] = {}
    unreliable: dict[str, list[int]] = {}
    for st in stacks:
        rows = _rows(ctx, st.bt)
        nf = len(rows["frame"])
        reasons[st.key] = st.bt.reason
        bad = [i for i, f in enumerate(st.bt.frames) if not f.reliable]
        if bad:
            unreliable[st.key] = bad
        for c, v in (("pid", st.pid), ("cpu", st.cpu), ("comm", st.comm), ("state", st.state),
                     ("source", st.source)):
            keys[c].extend([v] * nf)
        for c in COLUMNS:
            cols[c].extend(rows[c])
    try:
        state_cats = list(dump.tasks["state"].cat.categories)
    except KdnbError:
        state_cats = None
    extra = {
        "pid": pd.array(keys["pid"], dtype="Int32"),
        "cpu": pd.array(keys["cpu"], dtype="Int16"),
        "comm": pd.Categorical(keys["comm"]),
        "state": pd.Categorical(keys["state"], categories=state_cats),
        "source": pd.Categorical(keys["source"], categories=["cpu", "task"]),
    }
    out = _frame(cols, extra)
    info = {"stop_reasons": reasons, "unreliable_frames": unreliable, "panic_cpu": panic_cpu(dump)}
    if ctx.unwinder.problems:
        info["problems"] = list(ctx.unwinder.problems)
    out.attrs["kdnb"] = {**out.attrs.get("kdnb", {}), **info}
    return out


def panic_backtrace_frame(dump: "Dump") -> pd.DataFrame:
    """The stack of the CPU that panicked (see `panic_cpu`)."""
    cpu = panic_cpu(dump)
    if cpu is None:
        raise KdnbError("cannot tell which CPU panicked (no panic_cpu, no current_cpu, no CPU in the "
                        "crash path)")
    df = backtrace_frame(dump, cpu=cpu)
    df.attrs["kdnb"]["panic_cpu"] = cpu
    return df

