"""Build data/cores/systemd: a core stored by systemd-coredump, with its journal entry exported
both ways journalctl can (`-o json` and `-o export`).

    sudo python3 tools/make_systemd_core.py [--out DIR] [--scenario threads]

Needs root and Debian's systemd-coredump package. On a machine without systemd as PID 1 it
starts systemd-journald by hand and serves systemd-coredump's socket (/run/systemd/coredump)
with `systemd-socket-activate`, as systemd-coredump.socket would; points core_pattern at
systemd-coredump for the one crash, restores core_pattern, fs.suid_dumpable and
kernel.core_pipe_limit afterwards, and stops what it started. The crash is data/cores/crashers
run from a temporary folder with an empty environment (`env -i`), so neither the core nor the
journal entry carries this machine's environment.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import zstandard
from make_process_cores import _version, gdb_truth

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "data" / "cores" / "systemd"
HANDLER = "/lib/systemd/systemd-coredump"
PATTERN = f"|{HANDLER} %P %u %g %s %t 9223372036854775808 %h %d"
SYSCTLS = ("/proc/sys/kernel/core_pattern", "/proc/sys/fs/suid_dumpable", "/proc/sys/kernel/core_pipe_limit")


def _served(path: str, kind: int) -> bool:
    """Whether something listens on the unix socket at `path` (a stale file does not count)."""
    with socket.socket(socket.AF_UNIX, kind) as s:
        try:
            s.connect(path)
            return True
        except OSError:
            return False


def _daemons() -> list[subprocess.Popen]:
    """journald and the coredump socket, started unless something already serves them."""
    started = []
    journal, coredump = "/run/systemd/journal/socket", "/run/systemd/coredump"
    if not _served(journal, socket.SOCK_DGRAM):
        started.append(subprocess.Popen(["/usr/lib/systemd/systemd-journald"], stderr=subprocess.DEVNULL))
    if not _served(coredump, socket.SOCK_SEQPACKET):
        Path(coredump).unlink(missing_ok=True)
        started.append(subprocess.Popen(["systemd-socket-activate", "-l", coredump, "--seqpacket",
                                         "-a", HANDLER], stderr=subprocess.DEVNULL))
    for _ in range(50):
        if _served(journal, socket.SOCK_DGRAM) and Path(coredump).exists():
            break
        time.sleep(0.1)
    return started


def crash(scenario: str, work: Path) -> int:
    """Run crashers SCENARIO under systemd-coredump; its pid."""
    binary = work / "crashers"
    shutil.copy(REPO / "data" / "cores" / "crashers", binary)
    saved = {p: Path(p).read_text() for p in SYSCTLS}
    try:
        Path(SYSCTLS[0]).write_text(PATTERN + "\n")
        proc = subprocess.Popen(["env", "-i", "PATH=/usr/bin:/bin", "sh", "-c",
                                 f"ulimit -c unlimited; exec {binary} {scenario}"], cwd=work,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        proc.wait(timeout=60)
        time.sleep(2)  # systemd-coredump writes the core and the journal entry after the crash
        return proc.pid
    finally:
        for p, value in saved.items():
            Path(p).write_text(value)


def write_truth(core: Path, out: Path) -> None:
    """gdb's view of the stored core (decompressed), as tools/make_process_cores.py records it."""
    with tempfile.TemporaryDirectory(prefix="kdnb-sdcore-") as tmp:
        plain = Path(tmp) / "core"
        plain.write_bytes(zstandard.ZstdDecompressor().decompress(core.read_bytes(), max_output_size=1 << 30))
        truth = gdb_truth(REPO / "data" / "cores" / "crashers", plain)
    truth.update(made_by="systemd-coredump (systemd-socket-activate serving /run/systemd/coredump)",
                 kernel=platform.release(), systemd=_version(["journalctl", "--version"]))
    (out / "truth.json").write_text(json.dumps(truth, indent=1) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--scenario", default="threads")
    args = ap.parse_args(argv)
    if os.geteuid() != 0 or not Path(HANDLER).exists():
        print("needs root and systemd-coredump (apt-get install systemd-coredump)", file=sys.stderr)
        return 2
    started = _daemons()
    try:
        with tempfile.TemporaryDirectory(prefix="kdnb-sdcore-") as tmp:
            pid = crash(args.scenario, Path(tmp))
        # the sh above exec'd crashers, so its pid is the crashed process's
        query = ["journalctl", "--no-pager", f"COREDUMP_PID={pid}"]
        as_json = subprocess.run(query + ["-o", "json"], capture_output=True, check=True).stdout
        export = subprocess.run(query + ["-o", "export"], capture_output=True, check=True).stdout
    finally:
        for p in started:
            p.terminate()
            p.wait(timeout=10)
    cores = sorted(Path("/var/lib/systemd/coredump").glob(f"core.crashers.*.{pid}.*"))
    if not cores or not as_json:
        print(f"no core or journal entry for pid {pid}", file=sys.stderr)
        return 1
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    shutil.copy(cores[0], out / cores[0].name)
    (out / cores[0].name).chmod(0o644)
    (out / "journal.json").write_bytes(as_json)
    (out / "journal.export").write_bytes(export)
    write_truth(cores[0], out)
    print(f"{cores[0].name}: {cores[0].stat().st_size} bytes; journal entry {len(as_json)} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
