"""`Dump.vmas(pid)` and `Dump.maps`: the memory maps of processes (crash `vm`, /proc/PID/maps).

The VMAs of an mm are the entries of its maple tree `mm->mm_mt` (6.1+, d4af56c5c7c6 "mm: start
tracking VMAs with maple tree"), else the `mm->mmap` list linked by `vm_next`. Each maple node is
read once (256 bytes); its type (leaf, range or allocation-range node) sits in the encoded child
pointer, the slot and pivot counts come from BTF (kdnb.views.trees). Every VMA found must cover exactly the range
the tree stores it under, and the walk is bounded by `mm->map_count`, so a damaged tree gives a
flagged partial map, never a loop. Names follow show_map_vma(): the file's path, the special
mapping's name (`[vdso]`, `[vvar]`), `[heap]`, `[stack]`, `[anon:NAME]`.

User pages are not needed (the VMAs, files, dentries, page tables and struct pages are kernel
objects), so this works on -d 31 dumps too. RSS per VMA: kdnb.views.vma_rss.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Any

import pandas as pd

from .. import bounds
from ..errors import KdnbError
from .common import Gaps, fitting, read_or_none
from .paths import Paths
from .trees import MapleTree, maple_entries
from .vma_rss import PageKinds, RssCounter

if TYPE_CHECKING:  # pragma: no cover
    from ..api import Dump
    from ..kernel.kernel import Kernel

MAX_VMAS = 1 << 22  # vm.max_map_count is 65530 by default; 4 M is far above any real process
VM_READ, VM_WRITE, VM_EXEC, VM_MAYSHARE = 0x1, 0x2, 0x4, 0x80
KINDS = ["file", "shmem", "anon", "heap", "stack", "special"]
RSS_COLUMNS = ["rss", "rss_anon", "rss_file", "rss_shmem"]
COLUMNS = ["pid", "comm", "start", "end", "perms", "flags", "offset", "dev", "inode", "path",
           "kind", *RSS_COLUMNS, "address"]


class _VmaReader:
    """Layouts of mm_struct and vm_area_struct; names and kinds of mappings."""

    def __init__(self, k: "Kernel", gaps: Gaps) -> None:
        self.k = k
        self.gaps = gaps
        mm = k.type("struct mm_struct")
        self.maple = mm.has_member("mm_mt")
        mm_fields = ["map_count", "start_brk", "brk", "start_stack", "pgd"]
        mm_fields.append("mm_mt.ma_root" if self.maple else "mmap")
        self.mm = k.layout(mm, mm_fields)
        v = k.type("struct vm_area_struct")
        # 5.17 9a10064f5625 ("mm: add a field to store names for private anonymous memory")
        self.anon_name = v.has_member("anon_name")
        fields = ["vm_start", "vm_end", "vm_flags", "vm_pgoff", "vm_file", "vm_ops", "vm_private_data"]
        fields += (["anon_name"] if self.anon_name else []) + ([] if self.maple else ["vm_next"])
        self.vma = k.layout(v, fields)
        self.tree = MapleTree(k) if self.maple else None
        self._page_kinds: PageKinds | None = None
        self.ops_name_off = k.type("struct vm_operations_struct").offsetof("name")
        self.special_name_off = k.type("struct vm_special_mapping").offsetof("name")
        self.anon_name_off = k.type("struct anon_vma_name").offsetof("name") if self.anon_name else 0
        self.inode = k.layout(k.type("struct inode"), ["i_ino", "i_sb"])
        self.s_dev_off = k.type("struct super_block").offsetof("s_dev")
        self.paths = Paths(k)
        self._ops: dict[int, tuple[str, str | None]] = {}

    def page_kinds(self) -> PageKinds:
        """The page-kind cache shared by every mm this reader walks (made on first need)."""
        if self._page_kinds is None:
            self._page_kinds = PageKinds(self.k)
        return self._page_kinds

    def vmas(self, mm: int) -> tuple[tuple, list[tuple]]:
        """The mm's fields and the layout values of each of its VMAs, in address order."""
        head = self.mm.unpack(self.k.read(mm, self.mm.size))
        limit = bounds.count(head[0], "mm_struct.map_count", MAX_VMAS)
        rows = []
        if self.tree is not None:
            for first, last, vma in maple_entries(self.k, head[5], self.tree, self.gaps, limit):
                row = self._vma(vma)
                if row is not None and (row[0], row[1] - 1) != (first, last):
                    self.gaps.note(f"vma {vma:#x} covers {row[0]:#x}-{row[1]:#x} but the maple tree "
                                   f"stores it at {first:#x}-{last + 1:#x}", vma)
                    continue
                if row is not None:
                    rows.append(row)
        else:
            vma, seen = head[5], set()
            while vma and len(seen) <= limit:
                if vma in seen:
                    self.gaps.note(f"vm_next cycle at {vma:#x}", vma)
                    break
                seen.add(vma)
                row = self._vma(vma)
                if row is None:
                    break
                rows.append(row)
                vma = row[8]
        if len(rows) != limit:
            self.gaps.note(f"mm {mm:#x}: {len(rows)} of map_count {limit} VMAs read", mm)
        return head, rows

    def _vma(self, vma: int) -> tuple | None:
        """(start, end, flags, pgoff, file, vm_ops, private, anon_name, next, address) of a VMA."""
        data = read_or_none(self.k, vma, self.vma.size, self.gaps, "vm_area_struct")
        if data is None:
            return None
        v = self.vma.unpack(data)
        anon = v[7] if self.anon_name else 0
        nxt = 0 if self.maple else v[-1]
        return (*v[:7], anon, nxt, vma)

    def ops(self, vm_ops: int, private: int) -> tuple[str, str | None]:
        """(the symbol of a VMA's vm_operations_struct, the name its ->name() gives)."""
        if vm_ops not in self._ops:
            hit = self.k.lookup(vm_ops)
            fn = self.k.read_u64(vm_ops + self.ops_name_off)
            fn_hit = self.k.lookup(fn) if fn else None
            self._ops[vm_ops] = (hit.name if hit is not None else "",
                                 None if not fn else fn_hit.name if fn_hit is not None else hex(fn))
        symbol, name_fn = self._ops[vm_ops]
        if name_fn == "special_mapping_name":  # the vm_special_mapping in vm_private_data
            return symbol, self.k.read_cstring(self.k.read_u64(private + self.special_name_off), 64)
        return symbol, None if name_fn is None else f"[{name_fn}]"

    def describe(self, row: tuple, mm_row: tuple) -> dict[str, Any]:
        """The /proc/PID/maps columns of one VMA."""
        start, end, flags, pgoff, file, vm_ops, private, anon_name, _next, address = row
        _count, start_brk, brk, start_stack, _pgd, _root = mm_row
        out: dict[str, Any] = {"start": start, "end": end, "flags": flags, "offset": 0,
                               "dev": "00:00", "inode": 0, "path": None, "kind": "anon",
                               "address": address}
        out["perms"] = "".join(c if flags & bit else "-" for c, bit in
                               (("r", VM_READ), ("w", VM_WRITE), ("x", VM_EXEC))) + \
            ("s" if flags & VM_MAYSHARE else "p")
        try:
            symbol, special = self.ops(vm_ops, private) if vm_ops else ("", None)
        except KdnbError as exc:
            self.gaps.note(f"vm_ops of vma {address:#x}", vm_ops, exc)
            symbol, special = "", None
        if file:
            out["offset"] = pgoff << 12
            out["kind"] = "shmem" if symbol.startswith("shmem") else "file"
            try:
                inode = self.k.read_u64(file + self.paths.file.offsets["f_inode"])
                ino, sb = self.inode.unpack(self.k.read(inode, self.inode.size))
                dev = self.k.read_u32(sb + self.s_dev_off)
                out["dev"] = f"{dev >> 20:02x}:{dev & 0xFFFFF:02x}"
                out["inode"] = ino
                out["path"] = self.paths.file_path(file)
            except KdnbError as exc:
                self.gaps.note(f"file of vma {address:#x}", file, exc)
        elif special is not None:
            out["path"], out["kind"] = special, "special"
        elif start <= brk and end >= start_brk:
            out["path"], out["kind"] = "[heap]", "heap"
        elif start <= start_stack <= end:
            out["path"], out["kind"] = "[stack]", "stack"
        elif anon_name:
            try:
                out["path"] = f"[anon:{self.k.read_cstring(anon_name + self.anon_name_off, 80)}]"
            except KdnbError as exc:
                self.gaps.note("anon_vma_name", anon_name, exc)
        if symbol.startswith("shmem") and not file:
            out["kind"] = "shmem"
        return out


