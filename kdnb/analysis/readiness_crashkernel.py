"""Readiness: the `crashkernel=` request and the memory the kernel really reserved."""

from __future__ import annotations

from typing import Any

from .checks import Check
from .readiness_machine import Machine, mib


def check_crashkernel_cmdline(m: Machine) -> Check:
    """The crashkernel= of the command line, parsed in every syntax, against the RAM."""
    ev: dict[str, Any] = {"cmdline": m.cmdline[:200], "system_ram": m.system_ram()}
    if not m.cmdline:
        return Check("crashkernel.cmdline", "crashkernel", "skip",
                     "no /proc/cmdline to read", "", ev)
    if m.ck_error:
        return Check("crashkernel.cmdline", "crashkernel", "fail",
                     f"crashkernel= is malformed: {m.ck_error}",
                     "the kernel reserves nothing: no capture possible", ev, blocking=True)
    ck = m.ck
    if ck is None:
        return Check("crashkernel.cmdline", "crashkernel", "fail",
                     "no crashkernel= on the kernel command line",
                     "no memory is reserved for a capture kernel: add crashkernel=256M "
                     "(or a range like 1G-4G:256M,4G-:512M) and reboot", ev, blocking=True)
    ev.update(kind=ck.kind, size=ck.size, offset=ck.offset, low=ck.low,
              ranges=[f"{mib(a)}-{mib(b) if b else ''}:{mib(s)}" for a, b, s in ck.ranges])
    if ck.kind == "auto":
        return Check("crashkernel.cmdline", "crashkernel", "warn",
                     "crashkernel=auto: only some distribution kernels understand it",
                     "check crashkernel.reserved for what was actually reserved", ev)
    if ck.kind == "ranges" and ck.size == 0:
        return Check("crashkernel.cmdline", "crashkernel", "fail",
                     f"{ck.describe()}: no range covers this machine's "
                     f"{mib(m.system_ram())} of RAM", "nothing is reserved", ev,
                     blocking=True)
    what = {"size": f"{mib(ck.size)}", "size@offset": f"{mib(ck.size)} at {ck.offset:#x}"
            if ck.offset is not None else "", "ranges": f"{mib(ck.size)} for "
            f"{mib(m.system_ram())} of RAM" if ck.size is not None else "a RAM-dependent size",
            "high": f"{mib(ck.size)} above 4 GiB"
            + (f" + {mib(ck.low)} low" if ck.low is not None else " (+ a default low region)")}[ck.kind]
    return Check("crashkernel.cmdline", "crashkernel", "pass", f"{ck.describe()}: {what}", "", ev)

def check_crashkernel_reserved(m: Machine) -> Check:
    """What the kernel reserved (/proc/iomem, kexec_crash_size) against what was asked."""
    crash = m.iomem["crash"]
    sysfs = m.t.read("sys/kernel/kexec_crash_size")
    sysfs_size = int(sysfs.strip()) if sysfs and sysfs.strip().isdigit() else None
    iomem_size = sum(e - s for s, e in crash) if crash and not m.iomem["hidden"] else None
    ev = {"iomem_crash_kernel": [f"{s:#x}-{e - 1:#x}" for s, e in crash]
          if not m.iomem["hidden"] else "hidden (not root)",
          "iomem_bytes": iomem_size, "kexec_crash_size": sysfs_size,
          "requested": m.ck.size if m.ck else None}
    reserved = iomem_size if iomem_size is not None else sysfs_size
    if reserved is None:
        if not crash and m.t.exists("proc/iomem") and not m.iomem["hidden"]:
            reserved = 0
        else:
            return Check("crashkernel.reserved", "crashkernel", "skip",
                         "neither /proc/iomem nor /sys/kernel/kexec_crash_size is readable",
                         "", ev)
    if reserved == 0 and (sysfs_size in (None, 0)):
        why = "" if m.ck else " (no crashkernel= given)"
        return Check("crashkernel.reserved", "crashkernel", "fail",
                     f"no memory is reserved for a capture kernel{why}",
                     "a crash cannot be captured", ev, blocking=True)
    problems = []
    if sysfs_size is not None and iomem_size is not None and m.ck and \
            m.ck.kind != "high" and sysfs_size != iomem_size:
        problems.append(f"/sys/kernel/kexec_crash_size says {mib(sysfs_size)} but "
                        f"/proc/iomem reserves {mib(iomem_size)}")
    req = m.ck.size if m.ck else None
    if req and m.ck and m.ck.kind != "high":
        got = sysfs_size if sysfs_size is not None else reserved
        if got < req:
            problems.append(f"{mib(got)} reserved, {mib(req)} requested "
                            "(the kernel could not find that much contiguous memory?)")
    if m.ck and m.ck.offset is not None and crash and not m.iomem["hidden"]:
        if crash[0][0] != m.ck.offset:
            problems.append(f"reserved at {crash[0][0]:#x}, requested @{m.ck.offset:#x}")
    if problems:
        return Check("crashkernel.reserved", "crashkernel", "warn", "; ".join(problems),
                     "the capture kernel may not fit or may fail to boot", ev)
    return Check("crashkernel.reserved", "crashkernel", "pass",
                 f"{mib(reserved)} reserved for the capture kernel"
                 + (" (matches kexec_crash_size)" if sysfs_size == iomem_size and sysfs_size
                    else ""), "", ev)
