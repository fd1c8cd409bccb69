"""Capture validation: is this dump complete, and what analysis can be trusted on it?

`validate(dump)` runs every check (a broken dump still yields every row: checks that need a
missing piece say `skip` and why) and gives a verdict: `usable`, `degraded` or `unusable`;
`validate_path(path)` also handles files that do not open (`not a dump`).
"""

from __future__ import annotations

import os
import struct
import time
from typing import Any, Callable

import numpy as np

from ..errors import CorruptDump, FormatError, KdnbError, MissingDebugInfo, PageNotInDump, \
    TruncatedDump
from .checks import Check, CheckTable, run_check

AREAS = ["file", "format", "metadata", "coverage", "kernel", "symbols", "log"]
VERDICTS = ["usable", "degraded", "unusable", "not a dump"]
EXIT_CODES = {"usable": 0, "degraded": 1, "unusable": 2, "not a dump": 3}

# Every check validate() reports, in order, with its area.
CHECKS: list[tuple[str, str]] = [
    ("format.identified", "format"),
    ("format.header", "format"),
    ("file.truncated", "file"),
    ("file.incomplete", "file"),
    ("format.descriptors", "format"),
    ("format.elf32", "format"),
    ("metadata.notes", "metadata"),
    ("metadata.vmcoreinfo", "metadata"),
    ("metadata.qemu_vmcoreinfo", "metadata"),
    ("metadata.prstatus", "metadata"),
    ("metadata.crash_registers", "metadata"),
    ("metadata.dump_level", "metadata"),
    ("metadata.crash_time", "metadata"),
    ("coverage.ram", "coverage"),
    ("kernel.page_tables", "kernel"),
    ("symbols.kallsyms", "symbols"),
    ("symbols.btf", "symbols"),
    ("kernel.banner", "kernel"),
    ("log.printk", "log"),
    ("kernel.in_use_memory", "kernel"),
]
AREA_OF = dict(CHECKS)

START_KERNEL_MAP = 0xFFFFFFFF80000000
FOUR_GIB = 1 << 32
PARTIAL_FRACTION = 0.25
MAX_RANGES = 8  # physical ranges listed in evidence
WALK_LIMIT = 200_000  # list entries visited per walk (tasks, caches, slabs, modules)

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
    ("symbols (kallsyms)", [(f"SYMBOL(kallsyms_{t})",) for t in
                            ("names", "num_syms", "token_table", "token_index", "offsets",
                             "relative_base")]),
    ("kernel log", [("SYMBOL(prb)",), ("OFFSET(printk_ringbuffer.desc_ring)",),
                    ("OFFSET(prb_desc_ring.descs)",), ("SIZE(printk_info)",),
                    ("OFFSET(prb_data_ring.data)",)]),
    ("memory map (pages, zones)", [("SYMBOL(mem_section)", "SYMBOL(mem_map)"), ("SIZE(page)",),
                                   ("OFFSET(page.flags)",)]),
    ("crash time", [("CRASHTIME",)]),
]


class Validation(CheckTable):
    """The checks of one dump and a verdict: usable, degraded, unusable (or not a dump).

    `.checks` is a DataFrame; `.verdict` a str; `.exit_code` what `kdnb validate` returns;
    `to_dict()` for JSON; `str()` a plain-text table; in Jupyter it renders as HTML.
    """

    AREAS = AREAS
    VERDICTS = VERDICTS
    EXIT_CODES = EXIT_CODES  # 0 usable, 1 degraded, 2 unusable, 3 not a dump
    title = "capture validation"

    def __init__(self, checks, subject: str = "", verdict: str | None = None, summary: str = "",
                 seconds: float | None = None) -> None:
        super().__init__(checks, subject, verdict, summary)
        self.seconds = seconds

    def _decide(self) -> str:
        if any(c.status == "fail" and c.blocking for c in self.items):
            return "unusable"
        if any(c.status == "fail" for c in self.items):
            return "degraded"
        return "usable"

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        if self.seconds is not None:
            out["seconds"] = round(self.seconds, 3)
        return out


# -------------------------------------------------------------------------------------------
# entry points
# -------------------------------------------------------------------------------------------

def validate(dump: Any) -> Validation:
    """Validate an opened `kdnb.Dump` (or a path, see validate_path). Never raises KdnbError."""
    if isinstance(dump, (str, os.PathLike)):
        return validate_path(dump)
    t0 = time.perf_counter()
    ctx = _Context(dump)
    items: list[Check] = []
    for check_id, area in CHECKS:
        fn = getattr(ctx, "check_" + check_id.replace(".", "_"))
        run_check(items, check_id, area, fn)
    return Validation(items, subject=str(dump.path), seconds=time.perf_counter() - t0)


def validate_path(path: "str | os.PathLike[str]") -> Validation:
    """Open and validate a file; a file that does not open still yields a Validation."""
    from ..api import open as open_dump

    t0 = time.perf_counter()
    name = os.fspath(path)
    try:
        dump = open_dump(name)
    except FormatError as exc:
        cut = _cut_signature(name)
        if cut:
            return _not_opened(name, "file.truncated", f"the file ends after {cut[1]} bytes, "
                               f"inside the {cut[0]} signature", "unusable", t0,
                               {"file_size": cut[1]})
        return _not_opened(name, "format.identified", str(exc), "not a dump", t0, {})
    except TruncatedDump as exc:
        return _not_opened(name, "file.truncated", str(exc), "unusable", t0, _size_of(name))
    except (CorruptDump, KdnbError) as exc:
        cut = _headers_cut(name)
        if cut:
            return _not_opened(name, "file.truncated", f"{cut}; {exc}", "unusable", t0,
                               _size_of(name))
        return _not_opened(name, "format.header", str(exc), "unusable", t0, _size_of(name))
    except Exception as exc:  # a reader bug must still give an answer
        return _not_opened(name, "format.header", f"the dump could not be opened "
                           f"({type(exc).__name__}: {exc})", "unusable", t0, _size_of(name))
    try:
        result = validate(dump)
    finally:
        dump.close()
    result.seconds = time.perf_counter() - t0
    return result


