"""Fleet triage on real dumps: the data/ samples (always) and the corpus (when present), plus
corrupted copies and files that are no dump; in-process and on a 2-process LocalCluster."""

from __future__ import annotations

import json
import os
import shutil
import sys
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import pytest

from kdnb.analysis.rootcause_model import CATEGORIES
from kdnb.fleet import buckets, fleet_html, triage
from kdnb.fleet.discover import discover
from kdnb.fleet.signature import (
    GENERIC_FRAMES,
    TITLES,
    guilty_frame,
    normalise_function,
    normalise_message,
    signature,
    title,
)

from .builders import simple_spec, write_kdump
from .conftest import CORPUS, DATA

pytest.importorskip("distributed")
pytest.importorskip("pyarrow")

SAMPLES = sorted(p for p in DATA.glob("*/vmcore.*"))
# what each lab scenario's title starts with (the category's syzbot-style wording)
TITLE_START = {"oops": "BUG: kernel NULL pointer dereference in ", "mod_oops":
               "BUG: kernel NULL pointer dereference in ", "hung": "INFO: task hung in ",
               "hung_task": "INFO: task hung in ", "sysrq": "sysrq triggered crash",
               "mod_panic": "kernel panic: ", "mod_softlockup": "BUG: soft lockup in ",
               "io-hang": "INFO: task hung on block I/O in "}


def _gt(dump: Path) -> dict:
    return json.loads((dump.parent / "ground-truth.json").read_text())


