"""One test per class of defect the fuzzer found in the dump layer, the page tables, the log, sys,
meminfo, segments and the CLI: a hostile number gives a typed error or a flagged partial result."""

from __future__ import annotations

import os
import socket
import struct
import time
import warnings
from pathlib import Path

import pytest

import kdnb
from kdnb.cli import EXIT_ERROR, EXIT_INTERNAL, run_command
from kdnb.errors import FormatError, ImplausibleValue, KdnbError
from kdnb.kernel import cache
from kdnb.kernel.pagetable import PageTable
from kdnb.views.log import read_log
from tests.builders import PAGE, Spec, flatten, simple_spec, write_elf, write_kdump
from tests.conftest import DATA
from tests.fuzz.kernel import write_patched
from tests.fuzz.samples import kdump_layout

SAMPLE = DATA / "k6.1-oops" / "vmcore.kdump-lzo"


@pytest.fixture(scope="module")
def sample() -> kdnb.Dump:
    if not SAMPLE.exists():
        pytest.skip("data sample missing")
    with kdnb.open(SAMPLE) as d:
        yield d


# -- VMCOREINFO values -----------------------------------------------------------------------
@pytest.mark.parametrize("bits", ["0x1000", "8000000000000000", "-4096", "64"])
def test_pagetable_max_physmem_bits(bits: str) -> None:
    info = {"SYMBOL(init_top_pgt)": "ffffffff82a10000", "NUMBER(MAX_PHYSMEM_BITS)": bits}
    with pytest.raises(ImplausibleValue, match="MAX_PHYSMEM_BITS"):
        PageTable(lambda paddr, size: bytes(size), info, "/d")


def test_pagetable_bad_root_and_slide() -> None:
    with pytest.raises(ImplausibleValue, match="init_top_pgt"):
        PageTable(lambda p, s: bytes(s), {"SYMBOL(init_top_pgt)": "zz"})
    with pytest.raises(ImplausibleValue, match="KERNELOFFSET"):
        PageTable(lambda p, s: bytes(s), {"SYMBOL(init_top_pgt)": "ffffffff82a10000", "KERNELOFFSET": "-5"})


def test_cache_key_non_hex_symbol() -> None:
    with pytest.raises(ImplausibleValue, match="kallsyms_names"):
        cache.build_key({"SYMBOL(_stext)": "ffffffff81000000", "SYMBOL(kallsyms_names)": "xyz"}, b"")
    assert cache.build_key({"SYMBOL(kallsyms_names)": "ffffffff82000000"}, b"#1")


def test_sys_crashtime_out_of_range(sample: kdnb.Dump) -> None:
    with kdnb.open(SAMPLE) as d:
        d.reader.vmcoreinfo["CRASHTIME"] = "ffffffffffffffff"
        info = d.sys_info
    assert any("CRASHTIME" in p for p in info["problems"])
    assert info["crash_time"] is not None  # the timekeeper's wall clock instead
    assert sample.sys_info.get("problems") is None


def test_elf_pagesize_not_a_number(tmp_path: Path) -> None:
    spec = simple_spec()
    spec.vmcoreinfo["PAGESIZE"] = "abc"
    with kdnb.open(write_elf(tmp_path / "e", spec)) as d:
        assert d.page_size == 4096
        assert any("PAGESIZE" in p for p in d.header["problems"])
        assert d.read_phys(0, PAGE) == spec.pages[0]


# -- printk offsets and sizes ----------------------------------------------------------------
@pytest.mark.parametrize("key,value,names", [
    ("SIZE(prb_desc)", "16", "in prb_desc of 16 bytes"), ("SIZE(prb_desc)", "-4096", "SIZE(prb_desc)"),
    ("SIZE(printk_info)", "58", "in printk_info of 58 bytes"),
    ("OFFSET(prb_desc_ring.infos)", "-1", "OFFSET(prb_desc_ring.infos)"),
    ("OFFSET(prb_data_ring.size_bits)", str(1 << 40), "OFFSET(prb_data_ring.size_bits)"),
    ("OFFSET(printk_info.caller_id)", "4294967296", "OFFSET(printk_info.caller_id)"),
    ("OFFSET(printk_ringbuffer.text_data_ring)", "4096", "OFFSET(printk_ringbuffer.text_data_ring)"),
    ("SIZE(printk_ringbuffer)", "8", "in printk_ringbuffer of 8 bytes"),
    ("LENGTH(printk_info_device)", "100000", "in dev_printk_info"), ("SYMBOL(prb)", "-1", "SYMBOL(prb)"),
])
def test_log_layout_checked(sample: kdnb.Dump, key: str, value: str, names: str) -> None:
    info = {**sample.vmcoreinfo, key: value}
    with pytest.raises(ImplausibleValue) as exc:
        read_log(sample.kernel.read, info, sample.path)
    assert names in str(exc.value) and str(exc.value).startswith(sample.path)