def _size_of(path: str) -> dict[str, Any]:
    try:
        return {"file_size": os.path.getsize(path)}
    except OSError:
        return {}


def _not_opened(path: str, failing: str, detail: str, verdict: str, t0: float,
                evidence: dict[str, Any]) -> Validation:
    items = []
    for check_id, area in CHECKS:
        if check_id == failing:
            items.append(Check(check_id, area, "fail", detail,
                               "nothing can be read from this file", evidence, blocking=True))
        elif check_id == "format.identified" and verdict != "not a dump":
            items.append(Check(check_id, area, "pass", "the file starts like a crash dump"))
        else:
            items.append(Check(check_id, area, "skip", "the dump could not be opened"))
    return Validation(items, subject=path, verdict=verdict, seconds=time.perf_counter() - t0)


_SIGNATURES = ((b"\x7fELF", "ELF"), (b"KDUMP   ", "kdump"), (b"DISKDUMP", "diskdump"),
               (b"makedumpfile", "flattened makedumpfile"))


def _cut_signature(path: str) -> tuple[str, int] | None:
    """(format, size) when the whole file is a proper prefix of a dump signature."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError:
        return None
    if 0 < size < 16:
        for magic, what in _SIGNATURES:
            if len(head) < len(magic) and magic.startswith(head):
                return what, size
    return None


def _headers_cut(path: str) -> str:
    """Why the headers of a dump that failed to open are cut short ("" when they are not)."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError:
        return ""
    if head.startswith(b"\x7fELF"):
        is64 = len(head) > 4 and head[4] == 2
        ehsize = 64 if is64 else 52
        if size < ehsize:
            return f"the file ends after {size} bytes, inside the {ehsize}-byte ELF header"
        if is64:
            phoff, = struct.unpack_from("<Q", head, 32)
            phentsize, phnum = struct.unpack_from("<HH", head, 54)
        else:
            phoff, = struct.unpack_from("<I", head, 28)
            phentsize, phnum = struct.unpack_from("<HH", head, 42)
        need = phoff + phentsize * phnum
        if size < need:
            return f"the file ends at {size} bytes, inside the program headers (which need {need})"
    elif head.startswith(b"makedumpfile") and size < 4096:
        return f"the file ends after {size} bytes, inside the 4096-byte flattened header"
    elif head[:8] in (b"KDUMP   ", b"DISKDUMP") and size < 4096:
        return f"the file ends after {size} bytes, inside the kdump header block"
    return ""


# -------------------------------------------------------------------------------------------
# the checks
# -------------------------------------------------------------------------------------------

def _ranges(segs: list[tuple[int, int]]) -> list[str]:
    return [f"{s:#x}-{e:#x}" for s, e in segs[:MAX_RANGES]]


def _pct(a: int, b: int) -> float:
    return 100.0 * a / b if b else 0.0


