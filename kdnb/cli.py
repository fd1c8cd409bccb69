"""The `kdnb` command."""

from __future__ import annotations

import argparse
import os
import sys
import traceback
import warnings
from typing import Callable, Sequence, TextIO

from .errors import KdnbError

EXIT_ERROR = 3  # a KdnbError: not a dump, or a dump too damaged for the command
EXIT_INTERNAL = 4  # an unexpected exception: a kdnb bug
EXIT_INTERRUPTED = 130
OWN_COMMANDS = ("info", "why", "report")  # defined here: they need no other module's parser


def _dump_path(arg: str | None) -> str:
    """The dump named on the command line, or the first bundled sample."""
    if arg:
        return arg
    from .samples import samples

    table = samples()
    if len(table) == 0:
        raise KdnbError("no VMCORE given and no bundled sample found in data/")
    return str(table.iloc[0]["path"])


def cmd_info(args: argparse.Namespace) -> int:
    """Print what the dump is: format, header facts, CPUs and memory coverage."""
    from .api import open as open_dump

    with open_dump(_dump_path(args.vmcore)) as d:
        if d.format in ("process-core", "minidump"):
            facts = [*d.facts(), ("process", f"{d.process['comm']} pid {d.process['pid']}"
                                  + (f": {d.process['args']}" if d.process["args"] else "")),
                     ("signal", str(d.signal)), ("threads", str(len(d.threads)))]
            for label, value in facts:
                print(f"{label + ':':<16}{value}")
            return 0
        h = d.header
        print(f"file:           {d.path}")
        print(f"format:         {d.format}  (page size {d.page_size})")
        print(f"release:        {d.vmcoreinfo.get('OSRELEASE', '?')}")
        for key in ("compression", "dump_level", "header_version", "filtered", "phys_base"):
            if key in h and h[key] is not None:
                print(f"{key + ':':<16}{h[key]}")
        seg = d.segments
        print(f"truncated:      {_truncation(h, seg, d.page_size)}")
        if "incomplete" in h:
            print("incomplete:     " + ("SET: the capture tool stopped before the end (the dump is "
                                        "incomplete)" if h["incomplete"] else
                                        "not set (the capture tool did not flag the dump incomplete)"))
        for problem in h.get("problems", []):
            print(f"problem:        {problem}")
        by_state = seg.groupby("state", observed=True)["pages"].sum()
        print("pages:          " + ", ".join(f"{k} {int(v)}" for k, v in by_state.items()))
        print(f"cpus:           {len(d.cpus)}")
        if len(d.cpus):
            print(d.cpus[["cpu", "pid", "rip", "rsp"]].to_string(
                index=False, formatters={"rip": "{:#x}".format, "rsp": "{:#x}".format}))
    return 0


def _truncation(header: dict, seg, page_size: int) -> str:
    """'no', or how much of what the headers describe lies past the end of the file."""
    from .ui.format import human_size

    lost = int(seg.loc[seg["state"] == "truncated", "pages"].sum()) if len(seg) else 0
    if lost:
        return (f"YES: {lost} pages ({human_size(lost * page_size)}) lie past the end of the file "
                f"({header.get('file_size', '?')} bytes)")
    if header.get("truncated"):
        return f"YES: {header['truncated']}" if header["truncated"] is not True else "YES"
    return "no"


