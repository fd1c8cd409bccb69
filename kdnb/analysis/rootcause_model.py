"""The answer's shape: categories, culprit, root cause record, and the evidence collector."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import pandas as pd

from ..answer import Answer
from ..errors import KdnbError

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
    "deadlock": "Tasks wait for each other in a cycle: each holds a lock the next one waits for, "
                "so none of them can ever go on.",
    "io-hang": "A task waited for block I/O that its disk (the device, its driver or what is "
               "behind it) never completed, until the hung-task detector gave up.",
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


class RootCause(Answer):
    """The answer to "why did the kernel die?" (kdnb.answer.Answer with the kernel categories)."""

    EXPLANATIONS = EXPLANATIONS
    NO_MESSAGE = "(none in the log)"


class Analysis:
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
                                                            "lock", "memory", "module", "mount",
                                                            "workqueue", "io"])
        df["seq"] = df["seq"].astype("Int64")
        df["time"] = pd.to_timedelta(df["time"])
        df["cpu"] = df["cpu"].astype("Int16")
        df["pid"] = df["pid"].astype("Int32")
        return df


