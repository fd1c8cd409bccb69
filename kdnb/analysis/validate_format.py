"""Format checks: the dump is what it says, its headers agree, nothing is cut or flagged missing."""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

from .checks import Check
from .validate_context import Context, pct, show_ranges
from .validate_descriptors import descriptors

FOUR_GIB = 1 << 32


def check_format_identified(ctx: Context) -> Check:
    """What the file is: its format and page compression."""
    h = ctx.header
    fmt = ctx.d.format
    ev = {"format": fmt, "compression": h.get("compression", "none")}
    if h.get("header_version") is not None:
        ev["header_version"] = h["header_version"]
    if h.get("split"):
        ev["parts"] = len(h.get("parts", []))
    names = {"elf64": "an ELF64 vmcore", "elf32": "an ELF32 vmcore",
             "qemu-elf": "a QEMU dump-guest-memory ELF dump",
             "kdump": "a makedumpfile kdump-compressed dump",
             "kdump-flattened": "a makedumpfile flattened (-F) dump",
             "kdump-split": "a makedumpfile split dump"}
    what = names.get(fmt, fmt)
    if h.get("qemu") and fmt.startswith("kdump"):
        what += " written by QEMU"
    comp = ev["compression"]
    pages = "uncompressed" if comp in ("none", None) else f"{comp}-compressed pages"
    return Check("format.identified", "format", "pass", f"{what} ({pages})", "", ev)


def check_format_header(ctx: Context) -> Check:
    """The header fields agree with each other and with VMCOREINFO."""
    h = ctx.header
    bad: list[str] = []
    warn: list[str] = []
    ev: dict[str, Any] = {}
    pagesize = ctx.vmci.get("PAGESIZE")
    if ctx.is_elf:
        ev.update(machine=h.get("machine"), pt_loads=h.get("pt_loads"),
                  e_flags=h.get("e_flags"))
        if h.get("machine") not in ("EM_X86_64", 62):
            warn.append(f"machine is {h.get('machine')}, kdnb reads x86_64 dumps")
        if not h.get("pt_loads"):
            bad.append("no PT_LOAD segments: the dump holds no memory")
    else:
        ev.update(header_version=h.get("header_version"), block_size=h.get("block_size"),
                  max_mapnr=h.get("max_mapnr"), nr_cpus=h.get("nr_cpus"),
                  status=h.get("status"))
        if h.get("header_version") is not None and not 1 <= h["header_version"] <= 6:
            bad.append(f"header version {h['header_version']} is not one makedumpfile "
                       "writes (1-6)")
        for part in ctx.kdump_parts():
            bad += _raw_kdump_header_problems(part, ctx.vmci, bool(h.get("qemu")))
        nr = h.get("nr_cpus")
        if nr is not None and not 0 < nr <= 8192:
            bad.append(f"nr_cpus {nr} is implausible")
        status = h.get("status") or 0
        if status & ~0x3F:
            bad.append(f"status has unknown bits {status:#x}")
        level = h.get("dump_level")
        if level is not None and not 0 <= level <= 31:
            bad.append(f"dump level {level} is not 0-31")
        if pagesize and pagesize.isdigit() and h.get("block_size") != int(pagesize):
            bad.append(f"block size {h.get('block_size')} differs from PAGESIZE {pagesize}")
        rel = (h.get("utsname") or {}).get("release", "")
        osrel = ctx.vmci.get("OSRELEASE", "")
        if rel and osrel and rel != osrel:
            bad.append(f"utsname release {rel!r} differs from VMCOREINFO OSRELEASE {osrel!r}")
        if not h.get("qemu") and h.get("timestamp") is None:
            warn.append(f"timestamp {h.get('timestamp_sec')} is implausible")
        mm = h.get("max_mapnr") or 0
        if h.get("max_mapnr") is not None and not mm:
            bad.append("max_mapnr is 0: the header describes no memory")
    for p in ctx.problems:
        if "bitmaps cover" in p or "sub-header" in p:
            bad.append(p)
    if bad:
        return Check("format.header", "format", "fail", "; ".join(bad),
                     "header fields are inconsistent: page lookups may be wrong", ev)
    if warn:
        return Check("format.header", "format", "warn", "; ".join(warn), "", ev)
    return Check("format.header", "format", "pass", "header fields are consistent", "", ev)


