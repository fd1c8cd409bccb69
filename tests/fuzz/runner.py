"""Run fuzz cases: each mutated dump is exercised in a child process with a time and memory
limit; every entry point's outcome is classified and failures are de-duplicated by exception
type and innermost kdnb frame."""

from __future__ import annotations

import faulthandler
import multiprocessing as mp
import os
import re
import resource
import shutil
import signal
import tempfile
import time
import traceback
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import kdnb

CLASSES = ("ok", "flagged", "typed", "untyped", "hang", "oom", "crash")
BAD = ("untyped", "hang", "oom", "crash")
STEPS = ("open", "cpus", "segments", "log", "tasks", "slab", "modules", "sys", "meminfo", "backtraces",
         "validate", "root_cause")
KDNB_DIR = os.path.dirname(os.path.abspath(kdnb.__file__))
PRIMITIVES = ("kdnb/dump/", "kdnb/errors.py", "kdnb/bounds.py", "kdnb/kernel/pagetable.py",
              "kdnb/kernel/kernel.py:read")  # Kernel.read*, the virtual-memory reads
MEMORY_LIMIT = 2 << 30  # address space a case may add to what the child starts with
_FAULT_FRAME = re.compile(r'File "([^"]+)", line (\d+) in (\S+)')


@dataclass
class Step:
    """What one entry point did on one case."""

    step: str
    outcome: str
    exc_type: str = ""
    where: str = ""  # innermost kdnb frame: "kdnb/dump/elf.py:_open"
    line: int = 0
    message: str = ""

    @property
    def signature(self) -> tuple[str, str, str]:
        return self.outcome, self.exc_type, self.where


@dataclass
class Case:
    """One mutated dump and what every entry point did on it."""

    number: int
    base: str
    description: str
    steps: list[Step] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def outcome(self) -> str:
        """The worst step outcome."""
        return max((s.outcome for s in self.steps), key=CLASSES.index, default="crash")

    def bad_steps(self) -> list[Step]:
        """Steps with an untyped exception, a hang, an out-of-memory failure or a crash."""
        return [s for s in self.steps if s.outcome in BAD]


def kdnb_frames(frames: list[tuple[str, int, str]]) -> list[tuple[str, int]]:
    """("kdnb/x/y.py:function", line) of the frames inside the kdnb package, outermost first."""
    out = []
    for filename, line, func in frames:
        path = os.path.abspath(filename)
        if path.startswith(KDNB_DIR + os.sep):
            out.append((f"kdnb/{os.path.relpath(path, KDNB_DIR).replace(os.sep, '/')}:{func}", line))
    return out


def innermost_kdnb_frame(frames: list[tuple[str, int, str]]) -> tuple[str, int]:
    """("kdnb/x/y.py:function", line) of the innermost frame inside the kdnb package."""
    inside = kdnb_frames(frames)
    return inside[-1] if inside else ("(outside kdnb)", 0)


def _loop_owner(frames: list[tuple[str, int]]) -> tuple[str, int]:
    """For a case stopped at its time limit: the innermost frame that is not a memory-access
    primitive (a reader, the page tables, an error constructor), since every loop of those is
    bounded by its arguments: the code that called them too often owns the hang."""
    for where, line in reversed(frames):
        if not where.startswith(PRIMITIVES):
            return where, line
    return frames[-1] if frames else ("(outside kdnb)", 0)


def _flagged(step: str, value: Any) -> bool:
    attrs = getattr(value, "attrs", None)
    if isinstance(attrs, dict):
        info = attrs.get("kdnb", {})
        return bool(info.get("incomplete") or info.get("problems"))
    if step == "open":
        return bool(value.header.get("problems"))
    if step == "sys":
        return bool(value.get("problems"))
    if step == "validate":
        return getattr(value, "verdict", "usable") != "usable"
    return False


def _entry_points(path: str) -> list[tuple[str, Callable[[Any], Any]]]:
    return [("cpus", lambda d: d.cpus), ("segments", lambda d: d.segments), ("log", lambda d: d.log),
            ("tasks", lambda d: d.tasks), ("slab", lambda d: d.slab), ("modules", lambda d: d.modules),
            ("sys", lambda d: d.sys_info), ("meminfo", lambda d: d.meminfo),
            ("backtraces", lambda d: d.backtraces()), ("validate", lambda d: d.validate()),
            ("root_cause", lambda d: d.root_cause())]


def _run_step(conn: Any, step: str, fn: Callable[[], Any]) -> Any:
    conn.send(("start", step))
    try:
        value = fn()
    except kdnb.errors.KdnbError as exc:
        conn.send(("step", Step(step, "typed", type(exc).__name__, message=str(exc)[:300])))
        return None
    except Exception as exc:  # noqa: BLE001 - classifying is the point
        frames = [(f.filename, f.lineno or 0, f.name) for f in traceback.extract_tb(exc.__traceback__)]
        where, line = innermost_kdnb_frame(frames)
        oom = isinstance(exc, MemoryError) or (isinstance(exc, OSError) and exc.errno == 12)
        conn.send(("step", Step(step, "oom" if oom else "untyped", type(exc).__name__, where, line,
                                str(exc)[:300])))
        return None
    conn.send(("step", Step(step, "flagged" if _flagged(step, value) else "ok")))
    return value


def _child(path: str, conn: Any, timeout: float, hang_file: str, cache_dir: str) -> None:
    """Exercise one dump through the public entry points (runs in the child process)."""
    with open("/proc/self/status") as f:
        vm_kb = int(re.search(r"VmSize:\s+(\d+)", f.read()).group(1))
    limit = vm_kb * 1024 + MEMORY_LIMIT
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    os.environ["KDNB_CACHE_DIR"] = cache_dir
    warnings.simplefilter("ignore")
    hang = open(hang_file, "w")
    faulthandler.dump_traceback_later(timeout, exit=True, file=hang)
    d = _run_step(conn, "open", lambda: kdnb.open(path))
    if d is not None:
        for step, fn in _entry_points(path):
            _run_step(conn, step, lambda fn=fn: fn(d))
    faulthandler.cancel_dump_traceback_later()
    conn.send(("end", None))


