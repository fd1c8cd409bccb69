"""The process's mappings from a core: one row per PT_LOAD, named from NT_FILE, the auxv and the
threads' stack pointers; and a sentence on where an address falls ("the NULL page", "below
the stack: stack overflow", "in a read-only mapping of libc.so.6")."""

from __future__ import annotations

import bisect
import os
from dataclasses import dataclass

import pandas as pd

from .images import Image
from .memory import VSYSCALL, CoreMemory
from .notes import FileMapping, PrStatus

NULL_PAGE_END = 0x10000  # vm.mmap_min_addr's default: nothing can be mapped below 64 KiB
STACK_GUARD_GAP = 256 * 4096  # mm/mmap.c stack_guard_gap: 256 pages kept free below a stack
BRK_RANDOM_RANGE = 1 << 30  # arch_randomize_brk on x86_64: the heap starts within 1 GiB of the data
VVAR_MAX = 1 << 16  # the [vvar] pages sit just below the vDSO (4 pages on 6.x)
CANONICAL_END = 1 << 47  # 4-level paging; 5-level machines use 1 << 56
COLUMNS = ["start", "end", "size", "perms", "label", "path", "offset", "in_core", "bytes_in_core",
           "build_id"]


@dataclass(frozen=True)
class Mapping:
    """One mapping of the process."""

    start: int
    end: int
    perms: str
    label: str  # the file's name, [stack], [heap], [vdso], [vsyscall], thread stack, guard, anon
    path: str | None
    offset: int | None
    in_core: bool  # the core holds its bytes
    bytes_in_core: int
    build_id: str | None
    stack_of: int | None = None  # tid whose stack pointer is inside


def _stack_owners(mem: CoreMemory, threads: list[PrStatus], main_stack: int | None,
                  pid: int | None) -> dict[int, int]:
    """PT_LOAD start -> the tid whose stack it is: the mapping holding the thread's stack
    pointer, or the first one above it when the pointer went below (an overflowed stack);
    the main thread's also holds the auxv's AT_EXECFN string."""
    owners: dict[int, int] = {}
    starts = [ld.vaddr for ld in mem.loads]
    for t in threads:
        sp = t.regs["rsp"]
        ld = mem.load_at(sp)
        if ld is None:
            i = bisect.bisect_right(starts, sp)
            if i < len(starts) and starts[i] - sp <= STACK_GUARD_GAP + (1 << 20):
                ld = mem.loads[i]
        if ld is not None:
            owners.setdefault(ld.vaddr, t.tid)
    if main_stack is not None and pid is not None:
        ld = mem.load_at(main_stack)
        if ld is not None:
            owners.setdefault(ld.vaddr, pid)
    return owners


def build_mappings(mem: CoreMemory, files: list[FileMapping], images: list[Image], exe: Image | None,
                   threads: list[PrStatus], pid: int | None, vdso: int | None,
                   main_stack: int | None = None) -> list[Mapping]:
    """Every mapping, in address order, labelled (`exe`: the executable's image; `main_stack`:
    an address in the main thread's stack, such as the auxv's AT_EXECFN)."""
    by_start = {f.start: f for f in files}
    owners = _stack_owners(mem, threads, main_stack, pid)
    exe_end = max((f.end for f in files if exe is not None and f.path == exe.path), default=0)
    out: list[Mapping] = []
    heap_seen = False
    for ld in mem.loads:
        f = by_start.get(ld.vaddr)
        stack_of = None if f is not None or ld.perms == "---" else owners.get(ld.vaddr)
        image = next((i for i in images if i.contains(ld.vaddr)), None)
        if ld.vaddr == VSYSCALL:
            label = "[vsyscall]"
        elif vdso is not None and ld.vaddr == vdso:
            label = "[vdso]"
        elif f is not None:
            label = os.path.basename(f.path)
        elif stack_of is not None:
            label = "[stack]" if stack_of == pid else f"stack of thread {stack_of}"
        elif ld.perms == "---":
            label = "guard"
        elif exe is not None and ld.vaddr == exe_end:
            label = f"{exe.name} (bss)"
        elif vdso is not None and ld.perms == "r--" and vdso - VVAR_MAX <= ld.vaddr < vdso:
            label = "[vvar]"
        elif not heap_seen and exe_end and ld.perms.startswith("rw") and \
                exe_end < ld.vaddr < exe_end + BRK_RANDOM_RANGE:
            label, heap_seen = "[heap]", True
        else:
            label = "anonymous"
        in_core = ld.filesz > 0
        kept = max(0, min(ld.filesz, mem.source.size - ld.offset)) if in_core else 0
        out.append(Mapping(ld.vaddr, ld.end, ld.perms, label, f.path if f else None,
                           f.offset if f else None, in_core, kept,
                           image.build_id if image is not None and f is not None else None, stack_of))
    # gcore leaves unmodified file mappings out of the PT_LOADs; NT_FILE still lists them
    for f in files:
        if mem.load_at(f.start) is None:
            image = next((i for i in images if i.contains(f.start)), None)
            code = image is not None and image.is_code(f.start)
            out.append(Mapping(f.start, f.end, "r-x" if code else "r??", os.path.basename(f.path),
                               f.path, f.offset, False, 0, image.build_id if image else None))
    return sorted(out, key=lambda m: m.start)


