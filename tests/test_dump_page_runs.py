"""Multi-page reads of kdump files load their missing pages together (`_load_pages`: one pread
per run of neighbouring stored pages): the bytes, and the error met first, equal a page by page
read on synthetic files (every codec, holes, exclusions, incomplete and cut files), on samples."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

import kdnb
from kdnb.dump import open_dump
from kdnb.dump.kdump import KdumpDump
from kdnb.errors import KdnbError
from tests.builders import PAGE, simple_spec, write_kdump
from tests.conftest import DATA

ALL_CODECS = ("zlib", "lzo", "snappy", "zstd", "raw")


def _page_by_page(path: Path, paddr: int, size: int) -> bytes | tuple[str, str]:
    """What reading the range one page at a time gives: the bytes, or (error type, message)."""
    reader = open_dump(path)
    try:
        out = b""
        pfn, off = divmod(paddr, PAGE)
        while len(out) < size:
            out += reader._load_page(pfn)[off:off + size - len(out)]
            pfn, off = pfn + 1, 0
        return out
    except KdnbError as exc:
        return type(exc).__name__, str(exc)
    finally:
        reader.close()


def _batched(reader: KdumpDump, paddr: int, size: int) -> bytes | tuple[str, str]:
    try:
        return reader.read_phys(paddr, size)
    except KdnbError as exc:
        return type(exc).__name__, str(exc)


def _ranges(n_pages: int, seed: int) -> list[tuple[int, int]]:
    rng = random.Random(seed)
    out = [(0, n_pages * PAGE), (PAGE - 8, 16), (3 * PAGE + 100, 5 * PAGE)]
    for _ in range(40):
        start = rng.randrange(0, n_pages * PAGE)
        out.append((start, rng.randrange(1, min(9 * PAGE, n_pages * PAGE - start) + 1)))
    return out


def _check_file(path: Path, n_pages: int, seed: int = 0) -> int:
    """Every range read batched (a fresh reader, so the pages are missing) equals page by page;
    returns how many ranges raised."""
    raised = 0
    for paddr, size in _ranges(n_pages, seed):
        reader = open_dump(path)
        try:
            got = _batched(reader, paddr, size)
        finally:
            reader.close()
        assert got == _page_by_page(path, paddr, size), (path.name, paddr, size)
        raised += isinstance(got, tuple)
    return raised


@pytest.mark.parametrize("codecs", [("zlib",), ALL_CODECS])
def test_runs_equal_page_by_page(tmp_path: Path, codecs: tuple[str, ...]) -> None:
    spec = simple_spec(n=64, zero=(30, 31, 40))
    raised = _check_file(write_kdump(tmp_path / "d", spec, codecs=codecs), 64)
    assert 0 < raised < 43  # holes and exclusions are met by some ranges, not all


def test_runs_on_incomplete_and_flattened(tmp_path: Path) -> None:
    spec = simple_spec(n=64)
    _check_file(write_kdump(tmp_path / "inc", spec, incomplete_after=30), 64, seed=1)
    _check_file(write_kdump(tmp_path / "flat", spec, flattened=True), 64, seed=2)


def test_runs_on_cut_files(tmp_path: Path) -> None:
    data = write_kdump(tmp_path / "d", simple_spec(n=64), codecs=ALL_CODECS).read_bytes()
    for cut in (len(data) // 2, len(data) - 4097, len(data) - 1):
        broken = tmp_path / f"cut{cut}"
        broken.write_bytes(data[:cut])
        assert _check_file(broken, 64, seed=cut) > 0


def test_one_pread_per_run(tmp_path: Path) -> None:
    spec = simple_spec(n=64, holes=(), excluded=(), zero=())
    reader = open_dump(write_kdump(tmp_path / "d", spec))
    calls: list[tuple[int, int]] = []
    pread = reader.source.pread
    reader.source.pread = lambda off, size: calls.append((off, size)) or pread(off, size)  # type: ignore[method-assign]
    reader._desc_blocks.get(0, reader._descriptor_block)  # descriptors read before counting
    calls.clear()
    assert reader.read_phys(2 * PAGE + 5, 20 * PAGE) == b"".join(spec.pages[p] for p in range(2, 23))[5:5 + 20 * PAGE]
    assert len(calls) == 1
    reader.close()


def test_runs_on_a_sample() -> None:
    path = DATA / "k6.1-oops" / "vmcore.kdump-lzo"
    with kdnb.open(path) as d:
        stored = d.segments[d.segments.state == "present"]
        row = stored.loc[stored.pages.idxmax()]
    rng = random.Random(7)
    for _ in range(25):
        paddr = int(row.start) + rng.randrange(0, (int(row.pages) - 20) * PAGE)
        size = rng.randrange(PAGE, 16 * PAGE)
        reader = open_dump(path)
        try:
            assert reader.read_phys(paddr, size) == _page_by_page(path, paddr, size)
        finally:
            reader.close()


def test_first_error_in_order(tmp_path: Path) -> None:
    """A page that does not decompress, then a hole: the read names the corrupt page, as loading
    them in order does, not the hole."""
    path = write_kdump(tmp_path / "d", simple_spec(n=64, holes=(10, 11)))
    reader = open_dump(path)
    offset, _size, _flags = reader._descriptor(9)
    reader.close()
    data = bytearray(path.read_bytes())
    data[offset:offset + 8] = b"\xff" * 8
    path.write_bytes(bytes(data))
    reader = open_dump(path)
    got = _batched(reader, 8 * PAGE, 4 * PAGE)
    reader.close()
    assert got == _page_by_page(path, 8 * PAGE, 4 * PAGE)
    assert got[0] == "CorruptDump" and "decompress" in got[1]
