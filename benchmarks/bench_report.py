"""Benchmark the front end: `kdnb report` on each bundled sample, and each notebook's run time.

    python benchmarks/bench_report.py [--notebooks] [DUMP ...]

Prints, per dump: the report's total time (goal < 30 s), split into notebook execution and
nbconvert rendering, and its size; with --notebooks, each notebook's papermill run time.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dumps", nargs="*", help="dumps (default: every bundled sample)")
    parser.add_argument("--notebooks", action="store_true", help="also time notebooks/0*.ipynb")
    args = parser.parse_args()

    from kdnb.ui.paths import sample_paths
    from kdnb.ui.report import make_report

    dumps = args.dumps or sample_paths()
    if not dumps:
        print("no dump given and no bundled sample found")
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        for dump in dumps:
            rep = make_report(dump, Path(tmp) / "report.html")
            status = "ok" if rep.seconds < 10 else "SLOW (goal < 10 s)"
            print(f"report   {Path(dump).parent.name:<24} {rep.seconds:6.1f} s  (execute "
                  f"{rep.execute_seconds:.1f} s, render {rep.render_seconds:.1f} s, "
                  f"{rep.size / 1024:.0f} KiB)  {status}")
            if not args.notebooks:
                continue
            import papermill

            for nb in sorted((REPO / "notebooks").glob("0*.ipynb")):
                t0 = time.perf_counter()
                papermill.execute_notebook(str(nb), str(Path(tmp) / nb.name),
                                           parameters={"dump_path": str(Path(dump).resolve())},
                                           kernel_name="python3", progress_bar=False,
                                           cwd=str(nb.parent))
                print(f"notebook {Path(dump).parent.name:<24} {time.perf_counter() - t0:6.1f} s  {nb.stem}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