def test_log_out_of_dtype_values(tmp_path: Path, sample: kdnb.Dump) -> None:
    info = sample.vmcoreinfo
    k = sample.kernel
    prb = k.read_u64(int(info["SYMBOL(prb)"], 16))
    infos = k.read_u64(prb + int(info["OFFSET(printk_ringbuffer.desc_ring)"]) +
                       int(info["OFFSET(prb_desc_ring.infos)"]))
    first = sample.log.iloc[0]
    index = int(first["seq"]) % (1 << k.read_u32(prb + int(info["OFFSET(prb_desc_ring.count_bits)"])))
    at = infos + index * int(info["SIZE(printk_info)"])
    lay = kdump_layout(SAMPLE)
    seq = struct.pack("<Q", 1 << 63)  # a seq past Int64
    assert write_patched(sample, lay, at + int(info["OFFSET(printk_info.seq)"]), seq, tmp_path / "d")
    with kdnb.open(tmp_path / "d") as d:
        log = d.log
    assert len(log) == len(sample.log) - 1 and not log["seq"].isna().any()
    assert any("seq past 2^63 dropped" in p for p in log.attrs["kdnb"]["problems"])


# -- kdump headers -----------------------------------------------------------------------------
def _kdump(tmp_path: Path, edit) -> Path:
    data = bytearray(write_kdump(tmp_path / "good", simple_spec(n=64)).read_bytes())
    edit(data)
    out = tmp_path / "bad"
    out.write_bytes(bytes(data))
    return out


def test_kdump_max_mapnr_2_40_is_not_allocated(tmp_path: Path) -> None:
    path = _kdump(tmp_path, lambda d: struct.pack_into("<Q", d, PAGE + 96, 1 << 40))
    with kdnb.open(path) as d:
        assert d.reader.max_pfn <= 8 * PAGE  # capped by the bitmap, not 2^40
        assert any("bitmap" in p for p in d.header["problems"])
        assert set(d.segments["state"]) <= {"present", "excluded"}


@pytest.mark.parametrize("blocks", [0, 1, 3, 7, 0xFFFFFFFF])
def test_kdump_bitmap_blocks_changed(tmp_path: Path, blocks: int) -> None:
    path = _kdump(tmp_path, lambda d: struct.pack_into("<I", d, 436, blocks))
    try:
        d = kdnb.open(path)
    except KdnbError:
        return
    with d:
        d.segments  # noqa: B018 - no IndexError / broadcast error
        try:
            d.read_phys(0, 8)
        except KdnbError:
            pass


def test_kdump_offset_vmcoreinfo_past_2_63(tmp_path: Path) -> None:
    path = _kdump(tmp_path, lambda d: struct.pack_into("<Q", d, PAGE + 32, (1 << 63) + 5))
    with kdnb.open(path) as d:
        assert any("VMCOREINFO" in p for p in d.header["problems"])
        assert d.vmcoreinfo  # still found in the VMCOREINFO note


def test_flattened_record_far_away_is_ignored(tmp_path: Path) -> None:
    flat = bytearray(flatten(write_kdump(tmp_path / "k", simple_spec()).read_bytes()))
    struct.pack_into(">q", flat, 4096, 1 << 62)  # the first record's logical offset
    path = tmp_path / "f"
    path.write_bytes(bytes(flat))
    with kdnb.open(path) as d:
        assert any("record ignored" in p for p in d.header["problems"])


# -- ELF program headers -----------------------------------------------------------------------
def _phdr(path: Path, index: int) -> int:
    raw = path.read_bytes()
    return struct.unpack_from("<Q", raw, 32)[0] + 56 * index


def test_elf_memsz_2_64_is_ignored_with_a_problem(tmp_path: Path) -> None:
    path = write_elf(tmp_path / "e", simple_spec())
    data = bytearray(path.read_bytes())
    struct.pack_into("<Q", data, _phdr(path, 1) + 40, (1 << 64) - 1)
    path.write_bytes(bytes(data))
    with kdnb.open(path) as d:
        assert any("PT_LOAD 0 ignored" in p for p in d.header["problems"])
        seg = d.segments
        assert seg["end"].max() < 1 << 52


def test_elf_overlapping_loads(tmp_path: Path) -> None:
    spec = simple_spec()
    path = write_elf(tmp_path / "e", spec)
    data = bytearray(path.read_bytes())
    loads = [i for i in range(1, struct.unpack_from("<H", data, 56)[0])]
    first_paddr = struct.unpack_from("<Q", data, _phdr(path, loads[0]) + 24)[0]
    struct.pack_into("<Q", data, _phdr(path, loads[1]) + 24, first_paddr)  # 2nd load moved onto the 1st
    path.write_bytes(bytes(data))
    with kdnb.open(path) as d:
        assert any("overlaps" in p and "different contents" in p for p in d.header["problems"])


