"""The stacks check: how many backtraces unwind to their real end.

On an intact kernel every stack ends at the end of its kernel stack (an ORC END_OF_STACK entry)
or at the user-mode registers the kernel was entered from. Many stacks ending in an unwinding
error instead mean the ORC tables (or the stacks) are damaged, and the backtraces are cut short.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .checks import Check
from .validate_context import Context
from .validate_gaps import gap_kind

# the reasons kdnb.kernel.unwind.Unwinder gives for a walk that ended where the stack ends
CLEAN_STOPS = ("end of stack", "user mode")
BROKEN_FRACTION = 0.25  # above this share of broken stacks the unwinding data is damaged


def check_kernel_stacks(ctx: Context) -> Check:
    """The share of CPU and task stacks whose unwinding ended in an error."""
    if ctx.kernel() is None:
        return ctx.kernel_skip("kernel.stacks", "the stacks")
    f = ctx.stacks()
    consequence = "backtraces are cut short: the panic and hung-task analysis may miss the culprit"
    if f.error is not None:
        return Check("kernel.stacks", "kernel", "fail", f"the backtraces failed: {f.error}",
                     consequence, {"error": str(f.error)[:200]})
    reasons: dict[str, str] = dict(f.attrs.get("stop_reasons") or {})
    if not reasons:
        return Check("kernel.stacks", "kernel", "skip", "no stack to unwind (no CPU registers, "
                     "no tasks)")
    clean = {k: r for k, r in reasons.items() if r in CLEAN_STOPS}
    rest = {k: r for k, r in reasons.items() if r not in CLEAN_STOPS}
    missing = {k: r for k, r in rest.items() if gap_kind(r) != "structure"}
    broken = {k: r for k, r in rest.items() if k not in missing}
    ev: dict[str, Any] = {"stacks": len(reasons), "clean": len(clean), "broken": len(broken),
                          "stopped_at_missing_memory": len(missing),
                          "with_unreliable_frames": len(f.attrs.get("unreliable_frames") or {})}
    if broken:
        key, why = next(iter(broken.items()))
        ev["first_broken"] = f"{key}: {why}"[:200]
        share = len(broken) / len(reasons)
        detail = (f"{len(broken)} of {len(reasons)} stacks ({100 * share:.0f}%) end in an "
                  f"unwinding error (first: {key}: {why})")
        if share > BROKEN_FRACTION:
            return Check("kernel.stacks", "kernel", "fail",
                         detail + ": the ORC unwind tables or the stacks are damaged",
                         consequence, ev)
        return Check("kernel.stacks", "kernel", "warn", detail, "those backtraces are cut short",
                     ev)
    if missing:
        return Check("kernel.stacks", "kernel", "warn",
                     f"{len(missing)} of {len(reasons)} stacks stop at memory that is not in the "
                     "dump (see kernel.in_use_memory)", "those backtraces are cut short", ev)
    return Check("kernel.stacks", "kernel", "pass",
                 f"all {len(reasons)} stacks unwind to their end (end of stack or user mode)",
                 "", ev)


CHECKS: dict[str, Callable[[Context], Check]] = {"kernel.stacks": check_kernel_stacks}