def _hang_frame(hang_file: str) -> tuple[str, int, str] | None:
    """(owner frame, line, the kdnb stack) from what faulthandler wrote at the time limit, or None."""
    try:
        text = Path(hang_file).read_text()
    except OSError:
        return None
    if not text.strip():
        return None
    frames = [(m.group(1), int(m.group(2)), m.group(3)) for m in _FAULT_FRAME.finditer(text)]
    inside = kdnb_frames(frames[::-1])  # faulthandler prints the innermost frame first
    where, line = _loop_owner(inside)
    return where, line, " < ".join(w.rsplit(":", 1)[1] for w, _ in reversed(inside[-6:]))


@dataclass
class _Running:
    case: Case
    proc: mp.Process
    conn: Any
    path: Path
    scratch: str
    started: float
    current: str = "open"


def run_cases(make: Callable[[int, Path], tuple[str, str]], numbers: list[int], workdir: Path,
              jobs: int = 2, timeout: float = 20.0, progress: Callable[[Case], None] | None = None) -> list[Case]:
    """Run cases `numbers`; `make(number, out_path) -> (base name, description)` writes each
    mutated dump. At most `jobs` children run at once."""
    ctx = mp.get_context("fork")
    pending = list(numbers)
    running: list[_Running] = []
    done: list[Case] = []
    while pending or running:
        while pending and len(running) < jobs:
            number = pending.pop(0)
            path = workdir / f"case-{number}"
            base, description = make(number, path)
            scratch = tempfile.mkdtemp(prefix=f"case-{number}-", dir=workdir)
            parent, child = ctx.Pipe(duplex=False)
            proc = ctx.Process(target=_child, args=(str(path), child, timeout, f"{scratch}/hang",
                                                    f"{scratch}/cache"), daemon=True)
            proc.start()
            child.close()
            running.append(_Running(Case(number, base, description), proc, parent, path, scratch, time.monotonic()))
        for r in list(running):
            finished = _collect(r, timeout)
            if finished:
                running.remove(r)
                r.case.seconds = time.monotonic() - r.started
                shutil.rmtree(r.scratch, ignore_errors=True)
                r.path.unlink(missing_ok=True)
                done.append(r.case)
                if progress:
                    progress(r.case)
        time.sleep(0.02)
    return sorted(done, key=lambda c: c.number)


def _collect(r: _Running, timeout: float) -> bool:
    """Read what the child sent; True once it has ended (normally, by timeout or by a signal)."""
    try:
        while r.conn.poll():
            kind, payload = r.conn.recv()
            if kind == "start":
                r.current = payload
            elif kind == "step":
                r.case.steps.append(payload)
            else:
                r.proc.join(5)
                return True
    except (EOFError, OSError):
        pass
    if r.proc.is_alive() and time.monotonic() - r.started < timeout + 5:
        return False
    timed_out = r.proc.is_alive()
    if timed_out:  # faulthandler did not end it: kill it
        os.kill(r.proc.pid, signal.SIGKILL)
    r.proc.join(5)
    hang = _hang_frame(f"{r.scratch}/hang")
    code = r.proc.exitcode
    if hang is not None or timed_out:
        where, line, stack = hang or ("(killed at the time limit)", 0, "")
        r.case.steps.append(Step(r.current, "hang", "Timeout", where, line,
                                 f"still running after {timeout:g} s in {stack}"))
    elif code == -signal.SIGKILL:
        r.case.steps.append(Step(r.current, "oom", "SIGKILL", "(killed)", 0, "killed (out of memory?)"))
    else:
        r.case.steps.append(Step(r.current, "crash", f"exit {code}", "(child died)", 0, "child process died"))
    r.conn.close()
    return True


def outcome_table(cases: list[Case]) -> str:
    """Cases per outcome class, and step outcomes per entry point."""
    by_case = Counter(c.outcome for c in cases)
    lines = [f"{len(cases)} cases: " + ", ".join(f"{k} {by_case[k]}" for k in CLASSES if by_case[k])]
    lines.append(f"{'step':<12}" + "".join(f"{k:>9}" for k in CLASSES))
    for step in STEPS:
        counts = Counter(s.outcome for c in cases for s in c.steps if s.step == step)
        lines.append(f"{step:<12}" + "".join(f"{counts[k]:>9}" for k in CLASSES))
    return "\n".join(lines)


def signatures(cases: list[Case]) -> list[tuple[tuple[str, str, str], int, Case, Step]]:
    """Distinct failures (outcome, exception type, innermost kdnb frame): count and a first example."""
    seen: dict[tuple[str, str, str], list] = {}
    for c in cases:
        for s in c.bad_steps():
            entry = seen.setdefault(s.signature, [0, c, s])
            entry[0] += 1
    return sorted(((sig, n, c, s) for sig, (n, c, s) in seen.items()), key=lambda x: -x[1])


def signature_table(cases: list[Case]) -> str:
    """One line per distinct failure with the mutation of its first case."""
    out = []
    for (outcome, exc, where), n, c, s in signatures(cases):
        out.append(f"{n:4d}  {outcome:<8} {exc:<22} {where}:{s.line}  [{s.step}] "
                   f"case {c.number} {c.base}: {c.description} :: {s.message[:120]}")
    return "\n".join(out) or "no untyped exceptions, hangs, out-of-memory failures or crashes"