def check_file_truncated(ctx: Context) -> Check:
    """The file holds everything its headers describe."""
    h = ctx.header
    size = h.get("file_size")
    st = ctx.states()
    lost_pages = st["pages"].get("truncated", 0)
    ranges = st["ranges"]["truncated"]
    ev: dict[str, Any] = {"file_size": size}
    cut_notes = [p for p in ctx.problems if any(w in p for w in (
        "past the end of the file", "cut short", "end marker", "PT_LOADs need",
        "runs past the end of the file"))]
    where = ""
    if ctx.is_elf:
        ev["expected_size"] = h.get("expected_size")
        truncated = bool(h.get("truncated")) or bool(cut_notes)
        if h.get("truncated"):
            cut_notes = [p for p in cut_notes if "PT_LOADs need" not in p]
        if truncated and h.get("expected_size") and h.get("truncated"):
            where = (f"the file is {size} bytes but its PT_LOADs need {h['expected_size']} "
                     f"({pct(size or 0, h['expected_size']):.0f}% written)")
    else:
        desc_off = h.get("descriptors_offset") or 0
        present = h.get("present_pages") or 0
        ev.update(descriptors_offset=desc_off, present_pages=present)
        desc_end = desc_off + 24 * present
        a = descriptors(ctx)
        lost_pages = a["truncated"] + a["missing"]
        if a["expected_end"]:
            ev["expected_size"] = a["expected_end"]
        truncated = bool(cut_notes) or lost_pages > 0
        if size is not None and desc_off and size < desc_off:
            truncated = True
            where = f"the file ends at {size:#x}, before the page descriptors at {desc_off:#x}"
        elif size is not None and present and size < desc_end:
            truncated = True
            where = (f"the file ends at {size:#x}, inside the page descriptors "
                     f"({desc_off:#x}-{desc_end:#x})")
        elif lost_pages:
            where = (f"the file ends at {size:#x}, inside the page data (which needs "
                     f"{a['expected_end']:#x})")
        if a["corrupt"] and not lost_pages:
            ranges = []
    if not truncated:
        return Check("file.truncated", "file", "pass",
                     "the file holds everything its headers describe", "", ev)
    ev.update(pages_lost=lost_pages, ranges=show_ranges(ranges))
    parts = [where] if where else []
    parts += cut_notes[:3]
    if lost_pages:
        parts.append(f"{lost_pages} pages ({lost_pages * ctx.reader.page_size >> 20} MiB) are "
                     f"lost in {len(ranges)} physical range(s)"
                     + (f", first {show_ranges(ranges)[0]}" if ranges else ""))
    return Check("file.truncated", "file", "fail", "truncated: " + "; ".join(parts),
                 "memory in the lost ranges cannot be read; structures there are missing", ev)


def check_file_incomplete(ctx: Context) -> Check:
    """makedumpfile did not flag the dump incomplete (ENOSPC)."""
    h = ctx.header
    if not h.get("incomplete"):
        return Check("file.incomplete", "file", "pass", "the incomplete flag is not set")
    st = ctx.states()
    lost = st["pages"].get("lost", 0)
    ev = {"pages_lost": lost, "ranges": show_ranges(st["ranges"]["lost"])}
    flag = "e_flags bit 0" if ctx.is_elf else "header status 0x8"
    detail = (f"makedumpfile marked the dump incomplete ({flag}): it stopped writing, "
              "usually because the dump target ran out of space (ENOSPC)")
    if lost:
        detail += f"; {lost} pages were never written"
    elif ctx.is_elf:
        detail += "; trailing PT_LOADs are missing"
    return Check("file.incomplete", "file", "fail", detail,
                 "pages after the point where writing stopped are missing", ev)


