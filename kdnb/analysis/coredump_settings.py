"""What decides whether a crashing process leaves a core: the settings, gathered once.

`from_system(root, pid)` reads them from a live machine (or a tree laid out like `/`):
/proc/sys (core_pattern, core_uses_pid, core_pipe_limit, suid_dumpable), the process's limits,
coredump_filter, credentials, cwd and executable (of `pid`, or of this process, which inherits
the shell's limits), the kernel config, the pipe handler's own settings (systemd-coredump's
coredump.conf, apport's /etc/default/apport) and the kernel's coredump messages.
`from_dump(dump, pid)` reads the same from a vmcore's kernel memory (kdnb.views.coredump).
kdnb.analysis.coredump_check turns them into pass / warn / fail checks.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pandas as pd

from ..errors import KdnbError

from .system_tree import RootTree, kernel_config

if TYPE_CHECKING:  # pragma: no cover
    from ..api import Dump

UNLIMITED = (1 << 64) - 1  # RLIM_INFINITY as the kernel stores it
LOG_LINES_MAX = 200
# Kernel messages about core dumps, old and new wording (6.11+ prefixes "coredump: PID(COMM):").
COREDUMP_LOG = re.compile(
    r"coredump: |Core dump to .* (?:pipe failed|aborted)|over core_pipe_limit|"
    r"Aborting core|has RLIMIT_CORE set to 1|can only dump core to fully qualified path|"
    r"Skipping core dump|Unsafe core_pattern|core_pattern.*suid_dumpable", re.I)
SYSTEMD_DEFAULTS = {"Storage": "external", "ProcessSizeMax": "32G", "ExternalSizeMax": "32G",
                    "Compress": "yes"}


@dataclass
class CoredumpSettings:
    """Everything a core-dump check looks at; None where it could not be read."""

    source: str
    core_pattern: str | None = None
    core_uses_pid: int | None = None
    core_pipe_limit: int | None = None
    suid_dumpable: int | None = None
    config_coredump: bool | None = None
    config_source: str = ""
    pid: int | None = None
    comm: str | None = None
    limits_of: str = ""  # whose limits: "pid 123", "this process (pid 45, as the shell set them)"
    rlimit_core: int | None = None  # soft limits; UNLIMITED for unlimited
    rlimit_fsize: int | None = None
    coredump_filter: int | None = None
    dumpable: int | None = None  # the process's own flag (0 off, 1 on, 2 root-only), vmcore only
    uids: tuple[int, ...] | None = None  # real, effective, saved, fs
    gids: tuple[int, ...] | None = None
    cwd: str | None = None
    cwd_stat: dict | None = None  # the cwd's inode (mode, uid, gid, read_only), vmcore only
    exe: str | None = None
    systemd: dict[str, str] | None = None  # coredump.conf [Coredump] values (defaults filled)
    apport_enabled: bool | None = None
    log: list[str] | None = None  # the kernel's coredump messages; None when the log is unreadable
    live: bool = False  # the file system checks may look at this machine's directories
    tree: RootTree | None = field(default=None, repr=False)

    @property
    def is_pipe(self) -> bool:
        """Whether core_pattern hands cores to a program."""
        return bool(self.core_pattern) and self.core_pattern.startswith("|")

    @property
    def handler(self) -> str:
        """The program a pipe core_pattern runs ("" for a path pattern or an empty pipe)."""
        words = self.core_pattern[1:].split() if self.is_pipe else []
        return words[0] if words else ""

    @property
    def privileged_change(self) -> bool | None:
        """Whether the process changed credentials (set-uid/set-gid: real != effective ids),
        which makes the kernel treat it by fs.suid_dumpable; None when unknown."""
        if self.uids is None or self.gids is None:
            return None
        return len(set(self.uids)) > 1 or len(set(self.gids)) > 1


def parse_limits(text: str) -> dict[str, int]:
    """Soft limits from a /proc/PID/limits text: {"core": n, "fsize": n} (UNLIMITED for
    'unlimited')."""
    out: dict[str, int] = {}
    for key, label in (("core", "Max core file size"), ("fsize", "Max file size")):
        m = re.search(rf"^{label}\s+(\S+)", text, re.M)
        if m:
            value = m.group(1)
            out[key] = UNLIMITED if value == "unlimited" else int(value) if value.isdigit() else -1
    return {k: v for k, v in out.items() if v >= 0}


def parse_status_ids(text: str) -> tuple[tuple[int, ...] | None, tuple[int, ...] | None]:
    """(uids, gids) from /proc/PID/status `Uid:`/`Gid:` lines (real, effective, saved, fs)."""
    def ids(label: str) -> tuple[int, ...] | None:
        m = re.search(rf"^{label}:\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)", text, re.M)
        return tuple(int(x) for x in m.groups()) if m else None
    return ids("Uid"), ids("Gid")


def parse_systemd_coredump(texts: list[str]) -> dict[str, str]:
    """The [Coredump] settings of coredump.conf and its drop-ins (later ones win), over the
    built-in defaults."""
    values = dict(SYSTEMD_DEFAULTS)
    for text in texts:
        section = ""
        for line in text.splitlines():
            line = line.strip()
            if line.startswith("["):
                section = line.strip("[]")
            elif section == "Coredump" and "=" in line and not line.startswith(("#", ";")):
                key, _, value = line.partition("=")
                values[key.strip()] = value.strip()
    return values


def parse_systemd_size(text: str) -> int | None:
    """A systemd size ("32G", "2048M", "0", "infinity") in bytes; None when unparsable."""
    text = text.strip()
    if text.lower() == "infinity":
        return UNLIMITED
    m = re.fullmatch(r"(\d+)\s*([KMGTPE]?)B?", text, re.I)
    if not m:
        return None
    return int(m.group(1)) << (10 * "KMGTPE".find(m.group(2).upper()) + 10 if m.group(2) else 0)


def from_system(root: str = "/", pid: int | None = None) -> CoredumpSettings:
    """The core-dump settings of this machine (or of a tree laid out like `/`), for `pid` or,
    without one, for processes started from the calling shell."""
    tree = RootTree(root)
    s = CoredumpSettings(source=tree.root, live=tree.live, tree=tree)

    def number(rel: str) -> int | None:
        text = (tree.read(rel) or "").strip()
        return int(text) if text.lstrip("-").isdigit() else None

    pattern = tree.read("proc/sys/kernel/core_pattern")
    s.core_pattern = pattern.rstrip("\n") if pattern is not None else None
    s.core_uses_pid = number("proc/sys/kernel/core_uses_pid")
    s.core_pipe_limit = number("proc/sys/kernel/core_pipe_limit")
    s.suid_dumpable = number("proc/sys/fs/suid_dumpable")
    config, s.config_source = kernel_config(tree, tree.release())
    if "CONFIG_COREDUMP" in config:
        s.config_coredump = config["CONFIG_COREDUMP"] == "y"
    _process(s, tree, pid)
    if s.is_pipe:
        handler = os.path.basename(s.handler)
        if "systemd-coredump" in handler:
            texts = [tree.read("etc/systemd/coredump.conf") or ""]
            for folder in ("etc/systemd/coredump.conf.d", "usr/lib/systemd/coredump.conf.d"):
                try:
                    names = sorted(os.listdir(tree.path(folder)))[:64]
                except OSError:
                    names = []
                texts += [tree.read(f"{folder}/{n}") or "" for n in names if n.endswith(".conf")]
            s.systemd = parse_systemd_coredump(texts)
        elif "apport" in handler:
            text = tree.read("etc/default/apport")
            if text is not None:
                m = re.search(r"^\s*enabled\s*=\s*(\d)", text, re.M)
                s.apport_enabled = m is None or m.group(1) != "0"
    s.log = _kernel_log(tree)
    return s


def _process(s: CoredumpSettings, tree: RootTree, pid: int | None) -> None:
    """The limits, filter, credentials, cwd and executable of `pid` (or of this process)."""
    proc = f"proc/{pid}" if pid is not None else "proc/self"
    s.pid = pid if pid is not None else (os.getpid() if tree.live else None)
    s.limits_of = (f"pid {pid}" if pid is not None else
                   f"this process (pid {os.getpid()}: the limits its shell passed on)"
                   if tree.live else "the tree's proc/self")
    limits = parse_limits(tree.read(f"{proc}/limits") or "")
    s.rlimit_core, s.rlimit_fsize = limits.get("core"), limits.get("fsize")
    filt = (tree.read(f"{proc}/coredump_filter") or "").strip()
    s.coredump_filter = int(filt, 16) if re.fullmatch(r"[0-9a-fA-F]{1,8}", filt) else None
    status = tree.read(f"{proc}/status") or ""
    s.uids, s.gids = parse_status_ids(status)
    m = re.search(r"^Name:\s+(.*)$", status, re.M)
    s.comm = m.group(1) if m else None
    for attr, link in (("cwd", "cwd"), ("exe", "exe")):
        try:
            setattr(s, attr, os.readlink(tree.path(f"{proc}/{link}")))
        except OSError:
            pass
    if pid is None and tree.live:  # kdnb itself runs from the shell: its exe is python
        s.exe, s.uids, s.gids, s.comm = None, None, None, None


def _kernel_log(tree: RootTree) -> list[str] | None:
    """Coredump messages of the kernel log: a tree's dmesg.txt / var/log/kern.log, or this
    machine's `dmesg`; None when no log can be read."""
    text = tree.read("dmesg.txt") or tree.read("var/log/kern.log")
    if text is None and tree.live:
        try:
            run = subprocess.run(["dmesg"], capture_output=True, text=True, timeout=10, check=False)
            text = run.stdout if run.returncode == 0 else None
        except (OSError, subprocess.SubprocessError):
            text = None
    if text is None:
        return None
    return [line for line in text.splitlines() if COREDUMP_LOG.search(line)][-LOG_LINES_MAX:]


