"""Capture validation: synthetic broken dumps (fast) and the real corpus (skipped when absent)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

import kdnb
from kdnb.analysis.validate import CHECKS, EXIT_CODES, Validation, validate, validate_path
from kdnb.analysis.validate_cli import add_subparser, main as validate_main
from tests.builders import simple_spec, write_elf, write_kdump
from tests.conftest import CORPUS, corpus_dir

CHECK_IDS = [c for c, _ in CHECKS]


def assert_complete(v: Validation) -> None:
    """Every check is reported exactly once, with valid categories."""
    df = v.checks
    assert list(df["check"]) == CHECK_IDS
    assert set(df["status"].cat.categories) == {"pass", "warn", "fail", "skip"}
    assert not df["status"].isna().any() and not df["area"].isna().any()
    assert v.verdict in EXIT_CODES
    json.dumps(v.to_dict())  # JSON-ready
    assert v.verdict in v._repr_html_()
    assert v.verdict.upper() in str(v)


# -- synthetic dumps ----------------------------------------------------------------------

@pytest.fixture()
def kdump_file(tmp_path: Path) -> Path:
    return write_kdump(tmp_path / "vmcore", simple_spec(n=200), codecs=("zlib", "raw"))


def _kdump_layout(path: Path) -> dict:
    with kdnb.open(path) as d:
        h = d.header
        return {"bs": h["block_size"], "bitmaps": h["block_size"] * (1 + h["sub_hdr_size"]),
                "desc": h["descriptors_offset"], "present": h["present_pages"],
                "note": h["offset_note"], "vmci": h["offset_vmcoreinfo"], "size": h["file_size"]}


def test_synthetic_intact_dump_reports_every_check(kdump_file: Path) -> None:
    v = validate_path(kdump_file)
    assert_complete(v)
    assert v.status("format.identified") == "pass"
    assert v.status("file.truncated") == "pass"
    assert v.status("format.descriptors") == "pass"
    assert v.status("format.header") == "pass"
    # the synthetic VMCOREINFO has no page-table keys: the kernel cannot be read
    assert v.status("kernel.page_tables") == "fail"
    assert v.verdict == "unusable"


@pytest.mark.parametrize("where", ["header", "subheader", "notes", "bitmap1", "bitmap2",
                                   "descriptors", "data_start", "data_middle", "data_end"])
def test_synthetic_truncated_kdump(tmp_path: Path, kdump_file: Path, where: str) -> None:
    lay = _kdump_layout(kdump_file)
    half = (lay["desc"] - lay["bitmaps"]) // 2
    data_start = lay["desc"] + 24 * lay["present"]
    cut = {"header": 300, "subheader": lay["bs"] + 50, "notes": lay["note"] + 40,
           "bitmap1": lay["bitmaps"] + 10, "bitmap2": lay["bitmaps"] + half + 10,
           "descriptors": lay["desc"] + 24 * 5 + 7, "data_start": data_start + 100,
           "data_middle": (data_start + lay["size"]) // 2, "data_end": lay["size"] - 10}[where]
    raw = kdump_file.read_bytes()
    path = tmp_path / "cut"
    path.write_bytes(raw[:cut])
    v = validate_path(path)
    assert_complete(v)
    assert v.status("file.truncated") == "fail", v
    assert v.verdict == "unusable"
    if where.startswith("data"):
        ev = v["file.truncated"].evidence
        assert ev["pages_lost"] > 0 and ev["ranges"]


def test_synthetic_tiny_and_empty_files(tmp_path: Path) -> None:
    (tmp_path / "kd").write_bytes(b"KDU")
    v = validate_path(tmp_path / "kd")
    assert v.verdict == "unusable" and v.status("file.truncated") == "fail"
    (tmp_path / "empty").write_bytes(b"")
    v = validate_path(tmp_path / "empty")
    assert v.verdict == "not a dump" and v.exit_code == 3
    (tmp_path / "text").write_text("hello world\n")
    assert validate_path(tmp_path / "text").verdict == "not a dump"
    assert validate_path(tmp_path / "missing").verdict == "not a dump"


def _flip(raw: bytes, offset: int, bit: int) -> bytes:
    b = bytearray(raw)
    b[offset] ^= 1 << bit
    return bytes(b)


@pytest.mark.parametrize("case,check", [
    ("block_size", "format.header"),
    ("version", "format.header"),
    ("max_mapnr", "format.header"),
    ("bitmap_blocks", "format.header"),
    ("dump_level", "format.header"),
    ("status_incomplete", "file.incomplete"),
    ("note_descsz", "metadata.notes"),
    ("vmcoreinfo_text", "metadata.vmcoreinfo"),
    ("desc_offset", "format.descriptors"),
    ("desc_size", "format.descriptors"),
    ("desc_flags", "format.descriptors"),
])
def test_synthetic_bit_flips(tmp_path: Path, kdump_file: Path, case: str, check: str) -> None:
    lay = _kdump_layout(kdump_file)
    raw = kdump_file.read_bytes()
    mid = lay["desc"] + 24 * (lay["present"] // 2)
    vm_at = raw.index(b"OSRELEASE=", lay["vmci"])
    offset, bit = {
        "block_size": (428, 1), "version": (8, 4), "max_mapnr": (443, 2),
        "bitmap_blocks": (436, 0), "dump_level": (lay["bs"] + 8, 6), "status_incomplete": (424, 3),
        "note_descsz": (lay["note"] + 5, 3), "vmcoreinfo_text": (vm_at + 1, 1),
        "desc_offset": (mid + 2, 7), "desc_size": (mid + 9, 6), "desc_flags": (mid + 12, 6),
    }[case]
    path = tmp_path / "flipped"
    path.write_bytes(_flip(raw, offset, bit))
    v = validate_path(path)
    assert v.status(check) == "fail", str(v)
    assert v.verdict in ("unusable", "degraded")


def test_synthetic_incomplete_dump(tmp_path: Path) -> None:
    v = validate_path(write_kdump(tmp_path / "d", simple_spec(n=100), incomplete_after=30))
    assert_complete(v)
    assert v.status("file.incomplete") == "fail"
    assert v["file.incomplete"].evidence["pages_lost"] > 0
    assert "ENOSPC" in v["file.incomplete"].detail


def test_synthetic_elf_truncated_and_flattened(tmp_path: Path) -> None:
    spec = simple_spec(n=100)
    elf = write_elf(tmp_path / "e", spec)
    raw = elf.read_bytes()
    for cut in (30, 100, len(raw) // 2, len(raw) - 100):
        p = tmp_path / f"e{cut}"
        p.write_bytes(raw[:cut])
        v = validate_path(p)
        assert_complete(v)
        assert v.status("file.truncated") == "fail", (cut, str(v))
    flat = write_kdump(tmp_path / "f", spec, flattened=True)
    fraw = flat.read_bytes()
    for cut in (2000, len(fraw) // 2):
        p = tmp_path / f"f{cut}"
        p.write_bytes(fraw[:cut])
        v = validate_path(p)
        assert v.status("file.truncated") == "fail", (cut, str(v))


def test_synthetic_qemu_without_vmcoreinfo(tmp_path: Path) -> None:
    spec = simple_spec()
    spec.vmcoreinfo = None
    v = validate_path(write_elf(tmp_path / "q", spec, qemu=True))
    assert_complete(v)
    assert v.status("metadata.qemu_vmcoreinfo") == "fail"
    assert "-device vmcoreinfo" in v["metadata.qemu_vmcoreinfo"].detail
    assert v.verdict == "unusable"
    assert v.status("metadata.crash_time") == "warn"


def test_synthetic_elf32_and_dump_level(tmp_path: Path) -> None:
    v = validate_path(write_elf(tmp_path / "e32", simple_spec(), elfclass=32))
    assert v.status("format.elf32") in ("warn", "fail")
    v = validate_path(write_kdump(tmp_path / "k", simple_spec(), dump_level=9))
    dl = v["metadata.dump_level"]
    assert dl.evidence["excluded"] == ["zero pages", "user pages"]
    assert "no user stacks" in dl.consequence


def test_cli_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "text").write_text("not a dump")
    assert validate_main([str(tmp_path / "text")]) == 3
    kd = write_kdump(tmp_path / "k", simple_spec())
    assert validate_main([str(kd), "--json"]) == 2
    out = capsys.readouterr().out
    assert json.loads(out[out.index("{"):])["verdict"] == "unusable"
    import argparse

    parser = argparse.ArgumentParser()
    add_subparser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["validate", str(kd)])
    assert args.func(args) == 2


# -- the real corpus ----------------------------------------------------------------------

COMPLETE = ["k6.1-sysrq", "k6.1-oops", "k6.12-hung_task"]


@pytest.mark.parametrize("name", COMPLETE)
def test_corpus_complete_dumps_are_usable(name: str) -> None:
    path = corpus_dir(name) / "vmcore.kdump-zlib"
    t0 = time.perf_counter()
    with kdnb.open(path) as d:
        v = validate(d)
    assert time.perf_counter() - t0 < 2.0
    assert_complete(v)
    assert v.verdict == "usable", str(v)
    assert v.failing() == []
    for cid in ("kernel.page_tables", "symbols.kallsyms", "symbols.btf", "kernel.banner",
                "log.printk", "kernel.in_use_memory", "metadata.prstatus", "metadata.crash_time"):
        assert v.status(cid) == "pass", (cid, str(v))


def test_corpus_degraded_dump_names_the_cause() -> None:
    path = corpus_dir("k6.12-hung_task-degraded") / "vmcore.kdump-zlib"
    v = validate_path(path)
    assert v.verdict == "degraded"
    assert v.exit_code == 1
    c = v["kernel.in_use_memory"]
    assert c.status == "fail"
    assert "makedumpfile" in c.detail and "-d 1" in c.detail and "-d 17" in c.detail
    assert "older than the kernel" in c.detail
    ev = c.evidence
    assert ev["unreadable_reads"].get("excluded", 0) > 0
    assert ev["slab_caches"]["failed"] > 0
    assert not ev["tasks"]["complete"]


@pytest.fixture(scope="module")
def oops_bytes() -> bytes:
    if not (CORPUS / "k6.1-oops").is_dir():
        pytest.skip("corpus not present")
    return (CORPUS / "k6.1-oops" / "vmcore.kdump-zlib").read_bytes()


@pytest.fixture(scope="module")
def oops_layout() -> dict:
    if not (CORPUS / "k6.1-oops").is_dir():
        pytest.skip("corpus not present")
    return _kdump_layout(CORPUS / "k6.1-oops" / "vmcore.kdump-zlib")


@pytest.mark.parametrize("where,verdict", [
    ("header", "unusable"), ("subheader", "unusable"), ("notes", "unusable"),
    ("vmcoreinfo", "unusable"), ("bitmap1", "unusable"), ("bitmap2", "unusable"),
    ("descriptors", "unusable"), ("data_start", "unusable"), ("data_middle", "unusable"),
    ("data_end", "degraded"),
])
def test_corpus_truncated(tmp_path: Path, oops_bytes: bytes, oops_layout: dict, where: str,
                          verdict: str) -> None:
    lay = oops_layout
    half = (lay["desc"] - lay["bitmaps"]) // 2
    data_start = lay["desc"] + 24 * lay["present"]
    cut = {"header": 200, "subheader": lay["bs"] + 60, "notes": lay["note"] + 300,
           "vmcoreinfo": lay["vmci"] + 600, "bitmap1": lay["bitmaps"] + 2000,
           "bitmap2": lay["bitmaps"] + half + 2000, "descriptors": lay["desc"] + 24 * 1000 + 5,
           "data_start": data_start + 10000, "data_middle": (data_start + lay["size"]) // 2,
           "data_end": lay["size"] - 200_000}[where]
    path = tmp_path / "cut"
    path.write_bytes(oops_bytes[:cut])
    v = validate_path(path)
    assert_complete(v)
    assert v.status("file.truncated") == "fail"
    assert v.verdict == verdict, str(v)


@pytest.mark.parametrize("case,check,verdict", [
    ("header_block_size", "format.header", "unusable"),
    ("header_max_mapnr", "format.header", "degraded"),
    ("header_phys_base", "format.header", "degraded"),
    ("header_incomplete_flag", "file.incomplete", "degraded"),
    ("note_descsz", "metadata.notes", "degraded"),
    ("note_crash_rip", "metadata.crash_registers", "degraded"),
    ("vmcoreinfo_init_top_pgt", "kernel.page_tables", "unusable"),
    ("desc_offset", "format.descriptors", "degraded"),
    ("desc_size", "format.descriptors", "degraded"),
    ("desc_flags", "format.descriptors", "degraded"),
])
def test_corpus_bit_flips(tmp_path: Path, oops_bytes: bytes, oops_layout: dict, case: str,
                          check: str, verdict: str) -> None:
    lay = oops_layout
    raw = oops_bytes
    mid = lay["desc"] + 24 * (lay["present"] // 2)
    vm = lay["vmci"]
    offset, bit = {
        "header_block_size": (428, 1), "header_max_mapnr": (443, 2),
        "header_phys_base": (lay["bs"] + 3, 4), "header_incomplete_flag": (424, 3),
        "note_descsz": (lay["note"] + 5, 3),
        "note_crash_rip": (lay["note"] + 20 + 112 + 16 * 8 + 7, 7),
        "vmcoreinfo_init_top_pgt": (raw.index(b"SYMBOL(init_top_pgt)=", vm) + 22, 2),
        "desc_offset": (mid + 2, 7), "desc_size": (mid + 9, 6), "desc_flags": (mid + 12, 6),
    }[case]
    path = tmp_path / "flipped"
    path.write_bytes(_flip(raw, offset, bit))
    v = validate_path(path)
    assert_complete(v)
    assert v.status(check) == "fail", str(v)
    assert v.verdict == verdict, str(v)


def test_corpus_elf(corpus_elf: Path) -> None:
    v = validate_path(corpus_elf)
    assert v.verdict == "usable", str(v)
    assert v.status("metadata.dump_level") == "pass"