def _expected_comm(gt: dict) -> str:
    blocked = gt.get("hung_task_reported_blocked") or []
    return blocked[0]["comm"] if blocked else gt["crash_context_cpu_pid_comm"]["comm"]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """hostN/vmcore links to the samples, bad/ with corrupted copies and non-dumps, an empty
    directory; what each path is."""
    if len(SAMPLES) < 4:
        pytest.skip("the data/ samples are missing")
    root = tmp_path_factory.mktemp("fleet")
    good = {}
    for i, dump in enumerate(SAMPLES):
        host = root / "fleet" / f"host{i}"
        host.mkdir(parents=True)
        (host / "vmcore").symlink_to(dump)
        good[str(host / "vmcore")] = dump
    bad = root / "fleet" / "bad"
    bad.mkdir()
    small = min(SAMPLES, key=lambda p: p.stat().st_size)
    data = small.read_bytes()
    (bad / "vmcore.truncated").write_bytes(data[:len(data) * 3 // 10])
    flipped = bytearray(data)
    for off in range(8):  # the signature
        flipped[off] ^= 0xFF
    (bad / "vmcore.magic-flipped").write_bytes(bytes(flipped))
    flipped = bytearray(data)
    for off in range(4096, 4096 + 64):  # the kdump sub-header: dump level, notes, VMCOREINFO
        flipped[off] ^= 0xFF
    (bad / "vmcore.header-flipped").write_bytes(bytes(flipped))
    (bad / "vmcore.txt").write_text("this is the console log, not a dump\n" * 20)
    (bad / "vmcore.empty").write_bytes(b"")
    (bad / "notes.txt").write_text("not named like a dump: never looked at\n")
    empty_dir = root / "nothing-here"
    empty_dir.mkdir()
    return {"paths": [str(root / "fleet"), str(empty_dir)], "good": good,
            "bad": sorted(str(p) for p in bad.glob("vmcore.*")), "empty_dir": str(empty_dir),
            "notes": str(bad / "notes.txt"), "root": root}


@pytest.fixture(scope="module")
def local_df(fleet: dict) -> pd.DataFrame:
    return triage(fleet["paths"], workers=0, cache=False, progress=False)


def test_one_row_per_dump_and_bad_files_are_error_rows(fleet: dict, local_df: pd.DataFrame):
    paths = set(local_df["path"])
    assert paths == set(fleet["good"]) | set(fleet["bad"]) | {fleet["empty_dir"]}
    assert fleet["notes"] not in paths
    bad = local_df[local_df["path"].isin(fleet["bad"] + [fleet["empty_dir"]])]
    assert bad["error"].notna().all(), bad[["path", "error"]]
    assert bad["signature"].isna().all()
    assert set(bad["verdict"]) <= {"unusable", "not a dump"}
    by_path = bad.set_index("path")["error"]
    assert "empty file" in by_path[next(p for p in fleet["bad"] if p.endswith(".empty"))]
    assert "not a crash dump" in by_path[next(p for p in fleet["bad"] if p.endswith(".txt"))]
    assert "no crash dump" in by_path[fleet["empty_dir"]]
    assert local_df.loc[local_df["path"].isin(fleet["good"]), "error"].isna().all()


def test_rows_match_ground_truth(fleet: dict, local_df: pd.DataFrame):
    for row in local_df[local_df["path"].isin(fleet["good"])].itertuples():
        gt = _gt(fleet["good"][row.path])
        assert row.release == gt["kernel_release"]
        assert row.build_id == gt["vmcoreinfo"]["BUILD-ID"]
        crashed = datetime.fromtimestamp(int(gt["vmcoreinfo"]["CRASHTIME"]), tz=timezone.utc)
        assert abs((row.crash_time - crashed).total_seconds()) < 2
        assert row.verdict == "usable"
        assert row.comm == _expected_comm(gt)
        assert row.title.startswith(TITLE_START[gt["scenario"]]), row.title
        if gt.get("module_trigger"):  # the crash module is the guilty frame's module
            assert row.guilty_module == "kdnb_crash" and row.title.endswith(" [kdnb_crash]")
            assert "O" in row.taints
        assert "0x" not in row.title and str(gt["crash_context_cpu_pid_comm"]["pid"]) \
            not in row.title


def _check_buckets(df: pd.DataFrame, scenario_of: dict) -> pd.DataFrame:
    """Same scenario -> one signature (across kernels and boots), different scenarios ->
    different signatures; the bucket table agrees."""
    ok = df[df["path"].isin(scenario_of)]
    sigs = ok.groupby(ok["path"].map(scenario_of))["signature"].agg(set)
    assert all(len(s) == 1 for s in sigs), sigs
    assert len({next(iter(s)) for s in sigs}) == len(sigs), sigs
    b = buckets(df)
    assert len(b) == len(sigs)
    for sig in sigs:
        (row,) = b[b["signature"] == next(iter(sig))].itertuples()
        members = ok[ok["signature"] == row.signature]
        assert row.count == len(members)
        assert row.kernels == sorted(set(members["release"]))
        assert row.example in set(members["path"])
        assert row.first_crash == members["crash_time"].min()
    return b


def test_same_scenario_on_different_kernels_is_one_bucket(fleet: dict, local_df: pd.DataFrame):
    scenario_of = {p: _gt(d)["scenario"] for p, d in fleet["good"].items()}
    b = _check_buckets(local_df, scenario_of)
    # a scenario bundled for several kernels is one bucket holding all of them
    several = b[b["count"] >= 2]
    assert len(several) and all(len(k) == n for k, n in zip(several["kernels"], several["count"]))


def test_distributed_equals_in_process(fleet: dict, local_df: pd.DataFrame):
    from dask.distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, processes=True, threads_per_worker=1,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        df = triage(fleet["paths"], client=client, cache=False, progress=False)
        assert len(client.scheduler_info()["workers"]) == 2
        some = sorted(fleet["good"])[:2]  # `--scheduler ADDRESS`: a client of its own
        by_address = triage(some, scheduler=cluster.scheduler_address, cache=False,
                            progress=False)
    pd.testing.assert_frame_equal(df.drop(columns="seconds"), local_df.drop(columns="seconds"))
    assert list(by_address["signature"]) == \
        list(local_df.set_index("path").loc[some, "signature"])


def test_cache_recomputes_only_changed_dumps(fleet: dict, local_df: pd.DataFrame,
                                             tmp_path: Path):
    some = sorted(fleet["good"])[:1] + fleet["bad"][:2]
    cache = tmp_path / "cache.parquet"
    first = triage(some, workers=0, cache=cache, progress=False)
    assert first.attrs["kdnb"]["computed"] == 3 and cache.exists()
    again = triage(some, workers=0, cache=cache, progress=False)
    assert again.attrs["kdnb"]["computed"] == 0 and again["cached"].all()
    pd.testing.assert_frame_equal(again.drop(columns=["seconds", "cached"]),
                                  first.drop(columns=["seconds", "cached"]))
    expected = local_df.iloc[[list(local_df["path"]).index(p) for p in some]]
    expected = expected.reset_index(drop=True)
    pd.testing.assert_frame_equal(first.drop(columns="seconds"), expected.drop(columns="seconds"))
    changed = fleet["bad"][0]
    os.utime(changed, ns=(1, 1))
    third = triage(some, workers=0, cache=cache, progress=False)
    assert third.attrs["kdnb"]["computed"] == 1
    assert not third.set_index("path").loc[changed, "cached"]


def test_a_worker_keeps_no_dump_alive(fleet: dict):
    """Memory per worker stays bounded: after a triage no Kernel of a triaged dump is left."""
    import gc

    from kdnb.kernel.kernel import Kernel

    def kernels() -> int:
        gc.collect()
        return sum(isinstance(o, Kernel) for o in gc.get_objects())

    before = kernels()
    triage(sorted(fleet["good"])[:2], workers=0, cache=False, progress=False)
    assert kernels() == before


def test_report_is_one_offline_file(fleet: dict, local_df: pd.DataFrame):
    from kdnb.ui.report import remote_references

    text = fleet_html(local_df, since="2000-01-01")
    assert not remote_references(text) and "<script" not in text
    assert "<svg" in text and "<rect" in text
    for row in buckets(local_df).itertuples():
        assert f"{row.count}</b> x " in text and f"kdnb report {row.example}" in text
    for release in set(local_df["release"].dropna()):
        assert release in text
    assert "kdnb_crash" in text.split("Top culprit modules")[1].split("<h2>")[0]
    assert text.count("class='err'") == 1 and fleet["empty_dir"] in text


def test_cli(fleet: dict, tmp_path: Path, capsys: pytest.CaptureFixture):
    from kdnb.cli import main

    html, parquet = tmp_path / "fleet.html", tmp_path / "fleet.parquet"
    some = sorted(fleet["good"])[:2] + fleet["bad"][-1:]
    rc = main(["triage", *some, "--workers", "0", "--no-cache", "-q", "--html", str(html),
               "--parquet", str(parquet), "--since", "2000-01-01"])
    out = capsys.readouterr().out
    assert rc == 1  # one dump could not be triaged
    assert "3 dumps" in out and "1 errors" in out and html.exists()
    assert len(pd.read_parquet(parquet)) == 3
    assert main(["triage", *some, "--since", "yesterday-ish", "-q"]) == 3


def test_discover_split_sets_globs_and_missing(tmp_path: Path):
    spec = simple_spec(n=100)
    a = write_kdump(tmp_path / "vmcore.1", spec, split=(0, 40))
    b = write_kdump(tmp_path / "vmcore.2", spec, split=(40, 100))
    lone = write_kdump(tmp_path / "dump.lone", spec)
    shutil.copy(sys.executable, tmp_path / "python")  # an ELF, not a core: not taken in a walk
    items = discover([str(tmp_path)])
    assert sorted(i.paths for i in items) == sorted([(str(lone),), (str(a), str(b))])
    assert [i.paths for i in discover([str(tmp_path / "vmcore.*")])] == [(str(a), str(b))]
    missing = discover([str(tmp_path / "nope"), str(tmp_path / "*.none")])
    assert [i.error is not None for i in missing] == [False, True]  # a named file is a row
    row = triage([str(tmp_path / "nope")], workers=0, cache=False, progress=False)
    assert "no such file" in row["error"].iloc[0]


def test_every_category_has_a_title():
    assert set(CATEGORIES) <= set(TITLES)
    for cat in CATEGORIES:
        assert title(cat, "kdnb_do", "kdnb_crash", "Kernel panic - not syncing: x")


def test_signature_normalisation():
    assert normalise_function("trigger_write.cold+0x16/0x2a") == "trigger_write"
    assert normalise_function("ext4_fill_super.isra.0.cold") == "ext4_fill_super"
    assert normalise_function("foo.constprop.3+0x1") == "foo" == normalise_function("foo.part.2")
    assert normalise_function("<NA>") is None
    assert guilty_frame(("memcpy+0x10", None), [("memcpy", None), ("kdnb_do.isra.1", "m")]) \
        == ("kdnb_do", "m")
    assert guilty_frame(("__schedule+0x2", None), [("schedule", None)]) == ("__schedule", None)
    assert all(why for why in GENERIC_FRAMES.values())
    a = normalise_message("Kernel panic - not syncing: bad thing at ffffffffc0a01234 cpu 3")
    assert a == normalise_message("Kernel panic - not syncing: bad thing at ffffffffc0b05678 cpu 1")
    assert signature(title("panic-call", None, None, a)) == \
        signature(title("panic-call", None, None, "bad thing at ADDR cpu NUM"))
    assert title("oom", None, None, "Kernel panic - not syncing: Out of memory: system-wide "
                 "panic_on_oom is enabled") == "Out of memory: panic_on_oom"


@pytest.fixture(scope="module")
def corpus_dumps() -> dict[str, str]:
    dumps = sorted(CORPUS.glob("*/vmcore.kdump-*")) if CORPUS.is_dir() else []
    if not dumps:
        pytest.skip(f"corpus {CORPUS} not present")
    return {str(p): _gt(p)["scenario"] for p in dumps}


def test_corpus_buckets(corpus_dumps: dict[str, str]):
    """Corpus and samples together. The corpus oops (scenario mod_oops) ran another build of
    the crash module (guilty kdnb_do_oops, not kdnb_do): another bucket, as syzbot files it."""
    scenario_of = {**corpus_dumps, **{str(p): _gt(p)["scenario"] for p in SAMPLES}}
    df = triage(list(scenario_of), workers=0, cache=False, progress=False)
    assert df["error"].isna().all(), df[["path", "error"]]
    rows = df.set_index("path")
    for path, scenario in corpus_dumps.items():
        assert rows.loc[path, "title"].startswith(TITLE_START[scenario]), rows.loc[path, "title"]
        assert rows.loc[path, "comm"] == _expected_comm(_gt(Path(path)))
    hung = rows[rows.index.map(scenario_of) == "hung_task"]
    assert set(hung["title"]) == {"INFO: task hung in mnt_want_write"}
    assert len(set(hung["release"])) >= 2 and "degraded" in set(hung["verdict"])
    _check_buckets(df, scenario_of)
