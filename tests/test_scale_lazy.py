"""A kdump-compressed dump of a 64 GiB machine opens lazily.

The file is written with numpy, not tests/builders.write_kdump (which compresses every page in
Python): 16 Mi page frames of RAM (64 GiB), the first 512 of every 8192 written (1 Mi pages,
4 GiB, 2048 runs: a filtered dump's present runs are long, not single pages), each stored raw at its own offset of a sparse file (apparent size ~4 GiB, a few MiB on disk); four
pages carry recognisable bytes, the rest read as zeros. Opening must read the headers and the
bitmaps only (no page, no descriptor array), keep the bitmap rank a numpy array, and reading a
page must cost one block of descriptors and one page. `d.segments` reads the descriptors (24 bytes a page,
in chunks) but no page data.
"""

from __future__ import annotations

import os
import struct
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

import kdnb
from kdnb.dump.kdump import DESC_BLOCK, PAGE_DESC
from tests.builders import PAGE, Spec, notes_blob, page_of

RAM_PAGES = 1 << 24  # 64 GiB of 4 KiB pages
BLOCK, RUN = 8192, 512  # the first RUN page frames of every BLOCK are in the file
STRIDE = BLOCK // RUN
MARKED = (0, 100, 1 << 20, RAM_PAGES - BLOCK + 7)  # pfns whose pages hold page_of(pfn)


def rank(pfn: int) -> int:
    """Pages stored before `pfn` (its index in the descriptor array when it is stored)."""
    return pfn // BLOCK * RUN + min(pfn % BLOCK, RUN)


