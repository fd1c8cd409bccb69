"""The crash-style subcommands: `kdnb ps`, `bt`, `log`, `runq`, `kmem -s/-v`, `mod`, `locks`, `mount`,
`wq`, `whatis`, `shell`. Each takes the dump path after its own arguments (default: the first
bundled sample), prints an aligned table (or `--json` / `--csv`), and reports a bad input as one
line with a non-zero exit status (kdnb.cli.run_command)."""

from __future__ import annotations

import argparse
import os
from typing import Any, Callable

import pandas as pd

from ..errors import KdnbError
from .output import emit, table

LEVELS = ["emerg", "alert", "crit", "err", "warning", "notice", "info", "debug"]


def _open(path: str | None) -> Any:
    from ..api import open as open_dump
    from ..cli import _dump_path

    return open_dump(_dump_path(path))


def _split_dump(values: list[str]) -> tuple[list[str], str | None]:
    """Positional words: the last one is the dump when it names an existing file."""
    if values and os.path.exists(values[-1]):
        return values[:-1], values[-1]
    return values, None


def _int(text: str, what: str) -> int:
    try:
        return int(text, 0)
    except ValueError:
        raise KdnbError(f"{what} must be a number, not {text!r}") from None


# -- the commands ---------------------------------------------------------------------------
def cmd_ps(d: Any, args: argparse.Namespace) -> None:
    t = d.tasks
    if args.state:
        t = t[t["state"].astype(str).isin(list(args.state))]
    out = pd.DataFrame({"": [">" if c else "" for c in t["is_current"]], "pid": t["pid"], "ppid": t["ppid"],
                        "cpu": t["cpu"], "task": t["address"], "st": t["state"].astype(str),
                        "rss": t["rss_pages"] * d.page_size, "comm": t["comm"].astype(str)})
    emit(out, args)


def _print_groups(stacks: pd.DataFrame) -> None:
    for g in stacks.itertuples():
        states = ",".join(sorted(set(s for s in g.states if s)))
        pids = ",".join(str(p) for p in g.pids[:12]) + (f",... ({g.count})" if g.count > 12 else "")
        comms = ",".join(sorted(set(c for c in g.comms if c)))[:80]
        print(f"== {g.count} task(s) [{states}] in {g.top}: pids {pids} ({comms})")
        for i, line in enumerate(str(g.chain).splitlines()):
            print(f"  #{i:<2} {line}")
        print()


def cmd_bt(d: Any, args: argparse.Namespace) -> None:
    if not args.pids and not args.all:
        emit(d.stacks, args, _print_groups)
        return
    frames = d.backtraces(states="all")
    if args.pids:
        wanted = [_int(p, "a pid") for p in args.pids]
        missing = [p for p in wanted if not (frames["pid"] == p).any()]
        if missing:
            raise KdnbError(f"no task with pid {', '.join(map(str, missing))}")
        frames = frames[frames["pid"].isin(wanted)]
    cols = ["pid", "cpu", "comm", "state", "frame", "text", "kind"]

    def show(df: pd.DataFrame) -> None:
        for (pid, cpu), g in df.groupby(["pid", "cpu"], sort=False, dropna=False):
            first = g.iloc[0]
            where = f" on CPU {cpu}" if pd.notna(cpu) else ""
            print(f"PID: {pid}  COMMAND: {first['comm']}  STATE: {first['state']}{where}")
            for r in g.itertuples():
                mark = "" if r.kind == "normal" else f" <{r.kind}>"
                print(f"  #{int(r.frame):<2} {r.text}{mark}")
            print()
    emit(frames[cols], args, show)


def cmd_log(d: Any, args: argparse.Namespace) -> None:
    log = d.log
    if args.level:
        level = args.level if args.level.isdigit() else str(LEVELS.index(args.level)) \
            if args.level in LEVELS else None
        if level is None:
            raise KdnbError(f"unknown log level {args.level!r}: use 0-7 or {', '.join(LEVELS)}")
        log = log[log["level"] <= int(level)]
    if args.grep:
        log = log[log["text"].str.contains(args.grep, regex=False, na=False)]

    def show(df: pd.DataFrame) -> None:
        for r in df.itertuples():
            print(f"[{r.time.total_seconds():12.6f}] <{r.level_name}> {r.text}")
    emit(log[["seq", "time", "level", "level_name", "text"]], args, show)


