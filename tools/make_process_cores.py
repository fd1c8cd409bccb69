"""Build data/cores: real process cores of data/cores/crashers.c, each with
gdb's view of it as ground truth.

    sudo python3 tools/make_process_cores.py [--out DIR] [--only SCENARIO ...]

The program is linked statically (the cores then need no libraries to be understood) and run
once per scenario from a temporary folder with RLIMIT_CORE unlimited and RLIMIT_STACK 256 KiB
(a small stack keeps the stack-overflow core small). As root the kernel writes the cores: the
script points /proc/sys/kernel/core_pattern at the temporary folder and restores it afterwards.
Without root (or when core_pattern cannot be written) gdb runs the program and `gcore`s it at
the fault instead; `made_by` in the ground truth says which. Scenario `gcore` is always a gdb
`gcore` of the live, waiting process. Cores are stored zstd-compressed (`core.NAME.zst`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import zstandard

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "data" / "cores"
CFLAGS = ["-static", "-O2", "-fno-omit-frame-pointer", "-fno-inline", "-fno-optimize-sibling-calls",
          "-pthread", "-Wall"]
STACK_LIMIT = 256 * 1024
# scenario -> (argv after the program, category kdnb's root cause should name)
SCENARIOS = {
    "null": (["null"], "null-deref"),
    "stack": (["stack"], "stack-overflow"),
    "abort": (["abort"], "abort"),
    "assert": (["assert"], "assertion"),
    "double-free": (["double-free"], "double-free"),
    "threads": (["threads"], "null-deref"),
    "sigbus": (["sigbus"], "bus-error"),
    "sigill": (["sigill"], "illegal-instruction"),
    "fpe": (["fpe"], "arithmetic"),
    "rodata": (["rodata"], "write-to-read-only"),
    "bad-call": (["bad-call"], "bad-jump"),
    "kill": (["wait"], "killed"),
    "gcore": (["wait"], "snapshot"),
}
FRAME = re.compile(r"^#(\d+)\s+(?:(0x[0-9a-f]+) in )?(\S+)")
THREAD = re.compile(r"^(\*)?\s*(\d+)\s+(?:LWP|Thread \S+ \(LWP) (\d+)")


def build(out: Path) -> Path:
    """Compile crashers.c into `out`/crashers (static)."""
    binary = out / "crashers"
    subprocess.run(["gcc", *CFLAGS, "-o", str(binary), str(out / "crashers.c")], check=True)
    return binary


def _limits() -> None:
    resource.setrlimit(resource.RLIMIT_CORE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    resource.setrlimit(resource.RLIMIT_STACK, (STACK_LIMIT, STACK_LIMIT))


def _start(binary: Path, args: list[str], work: Path) -> subprocess.Popen:
    return subprocess.Popen([str(binary), *args], cwd=work, preexec_fn=_limits,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)


def kernel_core(binary: Path, name: str, args: list[str], work: Path) -> Path:
    """Run one scenario and let the kernel write its core into `work` (core_pattern set)."""
    proc = _start(binary, args, work)
    if name == "kill":
        proc.stdout.readline()  # "ready PID"
        proc.send_signal(signal.SIGQUIT)
    proc.wait(timeout=30)
    cores = sorted(work.glob(f"core.{proc.pid}"))
    if proc.returncode >= 0 or not cores:
        raise RuntimeError(f"{name}: exit status {proc.returncode}, no core in {work}")
    return cores[0]


def gdb_core(binary: Path, name: str, args: list[str], work: Path) -> Path:
    """A core written by gdb's gcore: of the live waiting process, or at the fault."""
    core = work / f"gcore.{name}"
    if name in ("gcore", "kill"):
        proc = _start(binary, args, work)
        pid = int(proc.stdout.readline().split()[1])
        cmd = ["gdb", "-batch", "-nx", "-p", str(pid), "-ex", f"gcore {core}"]
        if name == "kill":  # the kernel would have dumped the signal; gdb stops at it
            proc.send_signal(signal.SIGQUIT)
            cmd = ["gdb", "-batch", "-nx", "-p", str(pid), "-ex", "continue", "-ex", f"gcore {core}"]
        subprocess.run(cmd, check=True, capture_output=True, timeout=60)
        proc.kill()
        proc.wait()
    else:
        subprocess.run(["gdb", "-batch", "-nx", "-ex", "run", "-ex", f"gcore {core}", "--args",
                        str(binary), *args], cwd=work, preexec_fn=_limits, check=True,
                       capture_output=True, timeout=60)
    return core


