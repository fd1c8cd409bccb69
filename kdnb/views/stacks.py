"""`Dump.stacks`: every task's stack, grouped by identical call chain (crash `foreach bt`,
corelens `bt`, de-duplicated).

One row per distinct kernel call chain, most common first:

| column | dtype | meaning |
|---|---|---|
| `count` | Int32 | tasks (and CPUs) with this chain |
| `top` | string | the innermost function that is neither the scheduler nor a lock/completion wait (`pipe_read`, `mnt_want_write`) |
| `frames` | Int16 | frames in the chain |
| `states` | object | list: each member's /proc state letter, parallel to `pids` |
| `pids` | object | list of pids (Int), in task order |
| `comms` | object | list of comms, parallel to `pids` |
| `cpus` | object | list: the CPU a member was running on, None for a sleeping task |
| `functions` | object | list of function names, innermost first |
| `chain` | string | the frames as the kernel prints them, one per line |
| `complete` | bool | every member's walk reached user mode or the end of the stack |
| `stop_reason` | string | why the first member's walk ended |

Two stacks are the same chain when they have the same kernel pcs frame by frame; the user-mode
frame (where each process entered the kernel) is not part of the key. A task running on a CPU
has that CPU's stack. The stacks come from the shared walk (`collect_stacks`), so `d.stacks` after
`d.backtraces(states="all")` unwinds nothing again.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .stackwalk import Stack, StackContext, collect_stacks, context

if TYPE_CHECKING:  # pragma: no cover
    from ..api import Dump

COLUMNS = ["count", "top", "frames", "states", "pids", "comms", "cpus", "functions", "chain",
           "complete", "stop_reason"]
#: The scheduler's own frames: a sleeping task's `top` is the first frame after these.
SCHEDULER = ("__schedule", "schedule", "context_switch", "__switch_to", "__switch_to_asm",
             "schedule_timeout", "schedule_hrtimeout_range", "schedule_hrtimeout_range_clock",
             "schedule_preempt_disabled", "io_schedule", "io_schedule_timeout", "__schedule_loop",
             "preempt_schedule", "preempt_schedule_common", "preempt_schedule_irq",
             "schedule_idle", "__cond_resched", "_cond_resched")


#: The functions (source names) of each primitive's slow path.
PRIMITIVES = {
    **dict.fromkeys(("__mutex_lock", "__mutex_lock_slowpath", "mutex_lock", "mutex_lock_killable",
                     "mutex_lock_interruptible", "__mutex_lock_killable_slowpath",
                     "__mutex_lock_interruptible_slowpath", "mutex_lock_nested", "__ww_mutex_lock",
                     "ww_mutex_lock", "mutex_lock_io"), "mutex"),
    **dict.fromkeys(("rwsem_down_write_slowpath", "rwsem_down_read_slowpath", "down_write",
                     "down_read", "down_write_killable", "down_read_killable",
                     "down_read_interruptible", "__down_write", "__down_read",
                     "__down_write_common", "__down_read_common"), "rwsem"),
    **dict.fromkeys(("percpu_rwsem_wait", "__percpu_down_read", "percpu_down_read",
                     "percpu_down_write"), "percpu-rwsem"),
    **dict.fromkeys(("__down", "__down_common", "__down_interruptible", "__down_killable",
                     "__down_timeout", "down", "down_interruptible", "down_killable",
                     "down_timeout"), "semaphore"),
    **dict.fromkeys(("wait_for_completion", "__wait_for_common", "wait_for_common",
                     "do_wait_for_common", "wait_for_common_io", "wait_for_completion_io",
                     "wait_for_completion_timeout", "wait_for_completion_interruptible",
                     "wait_for_completion_killable", "wait_for_completion_state",
                     "wait_for_completion_interruptible_timeout",
                     "wait_for_completion_killable_timeout", "wait_for_completion_io_timeout"),
                    "completion"),
}


def chain_key(st: Stack) -> tuple[int, ...]:
    """The grouping key of a stack: its kernel pcs (0 stands for the user-mode frame)."""
    return tuple(0 if f.kind == "user" else f.pc for f in st.bt.frames)


def _describe(ctx: StackContext, st: Stack) -> tuple[str | None, list[str], str]:
    """(top, function names, chain text) of one representative stack."""
    names: list[str] = []
    lines: list[str] = []
    for f in st.bt.frames:
        function, _offset, _module, text = ctx.symbolize(f.pc, f.exact, f.kind == "user")
        if f.kind == "user":
            names.append("(user)")
            lines.append("(user mode)")
            continue
        names.append(function if isinstance(function, str) else text)
        lines.append(text if f.kind == "normal" else f"{text} <{f.kind}>")
    top = next((n for n in names if n not in SCHEDULER and n not in PRIMITIVES and n != "(user)"),
               names[0] if names else None)
    return top, names, "\n".join(lines)


def stacks_frame(dump: "Dump") -> pd.DataFrame:
    """Every task's stack (and each CPU's), grouped by identical call chain."""
    ctx = context(dump)
    groups: dict[tuple[int, ...], list[Stack]] = {}
    for st in collect_stacks(dump, states="all", cpus="all"):
        groups.setdefault(chain_key(st), []).append(st)
    out: dict[str, list[Any]] = {c: [] for c in COLUMNS}
    for members in sorted(groups.values(), key=lambda m: (-len(m), _first_pid(m))):
        top, names, text = _describe(ctx, members[0])
        out["count"].append(len(members))
        out["top"].append(top)
        out["frames"].append(len(names))
        out["states"].append([m.state for m in members])
        out["pids"].append([m.pid for m in members])
        out["comms"].append([m.comm for m in members])
        out["cpus"].append([m.cpu for m in members])
        out["functions"].append(names)
        out["chain"].append(text)
        out["complete"].append(all(m.bt.complete for m in members))
        out["stop_reason"].append(members[0].bt.reason)
    df = pd.DataFrame({
        "count": pd.array(out["count"], dtype="Int32"),
        "top": pd.array(out["top"], dtype="string"),
        "frames": pd.array(out["frames"], dtype="Int16"),
        **{c: pd.Series(out[c], dtype=object) for c in ("states", "pids", "comms", "cpus", "functions")},
        "chain": pd.array(out["chain"], dtype="string"),
        "complete": np.array(out["complete"], dtype=bool),
        "stop_reason": pd.array(out["stop_reason"], dtype="string"),
    }, columns=COLUMNS)
    df.attrs["kdnb"] = {"stacks": sum(out["count"]), "chains": len(df)}
    return df


def _first_pid(members: list[Stack]) -> int:
    pids = [m.pid for m in members if m.pid is not None]
    return min(pids) if pids else -1


def stacks_display(stacks: pd.DataFrame) -> pd.DataFrame:
    """d.stacks as text columns for tables (viewer, report): states as counts, the chain on
    one line innermost first."""
    def states(values: list) -> str:
        counts = pd.Series([v for v in values if v]).value_counts()
        return ", ".join(f"{s}×{n}" for s, n in counts.items())

    return pd.DataFrame({
        "count": stacks["count"], "top": stacks["top"],
        "states": [states(v) for v in stacks["states"]],
        "pids": [", ".join(str(p) for p in v[:20]) + (", …" if len(v) > 20 else "") for v in stacks["pids"]],
        "comms": [", ".join(sorted(set(c for c in v if c))) for v in stacks["comms"]],
        "chain": [" ← ".join(str(t).splitlines()) for t in stacks["chain"]],
    })