def cmd_runq(d: Any, args: argparse.Namespace) -> None:
    rq = d.runq
    state = d.cpu_state

    def show(df: pd.DataFrame) -> None:
        for cpu, g in df.groupby("cpu", sort=True):
            s = state[state["cpu"] == cpu]
            ctx = f", {s['context'].iloc[0]} context" if len(s) and pd.notna(s["context"].iloc[0]) else ""
            panic = " (panic CPU)" if len(s) and bool(s["panic"].iloc[0]) else ""
            print(f"CPU {cpu}{panic}: nr_running {g['nr_running'].iloc[0]}{ctx}")
            for r in g.itertuples():
                role = "CURRENT" if r.current else "queued "
                waited = f"{r.waited.total_seconds():.3f}s" if pd.notna(r.waited) else "-"
                verb = "running" if r.current else "waiting"
                print(f"  {role} [{r.sched_class:>8}] prio {r.prio:>3} pid {r.pid:>6} {r.comm} "
                      f"({verb} {waited}) task {int(r.address):x}")
            print()
    emit(rq, args, show)


def cmd_slab(d: Any, args: argparse.Namespace) -> None:
    s = d.slab.sort_values("total_bytes", ascending=False)
    emit(s[["address", "name", "object_size", "active_objs", "num_objs", "num_slabs", "total_bytes"]], args)


def cmd_vmalloc(d: Any, args: argparse.Namespace) -> None:
    emit(d.vmap_areas[["start", "end", "size", "kind", "caller", "nr_pages", "pid", "comm"]], args)


def cmd_mod(d: Any, args: argparse.Namespace) -> None:
    emit(d.modules[["address", "name", "base", "size", "state", "refcount", "taints"]], args)


def cmd_locks(d: Any, args: argparse.Namespace) -> None:
    from ..views.locks import wait_for_cycles

    locks = d.locks
    cols = ["kind", "address", "belongs_to", "pid", "comm", "state", "waited", "function",
            "owner_pid", "owner_comm", "owner_state", "detail"]

    def show(df: pd.DataFrame) -> None:
        table(df)
        for cycle in wait_for_cycles(locks):
            print("DEADLOCK: " + " -> ".join(f"pid {pid} waits {lock:#x}" for pid, lock in cycle))
    emit(locks[cols], args, show)


def cmd_mount(d: Any, args: argparse.Namespace) -> None:
    m = d.mounts
    if not args.all:
        m = m[~m["internal"]]
    emit(m[["address", "superblock", "fstype", "device", "path", "frozen", "frozen_by", "read_only"]], args)


def cmd_wq(d: Any, args: argparse.Namespace) -> None:
    emit(d.workqueues, args)


def cmd_whatis(d: Any, args: argparse.Namespace) -> None:
    w = d.whatis(_int(args.address, "ADDR"))
    if getattr(args, "json", False) or getattr(args, "csv", False):
        emit(w.frame(), args)
    else:
        print(w)


def cmd_shell(d: Any, args: argparse.Namespace) -> None:
    try:
        import IPython
    except ImportError:
        raise KdnbError("kdnb shell needs IPython (python3 -m pip install ipython)") from None
    import kdnb

    print(f"d = kdnb.open({d.path!r})  # {d!r}")
    if not args.dry_run:
        IPython.start_ipython(argv=[], user_ns={"d": d, "kdnb": kdnb}, display_banner=False)


# -- the parser ---------------------------------------------------------------------------------
def _runner(cmd: Callable[[Any, argparse.Namespace], None], split: str | None = None
            ) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        if split is not None:
            words, args.vmcore = _split_dump(getattr(args, split))
            setattr(args, split, words)
        with _open(args.vmcore) as d:
            cmd(d, args)
        return 0
    return run


