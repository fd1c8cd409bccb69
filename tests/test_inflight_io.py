"""d.inflight_io (block requests in flight), `kdnb dev -d` and the I/O-hang root cause.

Fast: every sample and corpus dump reads without a gap, its requests belong to d.block's disks;
the walk really reaches the kernel's requests (the freed ones the tags still point at carry
their own tag, a disk's queue and a known op); corrupt tag counts and a bio cycle patched into
a real dump are bounded and reported. On an io-hang dump (data/ if bundled, lab dumps with
`-m lab`): the disk, the op, the size and the blocked task equal the ground truth, the request
is older than hung_task_timeout_secs, and the root cause names them.
"""

from __future__ import annotations

import os
import shutil
import struct
import warnings
from pathlib import Path

import pandas as pd
import pytest

import kdnb
from kdnb.analysis.rootcause_io import io_wait_function
from kdnb.views.common import Gaps, IncompleteViewWarning
from kdnb.views.inflight_io import COLUMNS, MAX_TAGS, _Walk, inflight_by_disk
from tests.conftest import DATA, ground_truth
from tests.test_system import dump_of, folders, resolve
from tests.test_validate_patched import patched_dump

IO_SAMPLES = sorted(p.parent for p in DATA.glob("*-io-hang/ground-truth.json"))
STATES = {"IN_FLIGHT", "COMPLETE"}


def _quiet(fn):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", IncompleteViewWarning)
        return fn()


@pytest.mark.parametrize("where", folders())
def test_reads_on_every_dump(where) -> None:
    d = dump_of(resolve(where))
    io = d.inflight_io
    assert list(io.columns) == COLUMNS
    assert "incomplete" not in io.attrs.get("kdnb", {}), io.attrs["kdnb"]["incomplete"]["reason"]
    assert str(io["age"].dtype) == "Float64" and str(io["sector"].dtype) == "UInt64"
    disks = set(d.block.loc[d.block["partno"] == 0, "name"])
    assert set(io["disk"]) <= disks
    assert set(io["state"]) <= STATES
    assert (io["age"].dropna() >= 0).all()
    uptime = _quiet(lambda: d.sys_info)["uptime"].total_seconds()
    assert (io["age"].dropna() <= uptime + 1).all()
    assert all(m >= 0xFFFF800000000000 for m in io["mapping"].dropna())
    by = inflight_by_disk(d.block, io)
    assert list(by["name"]) == list(d.block.loc[d.block["partno"] == 0, "name"])
    assert int(by["total"].sum()) == len(io)
    assert (by["total"] == by["reads"] + by["writes"] + by["other"]).all()


def _walk(d: kdnb.Dump) -> tuple[_Walk, dict[int, str], list[int]]:
    blk = d.block
    disks = {int(q): str(n) for q, n, p in zip(blk["queue"], blk["name"], blk["partno"]) if p == 0}
    walk = _Walk(d.kernel, Gaps())
    return walk, disks, walk.tag_sets(disks)


def _stale(d: kdnb.Dump) -> list[tuple[int, int, int]]:
    """(tags, tag, request) of every rqs[] slot of the disks' tag sets, freed or not."""
    walk, _disks, sets = _walk(d)
    out = []
    for s in sets:
        tags_array, nr_hw, *_ = walk.set.unpack(d.kernel.read(s, walk.set.size))
        for tags in set(struct.unpack(f"<{nr_hw}Q", d.kernel.read(tags_array, 8 * nr_hw))):
            out += [(tags, tag, rq) for tag, rq in walk._tagged(tags)]
    return out