def test_elf_identical_duplicate_is_fine(tmp_path: Path) -> None:
    """/proc/vmcore repeats the kernel text range under two PT_LOADs with the same bytes."""
    spec = Spec(pages={p: bytes([p]) * PAGE for p in range(8)})
    path = write_elf(tmp_path / "e", spec)
    data = bytearray(path.read_bytes())
    n = struct.unpack_from("<H", data, 56)[0]
    load = data[_phdr(path, 1):_phdr(path, 1) + 56]
    data[_phdr(path, n):_phdr(path, n)] = load  # a second header for the same memory
    struct.pack_into("<H", data, 56, n + 1)
    note = _phdr(path, 0)
    struct.pack_into("<Q", data, note + 8, struct.unpack_from("<Q", data, note + 8)[0] + 56)
    struct.pack_into("<Q", data, _phdr(path, 1) + 8, struct.unpack_from("<Q", data, _phdr(path, 1) + 8)[0] + 56)
    struct.pack_into("<Q", data, _phdr(path, n) + 8, struct.unpack_from("<Q", data, _phdr(path, n) + 8)[0] + 56)
    path.write_bytes(bytes(data))
    with kdnb.open(path) as d:
        assert d.header["problems"] == []
        assert d.read_phys(3 * PAGE, 4) == b"\3" * 4


def test_huge_sparse_elf(tmp_path: Path) -> None:
    path = write_elf(tmp_path / "e", simple_spec())
    data = bytearray(path.read_bytes())
    at = _phdr(path, 1)
    offset = struct.unpack_from("<Q", data, at + 8)[0]
    size = (1 << 40) - offset
    struct.pack_into("<QQ", data, at + 32, size, size)
    path.write_bytes(bytes(data))
    os.truncate(path, 1 << 40)
    t0 = time.monotonic()
    with kdnb.open(path) as d:
        assert d.segments["pages"].sum() > 1 << 27
        assert d.read_phys(0, PAGE) == simple_spec().pages[0]
    assert time.monotonic() - t0 < 10


def test_truncated_sample_is_typed_or_flagged(tmp_path: Path) -> None:
    if not SAMPLE.exists():
        pytest.skip("data sample missing")
    cut = tmp_path / "cut"
    with open(SAMPLE, "rb") as f:
        cut.write_bytes(f.read(SAMPLE.stat().st_size // 3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with kdnb.open(cut) as d:
            assert "truncated" in set(d.segments["state"])
            for name in ("log", "tasks", "meminfo", "sys_info"):
                try:
                    getattr(d, name)
                except KdnbError:
                    pass


# -- files that are not dumps ------------------------------------------------------------------
def test_fifo_socket_device_refused(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    sock_path = tmp_path / "sock"
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(sock_path))
    try:
        for path, what in ((fifo, "FIFO"), (sock_path, "socket"), (Path("/dev/null"), "character device")):
            with pytest.raises(FormatError, match=what):
                kdnb.open(path)
    finally:
        sock.close()


# -- the command line --------------------------------------------------------------------------
def test_cli_one_line_errors_and_warnings(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    def warns(_):
        warnings.warn("tasks is incomplete: 3 unreadable", UserWarning)
        return 0

    def typed(_):
        raise ImplausibleValue("VMCOREINFO PAGESIZE", "abc", "not a base-10 number", "/d")

    def bug(_):
        raise ValueError("boom\nsecond line")

    assert run_command(warns, None) == 0
    assert capsys.readouterr().err == "kdnb: warning: tasks is incomplete: 3 unreadable\n"
    assert run_command(typed, None) == EXIT_ERROR
    assert capsys.readouterr().err == "kdnb: /d: VMCOREINFO PAGESIZE = 'abc' is implausible (not a base-10 number)\n"
    assert run_command(bug, None) == EXIT_INTERNAL
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("kdnb: internal error: ValueError: boom; second line")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    from kdnb.cli import main

    assert main(["info", str(fifo)]) == EXIT_ERROR
    assert main(["validate", str(fifo)]) == 3
    assert capsys.readouterr().err.count("FIFO") == 2


def test_damaged_qemu_prstatus_cpu_is_na() -> None:
    from kdnb.dump.notes import Note, cpus_frame
    from tests.builders import prstatus

    notes = [Note("CORE", 1, prstatus(0x7FFFFFFF, {}), 0), Note("QEMU", 0, b"", 0)]
    df = cpus_frame(notes)
    assert df["cpu"].isna().all() and df["pid"].iloc[0] == 0x7FFFFFFF


def test_elf_phnum_past_the_file(tmp_path: Path) -> None:
    path = write_elf(tmp_path / "e", simple_spec())
    data = bytearray(path.read_bytes())
    struct.pack_into("<Q", data, 32, len(data) - 100)  # e_phoff near the end: no room for them
    path.write_bytes(bytes(data))
    with pytest.raises(ImplausibleValue, match="program header count"):
        kdnb.open(path)
