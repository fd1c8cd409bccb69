"""Readiness: a loaded capture kernel, a capture service, and a makedumpfile that knows the kernel."""

from __future__ import annotations

import re
import shutil
import subprocess

from .checks import Check
from .readiness_machine import Machine

# Newest kernel (major, minor) each makedumpfile release knows, from its release notes
# ("supported kernel" lines). Approximate for some releases; a version past the table is
# assumed current.
MAKEDUMPFILE_LATEST_KERNEL: list[tuple[tuple[int, ...], tuple[int, int]]] = [
    ((1, 6, 8), (5, 4)),
    ((1, 6, 9), (5, 9)),
    ((1, 7, 0), (5, 14)),
    ((1, 7, 1), (5, 17)),
    ((1, 7, 2), (6, 0)),
    ((1, 7, 3), (6, 3)),
    ((1, 7, 4), (6, 6)),
    ((1, 7, 5), (6, 8)),
    ((1, 7, 6), (6, 11)),
    ((1, 7, 7), (6, 14)),
]
# Linux 6.10 replaced PG_slab by a page type ("mm: free up PG_slab"); a makedumpfile that
# predates it classifies in-use slab pages as cache/user pages (seen on 6.12 with 1.7.2).
SLAB_PAGE_TYPE_KERNEL = (6, 10)
SAFE_DUMP_LEVEL_BITS = 1 | 16  # zero and free pages: correct whatever the page-flag layout


def _kernel_version(release: str) -> tuple[int, int] | None:
    m = re.match(r"(\d+)\.(\d+)", release)
    return (int(m.group(1)), int(m.group(2))) if m else None


def parse_version(text: str) -> tuple[int, ...] | None:
    """`1.7.2`, `1:1.7.2-1`, `makedumpfile: version 1.7.2 (released ...)` -> (1, 7, 2)."""
    m = re.search(r"(?:^|[\s:])(\d+)\.(\d+)\.(\d+)", text)
    return tuple(int(x) for x in m.groups()) if m else None


def makedumpfile_latest_kernel(version: tuple[int, ...]) -> tuple[int, int] | None:
    """Newest kernel a makedumpfile release supports (None when newer than the table)."""
    best = None
    for v, k in MAKEDUMPFILE_LATEST_KERNEL:
        if version >= v:
            best = k
    if version > MAKEDUMPFILE_LATEST_KERNEL[-1][0]:
        return None
    if best is None:
        return (0, 0)
    return best


def check_capture_loaded(m: Machine) -> Check:
    """Whether a capture kernel is loaded now (kexec_crash_loaded)."""
    text = m.t.read("sys/kernel/kexec_crash_loaded")
    if text is None:
        if m.t.snapshot:
            log = m.t.read("kexec.log")
            if log is not None and "rc=0" in log:
                return Check("capture.loaded", "capture", "pass",
                             "the capture kernel was loaded (kexec -p exited 0, kexec.log)")
        return Check("capture.loaded", "capture", "skip",
                     "/sys/kernel/kexec_crash_loaded is not readable")
    if text.strip() == "1":
        return Check("capture.loaded", "capture", "pass", "a capture kernel is loaded "
                     "(/sys/kernel/kexec_crash_loaded = 1)")
    name = m.service.get("name")
    fix = {"kdump-tools": "run `kdump-config load` (and check `kdump-config show`)",
           "kdumpctl": "run `kdumpctl start` (and check `kdumpctl status`)"}.get(
        name, "load one with `kexec -p /boot/vmlinuz-$(uname -r) --initrd=... "
        "--append=\"... irqpoll nr_cpus=1 reset_devices\"`")
    return Check("capture.loaded", "capture", "fail",
                 "no capture kernel is loaded (/sys/kernel/kexec_crash_loaded = 0)",
                 f"a crash now reboots without a dump: {fix}", {}, blocking=True)

def check_capture_service(m: Machine) -> Check:
    """Whether kdump-tools or kdumpctl is configured and enabled."""
    s = m.service
    ev = {k: s.get(k) for k in ("name", "config", "enabled", "makedumpfile_args", "target")}
    if s["name"] is None:
        if m.t.snapshot:
            return Check("capture.service", "capture", "skip",
                         "a snapshot folder holds no service configuration", "", ev)
        return Check("capture.service", "capture", "fail",
                     "no capture service configured (neither kdump-tools' "
                     "/etc/default/kdump-tools nor kdumpctl's /etc/kdump.conf)",
                     "nothing loads the capture kernel at boot or saves /proc/vmcore: install "
                     "kdump-tools (Debian/Ubuntu) or kexec-tools (RHEL/Fedora)", ev)
    if not s["enabled"]:
        what = ("USE_KDUMP is not 1 or kdump-tools.service is not enabled"
                if s["name"] == "kdump-tools" else "kdump.service is not enabled")
        return Check("capture.service", "capture", "fail", f"{s['name']} installed but {what}",
                     "the capture kernel will not be loaded at the next boot", ev)
    return Check("capture.service", "capture", "pass",
                 f"{s['name']} configured and enabled ({s['config']})", "", ev)

