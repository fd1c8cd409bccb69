"""The system-state commands: `kdnb kmem -i`, `kdnb vm PID`, `kdnb files PID`, `kdnb dev`,
`kdnb net`, `kdnb irq`, `kdnb timer`, `kdnb sysctl` (crash's names, kdnb's views): each prints
a view as a table, addresses in hex, and says when the view is incomplete."""

from __future__ import annotations

import argparse
from typing import Callable

import pandas as pd

HEX_COLUMNS = ("address", "start", "end", "file", "start_pfn", "queue", "disk", "sock", "request",
               "mapping")


def _print(df: pd.DataFrame, index: bool = False) -> None:
    """A frame as text, addresses in hex, the view's incompleteness as a last line."""
    fmt = {c: (lambda v: "-" if pd.isna(v) else f"{int(v):#x}") for c in HEX_COLUMNS if c in df}
    with pd.option_context("display.max_rows", None, "display.max_columns", None, "display.width", 200):
        print(df.to_string(index=index, formatters=fmt) if len(df) else "(none)")
    gap = df.attrs.get("kdnb", {}).get("incomplete")
    if gap:
        print(f"incomplete: {gap['reason']}")


def _with_dump(show: Callable[..., None]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        from ..api import open as open_dump

        with open_dump(args.vmcore or _first_sample()) as d:
            show(d, args)
        return 0
    return run


def _first_sample() -> str:
    from ..errors import KdnbError
    from ..samples import samples

    table = samples()
    if not len(table):
        raise KdnbError("no VMCORE given and no bundled sample found in data/")
    return str(table.iloc[0]["path"])


def _kmem(d, args: argparse.Namespace) -> None:
    if args.zones:
        _print(d.zones)
    elif args.free:
        _print(d.buddyinfo)
    else:
        mi = d.meminfo.copy()
        mi["MiB"] = (mi["bytes"] / 2**20).round(1)
        total = mi.loc["total", "pages"]
        mi["% of total"] = (100 * mi["pages"] / total).round(1) if total else pd.NA
        _print(mi[["proc", "pages", "MiB", "% of total"]], index=True)


def _vm(d, args: argparse.Namespace) -> None:
    _print(d.vmas(args.pid).drop(columns=["pid", "comm"]))


def _files(d, args: argparse.Namespace) -> None:
    _print(d.files(args.pid).drop(columns=["pid"]))


def _dev(d, args: argparse.Namespace) -> None:
    if not args.disks:
        _print(d.block)
        return
    from .inflight_io import inflight_by_disk
    io = d.inflight_io
    _print(inflight_by_disk(d.block, io))
    if len(io):
        print()
        _print(io.drop(columns=["queue", "task"]).rename(columns={"disk": "name"}))


def _net(d, args: argparse.Namespace) -> None:
    _print(d.sockets.drop(columns=["socket"]) if args.sockets else d.net)


def _irq(d, args: argparse.Namespace) -> None:
    _print(d.softirqs if args.softirqs else d.irqs)


def _timer(d, args: argparse.Namespace) -> None:
    t = d.timers
    _print(t[t["kind"] == "hrtimer"] if args.hrtimers else t)


def _sysctl(d, args: argparse.Namespace) -> None:
    print(f"cmdline: {d.cmdline}")
    _print(d.sysctl[["name", "value"]])


def add_subparser(sub: argparse._SubParsersAction) -> None:
    """Add the system-state subcommands to the `kdnb` parser."""
    def command(name: str, help_: str, show: Callable[..., None], pid: bool = False) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_)
        if pid:
            p.add_argument("pid", type=int, help="process id")
        p.add_argument("vmcore", nargs="?", help="dump file (default: the first bundled sample)")
        p.set_defaults(func=_with_dump(show))
        return p

    kmem = command("kmem", "memory at the crash: -i counters (default), -z zones, -f free blocks", _kmem)
    kmem.add_argument("-i", dest="info", action="store_true", help="memory counters (/proc/meminfo)")
    kmem.add_argument("-z", dest="zones", action="store_true", help="zones of each node (/proc/zoneinfo)")
    kmem.add_argument("-f", dest="free", action="store_true", help="free blocks by order (/proc/buddyinfo)")
    command("vm", "a process's memory map (/proc/PID/maps)", _vm, pid=True)
    command("files", "a process's open files (/proc/PID/fd)", _files, pid=True)
    dev = command("dev", "disks and partitions (/proc/partitions); -d: requests in flight", _dev)
    dev.add_argument("-d", dest="disks", action="store_true",
                     help="per disk the requests in flight (reads, writes, oldest age), then each one")
    net = command("net", "network interfaces with addresses and counters; -s: open sockets", _net)
    net.add_argument("-s", dest="sockets", action="store_true", help="sockets of the tasks' open files")
    irq = command("irq", "interrupts per CPU; -s: softirqs", _irq)
    irq.add_argument("-s", dest="softirqs", action="store_true", help="softirq counts per CPU")
    timer = command("timer", "pending timers per CPU, due relative to the crash; -r: hrtimers only", _timer)
    timer.add_argument("-r", dest="hrtimers", action="store_true", help="hrtimers only")
    command("sysctl", "the kernel command line and the crash-relevant sysctls", _sysctl)
