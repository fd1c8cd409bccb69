"""kdump readiness of a live machine: will the next crash be captured, and analysable?

`readiness(root="/")` checks what a kdump guide walks through: the kernel config, the
`crashkernel=` reservation (every syntax) against what the kernel reserved, a loaded capture
kernel, a configured capture service and a makedumpfile new enough for the kernel, free space
at the dump target, and the usual reasons a process leaves "no core dumped"
(kdnb.analysis.coredump_check, for processes the shell starts).

`root` points at a file tree laid out like `/` (tests use fixture trees). A lab snapshot folder
(`cmdline.txt`, `iomem.txt`, `kexec_crash_size.txt`, `uname.txt`, `meminfo.txt`) is also read.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from typing import Any, Callable

from .checks import Check, CheckTable, run_check
from .crashkernel import Crashkernel, CrashkernelError, parse_crashkernel, parse_size
from .coredump_check import run_checks
from .coredump_settings import from_system
from .system_tree import RootTree, kernel_config, parse_kconfig

AREAS = ["config", "crashkernel", "capture", "storage", "coredump"]
VERDICTS = ["ready", "at risk", "not ready"]
EXIT_CODES = {"ready": 0, "at risk": 1, "not ready": 2}

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


class Readiness(CheckTable):
    """Readiness checks of one machine and a verdict: ready, at risk, not ready."""

    AREAS = AREAS
    VERDICTS = VERDICTS
    EXIT_CODES = EXIT_CODES  # 0 ready, 1 at risk, 2 not ready
    title = "kdump readiness"

    def _decide(self) -> str:
        if any(c.status == "fail" for c in self.items):  # a FAIL is never only "at risk"
            return "not ready"
        if any(c.status == "warn" for c in self.items):
            return "at risk"
        return "ready"


def _mib(n: int | None) -> str:
    if n is None:
        return "?"
    if n >= 1 << 30 and n % (1 << 30) == 0:
        return f"{n >> 30} GiB"
    return f"{n / (1 << 20):.0f} MiB"


# -------------------------------------------------------------------------------------------
# the tree being checked
# -------------------------------------------------------------------------------------------

def _kernel_version(release: str) -> tuple[int, int] | None:
    m = re.match(r"(\d+)\.(\d+)", release)
    return (int(m.group(1)), int(m.group(2))) if m else None


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


# -------------------------------------------------------------------------------------------
# the checks
# -------------------------------------------------------------------------------------------

FreeSpace = Callable[[str], "int | None"]


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


class _Ctx:
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
        return self.config.get(key)

    # -- config --------------------------------------------------------------------------
    def config_checks(self) -> list[Check]:
        items: list[Check] = []
        if not self.config:
            where = f"/boot/config-{self.release} or /proc/config.gz" if self.release \
                else "/boot/config-$(uname -r) or /proc/config.gz"
            items.append(Check("config.found", "config", "warn",
                               f"kernel config not found ({where})",
                               "kexec, crash dump and debug-info support cannot be confirmed"))
            for cid in ("config.kexec", "config.crash_dump", "config.proc_vmcore", "config.sysfs",
                        "config.debug_info", "config.relocatable"):
                items.append(Check(cid, "config", "skip", "no kernel config to check"))
            return items
        items.append(Check("config.found", "config", "pass",
                           f"kernel config read from {self.config_source}", "",
                           {"source": self.config_source, "options": len(self.config)}))

        def on(k: str) -> bool:
            return self.cfg(k) in ("y", "m")

        kexec = [k for k in ("CONFIG_KEXEC", "CONFIG_KEXEC_FILE") if on(k)]
        items.append(Check("config.kexec", "config", "pass" if kexec else "fail",
                           f"{' and '.join(kexec)} enabled" if kexec else
                           "neither CONFIG_KEXEC nor CONFIG_KEXEC_FILE is enabled",
                           "" if kexec else "no capture kernel can be loaded", {"enabled": kexec},
                           blocking=not kexec))
        for cid, key, why in (
            ("config.crash_dump", "CONFIG_CRASH_DUMP", "the kernel cannot reserve memory for or "
             "act as a capture kernel"),
            ("config.proc_vmcore", "CONFIG_PROC_VMCORE", "the capture kernel has no /proc/vmcore "
             "to save"),
            ("config.sysfs", "CONFIG_SYSFS", "no /sys/kernel/kexec_crash_loaded; kdump tools "
             "cannot work"),
        ):
            ok = on(key)
            items.append(Check(cid, "config", "pass" if ok else "fail",
                               f"{key}={self.cfg(key) or 'unset'}", "" if ok else why,
                               {key: self.cfg(key)}, blocking=not ok))
        dbg = [k for k in ("CONFIG_DEBUG_INFO_BTF", "CONFIG_DEBUG_INFO") if on(k)]
        if "CONFIG_DEBUG_INFO_BTF" in dbg:
            items.append(Check("config.debug_info", "config", "pass",
                               "CONFIG_DEBUG_INFO_BTF=y: dumps carry their own types", "",
                               {"enabled": dbg}))
        elif dbg:
            items.append(Check("config.debug_info", "config", "warn",
                               "CONFIG_DEBUG_INFO without BTF: analysis needs the matching "
                               "vmlinux with DWARF", "keep the debug vmlinux of every kernel",
                               {"enabled": dbg}))
        else:
            items.append(Check("config.debug_info", "config", "fail",
                               "neither CONFIG_DEBUG_INFO_BTF nor CONFIG_DEBUG_INFO: no types "
                               "for analysis", "dumps can be captured but not analysed by type "
                               "(tasks, slab, modules)", {}))
        items.append(self._relocatable())
        return items

    def _relocatable(self) -> Check:
        if self.cfg("CONFIG_RELOCATABLE") == "y":
            return Check("config.relocatable", "config", "pass",
                         "CONFIG_RELOCATABLE=y: the capture kernel runs from any reserved address")
        start = self.cfg("CONFIG_PHYSICAL_START")
        ev = {"CONFIG_PHYSICAL_START": start,
              "crashkernel_offset": self.ck.offset if self.ck else None}
        try:
            phys = int(start, 0) if start else None
        except ValueError:
            phys = None
        if self.ck is not None and self.ck.offset is not None and phys is not None:
            if self.ck.offset == phys:
                return Check("config.relocatable", "config", "pass",
                             f"not relocatable, and crashkernel=...@{phys:#x} matches "
                             "CONFIG_PHYSICAL_START", "", ev)
            return Check("config.relocatable", "config", "fail",
                         f"not relocatable: the capture kernel must load at CONFIG_PHYSICAL_START "
                         f"{phys:#x}, but crashkernel= reserves at {self.ck.offset:#x}",
                         f"use crashkernel=SIZE@{phys:#x} or a relocatable kernel", ev,
                         blocking=True)
        return Check("config.relocatable", "config", "fail",
                     "CONFIG_RELOCATABLE is off and crashkernel= has no @offset matching "
                     f"CONFIG_PHYSICAL_START ({start or 'unset'})",
                     "the capture kernel may not boot from the reserved region", ev)

    # -- crashkernel ---------------------------------------------------------------------
    def check_crashkernel_cmdline(self) -> Check:
        ev: dict[str, Any] = {"cmdline": self.cmdline[:200], "system_ram": self.system_ram()}
        if not self.cmdline:
            return Check("crashkernel.cmdline", "crashkernel", "skip",
                         "no /proc/cmdline to read", "", ev)
        if self.ck_error:
            return Check("crashkernel.cmdline", "crashkernel", "fail",
                         f"crashkernel= is malformed: {self.ck_error}",
                         "the kernel reserves nothing: no capture possible", ev, blocking=True)
        ck = self.ck
        if ck is None:
            return Check("crashkernel.cmdline", "crashkernel", "fail",
                         "no crashkernel= on the kernel command line",
                         "no memory is reserved for a capture kernel: add crashkernel=256M "
                         "(or a range like 1G-4G:256M,4G-:512M) and reboot", ev, blocking=True)
        ev.update(kind=ck.kind, size=ck.size, offset=ck.offset, low=ck.low,
                  ranges=[f"{_mib(a)}-{_mib(b) if b else ''}:{_mib(s)}" for a, b, s in ck.ranges])
        if ck.kind == "auto":
            return Check("crashkernel.cmdline", "crashkernel", "warn",
                         "crashkernel=auto: only some distribution kernels understand it",
                         "check crashkernel.reserved for what was actually reserved", ev)
        if ck.kind == "ranges" and ck.size == 0:
            return Check("crashkernel.cmdline", "crashkernel", "fail",
                         f"{ck.describe()}: no range covers this machine's "
                         f"{_mib(self.system_ram())} of RAM", "nothing is reserved", ev,
                         blocking=True)
        what = {"size": f"{_mib(ck.size)}", "size@offset": f"{_mib(ck.size)} at {ck.offset:#x}"
                if ck.offset is not None else "", "ranges": f"{_mib(ck.size)} for "
                f"{_mib(self.system_ram())} of RAM" if ck.size is not None else "a RAM-dependent size",
                "high": f"{_mib(ck.size)} above 4 GiB"
                + (f" + {_mib(ck.low)} low" if ck.low is not None else " (+ a default low region)")}[ck.kind]
        return Check("crashkernel.cmdline", "crashkernel", "pass", f"{ck.describe()}: {what}", "", ev)

    def check_crashkernel_reserved(self) -> Check:
        crash = self.iomem["crash"]
        sysfs = self.t.read("sys/kernel/kexec_crash_size")
        sysfs_size = int(sysfs.strip()) if sysfs and sysfs.strip().isdigit() else None
        iomem_size = sum(e - s for s, e in crash) if crash and not self.iomem["hidden"] else None
        ev = {"iomem_crash_kernel": [f"{s:#x}-{e - 1:#x}" for s, e in crash]
              if not self.iomem["hidden"] else "hidden (not root)",
              "iomem_bytes": iomem_size, "kexec_crash_size": sysfs_size,
              "requested": self.ck.size if self.ck else None}
        reserved = iomem_size if iomem_size is not None else sysfs_size
        if reserved is None:
            if not crash and self.t.exists("proc/iomem") and not self.iomem["hidden"]:
                reserved = 0
            else:
                return Check("crashkernel.reserved", "crashkernel", "skip",
                             "neither /proc/iomem nor /sys/kernel/kexec_crash_size is readable",
                             "", ev)
        if reserved == 0 and (sysfs_size in (None, 0)):
            why = "" if self.ck else " (no crashkernel= given)"
            return Check("crashkernel.reserved", "crashkernel", "fail",
                         f"no memory is reserved for a capture kernel{why}",
                         "a crash cannot be captured", ev, blocking=True)
        problems = []
        if sysfs_size is not None and iomem_size is not None and self.ck and \
                self.ck.kind != "high" and sysfs_size != iomem_size:
            problems.append(f"/sys/kernel/kexec_crash_size says {_mib(sysfs_size)} but "
                            f"/proc/iomem reserves {_mib(iomem_size)}")
        req = self.ck.size if self.ck else None
        if req and self.ck and self.ck.kind != "high":
            got = sysfs_size if sysfs_size is not None else reserved
            if got < req:
                problems.append(f"{_mib(got)} reserved, {_mib(req)} requested "
                                "(the kernel could not find that much contiguous memory?)")
        if self.ck and self.ck.offset is not None and crash and not self.iomem["hidden"]:
            if crash[0][0] != self.ck.offset:
                problems.append(f"reserved at {crash[0][0]:#x}, requested @{self.ck.offset:#x}")
        if problems:
            return Check("crashkernel.reserved", "crashkernel", "warn", "; ".join(problems),
                         "the capture kernel may not fit or may fail to boot", ev)
        return Check("crashkernel.reserved", "crashkernel", "pass",
                     f"{_mib(reserved)} reserved for the capture kernel"
                     + (" (matches kexec_crash_size)" if sysfs_size == iomem_size and sysfs_size
                        else ""), "", ev)

    # -- capture -------------------------------------------------------------------------
    def check_capture_loaded(self) -> Check:
        text = self.t.read("sys/kernel/kexec_crash_loaded")
        if text is None:
            if self.t.snapshot:
                log = self.t.read("kexec.log")
                if log is not None and "rc=0" in log:
                    return Check("capture.loaded", "capture", "pass",
                                 "the capture kernel was loaded (kexec -p exited 0, kexec.log)")
            return Check("capture.loaded", "capture", "skip",
                         "/sys/kernel/kexec_crash_loaded is not readable")
        if text.strip() == "1":
            return Check("capture.loaded", "capture", "pass", "a capture kernel is loaded "
                         "(/sys/kernel/kexec_crash_loaded = 1)")
        name = self.service.get("name")
        fix = {"kdump-tools": "run `kdump-config load` (and check `kdump-config show`)",
               "kdumpctl": "run `kdumpctl start` (and check `kdumpctl status`)"}.get(
            name, "load one with `kexec -p /boot/vmlinuz-$(uname -r) --initrd=... "
            "--append=\"... irqpoll nr_cpus=1 reset_devices\"`")
        return Check("capture.loaded", "capture", "fail",
                     "no capture kernel is loaded (/sys/kernel/kexec_crash_loaded = 0)",
                     f"a crash now reboots without a dump: {fix}", {}, blocking=True)

    def check_capture_service(self) -> Check:
        s = self.service
        ev = {k: s.get(k) for k in ("name", "config", "enabled", "makedumpfile_args", "target")}
        if s["name"] is None:
            if self.t.snapshot:
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

    def _makedumpfile(self) -> tuple[str | None, tuple[int, ...] | None, str]:
        """(path, version, where the version came from)."""
        path = None
        for rel in ("usr/sbin/makedumpfile", "usr/bin/makedumpfile", "sbin/makedumpfile",
                    "bin/makedumpfile"):
            if self.t.exists(rel):
                path = "/" + rel
                break
        status = self.t.read("var/lib/dpkg/status")
        if status:
            m = re.search(r"^Package: makedumpfile\n(?:[^\n]+\n)*?Version: (\S+)", status, re.M)
            if m:
                return path, parse_version(m.group(1)), f"dpkg: {m.group(1)}"
        vfile = self.t.read("makedumpfile-version.txt")
        if vfile:
            return path or "makedumpfile", parse_version(vfile), vfile.strip()[:60]
        if path and self.run:
            exe = shutil.which("makedumpfile") or self.t.path(path)
            try:
                out = subprocess.run([exe, "--version"], capture_output=True, text=True,
                                     timeout=5)
                text = out.stdout + out.stderr
                return path, parse_version(text), text.strip().splitlines()[0][:80] if text.strip() else ""
            except (OSError, subprocess.SubprocessError):
                pass
        return path, None, ""

    def check_capture_makedumpfile(self) -> Check:
        path, version, source = self._makedumpfile()
        args = self.service.get("makedumpfile_args") or ""
        level_m = re.search(r"-d\s*(\d+)", args)
        level = int(level_m.group(1)) if level_m else None
        ev = {"path": path, "version": ".".join(map(str, version)) if version else None,
              "source": source, "dump_level": level, "kernel": self.release}
        if path is None and version is None:
            if self.t.snapshot:
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
        kv = _kernel_version(self.release)
        latest = makedumpfile_latest_kernel(version)
        vs = ".".join(map(str, version))
        if kv is None or latest is None or kv <= latest:
            return Check("capture.makedumpfile", "capture", "pass",
                         f"makedumpfile {vs} supports Linux {self.release or '?'}", "", ev)
        ev["supports_up_to"] = f"{latest[0]}.{latest[1]}"
        filters = level is None or bool(level & ~SAFE_DUMP_LEVEL_BITS & 0x1F)
        slab_types = kv >= SLAB_PAGE_TYPE_KERNEL and latest < SLAB_PAGE_TYPE_KERNEL
        risky = filters and slab_types
        detail = (f"makedumpfile {vs} knows kernels up to {latest[0]}.{latest[1]}, this kernel is "
                  f"{self.release}")
        if slab_types:
            detail += (": it predates slab page types (Linux 6.10+) and excludes in-use slab "
                       "pages when filtering cache/user pages (1.7.2 on 6.12 at -d 31 and -d 15)")
        else:
            detail += ": it warns \"kernel version is not supported\" and may misread newer "
            detail += "page flags"
        fix = ("use -d 1 or -d 17 in " + (self.service.get("config") or "the capture config")
               + ", or install a makedumpfile that supports this kernel")
        if risky:
            return Check("capture.makedumpfile", "capture", "fail",
                         detail + (f"; configured dump level {level} filters cache/user pages"
                                   if level is not None else ""),
                         f"dumps may be degraded (tasks and slab caches unreadable): {fix}", ev)
        return Check("capture.makedumpfile", "capture", "warn",
                     detail + f"; the configured dump level {level} only drops zero/free pages",
                     "dumps should be complete; upgrade makedumpfile anyway", ev)

    # -- storage ---------------------------------------------------------------------------
    def check_storage_space(self) -> Check:
        target = self.service.get("target") or "/var/crash"
        mi = self.meminfo
        total = mi.get("MemTotal")
        ev: dict[str, Any] = {"target": target, "mem_total": total}
        if not total:
            return Check("storage.space", "storage", "skip",
                         "/proc/meminfo not readable: the expected dump size is unknown", "", ev)
        # kernel memory in use: what a -d 31 dump keeps (before compression)
        kernel_used = total - mi.get("MemFree", 0) - mi.get("Cached", 0) - mi.get("Buffers", 0) \
            - mi.get("AnonPages", 0)
        kernel_used = max(kernel_used, total // 20)
        args = self.service.get("makedumpfile_args") or "-c -d 31"
        level_m = re.search(r"-d\s*(\d+)", args)
        level = int(level_m.group(1)) if level_m else 31
        compressed = any(f in args for f in ("-c", "-l", "-p", "-z"))
        if level & (2 | 4 | 8):
            expected = kernel_used
        else:
            expected = total - (mi.get("MemFree", 0) if level & 16 else 0)
        if compressed:
            expected //= 2
        ev.update(expected=expected, dump_level=level, compressed=compressed)
        if self.t.snapshot:
            return Check("storage.space", "storage", "skip",
                         f"a snapshot folder has no dump target; a dump would need about "
                         f"{_mib(expected)}", "", ev)
        free = self.free_space(self.t.path(target))
        ev["free"] = free
        if free is None:
            return Check("storage.space", "storage", "skip",
                         f"free space at {target} unknown", "", ev)
        if free < expected:
            return Check("storage.space", "storage", "fail",
                         f"{_mib(free)} free at {target}, a dump needs about {_mib(expected)}",
                         "the capture will run out of space (an incomplete dump, or none)", ev)
        if free < total:
            return Check("storage.space", "storage", "warn",
                         f"{_mib(free)} free at {target}: enough for a filtered dump (~"
                         f"{_mib(expected)}) but not for all {_mib(total)} of RAM",
                         "a capture with -d 0/-d 1 or without compression would not fit", ev)
        return Check("storage.space", "storage", "pass",
                     f"{_mib(free)} free at {target} (dump ~{_mib(expected)}, RAM {_mib(total)})",
                     "", ev)


def readiness(root: str = "/", *, free_space: FreeSpace | None = None,
              run_commands: bool | None = None) -> Readiness:
    """Check a machine (or a file tree laid out like one) for kdump and core-dump readiness.

    `free_space(path) -> bytes` replaces statvfs (tests); `run_commands` allows running
    `makedumpfile --version` (default: only when root is "/").
    """
    ctx = _Ctx(root, free_space, run_commands)
    items: list[Check] = []
    try:
        items += ctx.config_checks()
    except Exception as exc:  # noqa: BLE001 - a check never stops the others
        items.append(Check("config.found", "config", "skip", f"check could not run: {exc}"))
    for cid, area, fn in (
        ("crashkernel.cmdline", "crashkernel", ctx.check_crashkernel_cmdline),
        ("crashkernel.reserved", "crashkernel", ctx.check_crashkernel_reserved),
        ("capture.loaded", "capture", ctx.check_capture_loaded),
        ("capture.service", "capture", ctx.check_capture_service),
        ("capture.makedumpfile", "capture", ctx.check_capture_makedumpfile),
        ("storage.space", "storage", ctx.check_storage_space),
    ):
        run_check(items, cid, area, fn)
    items += run_checks(from_system(root))
    subject = ctx.t.root + (f" (Linux {ctx.release})" if ctx.release else "")
    return Readiness(items, subject=subject)


__all__ = ["readiness", "Readiness", "parse_crashkernel", "Crashkernel", "CrashkernelError",
           "parse_size", "parse_iomem", "parse_kconfig", "makedumpfile_latest_kernel"]
