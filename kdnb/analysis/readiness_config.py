"""Readiness: what the kernel config must enable for a crash to be captured and analysed."""

from __future__ import annotations

from .checks import Check
from .readiness_machine import Machine


def config_checks(m: Machine) -> list[Check]:
    """kexec, crash dump, /proc/vmcore, sysfs, debug info (BTF) and relocatability in the kernel config."""
    items: list[Check] = []
    if not m.config:
        where = f"/boot/config-{m.release} or /proc/config.gz" if m.release \
            else "/boot/config-$(uname -r) or /proc/config.gz"
        items.append(Check("config.found", "config", "warn",
                           f"kernel config not found ({where})",
                           "kexec, crash dump and debug-info support cannot be confirmed"))
        for cid in ("config.kexec", "config.crash_dump", "config.proc_vmcore", "config.sysfs",
                    "config.debug_info", "config.relocatable"):
            items.append(Check(cid, "config", "skip", "no kernel config to check"))
        return items
    items.append(Check("config.found", "config", "pass",
                       f"kernel config read from {m.config_source}", "",
                       {"source": m.config_source, "options": len(m.config)}))

    def on(k: str) -> bool:
        return m.cfg(k) in ("y", "m")

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
                           f"{key}={m.cfg(key) or 'unset'}", "" if ok else why,
                           {key: m.cfg(key)}, blocking=not ok))
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
    items.append(_relocatable(m))
    return items

def _relocatable(m: Machine) -> Check:
    if m.cfg("CONFIG_RELOCATABLE") == "y":
        return Check("config.relocatable", "config", "pass",
                     "CONFIG_RELOCATABLE=y: the capture kernel runs from any reserved address")
    start = m.cfg("CONFIG_PHYSICAL_START")
    ev = {"CONFIG_PHYSICAL_START": start,
          "crashkernel_offset": m.ck.offset if m.ck else None}
    try:
        phys = int(start, 0) if start else None
    except ValueError:
        phys = None
    if m.ck is not None and m.ck.offset is not None and phys is not None:
        if m.ck.offset == phys:
            return Check("config.relocatable", "config", "pass",
                         f"not relocatable, and crashkernel=...@{phys:#x} matches "
                         "CONFIG_PHYSICAL_START", "", ev)
        return Check("config.relocatable", "config", "fail",
                     f"not relocatable: the capture kernel must load at CONFIG_PHYSICAL_START "
                     f"{phys:#x}, but crashkernel= reserves at {m.ck.offset:#x}",
                     f"use crashkernel=SIZE@{phys:#x} or a relocatable kernel", ev,
                     blocking=True)
    return Check("config.relocatable", "config", "fail",
                 "CONFIG_RELOCATABLE is off and crashkernel= has no @offset matching "
                 f"CONFIG_PHYSICAL_START ({start or 'unset'})",
                 "the capture kernel may not boot from the reserved region", ev)
