"""Backtraces on the real corpus dumps against drgn's answers (DWARF) in oracle-drgn.json.

drgn lists inlined functions as frames of their own; ORC (like the kernel's own traces) only
sees real calls. So the comparison drops an oracle frame when it is provably inlined: the name is
no kallsyms symbol at all, or the call instruction before the next kdnb frame's return address
calls the previous kdnb frame's function directly (nothing can sit between them).
"""

from __future__ import annotations

import struct
import warnings

import pandas as pd
import pytest

import kdnb
from kdnb.views.backtrace import COLUMNS, KEY_COLUMNS

from .conftest import corpus_dir, oracle

pytestmark = pytest.mark.corpus

DUMPS = ["k5.10-sysrq", "k5.10-hung_task", "k6.1-oops", "k6.1-sysrq", "k6.12-hung_task",
         "k6.12-hung_task-degraded", "k7.2-panic", "k7.2-softlockup"]
# asm entry code: kallsyms names the inner label the return address follows; DWARF the function
ALIASES = {"entry_SYSCALL_64_after_hwframe": "entry_SYSCALL_64"}


@pytest.fixture(scope="module", params=DUMPS)
def dump_and_oracle(request):
    folder = corpus_dir(request.param)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = kdnb.open(folder / "vmcore.kdump-zlib")
        yield request.param, d, oracle(folder)
    d.close()


def _direct_call_target(d, ret: int) -> int | None:
    try:
        code = d.kernel.read(ret - 5, 5)
    except kdnb.errors.KdnbError:
        return None
    if code[0] != 0xE8:
        return None
    return (ret + struct.unpack_from("<i", code, 1)[0]) & 0xFFFFFFFFFFFFFFFF


def compare(d, df: pd.DataFrame, expected: list[str]) -> tuple[int, list[str]]:
    """Align kdnb's frames with drgn's; returns (frames matched, problems)."""
    ours = list(zip(df["function"].tolist(), df["pc"].tolist(), df["kind"].tolist(),
                    df["module"].tolist()))
    problems: list[str] = []
    i = 0
    pending: list[str] = []  # oracle frames not (yet) matched: inlined into the next kdnb frame
    matched = 0
    for tok in expected:
        if i < len(ours):
            func, pc, kind, module = ours[i]
            name = ALIASES.get(func, func) if isinstance(func, str) else None
            if tok.startswith("0x"):
                ok = int(tok, 16) == pc
                if ok and kind != "user" and not (isinstance(func, str) and isinstance(module, str)):
                    problems.append(f"{tok}: drgn had no name; kdnb must name the module function")
            else:
                ok = name == tok
            if ok:
                for skipped in pending:
                    if not _inlined(d, skipped, ours, i):
                        problems.append(f"oracle frame {skipped!r} missing before {tok!r}")
                pending = []
                i += 1
                matched += 1
                continue
        pending.append(tok)
    if pending:
        problems.append(f"oracle frames not matched at the end: {pending}")
    if i != len(ours):
        problems.append(f"kdnb frames not in the oracle: {[o[0] for o in ours[i:]]}")
    return matched, problems


def _inlined(d, name: str, ours: list, i: int) -> bool:
    if name not in d.kernel._all_symbols():
        return True  # static inline: no out-of-line copy at all
    if i == 0:
        return False
    target = _direct_call_target(d, ours[i][1])
    prev_pc = ours[i - 1][1]
    hit = d.kernel.lookup(prev_pc)
    return target is not None and hit is not None and target == hit.address


def test_panic_backtrace_matches_drgn(dump_and_oracle) -> None:
    name, d, o = dump_and_oracle
    df = d.panic_backtrace
    assert df.attrs["kdnb"]["panic_cpu"] == o["panic_cpu"]
    assert df.attrs["kdnb"]["complete"], df.attrs["kdnb"]["stop_reason"]
    frames = o["crashed_thread"]["frames"]
    matched, problems = compare(d, df, frames)
    assert not problems, (name, problems, df[["function", "text", "kind"]].to_string())
    assert matched == len(df)