def check_format_elf32(ctx: Context) -> Check:
    """ELF32 headers did not drop memory above 4 GiB."""
    if not (ctx.is_elf and getattr(ctx.reader, "elfclass", 64) == 32):
        return Check("format.elf32", "format", "pass", "64-bit headers: all memory can be described")
    max_pfn = ctx.read_symbol("max_pfn")
    top = max_pfn * ctx.reader.page_size if max_pfn else None
    ev = {"kernel_max_pfn": max_pfn, "dump_max_paddr": ctx.reader.max_pfn * ctx.reader.page_size}
    if top is None:
        return Check("format.elf32", "format", "warn",
                     "ELF32 headers (--elf32-core-headers) cannot describe memory above 4 GiB; "
                     "the kernel's max_pfn could not be read to tell whether any was lost",
                     "memory above 4 GiB, if the machine had any, is missing", ev)
    if top > FOUR_GIB:
        return Check("format.elf32", "format", "fail",
                     f"ELF32 headers on a machine with memory up to {top >> 20} MiB: "
                     f"{(top - FOUR_GIB) >> 20} MiB above 4 GiB is not in the dump",
                     "memory above 4 GiB is missing; recapture without --elf32-core-headers", ev)
    return Check("format.elf32", "format", "pass",
                 "ELF32 headers, but the machine's memory ends below 4 GiB", "", ev)


def _raw_kdump_header_problems(part: Any, vmci: dict[str, str], qemu: bool) -> list[str]:
    """Cross-check the raw disk_dump_header and kdump_sub_header fields of one file."""
    bad: list[str] = []
    h = part.header
    raw = part.source.pread(0, 464)
    if len(raw) < 464:
        return bad
    bs = h.get("block_size") or 4096
    max32, = struct.unpack_from("<I", raw, 440)
    cur_cpu, nr_cpus = struct.unpack_from("<ii", raw, 456)
    m64 = h.get("max_mapnr_64")
    if m64 and max32 not in (m64 & 0xFFFFFFFF, min(m64, 0xFFFFFFFF)):
        bad.append(f"max_mapnr {max32} disagrees with max_mapnr_64 {m64}")
    if nr_cpus > 0 and not 0 <= cur_cpu < max(nr_cpus, 1):
        bad.append(f"current_cpu {cur_cpu} is not below nr_cpus {nr_cpus}")
    max_mapnr = h.get("max_mapnr") or 0
    need_blocks = 2 * -(-((max_mapnr + 7) // 8) // bs)
    bb = h.get("bitmap_blocks") or 0
    if max_mapnr and (bb % 2 or bb < need_blocks or bb > need_blocks + 2):
        bad.append(f"bitmap_blocks {bb} does not fit max_mapnr {max_mapnr} "
                   f"({need_blocks} expected)")
    ends = [h.get(f"offset_{k}", 0) + h.get(f"size_{k}", 0)
            for k in ("note", "vmcoreinfo", "eraseinfo") if h.get(f"size_{k}")]
    sub_blocks = h.get("sub_hdr_size") or 0
    if ends and h.get("header_version", 0) >= 4:
        need = -(-max(ends) // bs) - 1
        if sub_blocks < need or sub_blocks > need + 1:
            bad.append(f"sub_hdr_size {sub_blocks} blocks does not fit the notes ending at "
                       f"{max(ends):#x} ({need} expected)")
    sub = part.source.pread(bs, 8)
    if len(sub) == 8 and not qemu and "NUMBER(phys_base)" in vmci:
        pb, = struct.unpack("<q", sub)
        try:
            if pb != int(vmci["NUMBER(phys_base)"], 10):
                bad.append(f"sub-header phys_base {pb:#x} differs from VMCOREINFO "
                           f"{vmci['NUMBER(phys_base)']}")
        except ValueError:
            pass
    return bad


CHECKS: dict[str, Callable[[Context], Check]] = {
    "format.identified": check_format_identified,
    "format.header": check_format_header,
    "file.truncated": check_file_truncated,
    "file.incomplete": check_file_incomplete,
    "format.elf32": check_format_elf32,
}
