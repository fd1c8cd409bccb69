"""Benchmark backtraces: every task (and CPU) of each corpus dump, cold, in a fresh process.

    python benchmarks/bench_backtrace.py [--corpus ../shared/corpus] [--repeat 3]

For each dump, a new Python process opens it and times:
  total     kdnb.open() .. d.backtraces(states="all") returned (what a user waits for)
  kernel    the kernel layer (page tables, kallsyms, banner; the kallsyms/BTF disk cache is warm
            after the first run, as it is for a user)
  modules   module symbols (needed to name module frames and find module ORC tables)
  tasks     d.tasks (the tasks view)
  unwind    the backtrace part alone: ORC tables read + every stack unwound + the DataFrame
Times are the best of --repeat runs (each in its own process).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

CHILD = r"""
import json, sys, time, warnings
warnings.simplefilter("ignore")
t0 = time.perf_counter()
import kdnb
t_import = time.perf_counter()
d = kdnb.open(sys.argv[1])
k = d.kernel
t_kernel = time.perf_counter()
k.modules
t_modules = time.perf_counter()
tasks = d.tasks
t_tasks = time.perf_counter()
bt = d.backtraces(states="all")
t_end = time.perf_counter()
reasons = bt.attrs["kdnb"]["stop_reasons"]
print(json.dumps({
    "total": t_end - t_import, "kernel": t_kernel - t_import, "modules": t_modules - t_kernel,
    "tasks": t_tasks - t_modules, "unwind": t_end - t_tasks, "stacks": len(reasons),
    "frames": len(bt), "complete": sum(v in ("end of stack", "user mode") for v in reasons.values()),
}))
"""


def run(path: Path) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, str(path)], capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", default=str(Path(__file__).resolve().parents[2] / "shared" / "corpus"))
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    dumps = sorted(Path(args.corpus).glob("*/vmcore.kdump-zlib"))
    if not dumps:
        print(f"no corpus dumps under {args.corpus}")
        return 1
    print(f"{'dump':28} {'stacks':>6} {'frames':>6} {'total':>7} {'kernel':>7} {'modules':>7} "
          f"{'tasks':>7} {'unwind':>7}  complete")
    for path in dumps:
        runs = [run(path) for _ in range(max(1, args.repeat))]
        best = {k: min(r[k] for r in runs) for k in ("total", "kernel", "modules", "tasks", "unwind")}
        r = runs[0]
        print(f"{path.parent.name:28} {r['stacks']:6d} {r['frames']:6d} {best['total']:7.3f} "
              f"{best['kernel']:7.3f} {best['modules']:7.3f} {best['tasks']:7.3f} {best['unwind']:7.3f}"
              f"  {r['complete']}/{r['stacks']}")
    print("seconds; best of", args.repeat, "fresh processes each")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