def test_d_state_stacks_match_drgn(dump_and_oracle) -> None:
    name, d, o = dump_and_oracle
    for pid, frames in o["d_state_stacks"].items():
        df = d.backtrace(pid=int(pid))
        matched, problems = compare(d, df, frames)
        assert not problems, (name, pid, problems, df[["function", "text"]].to_string())
        assert df.attrs["kdnb"]["complete"]


def test_hung_task_view_lists_the_blocked_writer(dump_and_oracle) -> None:
    name, d, o = dump_and_oracle
    bt = d.backtraces()
    assert list(bt.columns) == KEY_COLUMNS + COLUMNS
    assert set(bt.loc[bt["source"] == "cpu", "cpu"].tolist()) == set(int(c) for c in d.cpus["cpu"])
    d_pids = {int(p) for p in o["d_state_stacks"]}
    assert set(bt.loc[bt["source"] == "task", "pid"].tolist()) == d_pids
    assert (bt.loc[bt["source"] == "task", "state"] == "D").all()


def test_every_task_unwinds_to_the_end(dump_and_oracle) -> None:
    name, d, o = dump_and_oracle
    bt = d.backtraces(states="all")
    reasons = bt.attrs["kdnb"]["stop_reasons"]
    assert len(reasons) >= len(d.tasks) - 1  # idle tasks of other CPUs share pid 0
    bad = {k: v for k, v in reasons.items() if v not in ("end of stack", "user mode")}
    assert not bad
    # every kernel frame is named
    kernel = bt[bt["kind"] != "user"]
    assert kernel["function"].notna().all()


def test_frame_dtypes(dump_and_oracle) -> None:
    name, d, o = dump_and_oracle
    df = d.panic_backtrace
    assert list(df.columns) == COLUMNS
    assert str(df["frame"].dtype) == "Int16"
    assert str(df["pc"].dtype) == "UInt64" and str(df["sp"].dtype) == "UInt64"
    assert str(df["offset"].dtype) == "Int64"
    assert str(df["kind"].dtype) == "category"
    assert list(df["kind"].cat.categories) == ["normal", "exception", "interrupt", "user"]
    assert df["frame"].tolist() == list(range(len(df)))
    vmlinux = df[df["kind"] != "user"]
    assert vmlinux["text"].str.match(r"^[\w.]+\+0x[0-9a-f]+/0x[0-9a-f]+( \[\w+\])?$").all()


def test_oops_frames_named_from_module_kallsyms() -> None:
    folder = corpus_dir("k6.1-oops")
    with kdnb.open(folder / "vmcore.kdump-zlib") as d:
        df = d.panic_backtrace
        top = df.iloc[:2]
        assert top["module"].tolist() == ["kdnb_crash", "kdnb_crash"]
        assert top["function"].tolist() == ["kdnb_do_oops", "trigger_write"]
        assert df["kind"].iloc[0] == "exception"  # the oops' pt_regs, not crash_setup_regs
        assert df["text"].iloc[0].endswith(" [kdnb_crash]")
        assert df["kind"].iloc[-1] == "user"
        assert d.backtrace(cpu=1)["kind"].tolist() == ["user"]


def test_task_running_on_a_cpu_uses_its_registers() -> None:
    folder = corpus_dir("k6.1-sysrq")
    with kdnb.open(folder / "vmcore.kdump-zlib") as d:
        pid = int(d.cpus.loc[d.cpus["cpu"] == 0, "pid"].iloc[0])
        by_pid = d.backtrace(pid=pid)
        by_cpu = d.backtrace(cpu=0)
        assert by_pid["pc"].tolist() == by_cpu["pc"].tolist()
        assert "running on cpu 0" in by_pid.attrs["kdnb"]["source"]


def test_elf_and_lzo_dumps_give_the_same_stacks(corpus_elf) -> None:
    folder = corpus_dir("k6.1-sysrq")
    with kdnb.open(folder / "vmcore.kdump-zlib") as d:
        want = d.backtraces(states="all")
    for path in (corpus_elf, folder / "vmcore.kdump-lzo"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with kdnb.open(path) as d:
                got = d.backtraces(states="all")
                assert got.attrs["kdnb"]["panic_cpu"] == 0
        assert got["pc"].tolist() == want["pc"].tolist(), path
        assert got["text"].tolist() == want["text"].tolist()
