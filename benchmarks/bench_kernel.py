"""Time opening a corpus dump up to usable symbols + types, cold (empty cache) and warm.

    python benchmarks/bench_kernel.py [DUMP ...]

Each measurement runs in a fresh process (imports included, like drgn's 0.39 s reference for
open + tasks + slab + log with DWARF). Defaults to the corpus dumps in ../shared/corpus.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO.parent / "shared" / "corpus"

CHILD = r"""
import sys, time
t0 = time.perf_counter()
import kdnb
t1 = time.perf_counter()
d = kdnb.open(sys.argv[1])
k = d.kernel
init = k.symbol("init_task")  # symbols load on first need
t2 = time.perf_counter()
ts = k.type("struct task_struct")
t3 = time.perf_counter()
lay = k.layout(ts, ["pid", "comm", "__state" if ts.has_member("__state") else "state"])
walk = k.list_walk(init + ts.offsetof("tasks"), ts, "tasks")
n = 0
for addr in walk:
    try:
        lay.unpack(k.read(addr, lay.size))
    except kdnb.KdnbError:
        pass
    n += 1
t4 = time.perf_counter()
df = k.symbols
t5 = time.perf_counter()
print(f"{t1-t0:.3f} {t2-t1:.3f} {t3-t2:.3f} {t4-t3:.3f} {t5-t4:.3f} {len(df)} {n}")
"""


def run(dump: Path, cache: str) -> list[str]:
    env = dict(os.environ, KDNB_CACHE_DIR=cache, PYTHONPATH=str(REPO))
    out = subprocess.run([sys.executable, "-c", CHILD, str(dump)], env=env, check=True,
                         capture_output=True, text=True).stdout.split()
    return out


def main(argv: list[str]) -> None:
    dumps = [Path(a) for a in argv] or sorted(CORPUS.glob("*/vmcore.kdump-zlib"))
    if not dumps:
        sys.exit(f"no dumps given and no corpus at {CORPUS}")
    print(f"{'dump':40} {'run':5} {'import':>7} {'open+sym':>9} {'BTF+type':>9} {'tasks':>7} "
          f"{'symbols df':>11} {'total':>7}  nsyms ntasks")
    for dump in dumps:
        with tempfile.TemporaryDirectory() as cache:
            for label in ("cold", "warm"):
                imp, op, ty, tasks, sdf, nsyms, ntasks = run(dump, cache)
                total = sum(float(x) for x in (imp, op, ty, tasks))
                name = f"{dump.parent.name}/{dump.name}"
                print(f"{name:40} {label:5} {imp:>7} {op:>9} {ty:>9} {tasks:>7} {sdf:>11} "
                      f"{total:7.3f}  {nsyms} {ntasks}")
    print("total = import + open/symbols + BTF/first type + task walk (symbols DataFrame not included);")
    print("open+sym is VMCOREINFO's kallsyms tables (tier 1) or a scan of the kernel image (tier 2, < 6.0)")


if __name__ == "__main__":
    main(sys.argv[1:])
