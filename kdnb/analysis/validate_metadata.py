"""Metadata checks: ELF notes, VMCOREINFO, CPU registers, dump level and crash time."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .checks import Check
from .validate_context import Context

# dump level bits (makedumpfile -d)
DL_ZERO, DL_CACHE, DL_CACHE_PRIVATE, DL_USER, DL_FREE = 1, 2, 4, 8, 16
DUMP_LEVEL_BITS = [
    (DL_ZERO, "zero pages", "pages that held only zeros are absent (reading one fails)"),
    (DL_CACHE, "non-private page cache", "file contents in the page cache are absent"),
    (DL_CACHE_PRIVATE, "private page cache", "page cache with private data (buffers) is absent"),
    (DL_USER, "user pages", "user memory excluded: no user stacks or process memory"),
    (DL_FREE, "free pages", "free pages absent: no traces of freed objects"),
]

# VMCOREINFO keys each analysis needs: (analysis, [alternatives per requirement])
VMCOREINFO_NEEDS: list[tuple[str, list[tuple[str, ...]]]] = [
    ("identity", [("OSRELEASE",), ("PAGESIZE",)]),
    ("address translation", [("SYMBOL(init_top_pgt)", "SYMBOL(swapper_pg_dir)"),
                             ("NUMBER(phys_base)",), ("KERNELOFFSET",)]),
    # kallsyms_relative_base is gone since 7.0 (a081b5789255 "kallsyms: Get rid of kallsyms
    # relative base"); before 6.0 ("vmcoreinfo: include kallsyms symbols") none of these exist
    ("symbols (kallsyms)", [(f"SYMBOL(kallsyms_{t})",) for t in
                            ("names", "num_syms", "token_table", "token_index", "offsets")]),
    ("kernel log", [("SYMBOL(prb)",), ("OFFSET(printk_ringbuffer.desc_ring)",),
                    ("OFFSET(prb_desc_ring.descs)",), ("SIZE(printk_info)",),
                    ("OFFSET(prb_data_ring.data)",)]),
    ("memory map (pages, zones)", [("SYMBOL(mem_section)", "SYMBOL(mem_map)"), ("SIZE(page)",),
                                   ("OFFSET(page.flags)",)]),
    ("crash time", [("CRASHTIME",)]),
]


def check_metadata_notes(ctx: Context) -> Check:
    """The ELF notes parse and the NT_PRSTATUS notes are whole."""
    notes = list(getattr(ctx.reader, "notes", []) or [])
    from ..dump.notes import PRSTATUS_MIN_SIZE, prstatus_notes

    prs = prstatus_notes(notes)
    short = [n for n in prs if len(n.desc) < PRSTATUS_MIN_SIZE]
    bad = [p for p in ctx.problems if p.startswith("note at") or "PT_NOTE" in p
           or "notes at" in p or "VMCOREINFO at" in p]
    ev = {"notes": len(notes), "prstatus": len(prs), "vmcoreinfo_bytes":
          len(getattr(ctx.reader, "vmcoreinfo_raw", b"") or b"")}
    if not notes:
        return Check("metadata.notes", "metadata", "fail",
                     "the dump has no ELF notes" + (f" ({bad[0]})" if bad else ""),
                     "no CPU registers and no VMCOREINFO from the notes", ev)
    if bad or short:
        msg = bad[:2] + [f"{len(short)} NT_PRSTATUS notes are too short"] if short else bad[:2]
        return Check("metadata.notes", "metadata", "fail", "; ".join(msg),
                     "notes after the damage are missing (registers, VMCOREINFO)", ev)
    return Check("metadata.notes", "metadata", "pass", f"{len(notes)} ELF notes parsed", "", ev)


def check_metadata_vmcoreinfo(ctx: Context) -> Check:
    """VMCOREINFO has the keys every analysis needs, with sane values."""
    if not ctx.vmci:
        qemu = ctx.header.get("qemu")
        detail = "no VMCOREINFO" + (" (a QEMU dump taken without -device vmcoreinfo)"
                                    if qemu else "")
        if ctx.adopt_discovered():
            return Check("metadata.vmcoreinfo", "metadata", "warn",
                         f"{detail}; the kernel ({ctx.vmci.get('OSRELEASE')}) was located from the "
                         "CPUs' CR3 instead (tier 3)",
                         "no crash time and no dump-level facts; offsets come from the kernel's BTF",
                         {"keys": 0, "discovered": True})
        return Check("metadata.vmcoreinfo", "metadata", "fail", detail,
                     "kernel memory cannot be located: no address translation, symbols, "
                     "log or kernel views", {"keys": 0}, blocking=True)
    missing: dict[str, list[str]] = {}
    for analysis, needs in VMCOREINFO_NEEDS:
        for alts in needs:
            if not any(a in ctx.vmci for a in alts):
                missing.setdefault(analysis, []).append(alts[0])
    ev: dict[str, Any] = {"keys": len(ctx.vmci)}
    if "symbols (kallsyms)" in missing and ctx.kernel() is not None:
        ev["kallsyms_not_in_vmcoreinfo"] = missing.pop("symbols (kallsyms)")  # found by a scan
    bad_values = []
    for key, base in (("PAGESIZE", 10), ("NUMBER(phys_base)", 10), ("KERNELOFFSET", 16),
                      ("SYMBOL(init_top_pgt)", 16), ("SYMBOL(_stext)", 16)):
        if key in ctx.vmci:
            try:
                int(ctx.vmci[key], base)
            except ValueError:
                bad_values.append(f"{key}={ctx.vmci[key]!r}")
    if "PAGESIZE" in ctx.vmci and ctx.vmci["PAGESIZE"] not in ("4096", "8192", "16384", "65536"):
        bad_values.append(f"PAGESIZE={ctx.vmci['PAGESIZE']!r}")
    if missing:
        ev["missing"] = {k: v for k, v in missing.items()}
    if bad_values:
        ev["garbled"] = bad_values
    blocking = "address translation" in missing
    if missing or bad_values:
        what = "; ".join(f"{a}: {', '.join(k)}" for a, k in missing.items())
        detail = (f"VMCOREINFO lacks keys ({what})" if missing else "VMCOREINFO values are garbled")
        if bad_values:
            detail += ("; " if missing else ": ") + ", ".join(bad_values[:3])
        status = "fail" if (blocking or bad_values or
                            set(missing) - {"crash time", "memory map (pages, zones)"}) else "warn"
        return Check("metadata.vmcoreinfo", "metadata", status, detail,
                     "unavailable: " + ", ".join(missing) if missing else
                     "values derived from garbled keys are wrong", ev,
                     blocking=blocking or "PAGESIZE" in " ".join(bad_values))
    scanned = ("; the kallsyms tables it does not name were found in the kernel image"
               if "kallsyms_not_in_vmcoreinfo" in ev else "")
    return Check("metadata.vmcoreinfo", "metadata", "pass",
                 f"VMCOREINFO has the {len(ctx.vmci)} keys every analysis needs "
                 f"(OSRELEASE {ctx.vmci.get('OSRELEASE', '?')}){scanned}", "", ev)


def check_metadata_qemu_vmcoreinfo(ctx: Context) -> Check:
    """A QEMU dump carries the guest's VMCOREINFO."""
    if not ctx.header.get("qemu"):
        return Check("metadata.qemu_vmcoreinfo", "metadata", "pass",
                     "not a QEMU dump-guest-memory file")
    if ctx.reader.vmcoreinfo:
        return Check("metadata.qemu_vmcoreinfo", "metadata", "pass",
                     "QEMU dump with the guest's VMCOREINFO (-device vmcoreinfo was present)")
    if ctx.adopt_discovered():
        return Check("metadata.qemu_vmcoreinfo", "metadata", "warn",
                     "QEMU dump without VMCOREINFO (no -device vmcoreinfo); kdnb located the kernel "
                     "from CR3", "add `-device vmcoreinfo` (and load qemu_fw_cfg in the guest) for "
                     "complete metadata next time", {})
    return Check("metadata.qemu_vmcoreinfo", "metadata", "fail",
                 "QEMU dump without VMCOREINFO: the VM ran without `-device vmcoreinfo` "
                 "(or the guest did not load qemu_fw_cfg), so QEMU had no VMCOREINFO to write",
                 "no address translation without a vmlinux; add `-device vmcoreinfo` to the "
                 "QEMU command line (and load qemu_fw_cfg in the guest) before the next dump",
                 {}, blocking=True)