def _makedumpfile(m: Machine) -> tuple[str | None, tuple[int, ...] | None, str]:
    """(path, version, where the version came from)."""
    path = None
    for rel in ("usr/sbin/makedumpfile", "usr/bin/makedumpfile", "sbin/makedumpfile",
                "bin/makedumpfile"):
        if m.t.exists(rel):
            path = "/" + rel
            break
    status = m.t.read("var/lib/dpkg/status")
    if status:
        m = re.search(r"^Package: makedumpfile\n(?:[^\n]+\n)*?Version: (\S+)", status, re.M)
        if m:
            return path, parse_version(m.group(1)), f"dpkg: {m.group(1)}"
    vfile = m.t.read("makedumpfile-version.txt")
    if vfile:
        return path or "makedumpfile", parse_version(vfile), vfile.strip()[:60]
    if path and m.run:
        exe = shutil.which("makedumpfile") or m.t.path(path)
        try:
            out = subprocess.run([exe, "--version"], capture_output=True, text=True,
                                 timeout=5)
            text = out.stdout + out.stderr
            return path, parse_version(text), text.strip().splitlines()[0][:80] if text.strip() else ""
        except (OSError, subprocess.SubprocessError):
            pass
    return path, None, ""

def check_capture_makedumpfile(m: Machine) -> Check:
    """Whether makedumpfile is installed and knows this kernel (with the dump level it runs at)."""
    path, version, source = _makedumpfile(m)
    args = m.service.get("makedumpfile_args") or ""
    level_m = re.search(r"-d\s*(\d+)", args)
    level = int(level_m.group(1)) if level_m else None
    ev = {"path": path, "version": ".".join(map(str, version)) if version else None,
          "source": source, "dump_level": level, "kernel": m.release}
    if path is None and version is None:
        if m.t.snapshot:
            return Check("capture.makedumpfile", "capture", "skip",
                         "a snapshot folder does not show the installed tools", "", ev)
        return Check("capture.makedumpfile", "capture", "fail",
                     "makedumpfile is not installed",
                     "the capture saves an unfiltered, uncompressed copy of all RAM (if it "
                     "saves anything): install makedumpfile", ev)
    if version is None:
        return Check("capture.makedumpfile", "capture", "warn",
                     f"makedumpfile found ({path}) but its version is unknown",
                     "cannot tell whether it supports this kernel", ev)
    kv = _kernel_version(m.release)
    latest = makedumpfile_latest_kernel(version)
    vs = ".".join(map(str, version))
    if kv is None or latest is None or kv <= latest:
        return Check("capture.makedumpfile", "capture", "pass",
                     f"makedumpfile {vs} supports Linux {m.release or '?'}", "", ev)
    ev["supports_up_to"] = f"{latest[0]}.{latest[1]}"
    filters = level is None or bool(level & ~SAFE_DUMP_LEVEL_BITS & 0x1F)
    slab_types = kv >= SLAB_PAGE_TYPE_KERNEL and latest < SLAB_PAGE_TYPE_KERNEL
    risky = filters and slab_types
    detail = (f"makedumpfile {vs} knows kernels up to {latest[0]}.{latest[1]}, this kernel is "
              f"{m.release}")
    if slab_types:
        detail += (": it predates slab page types (Linux 6.10+) and excludes in-use slab "
                   "pages when filtering cache/user pages (1.7.2 on 6.12 at -d 31 and -d 15)")
    else:
        detail += ": it warns \"kernel version is not supported\" and may misread newer "
        detail += "page flags"
    fix = ("use -d 1 or -d 17 in " + (m.service.get("config") or "the capture config")
           + ", or install a makedumpfile that supports this kernel")
    if risky:
        return Check("capture.makedumpfile", "capture", "fail",
                     detail + (f"; configured dump level {level} filters cache/user pages"
                               if level is not None else ""),
                     f"dumps may be degraded (tasks and slab caches unreadable): {fix}", ev)
    return Check("capture.makedumpfile", "capture", "warn",
                 detail + f"; the configured dump level {level} only drops zero/free pages",
                 "dumps should be complete; upgrade makedumpfile anyway", ev)