@pytest.mark.parametrize("name", ["k6.1-oops", "k6.12-hung", "k7.2-oops"])
def test_walk_reaches_the_requests(name: str) -> None:
    """Freed requests still hang in rqs[]: their fields prove the layouts (own tag == slot for
    reads and writes, q a disk's queue, op one the kernel names)."""
    d = kdnb.open_sample(name)
    walk, disks, sets = _walk(d)
    assert sets, "no blk-mq tag set found for the disks"
    slots = _stale(d)
    assert slots, "no request in any tag slot"
    ops = []
    for _tags, tag, rq in slots:
        q, _hctx, opf, own_tag, _len, _sector, _bio, _start, _io, state = \
            walk.rq.unpack(d.kernel.read(rq, walk.rq.size))
        assert q in disks
        op = walk.ops[opf & walk.op_mask]
        ops.append(op)
        assert state in walk.states
        if op != "FLUSH":  # the flush request borrows a tag and gives it back (tag -1)
            assert own_tag == tag
    assert {"READ", "WRITE"} <= set(ops)


def _tag_patch(field: str, value: int, size: int = 4):
    def make(d: kdnb.Dump) -> dict[int, bytes]:
        walk, _disks, sets = _walk(d)
        if field == "nr_tags":
            tags = _stale(d)[0][0]
            return {tags + walk.tags.offsets["nr_tags"]: value.to_bytes(size, "little")}
        return {sets[-1] + walk.set.offsets[field]: value.to_bytes(size, "little")}
    return make


@pytest.mark.parametrize("field, value", [("nr_tags", 0xFFFFFFFF), ("nr_tags", MAX_TAGS + 1),
                                          ("nr_hw_queues", 0x7FFFFFFF)])
def test_corrupt_counts_are_bounded(field: str, value: int) -> None:
    d = patched_dump(DATA / "k6.12-hung" / "vmcore.kdump-zlib", _tag_patch(field, value))
    io = _quiet(lambda: d.inflight_io)
    gap = io.attrs["kdnb"]["incomplete"]["reason"]
    assert field in gap and str(value) in gap


def test_bio_cycle_is_cut() -> None:
    """A freed request patched back to IN_FLIGHT whose bio chain loops on itself: one row, its
    bio count NA, the broken chain named."""
    def make(d: kdnb.Dump) -> dict[int, bytes]:
        rq = next(r for _t, _tag, r in _stale(d))
        t = d.type("struct request")
        fake = rq + t.offsetof("biotail")  # a "bio" whose bi_next (offset 0) points at itself
        assert d.type("struct bio").offsetof("bi_next") == 0
        return {rq + t.offsetof("state"): struct.pack("<I", 1), rq + t.offsetof("bio"): struct.pack("<Q", fake),
                fake: struct.pack("<Q", fake)}
    d = patched_dump(DATA / "k6.12-hung" / "vmcore.kdump-zlib", make)
    io = _quiet(lambda: d.inflight_io)
    assert len(io) == 1 and io["state"].iloc[0] == "IN_FLIGHT" and pd.isna(io["bios"].iloc[0])
    assert "bio chain broken" in io.attrs["kdnb"]["incomplete"]["reason"]


def _revived(owner) -> callable:
    """A patch making a freed request IN_FLIGHT again with a one-bio chain whose bi_private is
    ``owner(dump)`` (the bio is the request's own biotail field onwards, bi_next NULL)."""
    def make(d: kdnb.Dump) -> dict[int, bytes]:
        rq = next(r for _t, _tag, r in _stale(d))
        t, b = d.type("struct request"), d.type("struct bio")
        fake = rq + t.offsetof("biotail")
        return {rq + t.offsetof("state"): struct.pack("<I", 1), rq + t.offsetof("bio"): struct.pack("<Q", fake),
                fake: struct.pack("<Q", 0), fake + b.offsetof("bi_private"): struct.pack("<Q", owner(d))}
    return make


def _task(d: kdnb.Dump, comm: str) -> tuple[int, int]:
    row = d.tasks[d.tasks["comm"] == comm].iloc[0]
    return int(row["pid"]), int(row["address"])