def check_metadata_prstatus(ctx: Context) -> Check:
    """One NT_PRSTATUS note per online CPU."""
    cpus = ctx.cpus()
    n = len(cpus)
    online = ctx.read_symbol("__num_online_cpus", 4)
    source = "__num_online_cpus"
    if online is None or not 0 < online <= 8192:
        online = None
        mask = ctx.read_symbol("__cpu_online_mask")
        if mask is not None:
            online, source = mask.bit_count(), "__cpu_online_mask"
    if online is None and ctx.header.get("nr_cpus"):
        online, source = int(ctx.header["nr_cpus"]), "kdump header nr_cpus"
    ev = {"prstatus_notes": n, "online_cpus": online, "source": source if online else None}
    if n == 0:
        return Check("metadata.prstatus", "metadata", "fail", "no NT_PRSTATUS notes",
                     "no CPU registers: no backtrace of the crashing or any other CPU", ev)
    if online is None:
        return Check("metadata.prstatus", "metadata", "warn",
                     f"{n} NT_PRSTATUS notes; the number of online CPUs is unknown", "", ev)
    if n < online:
        return Check("metadata.prstatus", "metadata", "fail",
                     f"{n} NT_PRSTATUS notes for {online} online CPUs (from {source})",
                     f"{online - n} CPUs have no registers: their backtraces are missing", ev)
    if n > online:
        return Check("metadata.prstatus", "metadata", "warn",
                     f"{n} NT_PRSTATUS notes but only {online} online CPUs (from {source})",
                     "", ev)
    return Check("metadata.prstatus", "metadata", "pass",
                 f"one NT_PRSTATUS note per online CPU ({n})", "", ev)


