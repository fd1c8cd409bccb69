"""kdnb against drgn 0.3.0 (+ the kernel's -dbg vmlinux) on the corpus and production-size lab dumps.

    python benchmarks/bench_scale.py [FOLDER ...] [--repeat N] [--no-report] [--json OUT]

A FOLDER is a `kdnb lab make` output (vmcore.kdump-zlib + ground-truth.json); the default is
../shared/corpus/k6.1-sysrq and every k* folder of /work/scale-dumps (`kdnb lab make scale`).
For each dump, in fresh processes (best of --repeat), both tools warm (kdnb's kallsyms/BTF disk
cache filled once, drgn's vmlinux in the page cache), bytecode cached (PYTHONPYCACHEPREFIX):

  views     in-process open + tasks + slab + log (drgn: Program + vmlinux, for_each_task,
            slab_cache_usage of every cache, get_printk_records)
  stacks    every task's stack (kdnb: d.backtraces(states="all"); drgn: stack_trace of every
            task, each frame's pc and name); shown per stack
  validate  d.validate(), root cause d.root_cause(), report `kdnb report` (whole process):
            drgn has none of these, so they are kdnb-only rows (ratio "-")
  why       `kdnb why` as a whole process (goal < 1.5 s)
  rss       peak RSS of a process doing views + stacks (ru_maxrss), each tool its own process
            (drgn's: its timed runs, which do just that)

and a table of how each measure grows with the size of the dump (per task / per stack).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
CORPUS = REPO.parent / "shared" / "corpus"
SCALE_DUMPS = Path("/work/scale-dumps")
REPORT_TIMEOUT = 900.0  # seconds; a report still running then is shown as "> 900 s"

KDNB_CHILD = r"""
import json, resource, sys, time, warnings
warnings.simplefilter("ignore")
t0 = time.perf_counter()
import kdnb
# `import kdnb` defers pandas and the readers to the first open: loaded here, they count as import
# (as the drgn child imports its helpers), and "views" is the work on this dump
import pandas  # noqa: F401
import kdnb.dump, kdnb.kernel.kernel, kdnb.views.log, kdnb.views.slab, kdnb.views.tasks  # noqa: F401, E401
t1 = time.perf_counter()
d = kdnb.open(sys.argv[1])
tasks, slab, log = d.tasks, d.slab, d.log
t2 = time.perf_counter()
out = {"import": t1 - t0, "views": t2 - t1, "tasks": len(tasks), "caches": len(slab),
       "records": len(log)}
if "stacks" in sys.argv[2:]:
    bt = d.backtraces(states="all")
    t3 = time.perf_counter()
    out.update(stacks=t3 - t2, n_stacks=len(bt.attrs["kdnb"]["stop_reasons"]), frames=len(bt))
if "rest" in sys.argv[2:]:
    t3 = time.perf_counter()
    d.validate()
    t4 = time.perf_counter()
    d.root_cause()
    out.update(validate=t4 - t3, rootcause=time.perf_counter() - t4)