def cmd_why(args: argparse.Namespace) -> int:
    """Print the panic root cause."""
    import json

    from .api import open as open_dump

    with open_dump(_dump_path(args.vmcore)) as d:
        rc = d.root_cause()
        print(json.dumps(rc.to_dict(), indent=2, default=str) if args.json else rc)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """Write the offline HTML report (nbclient + nbconvert; a process core's straight from the
    Core), with progress lines, and its time."""
    def say(line: str) -> None:
        print(f"kdnb report: {line}", file=sys.stderr, flush=True)

    path = _dump_path(args.vmcore)
    from .process.source import looks_like_process_core

    if os.path.isfile(path) and looks_like_process_core(path):
        from .ui.process_report import make_process_report

        rep = make_process_report(path, args.output, progress=say, journal=args.journal)
    else:
        from .ui.report import make_report

        rep = make_report(path, args.output, include_memory=args.include_memory, progress=say)
    print(f"report: {rep}")
    return 0


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The argument parser with every subcommand; when `command` is one of OWN_COMMANDS, with
    those only (the other modules' subcommands, some of them heavy to import, are not needed)."""
    from . import __version__

    parser = argparse.ArgumentParser(prog="kdnb", description="Linux kernel crash dump post-mortem kit")
    parser.add_argument("--version", action="version", version=f"kdnb {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    info = sub.add_parser("info", help="what a dump is: format, header, CPUs, coverage")
    info.add_argument("vmcore", nargs="?", help="dump file (default: the first bundled sample)")
    info.set_defaults(func=cmd_info)
    if command not in OWN_COMMANDS:
        _add_module_subparsers(sub)
    why = sub.add_parser("why", help="why the kernel died: category, culprit, evidence")
    why.add_argument("vmcore", nargs="?", help="dump file (default: the first bundled sample)")
    why.add_argument("--json", action="store_true", help="machine-readable output")
    why.set_defaults(func=cmd_why)
    report = sub.add_parser("report", help="one offline HTML report on a dump")
    report.add_argument("vmcore", nargs="?", help="dump file (default: the first bundled sample)")
    report.add_argument("-o", "--output", default="report.html", help="HTML file to write")
    report.add_argument("--include-memory", action="store_true",
                        help="put raw memory bytes (each CPU's stack top) into the report")
    report.add_argument("--journal", metavar="FILE", help="a process core's systemd-coredump journal "
                        "entry (journalctl -o json COREDUMP_PID=PID > FILE)")
    report.set_defaults(func=cmd_report)
    return parser


def _add_module_subparsers(sub: argparse._SubParsersAction) -> None:
    """The subcommands other modules define."""
    from .analysis import readiness_cli, validate_cli
    from .lab import cli as lab_cli

    validate_cli.add_subparser(sub)
    readiness_cli.add_subparser(sub)
    from .analysis import coredump_cli
    coredump_cli.add_subparser(sub)
    lab_cli.add_subparser(sub)
    from .views import system_cli
    system_cli.add_subparser(sub)
    from . import crash_cli
    crash_cli.add_subparser(sub)  # after system_cli: `kmem -s` joins its `kmem`
    from .ui import notebook_cli
    notebook_cli.add_subparser(sub)
    from .fleet import fleet_cli
    fleet_cli.add_subparser(sub)


def _one_line(text: object) -> str:
    return "; ".join(part.strip() for part in str(text).splitlines() if part.strip())


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: TextIO | None = None, line: str | None = None) -> None:
    """warnings.showwarning for the command line: `kdnb: warning: <message>`, no source path."""
    print(f"kdnb: warning: {_one_line(message)}", file=file or sys.stderr)


def run_command(func: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Run one subcommand: warnings as one line each, a KdnbError as one line and exit status
    EXIT_ERROR, an unexpected exception as one line naming where it happened and exit status
    EXIT_INTERNAL (with KDNB_DEBUG=1 the traceback is shown instead)."""
    saved = warnings.showwarning
    warnings.showwarning = _show_warning
    try:
        return func(args)
    except KdnbError as exc:
        print(f"kdnb: {_one_line(exc)}", file=sys.stderr)
        return EXIT_ERROR
    except BrokenPipeError:  # output piped into head & co.
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("kdnb: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - a bug: still one line, not a traceback
        if os.environ.get("KDNB_DEBUG"):
            raise
        frame = traceback.extract_tb(exc.__traceback__)[-1]
        print(f"kdnb: internal error: {type(exc).__name__}: {_one_line(exc)} "
              f"(at {os.path.basename(frame.filename)}:{frame.lineno}; KDNB_DEBUG=1 shows the "
              "traceback)", file=sys.stderr)
        return EXIT_INTERNAL
    finally:
        warnings.showwarning = saved


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `kdnb` console script."""
    saved = warnings.showwarning
    warnings.showwarning = _show_warning  # also for warnings while the parser is built
    try:
        argv = sys.argv[1:] if argv is None else list(argv)
        args = build_parser(argv[0] if argv else None).parse_args(argv)
    finally:
        warnings.showwarning = saved
    return run_command(args.func, args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
