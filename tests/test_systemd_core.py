"""A core stored by systemd-coredump with its journal entry (data/cores/systemd, made by
tools/make_systemd_core.py on this kernel): the entry read from both export formats agrees with
the core, the storage name, gdb (truth.json) and systemd's own stack trace; damaged exports
raise KdnbErrors."""

from __future__ import annotations

import json
import struct
import subprocess
from pathlib import Path

import pytest

import kdnb
from kdnb.errors import FormatError
from kdnb.process.journal import load_journal, stored_name_facts
from kdnb.samples import CORES_DIR

from .test_process_core import aliases, same_function  # noqa: F401 - the fixture is used by name

HERE = CORES_DIR / "systemd"
CORE = next(HERE.glob("core.crashers.*.zst"))
EXPORTS = [HERE / "journal.json", HERE / "journal.export"]
TRUTH = json.loads((HERE / "truth.json").read_text())


def open_core(journal: Path | None = None):
    return kdnb.open(CORE, binaries=[CORES_DIR], journal=journal)


@pytest.mark.parametrize("export", EXPORTS, ids=lambda p: p.suffix)
def test_journal_agrees_with_the_core(export: Path) -> None:
    with open_core(export) as core:
        f = core.journal.facts
        stored = stored_name_facts(CORE.name)
        assert (f["pid"], f["uid"], f["comm"], f["boot_id"]) == \
            (stored["pid"], stored["uid"], stored["comm"], stored["boot_id"])
        assert f["time"] == stored["time"] and f["filename"].endswith(CORE.name)
        assert (f["pid"], f["uid"], f["gid"]) == (core.process["pid"], core.process["uid"], core.process["gid"])
        assert f["signal"] == core.signal.signo == TRUTH["si_signo"]
        assert core.process["args"] == f["cmdline"] and f["cmdline"].endswith("crashers threads")
        assert core.process["cwd"] == f["cwd"]
        # every file mapping the core names is in /proc/PID/maps as systemd saw it
        maps = {(int(r.start), int(r.end)) for r in core.journal.maps.itertuples()}
        files = core.mappings.dropna(subset=["path"])
        assert len(files) and all((int(r.start), int(r.end)) in maps for r in files.itertuples())
        fds = core.journal.open_files
        assert fds["fd"].tolist() == [0, 1, 2] and set(fds["path"]) == {"/dev/null"}
        assert fds.loc[fds["fd"] == 1, "flags"].item() & 0o3 == 0o2  # O_RDWR
        limits = core.journal.limits.set_index("limit")
        assert limits.loc["Max core file size", "soft"] == "unlimited"


def test_both_exports_hold_the_same_entry() -> None:
    a, b = (load_journal(p, str(CORE)) for p in EXPORTS)
    assert a.facts == b.facts
    assert a.maps.equals(b.maps) and a.open_files.equals(b.open_files)
    assert a.get("COREDUMP_PROC_STATUS") == b.get("COREDUMP_PROC_STATUS")


def test_stacks_equal_gdb_and_contain_systemds(aliases) -> None:  # noqa: F811
    with open_core(EXPORTS[0]) as core:
        assert core.faulting_tid == TRUTH["current_lwp"]
        for tid, frames in TRUTH["backtraces"].items():
            ours = core.backtrace(int(tid))
            for f, o in zip([f["function"] for f in frames], ours["function"].tolist()):
                assert same_function(f, o, aliases), (tid, frames, ours)
            theirs = core.journal.stack_trace.get(int(tid))
            if theirs:  # systemd's unwinder may skip frames, never invent them
                pcs = [int(p) for p in ours["pc"]]
                assert all(p in pcs for p in theirs), (tid, theirs, pcs)
        assert core.journal.stack_trace  # systemd listed at least the crashing thread


def test_root_cause_and_report_use_the_entry(tmp_path: Path) -> None:
    with open_core(EXPORTS[0]) as core:
        rc = core.root_cause()
    assert rc.category == "null-deref"
    row = rc.evidence[rc.evidence["why"] == "systemd-coredump's journal entry"]
    assert len(row) == 1 and "crashers threads" in row["text"].item()
    out = tmp_path / "r.html"
    run = subprocess.run(["kdnb", "report", str(CORE), "--journal", str(EXPORTS[1]), "-o", str(out)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    html = out.read_text()
    assert "systemd-coredump&#x27;s journal entry" in html or "systemd-coredump's journal entry" in html
    assert "Open files at the crash" in html and "/dev/null" in html


def test_without_a_journal() -> None:
    with open_core() as core:
        assert core.journal is None and "cwd" not in core.process
        assert core.header["stored_by_systemd"]["pid"] == core.process["pid"]
    assert stored_name_facts("core.1234") is None


def test_damaged_or_unrelated_exports(tmp_path: Path) -> None:
    other = tmp_path / "other.json"
    entry = json.loads(EXPORTS[0].read_text().splitlines()[0])
    entry.update(COREDUMP_PID="1", COREDUMP_FILENAME="/var/lib/systemd/coredump/core.x.0.y.1.2.zst")
    twice = dict(entry, COREDUMP_PID="2", COREDUMP_FILENAME="elsewhere")
    other.write_text(json.dumps(entry) + "\n" + json.dumps(twice) + "\n")
    with pytest.raises(FormatError, match="none of them for"):
        load_journal(other, str(CORE))
    garbage = tmp_path / "garbage.json"
    garbage.write_text("{not json\n")
    with pytest.raises(FormatError, match="not journalctl -o json"):
        load_journal(garbage, str(CORE))
    raw = EXPORTS[1].read_bytes()
    key = b"\nCOREDUMP_PROC_AUXV\n"
    at = raw.index(key) + len(key)
    huge = raw[:at] + struct.pack("<Q", 1 << 40) + raw[at + 8:]
    bad = tmp_path / "bad.export"
    bad.write_bytes(huge)
    with pytest.raises(FormatError, match="claims"):
        load_journal(bad, str(CORE))
    cut = tmp_path / "cut.export"
    cut.write_bytes(raw[:at + 3])
    with pytest.raises(FormatError, match="cut short"):
        load_journal(cut, str(CORE))
    with pytest.raises(FormatError, match="cannot read"):
        load_journal(tmp_path / "missing.json", str(CORE))
