"""Backtraces on the bundled sample dumps (data/) against the kernel's own traces in their dmesg.

The kernel printed these stacks with its own ORC unwinder just before the crash, so every
reliable line (those not marked `?`) must come out of kdnb identically: same symbol, same offset,
same size, same module.
"""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import pytest

import kdnb

from .conftest import DATA

# `[  time] [ caller] ? func+0x1/0x2 [module]` (the caller id when CONFIG_PRINTK_CALLER)
_LINE = re.compile(r"^\[\s*[\d.]+\]\s+(?:\[\s*[TC]\d+\]\s+)?(\?\s+)?(\S+\+0x[0-9a-f]+/0x[0-9a-f]+(?: \[\w+\])?)\s*$")
_RIP = re.compile(r"RIP: 0010:(\S+\+0x[0-9a-f]+/0x[0-9a-f]+(?: \[\w+\])?)")
SAMPLES = sorted(p for p in DATA.glob("*") if (p / "ground-truth.json").exists()) if DATA.is_dir() else []


def kernel_traces(dmesg: Path) -> list[list[str]]:
    """Reliable frames of every `Call Trace:` block in a dmesg, innermost first."""
    traces: list[list[str]] = []
    current: list[str] | None = None
    for line in dmesg.read_text(errors="replace").splitlines():
        if line.rstrip().endswith("Call Trace:"):
            current = []
            traces.append(current)
        elif current is not None:
            if "</TASK>" in line or "RIP:" in line:
                current = None
                continue
            m = _LINE.match(line)
            if m and not m.group(1):
                current.append(m.group(2))
    return traces


def _open(path: Path):
    if not path.exists():
        pytest.skip(f"{path} not present")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return kdnb.open(path)


@pytest.mark.parametrize("folder", SAMPLES, ids=lambda p: f"data-{p.name}")
def test_sample_stacks_match_call_trace(folder: Path) -> None:
    """Every sample, every kernel: the stack the kernel printed equals kdnb's (the blocked task's
    for a hung task, the faulting one's from its RIP on for an oops)."""
    scenario = json.loads((folder / "ground-truth.json").read_text())["scenario"]
    dmesg = folder / "dmesg.txt"
    with _open(sorted(folder.glob("vmcore.*"))[0]) as d:
        trace = kernel_traces(dmesg)[0]
        if scenario == "hung":
            bt = d.backtraces(states=("D",))
            task = bt[bt["source"] == "task"]
            assert task[task["kind"] != "user"]["text"].tolist() == trace
        elif scenario == "oops":
            df = d.panic_backtrace
            kernel = df[df["kind"] != "user"]["text"].tolist()
            assert kernel[0] == _RIP.search(dmesg.read_text()).group(1)
            assert kernel[1:] == trace
        else:
            pytest.skip(f"no kernel trace comparison for scenario {scenario!r}")


def test_hung_task_stack_equals_the_kernels_trace() -> None:
    folder = DATA / "k6.12-hung"
    with _open(folder / "vmcore.kdump-zlib") as d:
        trace = kernel_traces(folder / "dmesg.txt")[0]  # "INFO: task kdnb_hung:187 blocked"
        bt = d.backtraces(states=("D",))
        task = bt[bt["source"] == "task"]
        assert task["pid"].unique().tolist() == [187]
        kernel = task[task["kind"] != "user"]
        assert kernel["text"].tolist() == trace
        assert task["kind"].iloc[-1] == "user" and int(task["pc"].iloc[-1]) == 0x47B7A0
        # the panic CPU: panic() and up match the kernel's trace of khungtaskd (printed from
        # inside panic, so its first line has another offset)
        panic_trace = kernel_traces(folder / "dmesg.txt")[1]
        pb = d.panic_backtrace
        assert pb["text"].tolist()[2:] == panic_trace[1:]
        assert pb["function"].tolist()[:2] == ["__crash_kexec", "panic"]


def test_other_cpu_crosses_the_timer_interrupt() -> None:
    with _open(DATA / "k6.12-hung" / "vmcore.kdump-zlib") as d:
        df = d.backtrace(cpu=1)
        assert df["kind"].iloc[0] == "interrupt"  # stopped by the crash NMI
        assert "asm_sysvec_apic_timer_interrupt" in df["function"].tolist()
        assert df["kind"].iloc[-1] == "user"  # the timer interrupted user space
        assert df.attrs["kdnb"]["complete"]


def test_oops_stack_equals_the_kernels_trace() -> None:
    folder = DATA / "k6.1-oops"
    with _open(folder / "vmcore.kdump-lzo") as d:
        trace = kernel_traces(folder / "dmesg.txt")[0]
        rip = _RIP.search((folder / "dmesg.txt").read_text())
        df = d.panic_backtrace
        assert df["text"].iloc[0] == rip.group(1)
        assert df["kind"].iloc[0] == "exception"
        kernel = df[df["kind"] != "user"]
        assert kernel["text"].tolist()[1:] == trace
        assert df["module"].tolist()[:2] == ["kdnb_crash", "kdnb_crash"]


def test_stack_context_goes_with_its_dump() -> None:
    """Walking stacks keeps nothing alive: once the dump is dropped its Kernel is collected."""
    import gc

    from kdnb.kernel.kernel import Kernel

    def kernels() -> int:
        gc.collect()
        return sum(isinstance(o, Kernel) for o in gc.get_objects())

    before = kernels()
    d = kdnb.open_sample()
    assert len(d.stacks) and kernels() == before + 1
    d.close()
    del d
    assert kernels() == before