out["rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(out))
"""

DRGN_CHILD = r"""
import json, resource, sys, time
t0 = time.perf_counter()
import drgn
from drgn.helpers.linux.pid import for_each_task
from drgn.helpers.linux.printk import get_printk_records
from drgn.helpers.linux.slab import for_each_slab_cache, slab_cache_usage
t1 = time.perf_counter()
prog = drgn.Program()
prog.set_core_dump(sys.argv[1])
prog.load_debug_info([sys.argv[2]])
tasks = [(t.pid.value_(), t.comm.string_()) for t in for_each_task(prog)]
slab = [(c.name.string_(), slab_cache_usage(c).active_objs) for c in for_each_slab_cache(prog)]
log = get_printk_records(prog)
t2 = time.perf_counter()
out = {"import": t1 - t0, "views": t2 - t1, "tasks": len(tasks), "caches": len(slab),
       "records": len(log)}
if "stacks" in sys.argv[3:]:
    n = frames = 0
    for t in for_each_task(prog):
        try:
            trace = prog.stack_trace(t)
        except (drgn.FaultError, ValueError):
            continue
        frames += sum(1 for f in trace if (f.pc, f.name))
        n += 1
    out.update(stacks=time.perf_counter() - t2, n_stacks=n, frames=frames)
out["rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(out))
"""


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(Path(tempfile.gettempdir()) / "kdnb-bench-pyc")
    env["PYTHONPATH"] = str(REPO)
    return env


def _child(code: str, *args: str) -> dict:
    out = subprocess.run([sys.executable, "-c", code, *args], env=_env(), check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def _whole(cmd: list[str], timeout: float | None = None) -> float | None:
    """Seconds of one whole process (None when it ran past `timeout`)."""
    t0 = time.perf_counter()
    try:
        subprocess.run(cmd, env=_env(), check=True, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None
    return time.perf_counter() - t0


def _best(runs: list[dict], key: str) -> float:
    return min(r[key] for r in runs)


def measure(folder: Path, repeat: int, report: bool) -> dict:
    """Every measure of one dump folder (kdnb and drgn side by side)."""
    from kdnb.lab.debuginfo import cached_vmlinux

    dump = str(folder / "vmcore.kdump-zlib")
    release = json.loads((folder / "ground-truth.json").read_text())["kernel_release"]
    vmlinux = cached_vmlinux(release)
    if vmlinux is None:
        raise SystemExit(f"no -dbg vmlinux of {release}: run `kdnb lab dbg {release}`")
    _child(KDNB_CHILD, dump)  # fills kdnb's disk cache and the page cache
    _child(DRGN_CHILD, dump, str(vmlinux))
    k = [_child(KDNB_CHILD, dump, "stacks", "rest") for _ in range(repeat)]
    g = [_child(DRGN_CHILD, dump, str(vmlinux), "stacks") for _ in range(repeat)]
    k_rss = min(_child(KDNB_CHILD, dump, "stacks")["rss_mib"] for _ in range(repeat))
    g_rss = min(r["rss_mib"] for r in g)  # drgn's timed runs did views + stacks only
    kdnb_cmd = [sys.executable, "-m", "kdnb.cli"]
    why = min(_whole([*kdnb_cmd, "why", dump]) for _ in range(repeat))
    rep: float | None | bool = False
    if report:
        with tempfile.TemporaryDirectory() as tmp:
            rep = _whole([*kdnb_cmd, "report", dump, "-o", str(Path(tmp) / "r.html")],
                         timeout=REPORT_TIMEOUT)
    return {
        "dump": folder.name, "size_gib": Path(dump).stat().st_size / 2**30,
        "ram_mib": json.loads((folder / "ground-truth.json").read_text()).get("ram_mib"),
        "tasks": k[0]["tasks"], "drgn_tasks": g[0]["tasks"], "stacks": k[0]["n_stacks"],
        "drgn_stacks": g[0]["n_stacks"], "records": k[0]["records"],
        "kdnb": {m: _best(k, m) for m in ("import", "views", "stacks", "validate", "rootcause")},
        "drgn": {m: _best(g, m) for m in ("import", "views", "stacks")},
        "kdnb_rss_mib": k_rss, "drgn_rss_mib": g_rss, "why": why, "report": rep,
    }


def _ratio(a: float, b: float | None) -> str:
    return f"{a / b:.2f}x" if b else "-"


def table(results: list[dict]) -> str:
    """The note's table: per dump and measure, kdnb, drgn and kdnb/drgn."""
    lines = ["| dump | RAM | tasks | measure | kdnb | drgn | kdnb/drgn |", "|---|---|---|---|---|---|---|"]
    for r in results:
        kd, dg = r["kdnb"], r["drgn"]
        per_k = kd["stacks"] / max(r["stacks"], 1) * 1e6
        per_g = dg["stacks"] / max(r["drgn_stacks"], 1) * 1e6
        rows = [("open+tasks+slab+log", f"{kd['views']:.3f} s", f"{dg['views']:.3f} s",
                 _ratio(kd["views"], dg["views"])),
                ("per stack", f"{per_k:.0f} us", f"{per_g:.0f} us", _ratio(per_k, per_g)),
                ("validate", f"{kd['validate']:.3f} s", "-", "-"),
                ("root cause", f"{kd['rootcause']:.3f} s", "-", "-"),
                ("`kdnb why` (process)", f"{r['why']:.2f} s", "-", "-"),
                ("report (process)", f"{r['report']:.1f} s" if r["report"] else
                 "not run" if r["report"] is False else f"> {REPORT_TIMEOUT:.0f} s", "-", "-"),
                ("peak RSS", f"{r['kdnb_rss_mib']:.0f} MiB", f"{r['drgn_rss_mib']:.0f} MiB",
                 _ratio(r["kdnb_rss_mib"], r["drgn_rss_mib"]))]
        for i, (m, a, b, c) in enumerate(rows):
            head = (f"{r['dump']} | {r['ram_mib']} MiB | {r['tasks']}" if i == 0 else " | | ")
            lines.append(f"| {head} | {m} | {a} | {b} | {c} |")
    return "\n".join(lines)


def growth(results: list[dict]) -> str:
    """How each measure grows: microseconds per task (views, validate, root cause) and per stack."""
    lines = [("| dump | tasks | views us/task kdnb | drgn | validate us/task | root cause us/task | "
              "stack us kdnb | drgn | RSS KiB/task kdnb | drgn |"), "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        n, kd, dg = max(r["tasks"], 1), r["kdnb"], r["drgn"]
        lines.append(
            f"| {r['dump']} | {r['tasks']} | {kd['views'] / n * 1e6:.0f} | {dg['views'] / n * 1e6:.0f} | "
            f"{kd['validate'] / n * 1e6:.0f} | {kd['rootcause'] / n * 1e6:.0f} | "
            f"{kd['stacks'] / max(r['stacks'], 1) * 1e6:.0f} | "
            f"{dg['stacks'] / max(r['drgn_stacks'], 1) * 1e6:.0f} | "
            f"{r['kdnb_rss_mib'] * 1024 / n:.1f} | {r['drgn_rss_mib'] * 1024 / n:.1f} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folders", nargs="*", type=Path)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--no-report", action="store_true", help="skip `kdnb report` (slow on big dumps)")
    ap.add_argument("--json", type=Path, help="also write the raw results here")
    args = ap.parse_args()
    folders = args.folders or [CORPUS / "k6.1-sysrq", *sorted(SCALE_DUMPS.glob("k*"))]
    folders = [f for f in folders if (f / "vmcore.kdump-zlib").exists()]
    if not folders:
        print("no dump folders (vmcore.kdump-zlib + ground-truth.json) found")
        return 1
    results = []
    for f in folders:
        r = measure(f, max(1, args.repeat), not args.no_report)
        results.append(r)
        print(f"{f.name}: {json.dumps(r)}", file=sys.stderr, flush=True)
    print(table(results))
    print()
    print(growth(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