def task_of(dump: "Dump", pid: int) -> tuple[int, str]:
    """(task_struct address, comm) of the task with this pid; KdnbError when there is none."""
    tasks = dump.tasks
    rows = tasks[tasks["pid"] == pid]
    if not len(rows):
        raise KdnbError(f"no task with pid {pid} in the dump")
    return int(rows["address"].iloc[0]), str(rows["comm"].iloc[0])


def mm_of(k: "Kernel", task: int) -> int:
    """task->mm (0 for a kernel thread)."""
    return k.read_u64(task + k.type("struct task_struct").offsetof("mm"))


def _frame(records: list[dict[str, Any]], gaps: Gaps) -> pd.DataFrame:
    col = {c: [r[c] for r in records] for c in COLUMNS}
    return pd.DataFrame({
        "pid": fitting(col["pid"], "Int32", "pid", gaps),
        "comm": pd.Categorical(col["comm"]),
        "start": fitting(col["start"], "UInt64", "start", gaps),
        "end": fitting(col["end"], "UInt64", "end", gaps),
        "perms": pd.array(col["perms"], dtype="string"),
        "flags": fitting(col["flags"], "UInt64", "flags", gaps),
        "offset": fitting(col["offset"], "UInt64", "offset", gaps),
        "dev": pd.array(col["dev"], dtype="string"),
        "inode": fitting(col["inode"], "UInt64", "inode", gaps),
        "path": pd.array(col["path"], dtype="string"),
        "kind": pd.Categorical(col["kind"], categories=KINDS),
        **{c: fitting(col[c], "Int64", c, gaps) for c in RSS_COLUMNS},
        "address": fitting(col["address"], "UInt64", "address", gaps),
    }, columns=COLUMNS)