@pytest.mark.parametrize("how", ["task", "stack"])
def test_owner_from_bi_private(how: str) -> None:
    """bi_private = the task (direct I/O's `current`) or an address on its kernel stack (an
    on-stack completion, submit_bio_wait()) names the task."""
    def owner(d: kdnb.Dump) -> int:
        _pid, task = _task(d, "kdnb_sleeper")
        if how == "task":
            return task
        return d.kernel.read_u64(task + d.type("struct task_struct").offsetof("stack")) + 0x3f28
    d = patched_dump(DATA / "k6.12-hung" / "vmcore.kdump-zlib", _revived(owner))
    with kdnb.open(DATA / "k6.12-hung" / "vmcore.kdump-zlib") as clean:
        pid, task = _task(clean, "kdnb_sleeper")
    io = _quiet(lambda: d.inflight_io)
    assert len(io) == 1 and io["bios"].iloc[0] == 1
    assert (io["pid"].iloc[0], io["comm"].iloc[0], io["task"].iloc[0]) == (pid, "kdnb_sleeper", task)


def test_dev_d(capsys) -> None:
    from kdnb.cli import main

    folder = IO_SAMPLES[0] if IO_SAMPLES else DATA / "k6.12-hung"
    assert main(["dev", "-d", str(sorted(folder.glob("vmcore.*"))[0])]) == 0
    out = capsys.readouterr().out
    header, *rows = out.split("\n\n")[0].splitlines()
    assert header.split() == ["name", "major", "disk", "queue", "total", "reads", "writes", "other", "oldest"]
    if IO_SAMPLES:
        disk = ground_truth(folder)["io_hang"]["disk"]
        (row,) = [r.split() for r in rows if r.split()[0] == disk]
        assert row[4:7] == ["1", "0", "1"] and float(row[8]) >= 5
        assert "IN_FLIGHT" in out.split("\n\n")[1] and "WRITE" in out


def test_io_wait_function() -> None:
    writeback = ["__schedule", "schedule", "io_schedule", "folio_wait_bit_common",
                 "folio_wait_writeback", "__filemap_fdatawait_range", "file_write_and_wait_range",
                 "blkdev_fsync", "do_fsync"]
    assert io_wait_function(writeback) == "folio_wait_writeback"
    sync = ["__schedule", "schedule", "io_schedule_timeout", "__wait_for_common",
            "wait_for_completion_io_timeout", "submit_bio_wait", "blkdev_issue_flush"]
    assert io_wait_function(sync) == "submit_bio_wait"
    assert io_wait_function(["__schedule", "schedule", "kdnb_hung_fn", "proc_reg_write"]) is None
    assert io_wait_function(["__schedule", "schedule", "pipe_read", "vfs_read"]) is None


def check_io_hang(folder: Path) -> None:
    """The in-flight walk and the root cause of one io-hang dump against its ground truth."""
    truth = ground_truth(folder)["io_hang"]
    blocked = truth["blocked"][0]
    with kdnb.open(sorted(folder.glob("vmcore.*"))[0]) as d:
        io = d.inflight_io
        assert "incomplete" not in io.attrs.get("kdnb", {})
        mine = io[io["disk"] == truth["disk"]]
        assert len(mine) >= 1, io
        assert set(mine["op"]) == {truth["op"]}
        assert set(mine["bytes"]) == {truth["bytes_per_write"]}
        assert set(mine["state"]) == {"IN_FLIGHT"}
        assert mine["age"].max() >= truth["hung_task_timeout_secs"]
        check_disks(d, folder)
        by = inflight_by_disk(d.block, io).set_index("name")
        assert by.loc[truth["disk"], "writes"] == len(mine)
        rc = d.root_cause()
        assert rc.category == "io-hang", str(rc)
        assert (rc.culprit.pid, rc.culprit.comm) == (blocked["pid"], blocked["comm"])
        root = rc.chain[0]["what"]
        assert root.startswith(f"{truth['disk']}: a {truth['op']} of {truth['bytes_per_write']} bytes")
        assert f"{blocked['comm']} (pid {blocked['pid']}) waits for it" in root  # its page, or its bio
        assert (rc.evidence["kind"] == "io").any()


@pytest.mark.parametrize("folder", IO_SAMPLES, ids=[p.name for p in IO_SAMPLES])
def test_io_hang_sample(folder: Path) -> None:
    check_io_hang(folder)


