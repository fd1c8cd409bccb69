"""Format readers on synthetic dumps written by tests/builders.py, valid and broken."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

import kdnb
from kdnb.errors import CorruptDump, FormatError, KdnbError, PageNotInDump, TruncatedDump
from tests.builders import PAGE, Spec, flatten, page_of, simple_spec, write_elf, write_kdump

ALL_CODECS = ("zlib", "lzo", "snappy", "zstd", "raw")


def check_memory(d: kdnb.Dump, spec: Spec) -> None:
    """Every written page reads back; excluded pages raise PageNotInDump with a reason."""
    for pfn, page in spec.pages.items():
        assert d.read_phys(pfn * PAGE, PAGE) == page, pfn
    # a read across a page boundary
    a, b = 1, 2
    assert d.read_phys(a * PAGE + 100, PAGE) == spec.pages[a][100:] + spec.pages[b][:100]


@pytest.mark.parametrize("codec", ALL_CODECS)
def test_kdump_each_codec(tmp_path: Path, codec: str) -> None:
    spec = simple_spec()
    with kdnb.open(write_kdump(tmp_path / "d", spec, codecs=(codec,))) as d:
        assert d.format == "kdump"
        assert d.page_size == PAGE
        check_memory(d, spec)
        assert d.vmcoreinfo == spec.vmcoreinfo
        assert d.header["dump_level"] == 31
        assert d.header["phys_base"] == -75497472


def test_kdump_mixed_codecs_zero_page_and_exclusions(tmp_path: Path) -> None:
    spec = simple_spec(n=200, zero=(30, 31, 90))
    with kdnb.open(write_kdump(tmp_path / "d", spec, codecs=ALL_CODECS)) as d:
        check_memory(d, spec)
        with pytest.raises(PageNotInDump) as exc:
            d.read_phys(20 * PAGE, 8)
        assert "excluded by dump level 31" in str(exc.value)
        assert exc.value.paddr == 20 * PAGE
        with pytest.raises(PageNotInDump, match="hole"):
            d.read_phys(10 * PAGE, 8)
        seg = d.segments
        assert list(seg.columns) == ["start", "end", "pages", "state", "vaddr", "file_offset",
                                     "source"]
        assert str(seg["start"].dtype) == "UInt64"
        excl = seg[seg.state == "excluded"]
        assert (int(excl.start.iloc[0]), int(excl.end.iloc[0])) == (20 * PAGE, 23 * PAGE)
        assert int(seg[seg.state == "present"].pages.sum()) == len(spec.pages)


@pytest.mark.parametrize("version", [1, 2, 3, 4, 5, 6])
def test_kdump_header_versions(tmp_path: Path, version: int) -> None:
    spec = simple_spec()
    with kdnb.open(write_kdump(tmp_path / "d", spec, version=version)) as d:
        check_memory(d, spec)
        assert d.header["header_version"] == version
        # VMCOREINFO lives in the sub-header from version 3 on
        assert (d.vmcoreinfo == spec.vmcoreinfo) == (version >= 3)
        assert len(d.cpus) == (2 if version >= 4 else 0)


def test_cpus_frame(tmp_path: Path) -> None:
    spec = simple_spec()
    with kdnb.open(write_kdump(tmp_path / "d", spec)) as d:
        cpus = d.cpus
    assert list(cpus.cpu) == [0, 1]
    assert list(cpus.pid) == [224, 132]
    assert int(cpus.rip[0]) == 0xFFFFFFFF81000010
    assert str(cpus.rip.dtype) == "UInt64" and str(cpus.cpu.dtype) == "Int16"


def test_flattened_matches_plain(tmp_path: Path) -> None:
    spec = simple_spec(n=300)
    with kdnb.open(write_kdump(tmp_path / "f", spec, codecs=("zlib", "lzo"), flattened=True)) as d:
        assert d.format == "kdump-flattened"
        check_memory(d, spec)
        assert d.vmcoreinfo == spec.vmcoreinfo


def test_split_set(tmp_path: Path) -> None:
    spec = simple_spec(n=100)
    a = write_kdump(tmp_path / "a", spec, split=(0, 40))
    b = write_kdump(tmp_path / "b", spec, split=(40, 100))
    with kdnb.open([b, a]) as d:
        assert d.format == "kdump-split"
        check_memory(d, spec)
        assert int(d.segments[d.segments.state == "present"].pages.sum()) == len(spec.pages)
    with kdnb.open([a]) as d:  # one part alone: the rest is missing, not wrong
        with pytest.raises(PageNotInDump):
            d.read_phys(50 * PAGE, 8)


def test_split_rejects_non_split(tmp_path: Path) -> None:
    spec = simple_spec()
    a = write_kdump(tmp_path / "a", spec)
    with pytest.raises(FormatError, match="split"):
        kdnb.open([a, a])


def test_incomplete_kdump(tmp_path: Path) -> None:
    spec = simple_spec(n=64)
    with kdnb.open(write_kdump(tmp_path / "d", spec, incomplete_after=20)) as d:
        assert d.header["incomplete"]
        assert d.read_phys(0, PAGE) == spec.pages[0]
        with pytest.raises(PageNotInDump, match="incomplete"):
            d.read_phys(60 * PAGE, 8)
        assert "lost" in set(d.segments.state)


@pytest.mark.parametrize("elfclass", [64, 32])
def test_elf(tmp_path: Path, elfclass: int) -> None:
    spec = simple_spec(zero=())
    with kdnb.open(write_elf(tmp_path / "e", spec, elfclass=elfclass)) as d:
        assert d.format == f"elf{elfclass}"
        check_memory(d, spec)
        assert d.vmcoreinfo == spec.vmcoreinfo
        assert list(d.cpus.pid) == [224, 132]
        # filtered pages lie past p_filesz: zero by ELF rules, marked excluded in segments
        assert d.read_phys(20 * PAGE, 16) == bytes(16)
        assert "excluded" in set(d.segments.state)
        with pytest.raises(PageNotInDump, match="hole"):
            d.read_phys(500 * PAGE, 8)


def test_qemu_elf(tmp_path: Path) -> None:
    spec = simple_spec()
    with kdnb.open(write_elf(tmp_path / "q", spec, qemu=True)) as d:
        assert d.format == "qemu-elf"
        assert list(d.cpus.cpu) == [0, 1] and list(d.cpus.pid) == [1, 2]


def test_elf_truncated(tmp_path: Path) -> None:
    spec = simple_spec(n=64, zero=())
    path = write_elf(tmp_path / "e", spec)
    data = path.read_bytes()
    path.write_bytes(data[:len(data) - 10 * PAGE - 100])
    with kdnb.open(path) as d:
        assert d.header["truncated"]
        assert d.read_phys(0, PAGE) == spec.pages[0]
        with pytest.raises(PageNotInDump, match="truncated"):
            d.read_phys(63 * PAGE, 8)
        assert "truncated" in set(d.segments.state)


@pytest.mark.parametrize("content,match", [
    (b"", "empty"),
    (b"hello world\nthis is text\n" * 10, "text"),
    (b"\x1f\x8b\x08\x00" + bytes(100), "gzip"),
    (b"\x28\xb5\x2f\xfd" + bytes(100), "zstd-compressed: decompress it first"),
    (bytes(5000), "zero"),
    (b"\x00\x01\x02garbage" * 50, "not a crash dump"),
])
def test_not_a_dump(tmp_path: Path, content: bytes, match: str) -> None:
    path = tmp_path / "x"
    path.write_bytes(content)
    with pytest.raises(FormatError, match=match) as exc:
        kdnb.open(path)
    assert str(path) in str(exc.value)


def test_userspace_core(tmp_path: Path) -> None:
    from tests.builders import note

    spec = simple_spec()
    spec.vmcoreinfo = None
    path = write_elf(tmp_path / "core", spec)
    data = bytearray(path.read_bytes())
    # turn the first PRSTATUS note into a process core's PRPSINFO
    i = data.index(b"CORE\0")
    struct.pack_into("<I", data, i - 4, 3)
    path.write_bytes(bytes(data))
    assert note  # builder in use
    from kdnb.dump import open_dump

    with pytest.raises(FormatError, match="userspace"):  # the vmcore readers refuse it
        open_dump(path)
    from kdnb.process import Core

    assert isinstance(kdnb.open(path), Core)  # kdnb.open hands it to the process layer


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FormatError, match="no such file"):
        kdnb.open(tmp_path / "nope")


# -- broken variants: never anything but a KdnbError or a flagged state -------------------------

def _exercise(path: Path) -> None:
    """Open and read everything; only KdnbErrors may escape."""
    try:
        with kdnb.open(path) as d:
            _ = d.header, d.vmcoreinfo, d.cpus, d.segments
            for pfn in range(0, 70):
                try:
                    d.read_phys(pfn * PAGE, PAGE)
                except PageNotInDump:
                    pass
    except KdnbError:
        pass


@pytest.mark.parametrize("kind", ["kdump", "flat", "elf64", "elf32"])
def test_truncated_everywhere(tmp_path: Path, kind: str) -> None:
    spec = simple_spec(n=64)
    if kind == "kdump":
        path = write_kdump(tmp_path / "d", spec, codecs=ALL_CODECS)
    elif kind == "flat":
        path = write_kdump(tmp_path / "d", spec, flattened=True)
    else:
        path = write_elf(tmp_path / "d", spec, elfclass=int(kind[3:]))
    data = path.read_bytes()
    cuts = sorted({1, 7, 8, 60, 100, 400, 420, 470, 4096, 4200, 5000, 8192, 12288, 16384,
                   len(data) // 3, len(data) // 2, len(data) - 4097, len(data) - 1})
    for cut in cuts:
        if cut >= len(data):
            continue
        broken = tmp_path / f"cut{cut}"
        broken.write_bytes(data[:cut])
        _exercise(broken)


def test_kdump_broken_variants(tmp_path: Path) -> None:
    spec = simple_spec(n=64)
    good = write_kdump(tmp_path / "d", spec).read_bytes()

    def variant(name: str, edit) -> Path:
        data = bytearray(good)
        edit(data)
        p = tmp_path / name
        p.write_bytes(bytes(data))
        return p

    bad_magic = variant("magic", lambda d: d.__setitem__(slice(0, 8), b"KDUMX   "))
    with pytest.raises(FormatError):
        kdnb.open(bad_magic)
    bad_bs = variant("bs", lambda d: struct.pack_into("<i", d, 428, 3000))
    with pytest.raises(CorruptDump, match="block_size"):
        kdnb.open(bad_bs)
    desc_off = PAGE * (1 + struct.unpack_from("<i", good, 432)[0] + struct.unpack_from("<I", good, 436)[0])
    past_eof = variant("desc-eof", lambda d: struct.pack_into("<q", d, desc_off + 24, len(good) + 999))
    with kdnb.open(past_eof) as d:
        with pytest.raises(PageNotInDump, match="truncated"):
            d.read_phys(1 * PAGE, 8)
        assert "truncated" in set(d.segments.state)
    too_big = variant("desc-big", lambda d: struct.pack_into("<I", d, desc_off + 24 + 8, PAGE * 2))
    with kdnb.open(too_big) as d:
        with pytest.raises(CorruptDump, match="corrupt"):
            d.read_phys(1 * PAGE, 8)
    garbage = variant("garbage", lambda d: d.__setitem__(
        slice(struct.unpack_from("<q", good, desc_off)[0],
              struct.unpack_from("<q", good, desc_off)[0] + 8), b"\xff" * 8))
    with kdnb.open(garbage) as d:
        with pytest.raises(CorruptDump, match="decompress"):
            d.read_phys(0, 8)
    short_bitmap = variant("bm", lambda d: struct.pack_into("<Q", d, PAGE + 96, 10 ** 7))
    with kdnb.open(short_bitmap) as d:
        assert any("bitmap" in p for p in d.header["problems"])
        assert d.read_phys(0, PAGE) == spec.pages[0]
    huge = variant("huge", lambda d: struct.pack_into("<Q", d, PAGE + 96, 1 << 50))
    with pytest.raises(CorruptDump, match="max_mapnr"):
        kdnb.open(huge)


def test_flattened_broken(tmp_path: Path) -> None:
    spec = simple_spec()
    blob = write_kdump(tmp_path / "d", spec).read_bytes()
    flat = bytearray(flatten(blob))
    struct.pack_into(">q", flat, 16, 7)
    p = tmp_path / "f"
    p.write_bytes(bytes(flat))
    with pytest.raises(CorruptDump, match="flattened header"):
        kdnb.open(p)
    flat = bytearray(flatten(blob))
    struct.pack_into(">qq", flat, 4096, 0, -5)
    p.write_bytes(bytes(flat))
    with pytest.raises(CorruptDump, match="bad flattened record"):
        kdnb.open(p)


def test_truncated_header_is_typed(tmp_path: Path) -> None:
    spec = simple_spec()
    data = write_kdump(tmp_path / "d", spec).read_bytes()
    p = tmp_path / "t"
    p.write_bytes(data[:300])
    with pytest.raises(TruncatedDump, match="disk_dump_header"):
        kdnb.open(p)


def test_page_of_distinct() -> None:
    assert page_of(1) != page_of(2)
