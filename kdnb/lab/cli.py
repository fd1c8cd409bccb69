"""`kdnb lab ...` subcommands. The main CLI wires them in with:

    from .lab.cli import add_subparser
    add_subparser(sub)

Each leaf parser sets ``func`` (called with the parsed namespace, returns an exit code).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any


def cmd_list(args: argparse.Namespace) -> int:
    """Print the scenarios, formats and kernel series the lab knows."""
    from .formats import FORMATS
    from .kernels import SERIES
    from .scenarios import SCENARIOS

    width = max(len(n) for n in SCENARIOS)
    print("scenarios:")
    for s in SCENARIOS.values():
        print(f"  {s.name:<{width}}  {s.description}")
    print(f"  {'scale':<{width}}  --procs/--threads/--files/--log-lines: a production-size guest")
    print("formats:  " + ", ".join(FORMATS))
    print("kernels:  " + ", ".join(f"{s.name} ({s.suite}, default dump level {s.dump_level})"
                                   for s in SERIES.values()))
    return 0


def cmd_make(args: argparse.Namespace) -> int:
    """Run one scenario and print where the dump went."""
    from .run import make

    scenario = args.scenario
    if scenario == "scale":
        from .scale import scenario as scale_scenario
        scenario = scale_scenario(procs=args.procs, threads=args.threads, files=args.files,
                                  log_lines=args.log_lines)
    path = make(scenario, kernel=args.kernel, formats=args.format, memory=args.memory,
                out_dir=args.output, dump_level=args.dump_level, cpu=args.cpu,
                cache_dir=args.cache, keep_work=args.keep_work, vmcoreinfo=not args.no_vmcoreinfo)
    print(path)
    return 0


def cmd_dbg(args: argparse.Namespace) -> int:
    """Fetch (once) the DWARF vmlinux of each release from its -dbg package; print the paths."""
    from .debuginfo import debug_vmlinux
    from .packages import DEFAULT_CACHE

    for release in args.release:
        print(debug_vmlinux(release, args.cache or DEFAULT_CACHE))
    return 0


def add_subparser(subparsers: Any) -> argparse.ArgumentParser:
    """Add `lab make`, `lab list` and `lab dbg` to an argparse subparsers object; returns the `lab` parser."""
    from .scenarios import SCENARIOS

    lab = subparsers.add_parser("lab", help="make real crash dumps of Debian kernels in QEMU",
                                description="Make real crash dumps of Debian kernels in QEMU, "
                                            "each with its ground truth.")
    sub = lab.add_subparsers(dest="lab_command", required=True)
    ls = sub.add_parser("list", help="scenarios, formats and kernels")
    ls.set_defaults(func=cmd_list)
    mk = sub.add_parser("make", help="crash a guest and capture its dump")
    mk.add_argument("scenario", choices=[*SCENARIOS, "scale"], metavar="SCENARIO",
                    help="one of: " + ", ".join([*SCENARIOS, "scale"]))
    for knob, default, what in (("procs", 5000, "sleeping processes"),
                                ("threads", 1, "threads per process (main thread included)"),
                                ("files", 0, "files held open in a tmpfs"),
                                ("log-lines", 0, "kernel log lines (log_buf_len sized to keep them)")):
        mk.add_argument(f"--{knob}", type=int, default=default,
                        help=f"scenario scale: {what} (default {default})")
    mk.add_argument("--kernel", default="6.1",
                    help="5.10 (bullseye), 6.1, 6.12 (bookworm), 7.2 (sid), or a full release "
                         "of one of these series")
    mk.add_argument("--format", default=None,
                    help="comma-separated: kdump-zlib (default), kdump-lzo, kdump-raw, "
                         "kdump-zlib-flat (makedumpfile -F), elf-d31, elf, elf32; for scenario "
                         "idle: qemu-elf (default), qemu-kdump-zlib")
    mk.add_argument("--memory", default="512M", help="guest memory (default 512M)")
    mk.add_argument("--dump-level", type=int, default=None,
                    help="makedumpfile -d (default 31 on 5.10 and 6.1, 17 on 6.12, 23 on 7.2)")
    mk.add_argument("--no-vmcoreinfo", action="store_true",
                    help="scenario idle: no -device vmcoreinfo, so QEMU's dump has no "
                         "VMCOREINFO note (for testing symbol discovery without it)")
    mk.add_argument("--cpu", choices=["la57"], default=None, help="la57: 5-level paging guest")
    mk.add_argument("-o", "--output", default=None, help="output folder (default ./k<series>-<scenario>)")
    mk.add_argument("--cache", default=None, help="package cache (default ~/.cache/kdnb/lab)")
    mk.add_argument("--keep-work", action="store_true", help="keep the temporary work folder")
    mk.set_defaults(func=cmd_make)
    dbg = sub.add_parser("dbg", help="fetch a kernel's DWARF vmlinux (its -dbg package)")
    dbg.add_argument("release", nargs="+", help="full release, e.g. 6.1.0-56-cloud-amd64")
    dbg.add_argument("--cache", default=None, help="package cache (default ~/.cache/kdnb/lab)")
    dbg.set_defaults(func=cmd_dbg)
    return lab


def main(argv: Sequence[str] | None = None) -> int:
    """Standalone entry point: `python -m kdnb.lab.cli make oops`."""
    from ..errors import KdnbError

    parser = argparse.ArgumentParser(prog="kdnb")
    add_subparser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["lab", *(argv if argv is not None else sys.argv[1:])])
    try:
        return args.func(args)
    except KdnbError as exc:
        print(f"kdnb: {exc}", file=sys.stderr)
        return 3


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
