"""Kernel checks: page tables, kallsyms, BTF, the banner and the printk log."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pandas as pd

from ..errors import (
    CorruptDump,
    KdnbError,
    MissingDebugInfo,
    PageNotInDump,
    TypeNotFound,
)
from .checks import Check
from .validate_context import START_KERNEL_MAP, Context

# types (and members, the ones every kernel from 5.10 to 7.2 has) each kernel view reads
VIEW_TYPES = [
    ("tasks", "struct task_struct", ("tasks", "pid", "tgid", "comm", "real_parent", "children")),
    ("slab", "struct kmem_cache", ("list", "name")),
    ("modules", "struct module", ("list", "name", "state")),
]
LIST_MEMBERS = ("tasks", "children", "list")

def check_kernel_page_tables(ctx: Context) -> Check:
    """The page tables from VMCOREINFO translate the kernel text."""
    if not ctx.vmci and not ctx.adopt_discovered():
        return Check("kernel.page_tables", "kernel", "skip", "no VMCOREINFO to find page tables")
    pt = ctx.pagetable()
    if pt is None:
        return Check("kernel.page_tables", "kernel", "fail",
                     f"page tables cannot be located: {ctx._pagetable_error}",
                     "no kernel virtual memory can be read", {}, blocking=True)
    from ..errors import FaultError

    stext = int(ctx.vmci.get("SYMBOL(_stext)", "0") or "0", 16) or \
        START_KERNEL_MAP + int(ctx.vmci.get("KERNELOFFSET", "0") or "0", 16) + 0x1000000
    ev = {"levels": pt.levels, "root_paddr": pt.root_paddr, "_stext": stext,
          "phys_base": pt.phys_base}
    try:
        paddr = pt.walk(stext)
    except FaultError as exc:
        return Check("kernel.page_tables", "kernel", "fail",
                     f"the page tables do not translate the kernel text: {exc}",
                     "no kernel virtual memory can be read", ev, blocking=True)
    except KdnbError as exc:
        return Check("kernel.page_tables", "kernel", "fail", f"page table walk failed: {exc}",
                     "no kernel virtual memory can be read", ev, blocking=True)
    expect = pt.kernel_text_paddr(stext)
    ev.update(paddr=paddr, expected=expect)
    if paddr != expect:
        return Check("kernel.page_tables", "kernel", "fail",
                     f"_stext translates to {paddr:#x}, the text mapping says {expect:#x}",
                     "kernel addresses translate to the wrong memory", ev, blocking=True)
    try:
        ctx.reader.read_phys(paddr, 64)
    except (PageNotInDump, CorruptDump) as exc:
        return Check("kernel.page_tables", "kernel", "fail",
                     f"the kernel text page is not readable: {exc}",
                     "kernel code and data cannot be read", ev, blocking=True)
    return Check("kernel.page_tables", "kernel", "pass",
                 f"{pt.levels}-level page tables translate the kernel text "
                 f"(_stext {stext:#x} -> {paddr:#x})", "", ev)


def check_symbols_kallsyms(ctx: Context) -> Check:
    """kallsyms decodes, and which tier found it: VMCOREINFO's tables (1), a scan of the image
    (2), or with no VMCOREINFO the image located from CR3 (3); verified against _stext & co."""
    k = ctx.kernel()
    if k is None:
        if not ctx.vmci:
            return Check("symbols.kallsyms", "symbols", "skip", "no VMCOREINFO: kallsyms not located")
        return Check("symbols.kallsyms", "symbols", "fail",
                     f"kernel symbols could not be decoded: {ctx.kernel_error or ''}",
                     "no symbols: no backtraces with names, no tasks/slab/modules views "
                     "(pass vmlinux= or system_map=)", {})
    try:
        stext = k.symbol("_stext")
    except KdnbError as exc:
        return Check("symbols.kallsyms", "symbols", "fail", f"kernel symbols could not be decoded: {exc}",
                     "no symbols: no backtraces with names, no tasks/slab/modules views", {})
    source = dict(k.symbol_source)
    ev = {"symbols": len(k._table), "tier": source.get("tier"), "method": source.get("method"),
          "encoding": source.get("encoding"), "verified": source.get("verified")}
    want = k.vmcoreinfo.get("SYMBOL(_stext)")
    if want is not None and f"{stext:#x}" != f"{int(want, 16):#x}":
        return Check("symbols.kallsyms", "symbols", "fail",
                     f"kallsyms decoded ({ev['symbols']} symbols) but _stext does not match VMCOREINFO",
                     "symbol addresses may be wrong", ev)
    how = f"tier {source.get('tier')}: {source.get('method')}" if source.get("tier") else source.get("method", "")
    return Check("symbols.kallsyms", "symbols", "pass",
                 f"kallsyms decoded: {ev['symbols']} symbols ({how}; verified: "
                 f"{', '.join(source.get('verified') or [])})", "", ev)


def check_symbols_btf(ctx: Context) -> Check:
    """BTF is there and holds the types the kernel views need."""
    k = ctx.kernel()
    if k is None:
        return ctx.kernel_skip("symbols.btf", "BTF")
    try:
        btf = k.btf
    except MissingDebugInfo as exc:
        return Check("symbols.btf", "symbols", "fail", f"no BTF: {exc}",
                     "no types: tasks, slab and module views need a vmlinux with BTF or DWARF")
    except KdnbError as exc:
        return Check("symbols.btf", "symbols", "fail", f"BTF unreadable: {exc}",
                     "no types: tasks, slab and module views are unavailable")
    n = len(btf)
    ev = {"types": n}
    from ..kernel.dwarf import DwarfTypes

    if isinstance(btf, DwarfTypes):  # a vmlinux without BTF: types from its DWARF
        ev["source"] = "vmlinux DWARF"
        return Check("symbols.btf", "symbols", "pass",
                     f"types from the vmlinux DWARF ({n} named types indexed)", "", ev)
    try:
        ev["btf_bytes"] = k.symbol("__stop_BTF") - k.symbol("__start_BTF")
    except KdnbError:
        pass
    bad = _types_unusable(ctx, k)
    if bad:
        ev["unusable"] = bad
        views = sorted({view for view, _ in bad})
        return Check("symbols.btf", "symbols", "fail",
                     f"BTF has {n} types but not the ones the {', '.join(views)} view(s) need: "
                     + "; ".join(why for _, why in bad[:3]),
                     f"the {', '.join(views)} view(s) are unavailable or wrong", ev)
    return Check("symbols.btf", "symbols", "pass", f"BTF found: {n} types", "", ev)


def _types_unusable(ctx: Context, k: Any) -> list[tuple[str, str]]:
    """(view, why) for each type a view needs that is missing or malformed, and for each view
    that failed to find a type."""
    bad: list[tuple[str, str]] = []
    for view, type_name, members in VIEW_TYPES:
        try:
            why = _malformed(k.type(type_name), type_name, members)
        except KdnbError as exc:
            why = str(exc)
        if why:
            bad.append((view, why))
            continue
        error = ctx.view(view).error
        if isinstance(error, TypeNotFound):
            bad.append((view, f"the {view} view failed: {error}"))
    return bad


def _malformed(t: Any, type_name: str, members: tuple[str, ...]) -> str:
    """Why a struct's members cannot be what the views expect ("" when they can)."""
    size = t.size or 0
    for member in members:
        m = t.member(member)
        end = m.offset + (m.type.size or 0)
        if not size or end > size:
            return f"{type_name}.{member} ends at byte {end}, past the {size}-byte struct"
        kind = m.type.strip()
        if member in LIST_MEMBERS and kind.name != "list_head":
            return f"{type_name}.{member} is a {kind.c_name}, not a struct list_head"
    return ""


