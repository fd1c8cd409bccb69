"""Benchmark fleet triage: N dumps (links to the data/ samples, cache off) on 1 and 2 workers.

    python benchmarks/bench_triage.py [-n 32] [--workers 1 2] [--json]

For each worker count a LocalCluster of that many single-threaded worker processes is started;
every worker first triages one dump (imports, the kallsyms/BTF disk cache: what a long fleet
run pays once per worker), then the N dumps are triaged and timed. Reported per run:
  seconds            wall time of kdnb.triage(N dumps) after the warm-up
  dumps/s            N / seconds; per worker: divided by the worker count
  speed-up           dumps/s against the 1-worker run
  peak RSS/worker    the largest ru_maxrss of any worker process (MiB)
  load               the machine's 1-minute load average when the run ended (others' work too)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def make_fleet(root: Path, n: int) -> list[str]:
    """n links named host<i>/vmcore, cycling over the bundled samples."""
    samples = sorted(REPO.glob("data/*/vmcore.*"))
    if not samples:
        sys.exit("no samples in data/")
    paths = []
    for i in range(n):
        host = root / f"host{i:05d}"
        host.mkdir()
        (host / "vmcore").symlink_to(samples[i % len(samples)])
        paths.append(str(host / "vmcore"))
    return paths


def bench(paths: list[str], workers: int) -> dict:
    from dask.distributed import Client, LocalCluster

    import kdnb

    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        kdnb.triage(paths[:workers], client=client, cache=False, progress=False)  # warm-up
        t0 = time.perf_counter()
        df = kdnb.triage(paths, client=client, cache=False, progress=False)
        seconds = time.perf_counter() - t0
        rss = client.run(_peak_rss_mib)
    assert df["error"].isna().all(), df[df["error"].notna()][["path", "error"]]
    return {"workers": workers, "dumps": len(paths), "seconds": round(seconds, 2),
            "dumps_per_s": round(len(paths) / seconds, 2),
            "dumps_per_s_per_worker": round(len(paths) / seconds / workers, 2),
            "peak_rss_mib_per_worker": round(max(rss.values()), 1),
            "task_seconds_median": round(float(df["seconds"].median()), 3),
            "load_1min": round(os.getloadavg()[0], 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=32, help="dumps in the fleet (links)")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="kdnb-bench-fleet-") as tmp:
        paths = make_fleet(Path(tmp), args.n)
        results = [bench(paths, w) for w in args.workers]
    base = results[0]["dumps_per_s"] / results[0]["workers"]
    for r in results:
        r["speed_up"] = round(r["dumps_per_s"] / base, 2)
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"{'workers':>7} {'dumps':>5} {'seconds':>8} {'dumps/s':>8} {'per worker':>10} "
          f"{'speed-up':>8} {'peak RSS/worker':>15} {'task median':>11} {'load':>5}")
    for r in results:
        print(f"{r['workers']:>7} {r['dumps']:>5} {r['seconds']:>8} {r['dumps_per_s']:>8} "
              f"{r['dumps_per_s_per_worker']:>10} {r['speed_up']:>7}x "
              f"{r['peak_rss_mib_per_worker']:>11} MiB {r['task_seconds_median']:>10}s "
              f"{r['load_1min']:>5}")


if __name__ == "__main__":
    main()
