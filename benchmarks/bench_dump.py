"""Benchmark the dump layer: opening a huge synthetic kdump, and random page reads.

    python benchmarks/bench_dump.py [--corpus ../shared/corpus]

Prints: open time and peak RSS for a kdump describing 64 GiB (16 M page frames), and the
throughput of random 4 KiB reads through kdnb vs calling zlib.decompress on the same pages.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np

PAGE = 4096


def write_huge_kdump(path: Path, max_pfn: int = 16 << 20, every: int = 16) -> None:
    """A kdump header + bitmaps for `max_pfn` frames, every `every`-th page present (zero page)."""
    half_blocks = -(-(max_pfn // 8) // PAGE)
    bm1 = np.full(half_blocks * PAGE, 0xFF, dtype=np.uint8)
    bits = np.zeros(max_pfn, dtype=np.uint8)
    bits[::every] = 1
    bm2 = np.zeros(half_blocks * PAGE, dtype=np.uint8)
    bm2[: max_pfn // 8] = np.packbits(bits, bitorder="little")
    present = int(bits.sum())
    sub_blocks = 1
    desc_off = PAGE * (1 + sub_blocks + 2 * half_blocks)
    data_off = desc_off + 24 * present
    descs = np.zeros(present, dtype=[("o", "<i8"), ("s", "<u4"), ("f", "<u4"), ("p", "<u8")])
    descs["o"] = data_off
    descs["s"] = PAGE
    hdr = bytearray(PAGE)
    hdr[:8] = b"KDUMP   "
    struct.pack_into("<i", hdr, 8, 6)
    struct.pack_into("<qqIiiIIIIIii", hdr, 408, 0, 0, 1, PAGE, sub_blocks, 2 * half_blocks,
                     max_pfn, 0, 0, 0, 0, 1)
    sub = bytearray(PAGE)
    struct.pack_into("<qiiQQQQQQQQQQQ", sub, 0, 0, 31, 0, 0, max_pfn, 0, 0, 0, 0, 0, 0, 0,
                     max_pfn, max_pfn)
    with open(path, "wb") as f:
        f.write(hdr)
        f.write(sub)
        f.write(bm1.tobytes())
        f.write(bm2.tobytes())
        f.write(descs.tobytes())
        f.write(bytes(PAGE))


def measure_open(path: str) -> None:
    """Child process: open the dump, read one page, report time and peak RSS."""
    import kdnb

    base = _rss_mb()
    t0 = time.perf_counter()
    d = kdnb.open(path)
    opened = time.perf_counter() - t0
    d.read_phys((16 << 20) // 2 * PAGE, 8)
    after = _rss_mb()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"open_s={opened:.3f} rss_after_imports_mb={base:.0f} rss_after_open_mb={after:.0f} "
          f"growth_mb={after - base:.1f} peak_rss_mb={peak:.0f}")


def _rss_mb() -> float:
    """Current resident set size in MiB (Linux)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def random_reads(path: str, n: int = 20000) -> None:
    """Random 4 KiB reads through kdnb vs raw zlib.decompress of the same pages."""
    import kdnb

    d = kdnb.open(path)
    reader = d.reader
    pfns = np.flatnonzero(np.unpackbits(reader._bitmap2, bitorder="little"))
    rng = random.Random(1)
    sample = [int(p) for p in rng.sample(list(pfns), min(n, len(pfns)))]
    blobs = []
    for pfn in sample:
        off, size, flags = reader._descriptor(pfn)
        blobs.append((reader.source.pread(off, size), flags))
    t0 = time.perf_counter()
    for blob, flags in blobs:
        if flags & 1:
            zlib.decompress(blob)
    raw = time.perf_counter() - t0
    reader._cache.clear()
    t0 = time.perf_counter()
    for pfn in sample:
        d.read_phys(pfn * PAGE, PAGE)
    ours = time.perf_counter() - t0
    mb = len(sample) * PAGE / 1e6
    print(f"pages={len(sample)} zlib_only={mb / raw:.0f} MB/s kdnb_cold={mb / ours:.0f} MB/s "
          f"ratio={raw / ours:.2f}")
    t0 = time.perf_counter()
    for pfn in sample:
        d.read_phys(pfn * PAGE + 100, 64)
    warm = time.perf_counter() - t0
    print(f"kdnb_warm_small_reads={len(sample) / warm:.0f} reads/s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--corpus", default=str(Path(__file__).resolve().parents[2] / "shared" / "corpus"))
    ap.add_argument("--child-open")
    args = ap.parse_args()
    if args.child_open:
        measure_open(args.child_open)
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "huge.kdump"
        t0 = time.perf_counter()
        write_huge_kdump(path)
        print(f"64 GiB synthetic kdump written ({path.stat().st_size / 1e6:.0f} MB) "
              f"in {time.perf_counter() - t0:.1f} s")
        out = subprocess.run([sys.executable, __file__, "--child-open", str(path)],
                             capture_output=True, text=True, check=True)
        print("open 64 GiB:", out.stdout.strip())
    zdump = Path(args.corpus) / "k6.1-sysrq" / "vmcore.kdump-zlib"
    if zdump.exists():
        print("random reads, corpus zlib:", end=" ")
        random_reads(str(zdump))
    else:
        print(f"corpus dump {zdump} absent: random-read benchmark skipped")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