def gdb_truth(binary: Path, core: Path) -> dict:
    """What gdb says about a core: threads, the current one, $_siginfo, every thread's bt."""
    cmds = ["set pagination off", "set width 0", "info threads", "echo @@siginfo\\n",
            "p $_siginfo.si_signo", "p $_siginfo.si_code", "p/x $_siginfo._sifields._sigfault.si_addr",
            "echo @@bt\\n", "thread apply all bt 300"]
    args = ["gdb", "-batch", "-nx", str(binary), str(core)]
    for c in cmds:
        args += ["-ex", c]
    text = subprocess.run(args, capture_output=True, text=True, timeout=120).stdout
    threads, current = [], None
    for line in text.split("@@siginfo")[0].splitlines():
        m = THREAD.match(line.strip())
        if m:
            threads.append(int(m.group(3)))
            if m.group(1):
                current = int(m.group(3))
    sig = re.findall(r"^\$\d+ = (.*)$", text.split("@@siginfo")[1].split("@@bt")[0], re.M)
    stacks: dict[str, list[dict]] = {}
    lwp = None
    for line in text.split("@@bt")[1].splitlines():
        m = re.match(r"^Thread \d+ \(.*?LWP (\d+)", line)
        if m:
            lwp = m.group(1)
            stacks[lwp] = []
            continue
        m = FRAME.match(line)
        if m and lwp is not None:
            stacks[lwp].append({"level": int(m.group(1)), "pc": int(m.group(2), 16) if m.group(2) else None,
                                "function": m.group(3)})
    num = lambda s: int(s, 0) if s and re.fullmatch(r"-?(0x[0-9a-f]+|\d+)", s) else None  # noqa: E731
    return {"threads": threads, "current_lwp": current,
            "si_signo": num(sig[0]) if len(sig) > 0 else None,
            "si_code": num(sig[1]) if len(sig) > 1 else None,
            "si_addr": num(sig[2]) if len(sig) > 2 else None,
            "backtraces": stacks, "gdb": _version(["gdb", "--version"])}


def _version(cmd: list[str]) -> str:
    return subprocess.run(cmd, capture_output=True, text=True).stdout.splitlines()[0]


class CorePattern:
    """Point core_pattern at a folder for the duration of a `with`, then restore it."""

    PATH = "/proc/sys/kernel/core_pattern"

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.saved: str | None = None

    def __enter__(self) -> bool:
        try:
            self.saved = Path(self.PATH).read_text()
            Path(self.PATH).write_text(f"{self.folder}/core.%p\n")
            return True
        except OSError:
            self.saved = None
            return False

    def __exit__(self, *exc: object) -> None:
        if self.saved is not None:
            Path(self.PATH).write_text(self.saved)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--only", nargs="*", default=None, choices=list(SCENARIOS))
    args = ap.parse_args(argv)
    for tool in ("gcc", "gdb"):
        if not shutil.which(tool):
            print(f"{tool} is needed (apt-get install {tool})", file=sys.stderr)
            return 2
    out = args.out.resolve()
    if out != DEFAULT_OUT:
        shutil.copy(DEFAULT_OUT / "crashers.c", out / "crashers.c")
    binary = build(out)
    with tempfile.TemporaryDirectory(prefix="kdnb-cores-") as tmp:
        work = Path(tmp)
        run_binary = work / "crashers"  # NT_FILE names this path, absent afterwards
        shutil.copy(binary, run_binary)
        with CorePattern(work) as by_kernel:
            for name in args.only or SCENARIOS:
                argv_, category = SCENARIOS[name]
                kernel = by_kernel and name != "gcore"
                core = kernel_core(run_binary, name, argv_, work) if kernel else \
                    gdb_core(run_binary, name, argv_, work)
                truth = gdb_truth(run_binary, core)
                truth.update(scenario=name, argv=["crashers", *argv_], category=category,
                             made_by="kernel (core_pattern)" if kernel else "gdb gcore",
                             kernel=platform.release(), core_size=core.stat().st_size,
                             compiler=_version(["gcc", "--version"]), cflags=CFLAGS)
                (out / f"core.{name}.zst").write_bytes(
                    zstandard.ZstdCompressor(level=19).compress(core.read_bytes()))
                (out / f"{name}.json").write_text(json.dumps(truth, indent=1) + "\n")
                print(f"{name}: {truth['made_by']}, {core.stat().st_size} bytes, "
                      f"signal {truth['si_signo']}, {len(truth['threads'])} thread(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
