"""`kdnb validate VMCORE [--json]`: the capture-validation table; exit 0/1/2/3."""

from __future__ import annotations

import argparse
import sys

EXIT_NOT_A_DUMP = 3


def cmd_validate(args: argparse.Namespace) -> int:
    """Validate one dump (or the parts of a split set) and print the table or JSON."""
    from ..dump.detect import special_file
    from ..errors import KdnbError
    from .validate import Validation, validate, validate_path

    paths = list(args.vmcore)
    for path in paths:  # a FIFO or device would block the readers: refuse it from its stat
        what = special_file(path)
        if what:
            print(f"kdnb: {path}: {what}, not a dump file", file=sys.stderr)
            return EXIT_NOT_A_DUMP
    if len(paths) == 1:
        result: Validation = validate_path(paths[0])
    else:
        from ..api import open as open_dump

        try:
            dump = open_dump(paths)
        except KdnbError as exc:
            print(f"kdnb: {exc}", file=sys.stderr)
            return EXIT_NOT_A_DUMP
        try:
            result = validate(dump)
        finally:
            dump.close()
    if args.json:
        print(result.to_json())
    else:
        print(result)
        if result.seconds is not None:
            print(f"\n(validated in {result.seconds:.2f} s)")
    return result.exit_code


def add_subparser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add `validate` to the `kdnb` command's subparsers."""
    p = subparsers.add_parser(
        "validate", help="is this dump complete and usable? (exit 0 usable, 1 degraded, "
        "2 unusable, 3 not a dump)",
        description="Check a crash dump: format, truncation, notes, VMCOREINFO, coverage, "
                    "symbols, types, log and in-use kernel memory. Exit status: 0 usable, "
                    "1 degraded, 2 unusable, 3 not a dump.")
    p.add_argument("vmcore", nargs="+", help="dump file (several for a split dump set)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=cmd_validate)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run `validate` standalone (python -m kdnb.analysis.validate_cli VMCORE)."""
    parser = argparse.ArgumentParser(prog="kdnb")
    add_subparser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["validate", *(sys.argv[1:] if argv is None else argv)])
    from ..cli import run_command

    return run_command(args.func, args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