def add_subparser(sub: argparse._SubParsersAction) -> None:
    """Add the crash-style subcommands to the `kdnb` parser (after the system-state ones:
    `kmem -s` joins their `kmem`)."""
    def command(name: str, help_: str, cmd: Callable, formats: bool = True, vmcore: bool = True
                ) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_)
        if vmcore:
            p.add_argument("vmcore", nargs="?", help="dump file (default: the first bundled sample)")
        if formats:
            g = p.add_mutually_exclusive_group()
            g.add_argument("--json", action="store_true", help="JSON records")
            g.add_argument("--csv", action="store_true", help="CSV")
        p.set_defaults(func=_runner(cmd))
        return p

    ps = command("ps", "every task: pid, ppid, cpu, task, state, rss, comm (> marks running ones)", cmd_ps)
    ps.add_argument("-s", "--state", help="only these states (letters, e.g. DR)")
    bt = command("bt", "stacks: grouped by identical call chain (default), -a every task, or PIDs",
                 cmd_bt, vmcore=False)
    bt.add_argument("-a", "--all", action="store_true", help="every task's stack, one by one")
    bt.add_argument("pids", nargs="*", metavar="PID [VMCORE]", help="these tasks only; then the dump")
    bt.set_defaults(func=_runner(cmd_bt, split="pids"))
    log = command("log", "the kernel log; -l LEVEL (0-7 or name), -g TEXT", cmd_log)
    log.add_argument("-l", "--level", help="most verbose level to show (0-7 or emerg..debug)")
    log.add_argument("-g", "--grep", help="only lines containing TEXT")
    command("runq", "each CPU's run queue: the current task and every runnable one by class", cmd_runq)
    command("mod", "loaded modules", cmd_mod)
    command("locks", "what blocked tasks wait on, owners, and wait-for cycles (deadlocks)", cmd_locks)
    mount = command("mount", "mounted filesystems and their freeze state", cmd_mount)
    mount.add_argument("-a", "--all", action="store_true", help="kernel-internal mounts too")
    command("wq", "workqueues: running, scheduled and pending work items, stalled pools", cmd_wq)
    whatis = command("whatis", "what an address is: symbol, slab object, page, stack, vmalloc", cmd_whatis,
                     vmcore=False)
    whatis.add_argument("address", metavar="ADDR", help="a kernel address (hex with 0x, or decimal)")
    whatis.add_argument("vmcore", nargs="?", help="dump file (default: the first bundled sample)")
    shell = command("shell", "IPython with d (the dump) and kdnb loaded", cmd_shell, formats=False)
    shell.add_argument("--dry-run", action="store_true", help=argparse.SUPPRESS)
    _kmem_slab(sub)


def _kmem_slab(sub: argparse._SubParsersAction) -> None:
    """`kdnb kmem -s` (slab caches) and `-v` (vmalloc areas), on the system-state `kmem` when it exists."""
    kmem = sub.choices.get("kmem")
    if kmem is None:
        kmem = sub.add_parser("kmem", help="memory at the crash; -s slab caches")
        kmem.add_argument("vmcore", nargs="?", help="dump file (default: the first bundled sample)")
    other = kmem.get_default("func")
    kmem.add_argument("-s", dest="slab", action="store_true", help="slab caches (crash kmem -s)")
    kmem.add_argument("-v", dest="vmalloc", action="store_true",
                      help="vmalloc areas: size, kind, caller, whose stack (crash kmem -v)")
    if "json" not in {a.dest for a in kmem._actions}:
        kmem.add_argument("--json", action="store_true", help="JSON records (with -s)")
        kmem.add_argument("--csv", action="store_true", help="CSV (with -s)")
    slab, vmalloc = _runner(cmd_slab), _runner(cmd_vmalloc)

    def run(args: argparse.Namespace) -> int:
        if args.vmalloc:
            return vmalloc(args)
        if args.slab or other is None:
            return slab(args)
        return other(args)
    kmem.set_defaults(func=run)
