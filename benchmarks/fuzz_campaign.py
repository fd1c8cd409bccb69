"""A long fuzz campaign on the data/ samples: structure-aware mutations at container and
kernel-structure level, each case in a child process with a time and memory limit.

    python3 benchmarks/fuzz_campaign.py --seed 7 --count 2000 --jobs 2

Prints the outcome classes (per case and per entry point) and one line per distinct failure
(outcome, exception type, innermost kdnb frame) with its count and the mutation of its first case.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.fuzz import campaign  # noqa: E402
from tests.fuzz.runner import Case, outcome_table, signature_table  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    """Run the campaign; exit 1 when any case had an untyped exception, a hang, OOM or a crash."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--count", type=int, default=500)
    p.add_argument("--first", type=int, default=0, help="number of the first case (to resume)")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--timeout", type=float, default=20.0, help="seconds per case")
    p.add_argument("--elf-copies", type=int, default=1, help="kdump samples also re-encoded as ELF")
    p.add_argument("--workdir", type=Path, default=None, help="scratch directory (default: a temp dir)")
    p.add_argument("--verbose", action="store_true", help="one line per case")
    args = p.parse_args(argv)
    t0 = time.monotonic()
    counts: Counter = Counter()

    def progress(case: Case) -> None:
        counts[case.outcome] += 1
        if args.verbose or case.bad_steps():
            bad = "; ".join(f"{s.step}: {s.outcome} {s.exc_type} {s.where}" for s in case.bad_steps())
            print(f"[{sum(counts.values())}/{args.count} {time.monotonic() - t0:.0f}s] case {case.number} "
                  f"{case.outcome} {case.base}: {case.description} {bad}", flush=True)

    with tempfile.TemporaryDirectory(prefix="kdnb-fuzz-", dir=args.workdir) as tmp:
        cases = campaign.run(Path(tmp), args.seed, args.count, args.jobs, args.timeout, args.first,
                             progress, args.elf_copies)
    print(f"\nseed {args.seed}, cases {args.first}..{args.first + args.count - 1}, "
          f"{time.monotonic() - t0:.0f} s\n")
    print(outcome_table(cases))
    print("\ndistinct failures:")
    print(signature_table(cases))
    return 1 if any(c.bad_steps() for c in cases) else 0


if __name__ == "__main__":
    sys.exit(main())
