"""The `scale` scenario: a production-size guest built from knobs (processes, threads, files, log).

`scenario(procs=5000, threads=2, files=20000, log_lines=50000)` returns a Scenario whose steps
mount a tmpfs at /scale and run the static helper kdnb_scale (module/kdnb_scale.c): PROCS
sleeping processes named kdnb_scale with THREADS threads each, one kdnb_files process holding
FILES files of that tmpfs open, LOG_LINES "kdnb-scale log line N" lines in the kernel log (with a
log buffer big enough to keep them), then a sysrq crash. The helper reports what it managed in a
``KDNB-SCALE ...`` console line; `facts()` turns that line into the ground truth's "scale" entry.
"""

from __future__ import annotations

import re
from typing import Any

from .scenarios import SYSRQ_PANIC, Scenario

#: Where the scale scenario's tmpfs is mounted in the guest.
SCALE_DIR = "/scale"
#: Text of every log line the helper writes (followed by its index).
LOG_LINE_TEXT = "kdnb-scale log line"
#: Upper bounds of the knobs (pid_max is 32768 on a 2-vCPU guest; files: one process's fds).
LIMITS = {"procs": 30000, "threads": 64, "files": 1_000_000, "log_lines": 2_000_000}
#: Bytes of log buffer reserved per requested line (text, header and descriptor, rounded up).
LOG_BYTES_PER_LINE = 128

_LINE_RX = re.compile(r"KDNB-SCALE ((?:\w+=\d+ ?)+)")


def log_buf_len(log_lines: int) -> int:
    """A power-of-two log_buf_len (at least 1 MiB) that holds ``log_lines`` helper lines plus boot."""
    need = max(1 << 20, (log_lines + 4096) * LOG_BYTES_PER_LINE)
    return 1 << (need - 1).bit_length()


def scenario(procs: int = 5000, threads: int = 1, files: int = 0, log_lines: int = 0) -> Scenario:
    """The scale Scenario for these knobs (each checked against LIMITS; a LabError names a bad one)."""
    from .packages import LabError

    knobs = {"procs": procs, "threads": threads, "files": files, "log_lines": log_lines}
    for k, v in knobs.items():
        lo = 1 if k == "threads" else 0
        if not isinstance(v, int) or not lo <= v <= LIMITS[k]:
            raise LabError(f"scale: {k} must be an integer in {lo}..{LIMITS[k]}, not {v!r}")
    run = f"kdnb_scale {procs} {threads} {files} {log_lines} {SCALE_DIR}"
    return Scenario(
        "scale",
        f"{procs} processes x {threads} threads, {files} open files in a tmpfs, {log_lines} "
        "log lines, then a sysrq crash (a production-size dump)",
        f"{run}; echo c > /proc/sysrq-trigger", SYSRQ_PANIC, "kdnb_trigger",
        sysctls={"kernel.sysrq": "1"},
        steps=(f"mkdir -p {SCALE_DIR}; mount -t tmpfs -o nr_inodes=0 scale {SCALE_DIR}",
               f"{run} || echo 'KDNB-FAIL kdnb_scale'",
               "kdnb_as kdnb_trigger 0 -- 'echo c > /proc/sysrq-trigger'"),
        # printk.devkmsg=on: /dev/kmsg writers are not rate-limited (10 lines per 5 s otherwise)
        crash_timeout=600, cmdline=f"log_buf_len={log_buf_len(log_lines)} printk.devkmsg=on",
        helpers=("kdnb_scale",), knobs=knobs)


def facts(knobs: dict[str, int], console: list[str]) -> dict[str, Any]:
    """The ground truth's "scale" entry: the knobs asked for and the helper's KDNB-SCALE counts
    (``reported`` is None when the line never reached the console)."""
    reported = None
    for line in console:
        m = _LINE_RX.search(line)
        if m and "echo" not in line:
            reported = {k: int(v) for k, v in (kv.split("=") for kv in m.group(1).split())}
    return {"requested": dict(knobs), "reported": reported, "tmpfs": SCALE_DIR,
            "log_line_text": LOG_LINE_TEXT, "files_owner_comm": "kdnb_files",
            "sleeper_comm": "kdnb_scale",
            "note": "reported.tasks counts the kdnb_scale sleepers' threads (main thread "
                    "included); files_open is how many of the tmpfs files kdnb_files holds open"}
