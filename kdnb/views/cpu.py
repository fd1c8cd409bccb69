"""`Dump.cpu_state`: what each CPU was doing at the crash (crash `bt -a` heads, `runq` headers).

| column | dtype | meaning |
|---|---|---|
| `cpu` | Int16 | |
| `panic` | bool | the CPU that panicked |
| `pid`, `comm`, `state` | Int32, category, category | rq->curr |
| `idle` | bool | the CPU ran its idle task |
| `context` | category | task, bh-off (softirqs disabled), softirq, irq, nmi: from the preempt count as it was before the crash stopped the CPU |
| `preempt_count` | UInt32 | the raw per-CPU preempt count (PREEMPT_NEED_RESCHED bit cleared) |
| `running_for` | timedelta | since rq->curr last got the CPU (sched_info.last_arrival), against the crash clock |
| `function` | string | where the saved registers say the CPU is (`func+0x1a`, or `(user mode)`) |
| `interrupted` | string | where it was when the innermost interrupt or exception on its stack came: the loop a lockup spins in |

The CPUs the panic stopped with an NMI keep the NMI in their preempt count (crash_nmi_callback
never returns); the NMI's own `nmi_enter()` (NMI_OFFSET + HARDIRQ_OFFSET) is taken off so
`context` says what the CPU had been doing. The stacks are the shared walk's (collect_stacks).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ..errors import KdnbError
from .common import Gaps, fitting
from .runq import crash_clock
from .stackwalk import collect_stacks, context, panic_cpu

if TYPE_CHECKING:  # pragma: no cover
    from ..api import Dump
    from ..kernel.kernel import Kernel

COLUMNS = ["cpu", "panic", "pid", "comm", "state", "idle", "context", "preempt_count",
           "running_for", "function", "interrupted"]
CONTEXTS = ["task", "bh-off", "softirq", "irq", "nmi"]
# include/linux/preempt.h
SOFTIRQ_OFFSET = 1 << 8
SOFTIRQ_MASK = 0xFF << 8
HARDIRQ_OFFSET = 1 << 16
HARDIRQ_MASK = 0xF << 16
NMI_OFFSET = 1 << 20
NMI_MASK = 0xF << 20
PREEMPT_NEED_RESCHED = 1 << 31  # x86: inverted need-resched bit folded into the count


def irq_context(count: int) -> str:
    """The context a preempt count says the CPU is in."""
    if count & NMI_MASK:
        return "nmi"
    if count & HARDIRQ_MASK:
        return "irq"
    if count & SOFTIRQ_OFFSET:
        return "softirq"
    return "bh-off" if count & SOFTIRQ_MASK else "task"


def _preempt_counts(k: "Kernel", cpus: list[int], gaps: Gaps) -> dict[int, int]:
    """The per-CPU preempt count: `__preempt_count`, or `pcpu_hot.preempt_count` (6.2 .. 6.14:
    64d4a2d0a7a2 "x86/percpu: Move preempt_count next to current_task" grouped them)."""
    try:
        addr_of = lambda cpu: k.per_cpu("__preempt_count", cpu)  # noqa: E731
        k.symbol("__preempt_count")
    except KdnbError:
        try:
            off = k.type("struct pcpu_hot").offsetof("preempt_count")
            base = k.symbol("pcpu_hot")
            addr_of = lambda cpu: k.per_cpu(base, cpu) + off  # noqa: E731
        except KdnbError as exc:
            gaps.note("no per-CPU preempt count", None, exc)
            return {}
    out = {}
    for cpu in cpus:
        try:
            out[cpu] = k.read_u32(addr_of(cpu)) & ~PREEMPT_NEED_RESCHED
        except KdnbError as exc:
            gaps.note(f"preempt count of cpu {cpu}", None, exc)
    return out


def cpu_state_frame(dump: "Dump") -> pd.DataFrame:
    """The cpu_state DataFrame (columns: see COLUMNS)."""
    gaps = Gaps()
    k = dump.kernel
    ctx = context(dump)
    pcpu = panic_cpu(dump)
    now = crash_clock(dump)
    runq = dump.runq
    tasks = dump.tasks
    stacks = {st.cpu: st for st in collect_stacks(dump, states=(), cpus="all")}
    counts = _preempt_counts(k, sorted(stacks), gaps)
    rows: list[dict[str, Any]] = []
    for cpu, st in sorted(stacks.items()):
        cur = runq[(runq["cpu"] == cpu) & runq["current"]]
        row: dict[str, Any] = {"cpu": cpu, "panic": cpu == pcpu}
        if len(cur):
            c = cur.iloc[0]
            row.update(pid=c["pid"], comm=c["comm"], state=c["state"],
                       idle=c["sched_class"] == "idle", running_for=c["waited"])
        count = counts.get(cpu)
        if count is not None:
            row["preempt_count"] = count
            if cpu != pcpu and count & NMI_MASK:
                count -= NMI_OFFSET + HARDIRQ_OFFSET
            row["context"] = irq_context(count)
        frames = st.bt.frames
        if frames:
            row["function"] = _where(ctx, frames[0])
            hit = next((f for f in frames if f.kind in ("interrupt", "exception")), None)
            if hit is not None:
                row["interrupted"] = _where(ctx, hit)
        rows.append(row)
    col = {c: [r.get(c) for r in rows] for c in COLUMNS}
    states = list(tasks["state"].cat.categories)
    df = pd.DataFrame({
        "cpu": fitting(col["cpu"], "Int16", "cpu", gaps),
        "panic": np.array(col["panic"], dtype=bool),
        "pid": fitting([None if pd.isna(v) else v for v in col["pid"]], "Int32", "pid", gaps),
        "comm": pd.Categorical(col["comm"]),
        "state": pd.Categorical(col["state"], categories=states),
        "idle": np.array([bool(v) for v in col["idle"]], dtype=bool),
        "context": pd.Categorical(col["context"], categories=CONTEXTS),
        "preempt_count": fitting(col["preempt_count"], "UInt32", "preempt_count", gaps),
        "running_for": pd.to_timedelta(pd.Series(col["running_for"], dtype=object)),
        "function": pd.array(col["function"], dtype="string"),
        "interrupted": pd.array(col["interrupted"], dtype="string"),
    }, columns=COLUMNS)
    if now is None:
        gaps.note("no crash clock (rq->clock): running_for unknown")
    return gaps.attach(df, "cpu_state")


def _where(ctx: Any, frame: Any) -> str:
    if frame.kind == "user":
        return "(user mode)"
    return ctx.symbolize(frame.pc, frame.exact, False)[3].split("/")[0]