def write_sparse_kdump(path: Path, ram_pages: int = RAM_PAGES, stored: np.ndarray | None = None,
                       pages: dict[int, bytes] | None = None, notes: bytes | None = None,
                       vmci: bytes | None = None) -> Path:
    """A header version 6 kdump file: every pfn is RAM, those with `stored` set (one uint8 per
    pfn; by default the first RUN of each BLOCK) written raw, each at its own offset of a sparse
    file; `pages` (pfn -> bytes, default page_of(pfn) for the MARKED pfns) are really written.
    `notes` and `vmci` (a real dump's ELF notes and VMCOREINFO) replace the synthetic ones."""
    spec = Spec(pages={}, max_pfn=ram_pages)
    notes = notes_blob(spec) if notes is None else notes
    vmci = "".join(f"{k}={v}\n" for k, v in spec.vmcoreinfo.items()).encode() if vmci is None else vmci
    sub_blocks = -(-(104 + len(notes) + len(vmci)) // PAGE)
    half_blocks = -(-(ram_pages // 8) // PAGE)
    bm1 = np.full(half_blocks * PAGE, 0xFF, dtype=np.uint8)
    if stored is None:
        stored = np.zeros(ram_pages, dtype=np.uint8)
        stored.reshape(-1, BLOCK)[:, :RUN] = 1
    bm2 = np.zeros(half_blocks * PAGE, dtype=np.uint8)
    bm2[:ram_pages // 8] = np.packbits(stored, bitorder="little")
    present = int(np.count_nonzero(stored))
    rank_of = np.cumsum(stored, dtype=np.int64) - 1  # index of a stored pfn's descriptor
    desc_off = PAGE * (1 + sub_blocks + 2 * half_blocks)
    data_off = -(-(desc_off + PAGE_DESC.itemsize * present) // PAGE) * PAGE
    descs = np.zeros(present, dtype=PAGE_DESC)
    descs["offset"] = data_off + PAGE * np.arange(present, dtype=np.int64)
    descs["size"] = PAGE
    hdr = bytearray(PAGE)
    hdr[:8] = b"KDUMP   "
    struct.pack_into("<i", hdr, 8, 6)
    uts = b"".join(s.encode().ljust(65, b"\0") for s in
                   ("Linux", "big", spec.vmcoreinfo["OSRELEASE"], "#1 SMP", "x86_64", "(none)"))
    hdr[12:12 + len(uts)] = uts
    struct.pack_into("<qqIiiIIIIIii", hdr, 408, 1795823334, 0, 0, PAGE, sub_blocks,
                     2 * half_blocks, ram_pages, 0, 0, 0, 0, len(spec.cpus))
    sub = bytearray(sub_blocks * PAGE)
    off_notes = PAGE + 104
    struct.pack_into("<qiiQQQQQQQQQQQ", sub, 0, -75497472, 31, 0, 0, ram_pages,
                     off_notes + len(notes), len(vmci), off_notes, len(notes), 0, 0, 0,
                     ram_pages, ram_pages)
    sub[104:104 + len(notes)] = notes
    sub[104 + len(notes):104 + len(notes) + len(vmci)] = vmci
    with open(path, "wb") as f:
        f.write(bytes(hdr) + bytes(sub) + bm1.tobytes() + bm2.tobytes() + descs.tobytes())
        if pages is None:
            pages = {p: page_of(p) for p in MARKED if p < ram_pages}
        for pfn, data in pages.items():
            f.seek(data_off + PAGE * int(rank_of[pfn]))
            f.write(data)
        f.truncate(data_off + PAGE * present)
    return path


class CountingSource:
    """Wraps a reader's source and counts the bytes read through it."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.calls = 0
        self.bytes = 0

    def pread(self, offset: int, size: int) -> bytes:
        self.calls += 1
        out = self.inner.pread(offset, size)
        self.bytes += len(out)
        return out

    def __getattr__(self, name: str):
        return getattr(self.inner, name)


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_sparse_kdump(tmp_path_factory.mktemp("big") / "vmcore-64g")


def test_64g_opens_lazily(big: Path) -> None:
    assert big.stat().st_size > 4 << 30
    assert big.stat().st_blocks * 512 < 64 << 20  # sparse: a few MiB really written
    tracemalloc.start()
    t0 = time.perf_counter()
    with kdnb.open(big) as d:
        seconds = time.perf_counter() - t0
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        r = d.reader
        h = d.header
        assert (h["ram_pages"], h["present_pages"]) == (RAM_PAGES, RAM_PAGES // STRIDE)
        assert isinstance(r._rank_prefix, np.ndarray) and len(r._rank_prefix) == RAM_PAGES // 8 + 1
        # headers + 2 x 2 MiB bitmaps + the rank (4 bytes per bitmap byte): well under the
        # 24 MiB of descriptors or the 4 GiB of pages
        assert peak < 32 << 20, f"open allocated {peak / 2**20:.1f} MiB"
        assert seconds < 5
        r.source = counter = CountingSource(r.source)
        for pfn in MARKED:
            assert d.read_phys(pfn * PAGE, PAGE) == page_of(pfn)
        assert d.read_phys(32 * PAGE + 8, 8) == bytes(8)  # stored, never written: zeros
        # one page each, and one block of descriptors per distinct block (0, 32, 100 share one)
        blocks = len({rank(p) // DESC_BLOCK for p in (*MARKED, 32)})
        assert blocks == 3 and counter.calls == len(MARKED) + 1 + blocks
        assert counter.bytes == (len(MARKED) + 1) * PAGE + blocks * DESC_BLOCK * PAGE_DESC.itemsize
        with pytest.raises(kdnb.PageNotInDump, match="excluded"):
            d.read_phys(RUN * PAGE, 8)
        before = counter.bytes
        t0 = time.perf_counter()
        seg = d.segments
        assert time.perf_counter() - t0 < 10
        assert len(seg) == 2 * RAM_PAGES // BLOCK
        read = counter.bytes - before
        assert read == PAGE_DESC.itemsize * RAM_PAGES // STRIDE  # descriptors only, no page
        by_state = seg.groupby("state", observed=True)["pages"].sum()
        assert int(by_state["present"]) == RAM_PAGES // STRIDE
        assert int(by_state["excluded"]) == RAM_PAGES - RAM_PAGES // STRIDE


def test_64g_rank_matches_a_direct_count(big: Path) -> None:
    with kdnb.open(big) as d:
        r = d.reader
        for pfn in (0, 16, 17, 511, 512, 4096, 8193, 1 << 20, RAM_PAGES - 1):
            byte = pfn >> 3
            got = int(r._rank_prefix[byte]) + (r._bm2_bytes[byte] & ((1 << (pfn & 7)) - 1)).bit_count()
            assert got == rank(pfn)


def test_sparse_writer_is_not_vacuous(tmp_path: Path) -> None:
    """A small file from the same writer: every page check flips when its bytes change."""
    path = write_sparse_kdump(tmp_path / "small", ram_pages=2 * BLOCK)
    with kdnb.open(path) as d:
        assert d.read_phys(100 * PAGE, 16) == page_of(100)[:16]
        assert d.read_phys(BLOCK * PAGE, 16) == bytes(16)
        with pytest.raises(kdnb.PageNotInDump):
            d.read_phys((RUN + 1) * PAGE, 16)
    os.truncate(path, path.stat().st_size - PAGE)
    with kdnb.open(path) as d:
        assert "truncated" in set(d.segments["state"].astype(str))