def mappings_frame(maps: list[Mapping]) -> pd.DataFrame:
    """The mappings as a DataFrame with the documented columns."""
    df = pd.DataFrame([[m.start, m.end, m.end - m.start, m.perms, m.label, m.path, m.offset,
                        m.in_core, m.bytes_in_core, m.build_id] for m in maps], columns=COLUMNS)
    for col in ("start", "end", "size", "offset", "bytes_in_core"):
        df[col] = df[col].astype("UInt64")
    df["in_core"] = df["in_core"].astype("boolean")
    df["perms"] = df["perms"].astype("category")
    df["path"] = df["path"].astype("string")
    df["build_id"] = df["build_id"].astype("string")
    return df


def explain_address(addr: int, maps: list[Mapping]) -> str:
    """Where `addr` falls, in a sentence."""
    starts = [m.start for m in maps]
    i = bisect.bisect_right(starts, addr) - 1
    here = maps[i] if i >= 0 and addr < maps[i].end else None
    if here is not None:
        what = _mapping_words(here)
        if here.label == "guard":
            above = maps[i + 1] if i + 1 < len(maps) else None
            if above is not None and above.stack_of is not None and above.start == here.end:
                return (f"in the guard page below the {_mapping_words(above)}: a stack overflow "
                        f"({addr:#x} is {above.start - addr} bytes below it)")
        return f"in {what} [{here.start:#x}-{here.end:#x} {here.perms}], offset {addr - here.start:#x}"
    if addr < NULL_PAGE_END:
        return f"in the NULL page ({addr:#x}: a NULL pointer{f' + {addr:#x}' if addr else ''})"
    if CANONICAL_END <= addr < (1 << 64) - CANONICAL_END:
        return f"a non-canonical address ({addr:#x}): a corrupted pointer"
    above = maps[i + 1] if i + 1 < len(maps) else None
    if above is not None and above.stack_of is not None and above.start - addr <= STACK_GUARD_GAP + (1 << 20):
        return (f"below the {_mapping_words(above)} by {above.start - addr} bytes: a stack overflow "
                "(the stack could not grow there)")
    below = maps[i] if i >= 0 else None
    lo = f"{below.end:#x} ({below.label})" if below else "0"
    hi = f"{above.start:#x} ({above.label})" if above else "the end of user space"
    return f"not mapped: between {lo} and {hi}"


def _mapping_words(m: Mapping) -> str:
    kind = {"r--": "a read-only", "r-x": "an executable", "rw-": "a writable", "rwx": "a writable "
            "and executable", "---": "an inaccessible"}.get(m.perms, f"a {m.perms}")
    if m.label.startswith("stack of thread") or m.label == "[stack]":
        return "main thread's stack" if m.label == "[stack]" else m.label
    if m.path:
        return f"{kind} mapping of {os.path.basename(m.path)}"
    return f"{kind} {m.label} mapping"
