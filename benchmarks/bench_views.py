"""Benchmark the views: open a corpus dump and build tasks + slab + log with nothing cached.

    python benchmarks/bench_views.py [DUMP] [--runs N] [--profile]
        [--drgn-python PY --vmlinux VMLINUX]   # also time drgn side by side

Each run is a fresh process with an empty KDNB_CACHE_DIR (so kallsyms names and the BTF are
decoded from the dump), timed whole-process (interpreter start and imports included, as
`time drgn -c ... script` is) and in-process from `kdnb.open` to the three DataFrames.
Reference: drgn 0.3.0 with the DWARF vmlinux does the same in 0.39 s whole-process; with
`--drgn-python` (a Python with drgn installed) and `--vmlinux` (the kernel's -dbg vmlinux) it is
measured here in the same way instead.
`--profile` prints the top of a cProfile of one in-process run.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT = REPO.parent / "shared" / "corpus" / "k6.1-sysrq" / "vmcore.kdump-zlib"
DRGN_SECONDS = 0.39

CHILD = r"""
import sys, time
t0 = time.perf_counter()
import kdnb
t1 = time.perf_counter()
d = kdnb.open(sys.argv[1])
tasks, slab, log = d.tasks, d.slab, d.log
t2 = time.perf_counter()
print(f"{t1 - t0:.4f} {t2 - t1:.4f} {len(tasks)} {len(slab)} {len(log)}")
"""


DRGN_CHILD = r"""
import sys
import drgn
from drgn.helpers.linux.pid import for_each_task
from drgn.helpers.linux.printk import get_printk_records
from drgn.helpers.linux.slab import for_each_slab_cache, slab_cache_usage
prog = drgn.Program()
prog.set_core_dump(sys.argv[1])
prog.load_debug_info([sys.argv[2]])
tasks = [(t.pid.value_(), t.comm.string_()) for t in for_each_task(prog)]
slab = [(c.name.string_(), slab_cache_usage(c).active_objs) for c in for_each_slab_cache(prog)]
log = get_printk_records(prog)
print(len(tasks), len(slab), len(log))
"""


def drgn_run(python: str, dump: str, vmlinux: str) -> float:
    """Whole-process seconds of drgn doing tasks + slab + log."""
    start = time.perf_counter()
    subprocess.run([python, "-c", DRGN_CHILD, dump, vmlinux], check=True, capture_output=True)
    return time.perf_counter() - start


def one_run(dump: str) -> tuple[float, float, float, str]:
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "KDNB_CACHE_DIR": cache, "PYTHONPATH": str(REPO)}
        start = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", CHILD, dump], env=env, check=True,
                             capture_output=True, text=True).stdout.split()
        whole = time.perf_counter() - start
    return whole, float(out[0]), float(out[1]), f"{out[2]} tasks, {out[3]} caches, {out[4]} log records"


def profile(dump: str) -> None:
    import cProfile
    import pstats

    with tempfile.TemporaryDirectory() as cache:
        os.environ["KDNB_CACHE_DIR"] = cache
        sys.path.insert(0, str(REPO))
        import kdnb

        prof = cProfile.Profile()
        prof.enable()
        d = kdnb.open(dump)
        d.tasks, d.slab, d.log  # noqa: B018
        prof.disable()
        pstats.Stats(prof).sort_stats("cumulative").print_stats(25)
        pstats.Stats(prof).sort_stats("tottime").print_stats(15)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dump", nargs="?", default=str(DEFAULT))
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--drgn-python", help="a Python interpreter with drgn installed")
    ap.add_argument("--vmlinux", help="the DWARF vmlinux for drgn")
    args = ap.parse_args()
    if not Path(args.dump).exists():
        sys.exit(f"{args.dump} not found (pass a dump path)")
    if args.profile:
        profile(args.dump)
        return
    results = [one_run(args.dump) for _ in range(args.runs)]
    whole = sorted(r[0] for r in results)
    best = results[[r[0] for r in results].index(whole[0])]
    print(f"dump: {args.dump} ({best[3]})")
    print(f"whole process, nothing cached: best {whole[0]:.3f} s, median {whole[len(whole) // 2]:.3f} s "
          f"over {args.runs} runs")
    print(f"  of which import kdnb {best[1]:.3f} s, open + tasks + slab + log {best[2]:.3f} s")
    drgn_best, label = DRGN_SECONDS, "drgn 0.3.0 + DWARF reference"
    if args.drgn_python and args.vmlinux:
        drgn_best = min(drgn_run(args.drgn_python, args.dump, args.vmlinux) for _ in range(args.runs))
        label = "drgn + DWARF measured here, best"
    print(f"{label}: {drgn_best:.3f} s -> kdnb/drgn ratio {whole[0] / drgn_best:.2f}")


if __name__ == "__main__":
    main()