def check_metadata_crash_registers(ctx: Context) -> Check:
    """The crashing CPU has kernel-mode registers."""
    cpus = ctx.cpus()
    if not len(cpus):
        return Check("metadata.crash_registers", "metadata", "fail",
                     "no CPU registers in the dump", "no backtrace of the crashing CPU")
    crash_cpu = None
    source = ""
    for sym in ("crashing_cpu", "panic_cpu"):
        v = ctx.read_symbol(sym, 4)
        if v is not None and v < 0x80000000 and v < len(cpus) + 1024:
            crash_cpu, source = v, sym
            break
    kernel_rip = [int(r) >= 0xFFFF800000000000 for r in cpus["rip"].fillna(0)]
    ev = {"crash_cpu": crash_cpu, "source": source or None,
          "cpus_with_kernel_rip": int(sum(kernel_rip))}
    if crash_cpu is not None:
        row = cpus[cpus["cpu"] == crash_cpu]
        if not len(row):
            return Check("metadata.crash_registers", "metadata", "fail",
                         f"the crashing CPU {crash_cpu} ({source}) has no NT_PRSTATUS note",
                         "no backtrace of the crashing CPU", ev)
        rip, rsp = int(row["rip"].iloc[0]), int(row["rsp"].iloc[0])
        ev.update(rip=rip, rsp=rsp)
        if rip == 0 or rsp == 0:
            return Check("metadata.crash_registers", "metadata", "fail",
                         f"the crashing CPU {crash_cpu}'s registers are empty (rip {rip:#x}, "
                         f"rsp {rsp:#x})", "no backtrace of the crashing CPU", ev)
        if rip < 0xFFFF800000000000:
            return Check("metadata.crash_registers", "metadata", "fail",
                         f"the crashing CPU {crash_cpu}'s instruction pointer {rip:#x} is not a "
                         "kernel address: its NT_PRSTATUS note looks corrupt",
                         "the crashing CPU's backtrace is wrong or missing", ev)
        return Check("metadata.crash_registers", "metadata", "pass",
                     f"crashing CPU {crash_cpu} ({source}) has registers (rip {rip:#x})", "", ev)
    if any(kernel_rip):
        return Check("metadata.crash_registers", "metadata", "pass",
                     f"{sum(kernel_rip)} CPUs have kernel-mode registers (crashing CPU unknown)",
                     "", ev)
    return Check("metadata.crash_registers", "metadata", "warn",
                 "no CPU has a kernel-mode instruction pointer", "backtraces may be wrong", ev)


