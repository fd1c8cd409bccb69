"""Heavily fragmented dumps: the segment table is numpy arrays, page lookup a binary search.

Real-format files are built from a real dump's pages (tests/fragmented.py): an ELF vmcore with
two half-page PT_LOADs per stored page and one p_filesz = 0 PT_LOAD per excluded page (83,665
PT_LOADs from data/k6.12-hung, PN_XNUM), and kdump-compressed files whose bitmap alternates
stored and excluded pages (tests/test_scale_lazy.py's sparse writer). Each must read the bytes
and give the views the original gives, and `d.segments` must equal what the per-segment Python
objects gave (a reference written here from the format rules).
"""

from __future__ import annotations

import os
import struct
import time
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from elftools.elf.elffile import ELFFile

import kdnb
from kdnb.analysis.validate_context import START_KERNEL_MAP, Context
from kdnb.bounds import MAX_PHYSMEM_BITS, U64_MAX
from kdnb.dump.elf import ElfDump
from kdnb.dump.elf_loads import Loads, overlapping_pairs, piece_index
from kdnb.dump.segtable import SEGMENT_STATES, STATE_NAMES, Segment
from kdnb.dump.split import SplitDump
from kdnb.errors import ImplausibleValue, PageNotInDump
from kdnb.samples import samples
from tests.builders import PAGE, Spec, simple_spec, write_elf, write_kdump
from tests.conftest import CORPUS
from tests.fragmented import (
    PN_XNUM,
    PT_LOAD,
    SHDR,
    fragmented_kdump,
    present_and_excluded,
    write_page_per_load_elf,
)
from tests.test_scale_lazy import write_sparse_kdump

SAMPLES = [str(p) for p in samples()["path"]]
SOURCE = next(p for p in SAMPLES if "k6.12-hung" in p)  # 98k page frames: ~65k PT_LOADs
CORPUS_DUMPS = sorted(str(p) for p in CORPUS.glob("*/vmcore.kdump-*"))