def from_dump(dump: "Dump", pid: int | None = None) -> CoredumpSettings:
    """The core-dump settings in a vmcore's kernel memory (the sysctls, CONFIG_COREDUMP, the
    log's coredump messages) and, for `pid`, that task's limits, dumpable flag, filter,
    credentials, cwd and executable."""
    from ..views.coredump import has_coredump, task_coredump_state

    s = CoredumpSettings(source=dump.path)
    values = dump.sysctl.set_index("name")
    for attr, name in (("core_uses_pid", "kernel.core_uses_pid"),
                       ("core_pipe_limit", "kernel.core_pipe_limit"),
                       ("suid_dumpable", "fs.suid_dumpable")):
        if name in values.index and not pd.isna(values.at[name, "number"]):
            setattr(s, attr, int(values.at[name, "number"]))
    if "kernel.core_pattern" in values.index and not pd.isna(values.at["kernel.core_pattern", "value"]):
        s.core_pattern = str(values.at["kernel.core_pattern", "value"])
    s.config_coredump, s.config_source = has_coredump(dump), "kallsyms (do_coredump/vfs_coredump)"
    try:
        text = dump.log["text"].astype(str)
        s.log = [line for line in text if COREDUMP_LOG.search(line)][-LOG_LINES_MAX:]
    except KdnbError:
        s.log = None
    if pid is not None and not (dump.tasks["pid"] == pid).any():
        # an exited process (the one that crashed): only the kernel log can speak of it
        s.pid, s.limits_of = pid, f"pid {pid}, not a task in the dump (it has exited)"
    elif pid is not None:
        state = task_coredump_state(dump, pid)
        for key in ("pid", "comm", "rlimit_core", "rlimit_fsize", "dumpable", "coredump_filter",
                    "uids", "gids", "cwd", "cwd_stat", "exe"):
            setattr(s, key, state[key])
        s.limits_of = f"pid {pid} in the dump"
    return s