def check_metadata_dump_level(ctx: Context) -> Check:
    """What the dump level excluded."""
    level = ctx.header.get("dump_level")
    if level is None:
        if ctx.header.get("filtered"):
            return Check("metadata.dump_level", "metadata", "pass",
                         "a filtered ELF dump (makedumpfile -E): the dump level is not recorded",
                         "excluded pages read as zeros in ELF dumps", {"filtered": True})
        return Check("metadata.dump_level", "metadata", "pass",
                     "unfiltered: every page of RAM was written", "", {"dump_level": 0})
    if not 0 <= level <= 31:
        return Check("metadata.dump_level", "metadata", "warn",
                     f"dump level {level} is not 0-31", "", {"dump_level": level})
    excluded = [what for bit, what, _ in DUMP_LEVEL_BITS if level & bit]
    conseq = [c for bit, _, c in DUMP_LEVEL_BITS if level & bit]
    ev = {"dump_level": level, "excluded": excluded}
    if not excluded:
        return Check("metadata.dump_level", "metadata", "pass",
                     "dump level 0: nothing was filtered", "", ev)
    return Check("metadata.dump_level", "metadata", "pass",
                 f"dump level {level} excluded: {', '.join(excluded)}",
                 f"by dump level {level}: " + "; ".join(conseq), ev)


def check_metadata_crash_time(ctx: Context) -> Check:
    """When the kernel crashed (CRASHTIME, else the dump header)."""
    from datetime import datetime, timezone

    ct = ctx.vmci.get("CRASHTIME")
    ev: dict[str, Any] = {"CRASHTIME": ct}
    if ct is not None:
        try:
            when = datetime.fromtimestamp(int(ct), tz=timezone.utc)
        except (ValueError, OverflowError, OSError):
            return Check("metadata.crash_time", "metadata", "warn",
                         f"CRASHTIME {ct!r} is not a time", "the crash time is unknown", ev)
        ev["time"] = when.isoformat()
        return Check("metadata.crash_time", "metadata", "pass",
                     f"crashed at {when:%Y-%m-%d %H:%M:%S} UTC (CRASHTIME)", "", ev)
    ts = ctx.header.get("timestamp")
    if ts is not None:
        ev["dump_written"] = ts.isoformat()
        return Check("metadata.crash_time", "metadata", "warn",
                     f"no CRASHTIME; the dump header says it was written at "
                     f"{ts:%Y-%m-%d %H:%M:%S} UTC", "the crash time is approximate", ev)
    why = " (QEMU dumps carry none)" if ctx.header.get("qemu") else ""
    return Check("metadata.crash_time", "metadata", "warn", f"no crash time in the dump{why}",
                 "the wall-clock time of the crash is unknown (the log has uptime stamps)", ev)


CHECKS: dict[str, Callable[[Context], Check]] = {
    "metadata.notes": check_metadata_notes,
    "metadata.vmcoreinfo": check_metadata_vmcoreinfo,
    "metadata.qemu_vmcoreinfo": check_metadata_qemu_vmcoreinfo,
    "metadata.prstatus": check_metadata_prstatus,
    "metadata.crash_registers": check_metadata_crash_registers,
    "metadata.dump_level": check_metadata_dump_level,
    "metadata.crash_time": check_metadata_crash_time,
}
