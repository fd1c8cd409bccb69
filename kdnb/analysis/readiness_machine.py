"""The machine a readiness check looks at: its kernel release, command line, /proc/iomem,
/proc/meminfo, kernel config, the parsed `crashkernel=` and the configured capture service
(kdump-tools or kdumpctl), read once from a live `/` or a file tree laid out like one."""

from __future__ import annotations

import os
import re
from typing import Any, Callable

from .crashkernel import Crashkernel, CrashkernelError, parse_crashkernel
from .system_tree import RootTree, kernel_config

FreeSpace = Callable[[str], "int | None"]


def mib(n: int | None) -> str:
    """A byte count as "256 MiB" or "4 GiB" ("?" when unknown)."""
    if n is None:
        return "?"
    if n >= 1 << 30 and n % (1 << 30) == 0:
        return f"{n >> 30} GiB"
    return f"{n / (1 << 20):.0f} MiB"


def parse_iomem(text: str) -> dict[str, Any]:
    """System RAM total and the "Crash kernel" ranges of /proc/iomem (top-level and nested)."""
    ram = 0
    crash: list[tuple[int, int]] = []
    hidden = False
    for line in text.splitlines():
        m = re.match(r"\s*([0-9a-fA-F]+)-([0-9a-fA-F]+) : (.*)$", line)
        if not m:
            continue
        start, end, name = int(m.group(1), 16), int(m.group(2), 16), m.group(3).strip()
        if start == end == 0:
            hidden = True  # non-root readers see zeros
        if name == "System RAM" and not line.startswith(" "):
            ram += end - start + 1
        elif name.startswith("Crash kernel"):
            crash.append((start, end + 1))
    return {"system_ram": ram, "crash": crash, "hidden": hidden}


def parse_meminfo(text: str) -> dict[str, int]:
    """/proc/meminfo as bytes."""
    out = {}
    for line in text.splitlines():
        m = re.match(r"(\w+(?:\(\w+\))?):\s+(\d+)(?: kB)?", line)
        if m:
            out[m.group(1)] = int(m.group(2)) * (1024 if "kB" in line else 1)
    return out


def _statvfs_free(path: str) -> int | None:
    """Free bytes for unprivileged use at `path` (or its nearest existing parent)."""
    p = path
    while p and not os.path.exists(p):
        parent = os.path.dirname(p)
        if parent == p:
            break
        p = parent
    try:
        st = os.statvfs(p)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


class Machine:
    """What the checks read from the machine (or file tree): release, command line, iomem,
    meminfo, kernel config, the parsed crashkernel= and the capture service."""

    def __init__(self, root: str, free_space: FreeSpace | None,
                 run_commands: bool | None) -> None:
        self.t = RootTree(root)
        self.free_space = free_space or _statvfs_free
        self.run = self.t.live if run_commands is None else run_commands
        self.release = self.t.release()
        self.cmdline = (self.t.read("proc/cmdline") or "").strip()
        self.iomem = parse_iomem(self.t.read("proc/iomem") or "")
        self.meminfo = parse_meminfo(self.t.read("proc/meminfo") or "")
        self.config, self.config_source = kernel_config(self.t, self.release)
        self.ck: Crashkernel | None = None
        self.ck_error = ""
        values = re.findall(r"(?:^|\s)crashkernel=(\S+)", self.cmdline)
        if values:
            try:
                self.ck = parse_crashkernel(values, self.system_ram())
            except CrashkernelError as exc:
                self.ck_error = str(exc)
        self.service = self._service()

    def system_ram(self) -> int | None:
        """RAM in bytes from /proc/iomem (root) or MemTotal."""
        if self.iomem["system_ram"] and not self.iomem["hidden"]:
            return self.iomem["system_ram"]
        return self.meminfo.get("MemTotal")

    def _service(self) -> dict[str, Any]:
        """Which capture service is installed and what it is configured to run."""
        t = self.t
        out: dict[str, Any] = {"name": None, "enabled": False, "makedumpfile_args": None,
                               "target": "/var/crash", "config": None}
        wants = ["etc/systemd/system/multi-user.target.wants", "etc/systemd/system/kdump.target.wants",
                 "etc/systemd/system/default.target.wants"]
        if t.exists("etc/default/kdump-tools"):
            cfg = t.read("etc/default/kdump-tools") or ""
            vals = dict(re.findall(r'^\s*([A-Z_]+)=["\']?([^"\'\n]*)', cfg, re.M))
            out.update(name="kdump-tools", config="/etc/default/kdump-tools",
                       makedumpfile_args=vals.get("MAKEDUMP_ARGS", "-c -d 31"),
                       target=vals.get("KDUMP_COREDIR", "/var/crash"),
                       use_kdump=vals.get("USE_KDUMP"))
            out["enabled"] = vals.get("USE_KDUMP", "0") == "1" and any(
                t.exists(f"{w}/kdump-tools.service") for w in wants)
        elif t.exists("etc/kdump.conf"):
            cfg = t.read("etc/kdump.conf") or ""
            collector = re.search(r"^\s*core_collector\s+(.*)$", cfg, re.M)
            path = re.search(r"^\s*path\s+(\S+)", cfg, re.M)
            args = collector.group(1) if collector else "makedumpfile -l --message-level 7 -d 31"
            out.update(name="kdumpctl", config="/etc/kdump.conf",
                       makedumpfile_args=args.replace("makedumpfile", "", 1).strip()
                       if "makedumpfile" in args else None,
                       target=path.group(1) if path else "/var/crash")
            out["enabled"] = any(t.exists(f"{w}/kdump.service") for w in wants)
        return out

    def cfg(self, key: str) -> str | None:
        """One kernel config value (y, m, a number) or None."""
        return self.config.get(key)