def check_kernel_banner(ctx: Context) -> Check:
    """linux_banner matches VMCOREINFO's OSRELEASE."""
    k = ctx.kernel()
    if k is None:
        return ctx.kernel_skip("kernel.banner", "linux_banner")
    banner = getattr(k, "banner", "")
    ev = {"banner": banner[:120], "OSRELEASE": ctx.vmci.get("OSRELEASE")}
    if not banner:
        return Check("kernel.banner", "kernel", "fail", "linux_banner could not be read",
                     "the kernel's identity is unconfirmed", ev)
    if not getattr(k, "banner_ok", False):
        return Check("kernel.banner", "kernel", "fail",
                     f"linux_banner {banner[:60]!r} does not match OSRELEASE "
                     f"{ctx.vmci.get('OSRELEASE')!r}",
                     "symbols or memory belong to another kernel: results are suspect", ev)
    return Check("kernel.banner", "kernel", "pass",
                 f"linux_banner matches OSRELEASE {ctx.vmci.get('OSRELEASE')}", "", ev)


def _read_log(ctx: Context) -> tuple[pd.DataFrame, list[str]]:
    """(log DataFrame, problems) through Dump.log when the kernel is up, else page tables."""
    k = ctx.kernel()
    if k is not None:
        log = ctx.d.log
        return log, list(log.attrs.get("kdnb", {}).get("problems", []))
    from ..views.log import read_log

    pt = ctx.pagetable()
    if pt is None:
        raise KdnbError(ctx.pagetable_error or "page tables unavailable")
    return read_log(pt.read, ctx.vmci)