# -- the old per-segment path, as the reference -------------------------------------------------
def old_frame(segs: list[Segment], page_size: int) -> pd.DataFrame:
    """What segments_frame built from a list of Segment objects before the table was arrays."""
    def u64(values: list) -> pd.api.extensions.ExtensionArray:
        return pd.array([v if v is not None and 0 <= v <= U64_MAX else None for v in values], dtype="UInt64")

    return pd.DataFrame({
        "start": u64([s.start for s in segs]), "end": u64([s.end for s in segs]),
        "pages": pd.array([(s.end - s.start + page_size - 1) // page_size for s in segs], dtype="Int64"),
        "state": pd.Categorical([s.state for s in segs], categories=SEGMENT_STATES),
        "vaddr": u64([s.vaddr for s in segs]), "file_offset": u64([s.file_offset for s in segs]),
        "source": pd.array([s.source for s in segs], dtype="string"),
    })


def old_loads(path: str | Path) -> list[tuple[int, int, int, int, int, int]]:
    """(index, paddr, vaddr, offset, filesz, memsz) of the plausible PT_LOADs: the count by
    pyelftools, each header unpacked with struct."""
    out = []
    with open(path, "rb") as f:
        elf = ELFFile(f)
        is64, phoff, phentsize = elf.elfclass == 64, elf.header["e_phoff"], elf.header["e_phentsize"]
        nph = elf.num_segments()
        f.seek(phoff)
        raw = f.read(nph * phentsize)
    n = 0
    for i in range(nph):
        if is64:
            ptype, _, offset, v, p, fs, ms, _ = struct.unpack_from("<IIQQQQQQ", raw, i * phentsize)
        else:
            ptype, offset, v, p, fs, ms, _, _ = struct.unpack_from("<IIIIIIII", raw, i * phentsize)
        if ptype != PT_LOAD:
            continue
        if fs <= ms and p + ms <= 1 << MAX_PHYSMEM_BITS and v + ms <= U64_MAX + 1:
            out.append((n, p, v, offset, fs, ms))
        n += 1
    return out


def old_segments(d: kdnb.Dump) -> list[Segment]:
    """The Segment objects the readers made one by one."""
    r = d.reader
    if isinstance(r, ElfDump):
        segs = []
        for index, paddr, vaddr, offset, filesz, memsz in old_loads(r.path):
            src = f"PT_LOAD {index}"
            avail = max(0, min(filesz, r.file_size - offset))
            if avail:
                segs.append(Segment(paddr, paddr + avail, "present", vaddr, offset, src))
            if avail < filesz:
                segs.append(Segment(paddr + avail, paddr + filesz, "truncated", vaddr + avail, offset + avail, src))
            if memsz > filesz:
                segs.append(Segment(paddr + filesz, paddr + memsz, "excluded", vaddr + filesz, None, src))
        return segs
    if isinstance(r, SplitDump):
        codes = np.zeros(r.max_pfn, dtype=np.uint8)
        for part in r.parts:
            states = part.page_states()[part.start_pfn:min(part.end_pfn, r.max_pfn)]
            codes[part.start_pfn:part.start_pfn + len(states)] = states
    else:
        codes = r.page_states()
    segs, psz = [], r.page_size
    change = np.flatnonzero(np.diff(codes)) + 1
    for s, e in zip(np.concatenate(([0], change)).tolist(), np.concatenate((change, [len(codes)])).tolist()):
        if codes[s]:
            segs.append(Segment(s * psz, e * psz, STATE_NAMES[int(codes[s])], None, None, "bitmap"))
    return segs


def old_states(d: kdnb.Dump, segs: list[Segment]) -> dict:
    """validate's page states as the loop over `segs` (old_segments) computed them."""
    psz = d.reader.page_size
    if isinstance(d.reader, ElfDump) and len(segs) > 1:
        direct = [s for s in segs if s.vaddr is None or s.vaddr < START_KERNEL_MAP]
        segs = direct or segs
    pages = {"present": 0, "excluded": 0, "truncated": 0, "lost": 0}
    spans: dict[str, list] = {"truncated": [], "lost": [], "excluded": []}
    for s in segs:
        pages[s.state] += (s.end - s.start + psz - 1) // psz
        if s.state in spans:
            spans[s.state].append((s.start, s.end))
    return {"pages": pages, "ranges": spans}


def assert_same_as_old(d: kdnb.Dump) -> None:
    """d.segments, reader.segments() rows and validate's states equal the old path's."""
    old = old_segments(d)
    pd.testing.assert_frame_equal(d.segments.reset_index(drop=True), old_frame(old, d.page_size))
    table = d.reader.segments()
    assert len(table) == len(old)
    for i in {0, len(old) // 2, len(old) - 1} if old else ():
        assert table[i] == old[i]
    st, ref = Context(d).states(), old_states(d, old)
    assert st["pages"] == ref["pages"]
    for state, spans in ref["ranges"].items():
        got = st["ranges"][state]
        assert len(got) == len(spans) and bool(got) == bool(spans) and got[:8] == spans[:8]
        assert list(got) == spans


# -- the same answers as before ------------------------------------------------------------------
@pytest.mark.parametrize("path", SAMPLES + CORPUS_DUMPS, ids=lambda p: "/".join(p.split("/")[-2:]))
def test_real_dumps_same_as_old(path: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with kdnb.open(path) as d:
            assert_same_as_old(d)


def test_corpus_elf_same_as_old(corpus_elf: Path) -> None:
    with kdnb.open(corpus_elf) as d:
        assert d.header["pt_loads"] > 1
        assert_same_as_old(d)


def _synthetic(tmp_path: Path) -> list[list[Path]]:
    spec = simple_spec(100, holes=(10, 11, 50), excluded=(20, 21, 22, 70, 71))
    elf_cut = write_elf(tmp_path / "elf-cut", spec)
    os.truncate(elf_cut, elf_cut.stat().st_size - 5 * PAGE - 100)
    kd_cut = write_kdump(tmp_path / "kd-cut", spec)
    os.truncate(kd_cut, kd_cut.stat().st_size - 3 * PAGE)
    return [[write_elf(tmp_path / "elf64", spec)], [write_elf(tmp_path / "elf32", spec, elfclass=32)],
            [write_elf(tmp_path / "qemu", spec, qemu=True)], [write_elf(tmp_path / "full", spec, filtered=False)],
            [elf_cut], [kd_cut], [write_kdump(tmp_path / "kd", spec, codecs=("zlib", "raw"))],
            [write_kdump(tmp_path / "flat", spec, flattened=True)],
            [write_kdump(tmp_path / "inc", spec, incomplete_after=40)],
            [write_kdump(tmp_path / "a", spec, split=(0, 40)), write_kdump(tmp_path / "b", spec, split=(45, 100))]]


def test_synthetic_formats_same_as_old(tmp_path: Path) -> None:
    states = set()
    for paths in _synthetic(tmp_path):
        with kdnb.open(paths if len(paths) > 1 else paths[0]) as d:
            assert_same_as_old(d)
            states |= set(d.segments["state"].astype(str))
    assert states == set(SEGMENT_STATES)  # every state was compared


def test_load_ending_at_2_64(tmp_path: Path) -> None:
    """A PT_LOAD whose p_vaddr + p_memsz is exactly 2**64 is kept (it does not wrap)."""
    spec = Spec(pages={0: bytes(PAGE)}, excluded={1})
    path = write_elf(tmp_path / "e", spec, vaddr_base=(1 << 64) - 2 * PAGE)
    with kdnb.open(path) as d:
        assert d.header["problems"] == []
        assert_same_as_old(d)
        assert d.segments["vaddr"].tolist() == [(1 << 64) - 2 * PAGE, (1 << 64) - PAGE]


# -- one PT_LOAD per page frame ------------------------------------------------------------------
@pytest.fixture(scope="module")
def page_elf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_page_per_load_elf(tmp_path_factory.mktemp("frag") / "vmcore.elf", SOURCE)


def test_page_per_load_elf_reads_like_its_source(page_elf: Path) -> None:
    with kdnb.open(SOURCE) as src, kdnb.open(page_elf) as d:
        present, excluded = present_and_excluded(src)
        assert d.format == "elf64" and d.header["pt_loads"] == 2 * len(present) + len(excluded) > 0xFFFF
        assert d.header["problems"] == []
        for pfn in present.tolist():
            assert d.read_phys(pfn * PAGE, PAGE) == src.read_phys(pfn * PAGE, PAGE), pfn
        assert d.read_phys(int(excluded[5]) * PAGE, 64) == bytes(64)  # p_memsz > p_filesz: zeros
        at = int(present[np.flatnonzero(np.diff(present) == 1)[0]])  # two stored neighbours
        assert d.read_phys(at * PAGE + 100, PAGE) == src.read_phys(at * PAGE + 100, PAGE)
        holes = np.setdiff1d(np.arange(src.reader.max_pfn), np.concatenate((present, excluded)))
        with pytest.raises(PageNotInDump, match="hole"):
            d.read_phys(int(holes[0]) * PAGE, 8)
        by_state = d.segments.groupby("state", observed=True)["pages"].sum()
        assert (int(by_state["present"]), int(by_state["excluded"])) == (2 * len(present), len(excluded))
        assert_same_as_old(d)


def test_page_per_load_elf_views_equal_source(page_elf: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with kdnb.open(SOURCE) as src, kdnb.open(page_elf) as d:
            pd.testing.assert_frame_equal(d.tasks, src.tasks)
            assert d.log["text"].tolist() == src.log["text"].tolist()
            assert len(d.tasks) > 10


def test_page_per_load_elf_opens_fast(page_elf: Path) -> None:
    t0 = time.perf_counter()
    with kdnb.open(page_elf) as d:
        assert d.header["pt_loads"] > 0xFFFF
        t1 = time.perf_counter()
        assert len(d.segments) == d.header["pt_loads"]
        t2 = time.perf_counter()
    assert t1 - t0 < 2 and t2 - t1 < 2  # pyelftools and Segment objects: 2.3 s and 3.5 s


# -- kdump bitmaps of millions of runs -------------------------------------------------------------
def test_2m_segment_kdump(tmp_path: Path) -> None:
    """8 GiB of page frames, every other one stored: 2 Mi single-page segments."""
    ram = 1 << 21
    stored = np.zeros(ram, dtype=np.uint8)
    stored[::2] = 1
    path = write_sparse_kdump(tmp_path / "frag", ram, stored, pages={2: b"\x07" * PAGE})
    with kdnb.open(path) as d:
        assert d.read_phys(2 * PAGE, 4) == b"\x07" * 4
        with pytest.raises(PageNotInDump, match="excluded"):
            d.read_phys(3 * PAGE, 4)
        tracemalloc.start()
        t0 = time.perf_counter()
        seg = d.segments
        seconds = time.perf_counter() - t0
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert len(seg) == ram
        assert seg["state"].astype(str).tolist()[:4] == ["present", "excluded"] * 2
        assert (seg["end"] - seg["start"] == PAGE).all() and seg["source"].eq("bitmap").all()
        assert seg["start"].iloc[-1] == (ram - 1) * PAGE and seg["vaddr"].isna().all()
        # the per-segment path took 15 s (95 s traced) and 741 MiB
        assert seconds < 5 and peak < 200 << 20, (seconds, peak >> 20)
        st = Context(d).states()
        assert st["pages"] == {"present": ram // 2, "excluded": ram // 2, "truncated": 0, "lost": 0}
        assert len(st["ranges"]["excluded"]) == ram // 2
        assert st["ranges"]["excluded"][:2] == [(PAGE, 2 * PAGE), (3 * PAGE, 4 * PAGE)]


def test_fragmented_kdump_of_a_real_dump(tmp_path: Path) -> None:
    """A real sample's pages in a 1 GiB frame space whose tail alternates: same views, same
    bytes; the old path's segments on the whole file."""
    path = fragmented_kdump(tmp_path / "frag", SOURCE, 1 << 18)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with kdnb.open(SOURCE) as src, kdnb.open(path) as d:
            assert len(d.segments) > (1 << 18) - src.reader.max_pfn
            assert_same_as_old(d)
            pd.testing.assert_frame_equal(d.tasks, src.tasks)
            assert d.log["text"].tolist() == src.log["text"].tolist()


# -- hostile counts --------------------------------------------------------------------------------
def test_pn_xnum_count_past_the_file_is_refused(tmp_path: Path) -> None:
    """e_phnum PN_XNUM and section 0's sh_info 2**32-1: more headers than the file holds."""
    path = tmp_path / "e"
    path.write_bytes(write_elf(tmp_path / "src", simple_spec()).read_bytes())
    data = bytearray(path.read_bytes())
    struct.pack_into("<QQ", data, 32, struct.unpack_from("<Q", data, 32)[0], len(data))  # e_shoff
    struct.pack_into("<HHH", data, 56, PN_XNUM, SHDR, 1)  # e_phnum, e_shentsize, e_shnum
    data += struct.pack("<IIQQQQIIQQ", 0, 0, 0, 0, 0, 0, 0, (1 << 32) - 1, 0, 0)
    path.write_bytes(bytes(data))
    with pytest.raises(ImplausibleValue, match="program header count") as exc:
        kdnb.open(path)
    assert (exc.value.field, exc.value.value, exc.value.path) == \
        ("ELF program header count", (1 << 32) - 1, str(path))


def test_program_headers_cut_by_the_file_end(tmp_path: Path) -> None:
    """e_phentsize 1: the count fits the room check, the last 56-byte header runs off the end."""
    path = write_elf(tmp_path / "e", simple_spec())
    data = bytearray(path.read_bytes())
    struct.pack_into("<Q", data, 32, len(data) - 40)  # e_phoff
    struct.pack_into("<HH", data, 54, 1, 40)  # e_phentsize 1, e_phnum 40
    path.write_bytes(bytes(data))
    with pytest.raises(kdnb.KdnbError, match=f"{path}: ELF headers end early"):
        kdnb.open(path)


def test_max_mapnr_2_40_and_a_bitmap_past_the_file(tmp_path: Path) -> None:
    path = write_kdump(tmp_path / "d", simple_spec())
    good = path.read_bytes()
    data = bytearray(good)
    struct.pack_into("<Q", data, PAGE + 96, 1 << 41)  # max_mapnr_64
    path.write_bytes(bytes(data))
    with pytest.raises(ImplausibleValue) as exc:
        kdnb.open(path)
    assert (exc.value.field, exc.value.value, exc.value.path) == ("kdump max_mapnr", 1 << 41, str(path))
    data = bytearray(good)
    struct.pack_into("<I", data, 436, 1 << 30)  # bitmap_blocks: 4 TiB of bitmap
    struct.pack_into("<Q", data, PAGE + 96, 1 << 39)
    path.write_bytes(bytes(data))
    with kdnb.open(path) as d:
        assert any("past the end of the file" in p for p in d.header["problems"])
        assert d.reader.max_pfn <= 8 * len(good)
        assert_same_as_old(d)


def test_program_header_table_too_large(tmp_path: Path) -> None:
    """e_phentsize 0xffff and a file large enough for the count: refused before any read."""
    path = write_elf(tmp_path / "e", simple_spec())
    data = bytearray(path.read_bytes())
    struct.pack_into("<HH", data, 54, 0xFFFF, 2000)  # e_phentsize, e_phnum
    path.write_bytes(bytes(data))
    os.truncate(path, 2001 * 0xFFFF)  # sparse: 128 MiB of apparent size
    with pytest.raises(ImplausibleValue, match="program header table bytes") as exc:
        kdnb.open(path)
    assert exc.value.path == str(path)


# -- the vectorised PT_LOAD index against the old loops, on overlapping layouts ----------------------
def _old_pieces(rows: list[tuple]) -> list[tuple[int, int, int]]:
    pieces: list[tuple[int, int, int]] = []
    for _, paddr, _, offset, filesz, memsz in sorted(rows, key=lambda x: (x[1], -x[4])):
        for start, end, off in ((paddr, paddr + filesz, offset), (paddr + filesz, paddr + memsz, -1)):
            if pieces and start < pieces[-1][1]:
                if off >= 0:
                    off += pieces[-1][1] - start
                start = pieces[-1][1]
            if start < end:
                pieces.append((start, end, off))
    return pieces


def _old_overlaps(rows: list[tuple]) -> list[tuple[int, int, int, int]]:
    out, reach = [], None
    for ld in sorted(rows, key=lambda x: (x[1], -x[4])):
        if reach is not None and ld[1] < reach[1] + reach[4] and ld[4]:
            out.append((ld[0], reach[0], ld[1], min(ld[1] + ld[4], reach[1] + reach[4])))
        if reach is None or ld[1] + ld[4] > reach[1] + reach[4]:
            reach = ld
    return out


@pytest.mark.parametrize("seed", range(40))
def test_piece_index_and_overlaps_match_the_loops(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 60))
    paddr = rng.integers(0, 40, n) * 512
    filesz = rng.integers(0, 8, n) * 512
    memsz = filesz + rng.integers(0, 4, n) * 512
    offset = rng.integers(0, 1 << 20, n)
    rows = [(i, int(paddr[i]), 0, int(offset[i]), int(filesz[i]), int(memsz[i])) for i in range(n)]
    u = np.uint64
    loads = Loads(np.arange(n, dtype=np.int64), paddr.astype(u), np.zeros(n, dtype=u),
                  offset.astype(u), filesz.astype(u), memsz.astype(u))
    idx = piece_index(loads)
    assert list(zip(idx.start.tolist(), idx.end.tolist(), idx.offset.tolist())) == _old_pieces(rows)
    assert overlapping_pairs(loads) == _old_overlaps(rows)
    for at in range(0, 48 * 512, 256):
        want = next(((s, e, o) for s, e, o in _old_pieces(rows) if s <= at < e), None)
        assert idx.find(at) == want
