"""Make every lab scenario on both kernels and classify each dump with the root-cause analysis.

    python3 benchmarks/lab_rootcause_matrix.py [-o DIR] [--kernels 6.1,6.12] [--scenarios a,b]

Prints one row per (scenario, kernel): expected vs found category, the culprit, the ground
truth's culprit, and the seconds the lab took. Needs qemu-system-x86_64 and apt (slow: minutes).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import time
from pathlib import Path

import kdnb
from kdnb.lab import list_scenarios, make

EXPECTED = {
    "sysrq": "sysrq", "oops": "null-deref", "bug": "bug", "panic": "panic-call", "warn": "warn",
    "softlockup": "soft-lockup", "hung": "hung-task", "oom": "oom", "cascade": "soft-lockup",
    "rcu-stall": "rcu-stall", "slab-leak": "sysrq", "deadlock": "deadlock", "wq-stall": "hung-task",
    "rwsem": "hung-task", "io-hang": "io-hang",
}


#: What the crash module prints in the guest for the lock scenarios' roots.
CONSOLE_ROOT = {"rwsem": re.compile(r"kdnb_crash: (\S+)\[(\d+)\] holds kdnb_rwsem"),
                "wq-stall": re.compile(r"kdnb_wq_fn\) runs in (\S+)\[(\d+)\]"),
                "deadlock": re.compile(r"kdnb_crash: (\S+)\[(\d+)\] holds kdnb_lock_")}


def expected_culprit(truth: dict, console: str = "") -> str:
    """The culprit the ground truth names: the blocked task, the module trigger, the crasher, or
    (lock scenarios) the holder the module printed on the console."""
    rx = CONSOLE_ROOT.get(truth["scenario"])
    if rx is not None:
        found = rx.findall(console)
        return " or ".join(f"{c}:{p}" for c, p in found) or "?"
    if truth.get("hung_task_reported_blocked") and truth["scenario"] != "cascade":
        who = truth["hung_task_reported_blocked"][0]
    elif truth.get("module_trigger"):
        who = truth["module_trigger"]
    else:
        who = truth["crash_context_cpu_pid_comm"]
    return f"{who.get('comm')}:{who.get('pid')}"


def _console(out: Path) -> str:
    path = out / "console.log"
    return path.read_text(errors="replace") if path.exists() else ""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("-o", "--out", default="/tmp/kdnb-lab-matrix")
    ap.add_argument("--kernels", default="6.1,6.12")
    ap.add_argument("--scenarios", default=",".join(EXPECTED))
    ap.add_argument("--keep", action="store_true", help="keep the dumps")
    ap.add_argument("--reuse", action="store_true",
                    help="classify dumps already in the output folder instead of making them")
    args = ap.parse_args()
    known = set(list_scenarios())
    rows = []
    for kernel in args.kernels.split(","):
        for scenario in args.scenarios.split(","):
            if scenario not in known:
                print(f"unknown scenario {scenario}")
                continue
            out = Path(args.out) / f"k{kernel}-{scenario}"
            t0 = time.perf_counter()
            existing = sorted(out.glob("vmcore.*")) if args.reuse else []
            try:
                path = existing[0] if existing else \
                    make(scenario, kernel=kernel, out_dir=out, progress=lambda s: None)
            except Exception as exc:  # report the failed run and go on
                rows.append((scenario, kernel, EXPECTED[scenario], f"lab failed: {exc}"[:60], "", "",
                             time.perf_counter() - t0))
                print(rows[-1], flush=True)
                continue
            secs = time.perf_counter() - t0
            truth = json.loads((out / "ground-truth.json").read_text())
            with kdnb.open(path) as d:
                rc = d.root_cause()
            c = rc.culprit
            culprit = f"{c.comm}:{c.pid} cpu{c.cpu} {c.function or ''}" + (f" [{c.module}]" if c.module else "")
            rows.append((scenario, kernel, EXPECTED[scenario], rc.category, culprit,
                         expected_culprit(truth, _console(out)), secs))
            print(rows[-1], flush=True)
            if not args.keep and not existing:
                shutil.rmtree(out, ignore_errors=True)
    print("\n| scenario | kernel | expected | found | culprit | ground truth | lab s |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        ok = "ok" if r[2] == r[3] else "MISMATCH"
        who = "ok" if r[4] and r[4].split(" ")[0] in r[5].split(" or ") else "WRONG"
        print(f"| {r[0]} | {r[1]} | {r[2]} | {r[3]} ({ok}) | {r[4]} ({who}) | {r[5]} | {r[6]:.0f} |")


if __name__ == "__main__":
    main()
