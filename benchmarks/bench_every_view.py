"""Every Dump view on dumps of growing size: is each one linear (or better) in the work?

    python benchmarks/bench_every_view.py [FOLDER ...] [--json OUT]

A FOLDER is a `kdnb lab make` output (vmcore.kdump-zlib); the default is every k* folder of
/work/scale-dumps (`kdnb lab make scale`). Each dump is read by one fresh process that builds the
views in the order below (the tasks and the log first, as every later view reads them) and times
each one; the table shows seconds per view and dump, then the growth from the smallest dump to
the largest next to the growth of its task count (a view growing much faster than its tasks, VMAs
or lines is not linear). drgn has none of these views as tables, so this is kdnb alone.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCALE_DUMPS = Path("/work/scale-dumps")
VIEWS = ["cpus", "segments", "log", "tasks", "slab", "modules", "sys_info", "panic_backtrace",
         "stacks", "meminfo", "zones", "buddyinfo", "sysctl", "cmdline", "coredump_settings",
         "maps", "irqs", "softirqs", "timers", "block", "inflight_io", "net", "sockets", "oom",
         "mounts", "runq", "locks", "workqueues", "cpu_state", "vmap_areas"]

CHILD = r"""
import json, sys, time, warnings
warnings.simplefilter("ignore")
import kdnb
d = kdnb.open(sys.argv[1])
out = {}
for name in sys.argv[2].split(","):
    t = time.perf_counter()
    try:
        value = getattr(d, name)
        value = value() if callable(value) else value
        rows = len(value) if hasattr(value, "__len__") else None
    except kdnb.KdnbError as exc:
        rows = f"{type(exc).__name__}"
    out[name] = [time.perf_counter() - t, rows]
print(json.dumps(out))
"""


def measure(vmcore: Path) -> dict:
    """{view: [seconds, rows]} from one fresh process (bytecode cached, kdnb's disk cache warm)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(Path(tempfile.gettempdir()) / "kdnb-bench-pyc")
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    args = [sys.executable, "-c", CHILD, str(vmcore), ",".join(VIEWS)]
    subprocess.run(args, env=env, capture_output=True, check=True)  # warm the caches once
    done = subprocess.run(args, env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def table(results: dict[str, dict]) -> str:
    """Markdown: seconds per view per dump, and largest/smallest growth against the tasks'."""
    names = list(results)
    lines = ["| view | " + " | ".join(names) + " | growth | tasks grew |",
             "|---|" + "---|" * (len(names) + 2)]
    tasks = [results[n]["tasks"][1] or 1 for n in names]
    for view in VIEWS:
        secs = [results[n][view][0] for n in names]
        grew = secs[-1] / secs[0] if secs[0] > 0.005 else float("nan")
        lines.append(f"| {view} | " + " | ".join(f"{s:.2f} s" for s in secs)
                     + f" | {grew:.1f}x | {tasks[-1] / tasks[0]:.1f}x |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="*", type=Path)
    parser.add_argument("--json", type=Path, help="also write the raw numbers here")
    args = parser.parse_args()
    folders = args.folders or sorted(p for p in SCALE_DUMPS.glob("k*") if p.is_dir())
    results = {}
    for folder in folders:
        vmcore = folder / "vmcore.kdump-zlib" if folder.is_dir() else folder
        results[folder.name] = measure(vmcore)
        print(f"{folder.name}: done", file=sys.stderr, flush=True)
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