def _records(r: _VmaReader, pid: int, comm: str, mm: int) -> list[dict[str, Any]]:
    try:
        head, rows = r.vmas(mm)
    except KdnbError as exc:
        r.gaps.note(f"mm_struct of pid {pid}", mm, exc)
        return []
    out = [{"pid": pid, "comm": comm, **r.describe(row, head)} for row in rows]
    _add_rss(r, out, head[4], pid)
    return out


def _add_rss(r: _VmaReader, records: list[dict[str, Any]], pgd: int, pid: int) -> None:
    """The rss columns of each VMA record (NA, and a gap, where the tables are unreadable)."""
    try:
        counts = RssCounter(r.k, pgd, r.page_kinds()).counts([(rec["start"], rec["end"]) for rec in records])
    except KdnbError as exc:
        r.gaps.note(f"page tables of pid {pid}", pgd, exc)
        counts = [None] * len(records)
    for rec, values in zip(records, counts):
        if isinstance(values, KdnbError):
            r.gaps.note(f"rss of vma {rec['address']:#x} of pid {pid}", rec["address"], values)
        rec.update(zip(RSS_COLUMNS, values if isinstance(values, tuple) else (None,) * 4))


def vmas_frame(dump: "Dump", pid: int) -> pd.DataFrame:
    """One row per VMA of the process `pid` (a kernel thread has none): pid, comm, start, end,
    perms (`r-xp`), flags (vm_flags), offset (bytes into the file), dev (`MAJ:MIN`), inode,
    path (file path or `[heap]`, `[stack]`, `[vdso]`, `[anon:NAME]`), kind (file, shmem, anon,
    heap, stack, special), rss, rss_anon, rss_file, rss_shmem (resident pages from the page
    tables, as smaps' Rss; anon as its Anonymous), address (the vm_area_struct)."""
    k = dump.kernel
    gaps = Gaps()
    task, comm = task_of(dump, pid)
    mm = mm_of(k, task)
    records = _records(_VmaReader(k, gaps), pid, comm, mm) if mm else []
    return gaps.attach(_frame(records, gaps), f"vmas of pid {pid}")


def maps_frame(dump: "Dump") -> pd.DataFrame:
    """vmas_frame() of every process (thread-group leaders with an mm), by pid."""
    k = dump.kernel
    gaps = Gaps()
    r = _VmaReader(k, gaps)
    tasks = dump.tasks
    leaders = tasks[(tasks["pid"] == tasks["tgid"]) & ~tasks["is_kthread"] & (tasks["pid"] > 0)]
    records: list[dict[str, Any]] = []
    done: set[int] = set()
    for pid, comm, task in zip(leaders["pid"], leaders["comm"], leaders["address"]):
        mm = read_or_none(k, int(task) + k.type("struct task_struct").offsetof("mm"), 8, gaps, "task_struct.mm")
        if mm is None:
            continue
        (mm,) = struct.unpack("<Q", mm)
        if mm and mm not in done:
            done.add(mm)
            records += _records(r, int(pid), str(comm), mm)
    return gaps.attach(_frame(records, gaps), "maps")
