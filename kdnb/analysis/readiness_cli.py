"""`kdnb readiness [--root DIR] [--json]`: will this machine capture the next crash?"""

from __future__ import annotations

import argparse
import sys


def cmd_readiness(args: argparse.Namespace) -> int:
    """Run the readiness checks and print the table or JSON; exit 0 ready, 1 at risk, 2 not ready."""
    from .readiness import readiness

    result = readiness(args.root)
    print(result.to_json() if args.json else result)
    return result.exit_code


def add_subparser(subparsers: "argparse._SubParsersAction") -> argparse.ArgumentParser:
    """Add `readiness` to the `kdnb` command's subparsers."""
    p = subparsers.add_parser(
        "readiness", help="kdump and core-dump readiness of this machine (exit 0 ready, "
        "1 at risk, 2 not ready)",
        description="Check kernel config, crashkernel= reservation, loaded capture kernel, "
                    "capture service, makedumpfile version, dump target space and process "
                    "core-dump settings.")
    p.add_argument("--root", default="/", help="check a file tree laid out like / (or a lab "
                   "snapshot folder) instead of this machine")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=cmd_readiness)
    return p


def main(argv: "list[str] | None" = None) -> int:
    """Run `readiness` standalone (python -m kdnb.analysis.readiness_cli)."""
    parser = argparse.ArgumentParser(prog="kdnb")
    add_subparser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["readiness", *(sys.argv[1:] if argv is None else argv)])
    from ..cli import run_command

    return run_command(args.func, args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