def _given() -> list[Path]:
    return [Path(p) for p in os.environ.get("KDNB_IO_LAB_DIRS", "").split(":") if p]


@pytest.mark.lab
@pytest.mark.skipif(not _given(), reason="KDNB_IO_LAB_DIRS not set")
def test_given_io_hang_dumps() -> None:
    for folder in _given():
        check_io_hang(folder)


@pytest.mark.lab
@pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="qemu-system-x86_64 not installed")
@pytest.mark.parametrize("kernel", ["5.10", "6.1", "6.12", "7.2"])
def test_fresh_io_hang_dump(tmp_path: Path, kernel: str) -> None:
    import kdnb.lab

    path = kdnb.lab.make("io-hang", kernel=kernel, formats=("kdump-zlib",), out_dir=tmp_path / "out",
                         progress=None)
    check_io_hang(path.parent)


def test_report_evidence_shows_requests_only_for_an_io_hang() -> None:
    import re

    from kdnb.ui.sections import evidence

    with kdnb.open_sample("k6.12-hung") as d:
        assert "Block requests in flight" not in evidence(d)
    if not IO_SAMPLES:
        pytest.skip("no io-hang sample in data/")
    truth = ground_truth(IO_SAMPLES[0])["io_hang"]
    with kdnb.open(sorted(IO_SAMPLES[0].glob("vmcore.*"))[0]) as d:
        html = evidence(d)
    table = html[html.index("<h3>Block requests in flight</h3>"):]
    text = re.sub(r"<[^>]+>", " ", table)
    assert truth["disk"] in text and truth["op"] in text and "IN_FLIGHT" in text
    assert not re.search(r"(?<![0-9a-fx.])18446\d{15}(?!\d)", text)  # addresses in hex


def test_hung_task_in_io_wait_wording() -> None:
    """7.2 reports a task sleeping in io_schedule() as "blocked in I/O wait for more than": the
    panic-log parser and the lab's ground truth both read it (seen in a 7.2 io-hang dump)."""
    from kdnb.analysis.panic_log import parse_panic_log
    from kdnb.lab.groundtruth import console_facts

    line = "INFO: task kdnb_io:330 blocked in I/O wait for more than 6 seconds."
    log = pd.DataFrame({"seq": [1, 2], "time": pd.to_timedelta([39.1, 39.2], unit="s"),
                        "level": [3, 0], "text": [line, "Kernel panic - not syncing: hung_task: blocked tasks"]})
    report = next(r for r in parse_panic_log(log).reports if r.category == "hung-task")
    assert (report.fields["comm"], report.fields["pid"]) == ("kdnb_io", "330")
    facts = console_facts(["KDNB-STEP crash t=1", f"[   39.178739] [     T36] {line}"])
    assert facts["blocked"] == [{"comm": "kdnb_io", "pid": 330}] and facts["crash_lines"] == [line]


@pytest.mark.parametrize("folder", [p.parent.parent for p in sorted(DATA.glob("*/snapshot/partitions.txt"))],
                         ids=lambda p: p.name)
def test_every_disk_is_listed(folder: Path) -> None:
    """`dev -d` lists every whole disk /proc/partitions showed, closed ones too (before 5.11 they
    come from block_class's device list, with no bdev), with its size."""
    check_disks(dump_of(folder), folder)


def check_disks(d: kdnb.Dump, folder: Path) -> None:
    """Every whole disk of the snapshot's /proc/partitions is in d.block with its size."""
    import re

    blk = d.block.set_index("name")
    for major, minor, kib, name in re.findall(r"^\s*(\d+)\s+(\d+)\s+(\d+)\s+(\S+)$",
                                              (folder / "snapshot" / "partitions.txt").read_text(), re.M):
        if not re.search(r"\d$", name) or name.startswith("loop"):  # whole disks (vda, loop0)
            assert (blk.loc[name, "major"], blk.loc[name, "minor"], blk.loc[name, "sectors"]) == \
                (int(major), int(minor), 2 * int(kib)), name