def check_log_printk(ctx: Context) -> Check:
    """The printk ring buffer reads, with real text in its records."""
    if not ctx.vmci and not ctx.adopt_discovered():
        return Check("log.printk", "log", "skip", "no VMCOREINFO: the ring buffer is not located")
    try:
        log, problems = _read_log(ctx)
    except PageNotInDump as exc:
        ctx.log_error = exc
        return Check("log.printk", "log", "fail", f"the printk ring buffer is not in the dump: {exc}",
                     "no kernel log: the panic message must come from elsewhere (console)")
    except KdnbError as exc:
        ctx.log_error = exc
        return Check("log.printk", "log", "fail", f"the printk ring buffer is unreadable: {exc}",
                     "no kernel log: the panic message must come from elsewhere (console)")
    ctx.log_read = True
    ev = {"records": len(log), "problems": len(problems)}
    if len(log):
        ev["last_seq"] = int(log["seq"].iloc[-1])
    if not len(log):
        return Check("log.printk", "log", "fail", "the printk ring buffer holds no records",
                     "no kernel log", ev)
    blank = _blank_records(log)
    if blank > len(log) // 2:
        ev["blank_records"] = blank
        return Check("log.printk", "log", "fail",
                     f"{blank} of {len(log)} log records decode to empty or NUL text: the ring "
                     "buffer's text area is not what the kernel wrote (overlapping or misplaced "
                     "memory?)", "the kernel log is unreadable", ev)
    if problems:
        return Check("log.printk", "log", "warn",
                     f"{len(log)} log records, {len(problems)} damaged ({problems[0]})",
                     "some log lines are missing", ev)
    return Check("log.printk", "log", "pass", f"printk ring buffer readable: {len(log)} records",
                 "", ev)


def _blank_records(log: pd.DataFrame) -> int:
    """Log records whose text is empty or only NUL bytes."""
    if "text" not in log.columns or not len(log):
        return 0
    text = log["text"].astype("string").fillna("").str.strip("\0 ")
    return int((text == "").sum())


CHECKS: dict[str, Callable[[Context], Check]] = {
    "kernel.page_tables": check_kernel_page_tables,
    "symbols.kallsyms": check_symbols_kallsyms,
    "symbols.btf": check_symbols_btf,
    "kernel.banner": check_kernel_banner,
    "log.printk": check_log_printk,
}

