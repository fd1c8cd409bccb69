"""`kdnb coredump-check [--pid PID] [--root DIR] [--dump VMCORE] [--json]`: why a crashing
process leaves (or would leave) no core."""

from __future__ import annotations

import argparse


def cmd_coredump_check(args: argparse.Namespace) -> int:
    """Run the core-dump checks and print the table or JSON; exit 0 will dump, 1 at risk,
    2 no core."""
    from .coredump_check import coredump_check

    dump = None
    if args.dump:
        from ..api import open as open_dump

        dump = open_dump(args.dump)
    result = coredump_check(pid=args.pid, root=args.root, dump=dump)
    print(result.to_json() if args.json else result)
    return result.exit_code


def add_subparser(subparsers: "argparse._SubParsersAction") -> argparse.ArgumentParser:
    """Add `coredump-check` to the `kdnb` command's subparsers."""
    p = subparsers.add_parser(
        "coredump-check", help="why a crashing process leaves no core (exit 0 will dump, "
        "1 at risk, 2 no core)",
        description="Check RLIMIT_CORE/RLIMIT_FSIZE, core_pattern and its pipe handler "
                    "(systemd-coredump, apport), core_pipe_limit, suid_dumpable and set-uid "
                    "binaries, coredump_filter, CONFIG_COREDUMP, the target directory and the "
                    "kernel's coredump messages, for a running process, for what this shell "
                    "starts, or from a vmcore's kernel memory.")
    p.add_argument("--pid", type=int, help="a running process (or, with --dump, a task in the dump)")
    p.add_argument("--root", default="/", help="check a file tree laid out like / instead of "
                   "this machine")
    p.add_argument("--dump", metavar="VMCORE", help="read the settings from a kernel dump")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=cmd_coredump_check)
    return p