class _Context:
    """What the checks share: the dump, and lazily the kernel, page tables and walks."""

    def __init__(self, dump: Any) -> None:
        self.d = dump
        self.reader = dump.reader
        self.header: dict = dict(dump.header or {})
        self.vmci: dict[str, str] = dict(dump.vmcoreinfo or {})
        self.problems: list[str] = list(self.header.get("problems") or [])
        self._kernel: Any = None
        self._kernel_error: str | None = None
        self._kernel_tried = False
        self._pagetable: Any = None
        self._pagetable_error: str | None = None
        self._states: dict[str, Any] | None = None
        self._log_error: BaseException | None = None
        self._log_read = False

    # -- shared facts ------------------------------------------------------------------
    @property
    def is_kdump(self) -> bool:
        return hasattr(self.reader, "page_states") or hasattr(self.reader, "parts")

    @property
    def is_elf(self) -> bool:
        return hasattr(self.reader, "elfclass")

    def states(self) -> dict[str, Any]:
        """Pages per state and the ranges of the truncated and lost ones (deduplicated)."""
        if self._states is not None:
            return self._states
        psz = self.reader.page_size
        segs = self.reader.segments()
        if self.is_elf and len(segs) > 1:
            # the kernel text PT_LOAD maps memory the direct-map PT_LOADs also describe
            direct = [s for s in segs if s.vaddr is None or s.vaddr < START_KERNEL_MAP]
            if direct:
                segs = direct
        pages = {"present": 0, "excluded": 0, "truncated": 0, "lost": 0}
        ranges: dict[str, list[tuple[int, int]]] = {"truncated": [], "lost": [], "excluded": []}
        for s in segs:
            n = (s.end - s.start + psz - 1) // psz
            pages[s.state] = pages.get(s.state, 0) + n
            if s.state in ranges:
                ranges[s.state].append((s.start, s.end))
        self._states = {"pages": pages, "ranges": ranges}
        return self._states

    def kernel(self) -> Any:
        """The Kernel, or None (reason in kernel_error)."""
        if not self._kernel_tried:
            self._kernel_tried = True
            why = self._kallsyms_implausible()
            if why:
                self._kernel_error = why
            else:
                try:
                    self._kernel = self.d.kernel
                except Exception as exc:  # noqa: BLE001 - reported as a check, never raised
                    self._kernel_error = f"{type(exc).__name__}: {exc}" \
                        if not isinstance(exc, KdnbError) else str(exc)
        return self._kernel

    def _kallsyms_implausible(self) -> str:
        """Refuse kallsyms table addresses that would make the decoder read gigabytes."""
        keys = [f"SYMBOL(kallsyms_{t})" for t in ("names", "num_syms", "token_table",
                                                   "token_index", "offsets", "relative_base")]
        try:
            addrs = [int(self.vmci[k], 16) for k in keys if k in self.vmci]
            stext = int(self.vmci.get("SYMBOL(_stext)", "0"), 16)
        except ValueError as exc:
            return f"VMCOREINFO kallsyms entries are garbled ({exc})"
        if not addrs or not stext:
            return ""
        if any(not stext <= a < stext + (1 << 30) for a in addrs):
            return "VMCOREINFO kallsyms addresses lie outside the kernel image (corrupt notes?)"
        names = addrs[0] if "SYMBOL(kallsyms_names)" in self.vmci else None
        if names is not None:
            after = [a for a in addrs if a > names]
            if after and min(after) - names > 64 << 20:
                return "VMCOREINFO kallsyms_names spans more than 64 MiB (corrupt notes?)"
        return ""

    def pagetable(self) -> Any:
        """A PageTable built from VMCOREINFO alone (independent of kallsyms)."""
        if self._pagetable is None and self._pagetable_error is None:
            from ..kernel.pagetable import PageTable

            try:
                self._pagetable = PageTable(self.reader.read_phys, self.vmci)
            except Exception as exc:  # noqa: BLE001
                self._pagetable_error = str(exc)
        return self._pagetable

    def kernel_skip(self, check_id: str, what: str) -> Check:
        reason = self._kernel_error or "the kernel layer is not available"
        return Check(check_id, AREA_OF[check_id], "skip", f"{what} not checked: {reason}")

    def read_symbol(self, name: str, size: int = 8) -> int | None:
        """The unsigned `size`-byte value of a kernel variable, or None when unreadable."""
        k = self.kernel()
        if k is None:
            return None
        try:
            return int.from_bytes(k.read(k.symbol(name), size), "little")
        except Exception:  # noqa: BLE001
            return None

    # -- format ------------------------------------------------------------------------
    def check_format_identified(self) -> Check:
        h = self.header
        fmt = self.d.format
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

    def check_format_header(self) -> Check:
        h = self.header
        bad: list[str] = []
        warn: list[str] = []
        ev: dict[str, Any] = {}
        pagesize = self.vmci.get("PAGESIZE")
        if self.is_elf:
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
            for part in self._kdump_parts():
                bad += _raw_kdump_header_problems(part, self.vmci, bool(h.get("qemu")))
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
            osrel = self.vmci.get("OSRELEASE", "")
            if rel and osrel and rel != osrel:
                bad.append(f"utsname release {rel!r} differs from VMCOREINFO OSRELEASE {osrel!r}")
            if not h.get("qemu") and h.get("timestamp") is None:
                warn.append(f"timestamp {h.get('timestamp_sec')} is implausible")
            mm = h.get("max_mapnr") or 0
            if h.get("max_mapnr") is not None and not mm:
                bad.append("max_mapnr is 0: the header describes no memory")
        for p in self.problems:
            if "bitmaps cover" in p or "sub-header" in p:
                bad.append(p)
        if bad:
            return Check("format.header", "format", "fail", "; ".join(bad),
                         "header fields are inconsistent: page lookups may be wrong", ev)
        if warn:
            return Check("format.header", "format", "warn", "; ".join(warn), "", ev)
        return Check("format.header", "format", "pass", "header fields are consistent", "", ev)

    # -- file --------------------------------------------------------------------------
    def check_file_truncated(self) -> Check:
        h = self.header
        size = h.get("file_size")
        st = self.states()
        lost_pages = st["pages"].get("truncated", 0)
        ranges = st["ranges"]["truncated"]
        ev: dict[str, Any] = {"file_size": size}
        cut_notes = [p for p in self.problems if any(w in p for w in (
            "past the end of the file", "cut short", "end marker", "PT_LOADs need",
            "runs past the end of the file"))]
        where = ""
        if self.is_elf:
            ev["expected_size"] = h.get("expected_size")
            truncated = bool(h.get("truncated")) or bool(cut_notes)
            if h.get("truncated"):
                cut_notes = [p for p in cut_notes if "PT_LOADs need" not in p]
            if truncated and h.get("expected_size") and h.get("truncated"):
                where = (f"the file is {size} bytes but its PT_LOADs need {h['expected_size']} "
                         f"({_pct(size or 0, h['expected_size']):.0f}% written)")
        else:
            desc_off = h.get("descriptors_offset") or 0
            present = h.get("present_pages") or 0
            ev.update(descriptors_offset=desc_off, present_pages=present)
            desc_end = desc_off + 24 * present
            a = self.descriptors()
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
        ev.update(pages_lost=lost_pages, ranges=_ranges(ranges))
        parts = [where] if where else []
        parts += cut_notes[:3]
        if lost_pages:
            parts.append(f"{lost_pages} pages ({lost_pages * self.reader.page_size >> 20} MiB) are "
                         f"lost in {len(ranges)} physical range(s)"
                         + (f", first {_ranges(ranges)[0]}" if ranges else ""))
        return Check("file.truncated", "file", "fail", "truncated: " + "; ".join(parts),
                     "memory in the lost ranges cannot be read; structures there are missing", ev)

    def check_file_incomplete(self) -> Check:
        h = self.header
        if not h.get("incomplete"):
            return Check("file.incomplete", "file", "pass", "the incomplete flag is not set")
        st = self.states()
        lost = st["pages"].get("lost", 0)
        ev = {"pages_lost": lost, "ranges": _ranges(st["ranges"]["lost"])}
        flag = "e_flags bit 0" if self.is_elf else "header status 0x8"
        detail = (f"makedumpfile marked the dump incomplete ({flag}): it stopped writing, "
                  "usually because the dump target ran out of space (ENOSPC)")
        if lost:
            detail += f"; {lost} pages were never written"
        elif self.is_elf:
            detail += "; trailing PT_LOADs are missing"
        return Check("file.incomplete", "file", "fail", detail,
                     "pages after the point where writing stopped are missing", ev)

    def _kdump_parts(self) -> list:
        r = self.reader
        return list(getattr(r, "parts", None) or ([r] if hasattr(r, "_all_descriptors") else []))

    def descriptors(self) -> dict[str, Any]:
        """Page descriptors checked against the way makedumpfile writes page data: one after
        the other from the end of the descriptor table, the shared zero page once."""
        if getattr(self, "_desc", None) is not None:
            return self._desc
        out = {"descriptors": 0, "corrupt": 0, "truncated": 0, "missing": 0, "expected_end": 0,
               "file_size": 0, "first_bad": None, "corrupt_pfns": []}
        for part in self._kdump_parts():
            n = int(part.header.get("present_pages") or 0)
            fsize = part.source.size
            out["file_size"] += fsize
            if not n:
                continue
            descs = part._all_descriptors(n)
            data_start = part._desc_off + 24 * n
            offset = descs["offset"]
            size = descs["size"].astype(np.int64)
            flags = descs["flags"]
            empty = (offset == 0) & (size == 0)
            have = np.flatnonzero(~empty)
            out["descriptors"] += len(have)
            # descriptors past the end of a cut table read as zeros: count them as missing
            table_end = part._desc_off + 24 * n
            if fsize < table_end:
                out["missing"] += n - max(0, (fsize - part._desc_off) // 24)
            o, sz, fl = offset[have], size[have], flags[have]
            bad = (sz <= 0) | (sz > part.page_size) | ((fl & ~np.uint32(0x27)) != 0) | \
                (o < data_start)
            # shared pages (the zero page) appear many times: keep their first occurrence only
            _, first_idx = np.unique(o, return_index=True)
            keep = np.zeros(len(o), dtype=bool)
            keep[first_idx] = True
            chain = np.flatnonzero(keep & ~bad)
            co, cs = o[chain].tolist(), sz[chain].tolist()
            starts = set(co)
            ends = {x + y for x, y in zip(co, cs)}
            # a descriptor whose data neither follows another page's data nor is followed by
            # one has a corrupt offset (page data is written back to back)
            brk = np.array([not (x in ends or x == data_start or x + y in starts)
                            for x, y in zip(co, cs)], dtype=bool)
            order = np.argsort(o[chain], kind="stable")
            so, ss = o[chain][order], sz[chain][order]
            gaps = np.flatnonzero(so[1:] != so[:-1] + ss[:-1]) if len(so) > 1 else np.empty(0, int)
            if len(gaps) and not brk.any():  # a size changed: blame the page before the gap
                brk[int(order[int(gaps[0])])] = True
            corrupt_idx = np.concatenate([np.flatnonzero(bad), chain[brk]])
            out["corrupt"] += len(corrupt_idx)
            good = chain[~brk]
            expected_end = data_start + int(sz[good].sum()) if len(good) else data_start
            # shared pages' data also lies in the chain (counted once via first occurrence)
            out["expected_end"] += max(expected_end, int((o[good] + sz[good]).max()) if len(good)
                                       else 0)
            past = (o[good] + sz[good]) > fsize
            out["truncated"] += int(past.sum())
            if len(corrupt_idx) and out["first_bad"] is None:
                i = int(corrupt_idx[0])
                out["first_bad"] = (f"descriptor {int(have[i])}: offset {int(o[i]):#x} size "
                                    f"{int(sz[i])} flags {int(fl[i]):#x}")
        self._desc = out
        return out

    def check_format_descriptors(self) -> Check:
        if not self._kdump_parts():
            return Check("format.descriptors", "format", "pass",
                         "ELF dumps have no page descriptors (PT_LOADs checked instead)")
        a = self.descriptors()
        ev = {k: a[k] for k in ("descriptors", "corrupt", "truncated", "missing", "expected_end",
                                "file_size")}
        if a["corrupt"]:
            ev["first_bad"] = a["first_bad"]
            return Check("format.descriptors", "format", "fail",
                         f"{a['corrupt']} of {a['descriptors']} page descriptors are corrupt "
                         f"({a['first_bad']})",
                         "pages with corrupt descriptors cannot be read (or read wrong data)", ev)
        if a["missing"]:
            return Check("format.descriptors", "format", "warn",
                         f"{a['missing']} page descriptors lie beyond the end of the truncated "
                         "file (see file.truncated)", "their pages cannot be read", ev)
        return Check("format.descriptors", "format", "pass",
                     f"{a['descriptors']} page descriptors point at consecutive page data "
                     "inside the file", "", ev)

    def check_format_elf32(self) -> Check:
        if not (self.is_elf and getattr(self.reader, "elfclass", 64) == 32):
            return Check("format.elf32", "format", "pass", "64-bit headers: all memory can be described")
        max_pfn = self.read_symbol("max_pfn")
        top = max_pfn * self.reader.page_size if max_pfn else None
        ev = {"kernel_max_pfn": max_pfn, "dump_max_paddr": self.reader.max_pfn * self.reader.page_size}
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

    # -- metadata ----------------------------------------------------------------------
    def check_metadata_notes(self) -> Check:
        notes = list(getattr(self.reader, "notes", []) or [])
        from ..dump.notes import PRSTATUS_MIN_SIZE, prstatus_notes

        prs = prstatus_notes(notes)
        short = [n for n in prs if len(n.desc) < PRSTATUS_MIN_SIZE]
        bad = [p for p in self.problems if p.startswith("note at") or "PT_NOTE" in p
               or "notes at" in p or "VMCOREINFO at" in p]
        ev = {"notes": len(notes), "prstatus": len(prs), "vmcoreinfo_bytes":
              len(getattr(self.reader, "vmcoreinfo_raw", b"") or b"")}
        if not notes:
            return Check("metadata.notes", "metadata", "fail",
                         "the dump has no ELF notes" + (f" ({bad[0]})" if bad else ""),
                         "no CPU registers and no VMCOREINFO from the notes", ev)
        if bad or short:
            msg = bad[:2] + [f"{len(short)} NT_PRSTATUS notes are too short"] if short else bad[:2]
            return Check("metadata.notes", "metadata", "fail", "; ".join(msg),
                         "notes after the damage are missing (registers, VMCOREINFO)", ev)
        return Check("metadata.notes", "metadata", "pass", f"{len(notes)} ELF notes parsed", "", ev)

    def check_metadata_vmcoreinfo(self) -> Check:
        if not self.vmci:
            qemu = self.header.get("qemu")
            detail = "no VMCOREINFO" + (" (a QEMU dump taken without -device vmcoreinfo)"
                                        if qemu else "")
            return Check("metadata.vmcoreinfo", "metadata", "fail", detail,
                         "kernel memory cannot be located: no address translation, symbols, "
                         "log or kernel views", {"keys": 0}, blocking=True)
        missing: dict[str, list[str]] = {}
        for analysis, needs in VMCOREINFO_NEEDS:
            for alts in needs:
                if not any(a in self.vmci for a in alts):
                    missing.setdefault(analysis, []).append(alts[0])
        ev: dict[str, Any] = {"keys": len(self.vmci)}
        bad_values = []
        for key, base in (("PAGESIZE", 10), ("NUMBER(phys_base)", 10), ("KERNELOFFSET", 16),
                          ("SYMBOL(init_top_pgt)", 16), ("SYMBOL(_stext)", 16)):
            if key in self.vmci:
                try:
                    int(self.vmci[key], base)
                except ValueError:
                    bad_values.append(f"{key}={self.vmci[key]!r}")
        if "PAGESIZE" in self.vmci and self.vmci["PAGESIZE"] not in ("4096", "8192", "16384", "65536"):
            bad_values.append(f"PAGESIZE={self.vmci['PAGESIZE']!r}")
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
        return Check("metadata.vmcoreinfo", "metadata", "pass",
                     f"VMCOREINFO has the {len(self.vmci)} keys every analysis needs "
                     f"(OSRELEASE {self.vmci.get('OSRELEASE', '?')})", "", ev)

    def check_metadata_qemu_vmcoreinfo(self) -> Check:
        if not self.header.get("qemu"):
            return Check("metadata.qemu_vmcoreinfo", "metadata", "pass",
                         "not a QEMU dump-guest-memory file")
        if self.vmci:
            return Check("metadata.qemu_vmcoreinfo", "metadata", "pass",
                         "QEMU dump with the guest's VMCOREINFO (-device vmcoreinfo was present)")
        return Check("metadata.qemu_vmcoreinfo", "metadata", "fail",
                     "QEMU dump without VMCOREINFO: the VM ran without `-device vmcoreinfo` "
                     "(or the guest did not load qemu_fw_cfg), so QEMU had no VMCOREINFO to write",
                     "no address translation without a vmlinux; add `-device vmcoreinfo` to the "
                     "QEMU command line (and load qemu_fw_cfg in the guest) before the next dump",
                     {}, blocking=True)

    def _cpus(self):
        from ..dump.notes import cpus_frame

        return cpus_frame(list(getattr(self.reader, "notes", []) or []))

    def check_metadata_prstatus(self) -> Check:
        cpus = self._cpus()
        n = len(cpus)
        online = self.read_symbol("__num_online_cpus", 4)
        source = "__num_online_cpus"
        if online is None or not 0 < online <= 8192:
            online = None
            mask = self.read_symbol("__cpu_online_mask")
            if mask is not None:
                online, source = bin(mask).count("1"), "__cpu_online_mask"
        if online is None and self.header.get("nr_cpus"):
            online, source = int(self.header["nr_cpus"]), "kdump header nr_cpus"
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

    def check_metadata_crash_registers(self) -> Check:
        cpus = self._cpus()
        if not len(cpus):
            return Check("metadata.crash_registers", "metadata", "fail",
                         "no CPU registers in the dump", "no backtrace of the crashing CPU")
        crash_cpu = None
        source = ""
        for sym in ("crashing_cpu", "panic_cpu"):
            v = self.read_symbol(sym, 4)
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

    def check_metadata_dump_level(self) -> Check:
        level = self.header.get("dump_level")
        if level is None:
            if self.header.get("filtered"):
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

    def check_metadata_crash_time(self) -> Check:
        from datetime import datetime, timezone

        ct = self.vmci.get("CRASHTIME")
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
        ts = self.header.get("timestamp")
        if ts is not None:
            ev["dump_written"] = ts.isoformat()
            return Check("metadata.crash_time", "metadata", "warn",
                         f"no CRASHTIME; the dump header says it was written at "
                         f"{ts:%Y-%m-%d %H:%M:%S} UTC", "the crash time is approximate", ev)
        why = " (QEMU dumps carry none)" if self.header.get("qemu") else ""
        return Check("metadata.crash_time", "metadata", "warn", f"no crash time in the dump{why}",
                     "the wall-clock time of the crash is unknown (the log has uptime stamps)", ev)

    # -- coverage ----------------------------------------------------------------------
    def check_coverage_ram(self) -> Check:
        st = self.states()
        pages = st["pages"]
        present = pages.get("present", 0)
        ram = sum(pages.values())
        totalram = self.read_symbol("_totalram_pages")
        ev = {"present_pages": present, "ram_pages": ram, "excluded_pages": pages.get("excluded", 0),
              "truncated_pages": pages.get("truncated", 0), "lost_pages": pages.get("lost", 0),
              "kernel_totalram_pages": totalram}
        if totalram and totalram > ram * 4:  # implausible: ignore
            ev["kernel_totalram_pages"] = None
        base = ram or totalram or 0
        if not present:
            return Check("coverage.ram", "coverage", "fail", "the dump holds no readable memory",
                         "nothing in kernel memory can be read", ev, blocking=True)
        frac = present / base if base else 1.0
        ev["percent"] = round(100 * frac, 1)
        mib = present * self.reader.page_size >> 20
        if frac < PARTIAL_FRACTION:
            level = self.header.get("dump_level")
            why = f" (filtered by dump level {level})" if level else ""
            return Check("coverage.ram", "coverage", "warn",
                         f"partial dump: {present} of {base} RAM pages ({100 * frac:.1f}%, "
                         f"{mib} MiB) are present{why}",
                         "only kernel memory the filter kept can be read", ev)
        return Check("coverage.ram", "coverage", "pass",
                     f"{present} of {base} RAM pages ({100 * frac:.1f}%, {mib} MiB) are present",
                     "", ev)

    # -- kernel ------------------------------------------------------------------------
    def check_kernel_page_tables(self) -> Check:
        if not self.vmci:
            return Check("kernel.page_tables", "kernel", "skip", "no VMCOREINFO to find page tables")
        pt = self.pagetable()
        if pt is None:
            return Check("kernel.page_tables", "kernel", "fail",
                         f"page tables cannot be located: {self._pagetable_error}",
                         "no kernel virtual memory can be read", {}, blocking=True)
        from ..errors import FaultError

        stext = int(self.vmci.get("SYMBOL(_stext)", "0") or "0", 16) or \
            START_KERNEL_MAP + int(self.vmci.get("KERNELOFFSET", "0") or "0", 16) + 0x1000000
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
            self.reader.read_phys(paddr, 64)
        except (PageNotInDump, CorruptDump) as exc:
            return Check("kernel.page_tables", "kernel", "fail",
                         f"the kernel text page is not readable: {exc}",
                         "kernel code and data cannot be read", ev, blocking=True)
        return Check("kernel.page_tables", "kernel", "pass",
                     f"{pt.levels}-level page tables translate the kernel text "
                     f"(_stext {stext:#x} -> {paddr:#x})", "", ev)

    def check_symbols_kallsyms(self) -> Check:
        k = self.kernel()
        if k is None:
            err = self._kernel_error or ""
            status = "fail"
            blocking = False
            if not self.vmci:
                return Check("symbols.kallsyms", "symbols", "skip", "no VMCOREINFO: kallsyms not located")
            return Check("symbols.kallsyms", "symbols", status,
                         f"kernel symbols could not be decoded: {err}",
                         "no symbols: no backtraces with names, no tasks/slab/modules views "
                         "(pass vmlinux= or system_map=)", {}, blocking=blocking)
        table = getattr(k, "_table", None)
        n = len(table) if table is not None else None
        ev = {"symbols": n}
        try:
            stext = k.symbol("_stext")
            ok = f"{stext:#x}" == f"{int(self.vmci.get('SYMBOL(_stext)', '0'), 16):#x}"
        except Exception:  # noqa: BLE001
            ok = False
        if not ok:
            return Check("symbols.kallsyms", "symbols", "fail",
                         f"kallsyms decoded ({n} symbols) but _stext does not match VMCOREINFO",
                         "symbol addresses may be wrong", ev)
        return Check("symbols.kallsyms", "symbols", "pass",
                     f"kallsyms decoded: {n} symbols, _stext matches VMCOREINFO", "", ev)

    def check_symbols_btf(self) -> Check:
        k = self.kernel()
        if k is None:
            return self.kernel_skip("symbols.btf", "BTF")
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
        except Exception:  # noqa: BLE001
            pass
        try:
            k.type("struct task_struct")
        except KdnbError:
            return Check("symbols.btf", "symbols", "fail",
                         f"BTF has {n} types but no struct task_struct", "kernel views unavailable", ev)
        return Check("symbols.btf", "symbols", "pass", f"BTF found: {n} types", "", ev)

    def check_kernel_banner(self) -> Check:
        k = self.kernel()
        if k is None:
            return self.kernel_skip("kernel.banner", "linux_banner")
        banner = getattr(k, "banner", "")
        ev = {"banner": banner[:120], "OSRELEASE": self.vmci.get("OSRELEASE")}
        if not banner:
            return Check("kernel.banner", "kernel", "fail", "linux_banner could not be read",
                         "the kernel's identity is unconfirmed", ev)
        if not getattr(k, "banner_ok", False):
            return Check("kernel.banner", "kernel", "fail",
                         f"linux_banner {banner[:60]!r} does not match OSRELEASE "
                         f"{self.vmci.get('OSRELEASE')!r}",
                         "symbols or memory belong to another kernel: results are suspect", ev)
        return Check("kernel.banner", "kernel", "pass",
                     f"linux_banner matches OSRELEASE {self.vmci.get('OSRELEASE')}", "", ev)

    def _read_log(self):
        """(log DataFrame, problems) through Dump.log when the kernel is up, else page tables."""
        k = self.kernel()
        if k is not None and "log" in dir(type(self.d)):
            log = self.d.log
            return log, list(log.attrs.get("kdnb", {}).get("problems", []))
        from ..views.log import read_log

        pt = self.pagetable()
        if pt is None:
            raise KdnbError(self._pagetable_error or "page tables unavailable")
        return read_log(pt.read, self.vmci)

    def check_log_printk(self) -> Check:
        if not self.vmci:
            return Check("log.printk", "log", "skip", "no VMCOREINFO: the ring buffer is not located")
        try:
            log, problems = self._read_log()
        except ImportError:
            return Check("log.printk", "log", "skip", "the log reader (kdnb.views.log) is not available")
        except PageNotInDump as exc:
            self._log_error = exc
            return Check("log.printk", "log", "fail", f"the printk ring buffer is not in the dump: {exc}",
                         "no kernel log: the panic message must come from elsewhere (console)")
        except Exception as exc:  # noqa: BLE001
            self._log_error = exc
            return Check("log.printk", "log", "fail", f"the printk ring buffer is unreadable: {exc}",
                         "no kernel log: the panic message must come from elsewhere (console)")
        self._log_error = None
        self._log_read = True
        ev = {"records": len(log), "problems": len(problems)}
        if len(log):
            ev["last_seq"] = int(log["seq"].iloc[-1])
        if not len(log):
            return Check("log.printk", "log", "fail", "the printk ring buffer holds no records",
                         "no kernel log", ev)
        if problems:
            return Check("log.printk", "log", "warn",
                         f"{len(log)} log records, {len(problems)} damaged ({problems[0]})",
                         "some log lines are missing", ev)
        return Check("log.printk", "log", "pass", f"printk ring buffer readable: {len(log)} records",
                     "", ev)

    # -- in-use kernel memory ------------------------------------------------------------
    def check_kernel_in_use_memory(self) -> Check:
        k = self.kernel()
        walks: dict[str, dict[str, Any]] = {}
        failures: list[BaseException] = []
        if k is not None:
            for name, fn in (("tasks", _walk_tasks), ("slab_caches", _walk_slab_caches),
                             ("modules", _walk_modules)):
                try:
                    walks[name] = fn(k, failures)
                except KdnbError as exc:
                    walks[name] = {"skipped": str(exc)}
        log_err = self._log_error
        if isinstance(log_err, (PageNotInDump, CorruptDump)):
            failures.append(log_err)
            walks["log"] = {"read": 0, "failed": 1}
        elif self._log_read:
            walks["log"] = {"read": 1, "failed": 0}
        if k is None and not walks:
            return self.kernel_skip("kernel.in_use_memory", "in-use kernel memory")
        return _judge_walks(walks, failures, self.header, self.vmci, k is None and self._kernel_error)


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


# -------------------------------------------------------------------------------------------
# walks over key kernel structures, counting what cannot be read
# -------------------------------------------------------------------------------------------

def _try_read(k: Any, addr: int, size: int, failures: list[BaseException]) -> bytes | None:
    try:
        return k.read(addr, size)
    except (KdnbError, CorruptDump) as exc:
        failures.append(exc)
        return None


def _walk_list(k: Any, head: int, on_entry: Callable[[int], None], failures: list[BaseException],
               limit: int = WALK_LIMIT) -> dict[str, Any]:
    """Walk a list_head forward; when a `next` is unreadable, walk backward from the head too.

    Returns {visited, complete, stopped}; `on_entry(node)` is called for each node (not the head).
    """
    seen: set[int] = set()
    node = head
    stopped = ""
    complete = False
    while len(seen) < limit:
        raw = _try_read(k, node, 8, failures)
        if raw is None:
            stopped = f"next pointer at {node:#x} unreadable"
            break
        nxt = struct.unpack("<Q", raw)[0]
        if nxt == head:
            complete = True
            break
        if nxt == 0 or nxt in seen:
            stopped = "NULL next pointer" if nxt == 0 else f"cycle at {nxt:#x}"
            break
        seen.add(nxt)
        on_entry(nxt)
        node = nxt
    forward = len(seen)
    backward = 0
    if not complete:
        node = head
        while len(seen) < limit:
            raw = _try_read(k, node + 8, 8, failures)
            if raw is None:
                break
            prv = struct.unpack("<Q", raw)[0]
            if prv == head or prv == 0 or prv in seen:
                break
            seen.add(prv)
            backward += 1
            on_entry(prv)
            node = prv
    return {"visited": len(seen), "forward": forward, "backward": backward,
            "complete": complete, "stopped": stopped}


def _walk_tasks(k: Any, failures: list[BaseException]) -> dict[str, Any]:
    ts = k.type("struct task_struct")
    off = ts.offsetof("tasks")
    size = ts.size or 0
    head = k.symbol("init_task") + off
    stats = {"read": 0, "failed": 0}

    def entry(node: int) -> None:
        ok = _try_read(k, node - off, size, failures) is not None
        stats["read" if ok else "failed"] += 1

    walk = _walk_list(k, head, entry, failures)
    out = {**stats, **walk}
    try:
        out["nr_threads"] = k.read_u32(k.symbol("nr_threads"))
    except KdnbError:
        pass
    if not walk["complete"]:
        out["failed"] += 1  # at least the task whose `next` could not be read
    return out


def _walk_slab_caches(k: Any, failures: list[BaseException]) -> dict[str, Any]:
    kc = k.type("struct kmem_cache")
    off = kc.offsetof("list")
    size = kc.size or 0
    head = k.symbol("slab_caches")
    node_t = None
    try:
        node_t = k.type("struct kmem_cache_node")
    except KdnbError:
        pass
    node_off = kc.offsetof("node") if kc.has_member("node") else None
    name_off = kc.offsetof("name") if kc.has_member("name") else None
    try:
        nr_nodes = max(1, min(64, k.read_u32(k.symbol("nr_node_ids"))))
    except KdnbError:
        nr_nodes = 1
    if node_off is not None:  # the kernel allocates kmem_cache only up to node[nr_node_ids]
        size = min(size, node_off + 8 * nr_nodes)
    lists = [m for m in ("partial", "full") if node_t is not None and node_t.has_member(m)]
    stats = {"read": 0, "failed": 0, "slabs": 0, "slabs_failed": 0}
    budget = [WALK_LIMIT]
    bad_caches: list[str] = []

    def entry(node: int) -> None:
        addr = node - off
        before = len(failures)
        data = _try_read(k, addr, size, failures)
        if data is not None and name_off is not None:  # the name is a kmalloc'ed string
            (name_ptr,) = struct.unpack_from("<Q", data, name_off)
            if name_ptr:
                _try_read(k, name_ptr, 1, failures)
        if data is not None and node_off is not None and node_t is not None:
            ptrs = struct.unpack_from(f"<{nr_nodes}Q", data, node_off)
            for p in ptrs:
                if not p:
                    continue
                if _try_read(k, p, node_t.size or 0, failures) is None:
                    continue
                for member in lists:
                    lhead = p + node_t.offsetof(member)
                    w = _walk_list(k, lhead, lambda _node: None, failures,
                                   limit=max(1, min(budget[0], 50_000)))
                    budget[0] -= w["visited"]
                    stats["slabs"] += w["visited"]
                    if not w["complete"]:
                        stats["slabs_failed"] += 1
        if len(failures) > before:
            stats["failed"] += 1
            if len(bad_caches) < MAX_RANGES:
                bad_caches.append(f"{addr:#x}")
        else:
            stats["read"] += 1

    walk = _walk_list(k, head, entry, failures)
    out = {**stats, **walk, "unreadable": bad_caches}
    if not walk["complete"]:
        out["failed"] += 1
    return out


def _walk_modules(k: Any, failures: list[BaseException]) -> dict[str, Any]:
    mt = k.type("struct module")
    off = mt.offsetof("list")
    size = mt.size or 0
    head = k.symbol("modules")
    stats = {"read": 0, "failed": 0}

    def entry(node: int) -> None:
        ok = _try_read(k, node - off, size, failures) is not None
        stats["read" if ok else "failed"] += 1

    walk = _walk_list(k, head, entry, failures)
    out = {**stats, **walk}
    if not walk["complete"]:
        out["failed"] += 1
    return out


def _reason_kind(exc: BaseException) -> str:
    text = getattr(exc, "reason", "") or str(exc)
    if "excluded" in text:
        return "excluded"
    if "truncated" in text or "beyond the end" in text:
        return "truncated"
    if "lost" in text or "empty" in text:
        return "lost"
    if isinstance(exc, CorruptDump):
        return "corrupt"
    if "hole" in text:
        return "hole"
    return "other"


def _filter_cause(level: int | None, vmci: dict[str, str]) -> tuple[str, str]:
    """(cause, fix) for in-use pages excluded by the dump level."""
    cache_user = level is not None and level & (DL_CACHE | DL_CACHE_PRIVATE | DL_USER)
    release = vmci.get("OSRELEASE", "this kernel")
    page_type_slab = "NUMBER(PAGE_SLAB_MAPCOUNT_VALUE)" in vmci and "NUMBER(PG_slab)" not in vmci
    if cache_user:
        cause = (f"the dump filter (makedumpfile -d {level}, which drops cache and/or user pages) "
                 "classified pages the kernel was using as cache or user pages: the filtering "
                 f"tool is older than the kernel ({release})")
        if page_type_slab:
            cause += ("; this kernel marks slab pages with a page type (VMCOREINFO has "
                      "NUMBER(PAGE_SLAB_MAPCOUNT_VALUE) and no NUMBER(PG_slab)), which older "
                      "makedumpfile releases do not recognise (Debian 12's 1.7.2 on Linux 6.12)")
        fix = ("recapture with `makedumpfile -d 1` or `-d 17` (exclude only zero/free pages), "
               f"or install a makedumpfile release that supports {release}")
        return cause, fix
    cause = f"the dump filter (dump level {level}) excluded pages the kernel was using"
    fix = "recapture with `makedumpfile -d 1` (or -d 0), or a makedumpfile that supports this kernel"
    return cause, fix


def _judge_walks(walks: dict[str, dict[str, Any]], failures: list[BaseException], header: dict,
                 vmci: dict[str, str], kernel_error: Any) -> Check:
    kinds: dict[str, int] = {}
    for exc in failures:
        kind = _reason_kind(exc)
        kinds[kind] = kinds.get(kind, 0) + 1
    ev: dict[str, Any] = {name: {k: v for k, v in w.items() if k not in ("forward", "backward")}
                          for name, w in walks.items()}
    ev["unreadable_reads"] = kinds
    if failures:
        ev["first_error"] = str(failures[0])[:200]
    parts = []
    t = walks.get("tasks", {})
    if "visited" in t:
        expect = f" of ~{t['nr_threads']}" if t.get("nr_threads") else ""
        tail = "" if t["complete"] else f", walk broke ({t['stopped']})"
        parts.append(f"tasks: {t['read']} read{expect}, {t['failed']} unreadable{tail}")
    s = walks.get("slab_caches", {})
    if "visited" in s:
        parts.append(f"slab caches: {s['read']} read, {s['failed']} unreadable")
    m = walks.get("modules", {})
    if "visited" in m:
        parts.append(f"modules: {m['read']} read, {m['failed']} unreadable")
    lg = walks.get("log")
    if lg:
        parts.append("log: " + ("unreadable" if lg["failed"] else "readable"))
    skipped = [f"{n} ({w['skipped']})" for n, w in walks.items() if "skipped" in w]
    summary = "; ".join(parts)
    if kernel_error:
        summary = (summary + "; " if summary else "") + f"kernel structures not walked ({kernel_error})"
    if not failures:
        if skipped and not parts:
            return Check("kernel.in_use_memory", "kernel", "skip",
                         "key structures not walked: " + ", ".join(skipped), "", ev)
        extra = f"; not walked: {', '.join(skipped)}" if skipped else ""
        return Check("kernel.in_use_memory", "kernel", "pass",
                     f"every key structure walked is in the dump ({summary}){extra}", "", ev)
    dominant = max(kinds, key=kinds.get)
    if dominant == "excluded":
        cause, fix = _filter_cause(header.get("dump_level"), vmci)
        ev["cause"] = cause
        ev["fix"] = fix
        return Check("kernel.in_use_memory", "kernel", "fail",
                     f"in-use kernel memory was excluded from the dump ({summary}). Likely cause: "
                     f"{cause}. Fix: {fix}",
                     "task, slab and module views are incomplete; walks stop at excluded pages", ev)
    causes = {"truncated": "the file is truncated", "lost": "the dump is incomplete",
              "corrupt": "page data or descriptors are corrupt", "hole": "pages lie in holes",
              "other": "addresses do not translate (corrupt structures?)"}
    return Check("kernel.in_use_memory", "kernel", "fail",
                 f"key kernel structures are partly unreadable ({summary}): {causes[dominant]}",
                 "task, slab and module views are incomplete", ev)


__all__ = ["validate", "validate_path", "Validation", "CHECKS", "EXIT_CODES"]
