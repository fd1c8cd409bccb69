"""`Kernel`: virtual memory, symbols and types of the dumped kernel, from the dump alone."""

from __future__ import annotations

import os
import struct
from functools import cached_property
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd

from ..dump.base import DumpReader
from ..errors import KdnbError, MissingDebugInfo, SymbolNotFound, VmlinuxMismatch
from .. import bounds
from . import cache, kallsyms_tiers
from .btf import BTF
from .identity import KernelIdentity
from .modules import ModuleInfo, module_symbols
from .objects import Layout, ListWalk, Object
from .pagetable import PageTable
from .symbols import SymbolHit, SymbolTable
from .types import Type
from .vmlinux import Vmlinux, read_system_map, relocate

_U64 = struct.Struct("<Q")
_U32 = struct.Struct("<I")
GIB = 1 << 30
MODULES_VADDR = 0xFFFFFFFFC0000000  # __START_KERNEL_map + KERNEL_IMAGE_SIZE (1 GiB with KASLR)


class Kernel(KernelIdentity):
    """The dumped kernel: `read`/`vtop` through its page tables, kallsyms symbols, BTF types.

    Symbols come from VMCOREINFO's kallsyms tables (or `system_map`/`vmlinux` when given), types
    from the BTF between `__start_BTF` and `__stop_BTF` (or the vmlinux `.BTF` section; from the
    vmlinux DWARF when it has no `.BTF`). `types="dwarf"` (or env `KDNB_TYPES=dwarf`) forces the
    vmlinux DWARF, `types="btf"` refuses it. Decoded kallsyms names, the BTF index and the DWARF
    name index are cached on disk per kernel build (`use_cache=False` to skip).
    Problems that do not stop the analysis are listed in `warnings`.
    """

    def __init__(self, reader: DumpReader, vmlinux: str | os.PathLike | None = None,
                 system_map: str | os.PathLike | None = None, *, use_cache: bool = True,
                 cache_dir: str | os.PathLike | None = None, types: str | None = None) -> None:
        self.reader = reader
        self._types_from = (types or os.environ.get("KDNB_TYPES") or "auto").lower()
        if self._types_from not in ("auto", "btf", "dwarf"):
            raise ValueError(f"types={self._types_from!r}: expected 'auto', 'btf' or 'dwarf'")
        self.vmcoreinfo = reader.vmcoreinfo
        if not self.vmcoreinfo:  # tier 3: locate the kernel from the CPUs' CR3
            from ..dump.notes import qemu_control_registers
            from .discover import discover
            self.vmcoreinfo = discover(reader.read_phys, qemu_control_registers(reader.notes), reader.path)
        self.warnings: list[str] = []
        self.release: str = self.vmcoreinfo.get("OSRELEASE", "")
        self.pagetable = PageTable(reader.read_phys, self.vmcoreinfo)
        self._use_cache = use_cache
        self._cache_dir = Path(cache_dir) if cache_dir is not None else None
        self._cache_key = cache.build_key(self.vmcoreinfo, self._uts_version()) if use_cache else ""
        self._cached = (cache.load(self._cache_key, self._cache_dir) or {}) if use_cache else {}
        self._vmlinux = Vmlinux(vmlinux) if vmlinux is not None else None
        self._system_map = system_map
        self._external_symbols = vmlinux is not None or system_map is not None
        self._modules: list[ModuleInfo] | None = None
        self._btf: BTF | None = None
        self._layouts: dict[tuple[int, tuple[str, ...]], tuple[Type, Layout]] = {}
        self.symbol_source: dict[str, Any] = {}
        self._symbols_error: KdnbError | None = None
        if self._external_symbols:  # refuse a vmlinux / System.map of another kernel at once
            self._banner  # noqa: B018 - reads and checks linux_banner now
            if self._vmlinux is not None:
                self._check_vmlinux()

    # -- virtual memory -----------------------------------------------------------------
    def read(self, vaddr: int, size: int) -> bytes:
        """Read kernel virtual memory; raises FaultError or PageNotInDump."""
        return self.pagetable.read(vaddr, size)

    def vtop(self, vaddr: int) -> int:
        """Physical address of a kernel virtual address; raises FaultError."""
        return self.pagetable.translate(vaddr)

    def read_u64(self, vaddr: int) -> int:
        """An unsigned 64-bit value (also pointers)."""
        return _U64.unpack(self.read(vaddr, 8))[0]

    def read_u32(self, vaddr: int) -> int:
        """An unsigned 32-bit value."""
        return _U32.unpack(self.read(vaddr, 4))[0]

    def read_cbytes(self, vaddr: int, maxlen: int = 4096) -> bytes:
        """Bytes of a NUL-terminated string (without the NUL), at most `maxlen`, read page-wise."""
        out = b""
        while len(out) < maxlen:
            chunk = min(maxlen - len(out), 4096 - ((vaddr + len(out)) & 4095))
            data = self.read(vaddr + len(out), chunk)
            end = data.find(b"\0")
            if end >= 0:
                return out + data[:end]
            out += data
        return out

    def read_cstring(self, vaddr: int, maxlen: int = 4096) -> str:
        """A NUL-terminated string, decoded leniently."""
        return self.read_cbytes(vaddr, maxlen).decode("utf-8", "replace")

    # -- symbols -----------------------------------------------------------------------
    @cached_property
    def _table(self) -> SymbolTable:
        """vmlinux symbols, loaded on first need (the log and page tables do without them).
        A failure is kept and raised again: a scan that failed once is not run again."""
        if self._symbols_error is not None:
            raise self._symbols_error
        try:
            table = self._vmlinux_symbols()
        except KdnbError as exc:
            self._symbols_error = exc
            raise
        try:
            max_pfn = bounds.count(self.read_u64(table.address("max_pfn")), "max_pfn", 1 << 40, self.reader.path)
            self.pagetable.set_page_offset(self.read_u64(table.address("page_offset_base")),
                                           -(-(max_pfn << 12) // GIB) * GIB)
        except KdnbError as exc:
            self.warnings.append(f"direct map base unknown, walking page tables instead ({exc})")
        return table

    def _vmlinux_symbols(self) -> SymbolTable:
        if self._external_symbols:
            stext = bounds.vmcoreinfo_int(self.vmcoreinfo, "SYMBOL(_stext)", self.reader.path, 0)
            given = self._system_map if self._system_map is not None else self._vmlinux.path  # type: ignore[union-attr]
            table = read_system_map(self._system_map) if self._system_map is not None else self._vmlinux.symbols()  # type: ignore[union-attr]
            self.symbol_source = {"tier": 0, "method": f"given {given}", "verified": ["_stext"]}
            try:
                return relocate(table, stext)
            except SymbolNotFound:
                raise VmlinuxMismatch("the given System.map/vmlinux has no _stext symbol") from None
        found = kallsyms_tiers.from_cache(self.read, self.vmcoreinfo, self.release, self._cached)
        if found is None:
            raw, self.symbol_source, self._cached = kallsyms_tiers.decode(
                self.read, self.vmcoreinfo, self.release, self.reader.path)
            self._store_cache()
        else:
            raw, self.symbol_source = found
        return SymbolTable(raw.names, raw.addresses, raw.types)

    def _all_symbols(self) -> SymbolTable:
        """vmlinux symbols plus, once loaded, every module's."""
        if self._modules is None:
            self._modules = []
            try:
                table, self._modules, problems = module_symbols(self)
            except KdnbError as exc:
                self.warnings.append(f"module symbols unavailable: {exc}")
            else:
                self.warnings += problems
                self._table.extend(table)
                self.__dict__.pop("symbols", None)
        return self._table

    @cached_property
    def symbols(self) -> pd.DataFrame:
        """Every kernel and module symbol: name, address (UInt64), type, size (Int64), module."""
        return self._all_symbols().dataframe()

    @property
    def modules(self) -> list[ModuleInfo]:
        """Loaded modules (name, `struct module` address, number of symbols)."""
        self._all_symbols()
        return list(self._modules or [])

    def symbol(self, name: str) -> int:
        """Address of a kernel or module symbol; raises SymbolNotFound."""
        if name in self._table:
            return self._table.address(name)
        return self._all_symbols().address(name)

    def lookup(self, addr: int) -> SymbolHit | None:
        """The symbol containing `addr` (name, address, offset, size, module) or None."""
        table = self._all_symbols() if addr >= MODULES_VADDR else self._table
        return table.lookup(addr)

    def symbolize(self, addr: int) -> str:
        """`func+0x1a/0x40 [mod]` for an address (bare hex when no symbol contains it)."""
        table = self._all_symbols() if addr >= MODULES_VADDR else self._table
        return table.symbolize(addr)

    # -- types ---------------------------------------------------------------------------
    @property
    def btf(self) -> BTF:
        """The kernel's BTF (loaded on first use); raises MissingDebugInfo."""
        if self._btf is None:
            self._btf = self._load_btf()
        return self._btf

    def _load_btf(self) -> BTF:
        if self._types_from == "dwarf" and self._vmlinux is None:
            raise MissingDebugInfo("types='dwarf' needs vmlinux= (a vmlinux with DWARF)")
        if self._vmlinux is not None:
            data = self._vmlinux.btf() if self._types_from != "dwarf" else None
            if data is None:
                if self._types_from == "btf":
                    raise MissingDebugInfo(f"{self._vmlinux.path} has no .BTF section (types='btf')")
                return self._vmlinux.dwarf_types(self._cache_dir, use_cache=self._use_cache)  # type: ignore[return-value]
            return BTF(data)
        try:
            start, stop = self.symbol("__start_BTF"), self.symbol("__stop_BTF")
        except SymbolNotFound:
            raise MissingDebugInfo("kernel has no BTF (__start_BTF missing): pass vmlinux=") from None
        cached, positions = self._cached.get("btf"), self._cached.get("btf_positions")
        if cached is not None and positions is not None and len(cached) == stop - start:
            data = cached.tobytes()
            # cheap identity check against the dump: the header and the last bytes
            if self.read(start, 64) == data[:64] and self.read(stop - 64, 64) == data[-64:]:
                try:
                    return BTF(data, positions)
                except KdnbError:
                    pass
        data = self.read(start, stop - start)
        btf = BTF(data)
        self._cached.update(btf=np.frombuffer(data, np.uint8), btf_positions=btf.positions)
        self._store_cache()
        return btf

    def type(self, name: str, module: str | None = None) -> Type:
        """A kernel type by C name (`struct task_struct`, `u64`, `char *`); raises TypeNotFound.

        Not in vmlinux's BTF (or only declared there): the loaded modules' BTF, read on first
        need (`module=` looks in that module's BTF first)."""
        from ..errors import TypeNotFound
        from .module_btf import module_types
        if module is not None:
            return module_types(self).type(name, module)
        try:
            found = self.btf.type(name)
        except TypeNotFound:
            return module_types(self).type(name)
        return module_types(self).type(name, fallback=found) if found.kind == "fwd" else found

    def _as_type(self, type_: str | Type) -> Type:
        return self.type(type_) if isinstance(type_, str) else type_

    # -- objects -------------------------------------------------------------------------
    def object(self, address: int, type_: str | Type) -> Object:
        """A typed object at `address` (bytes read once, on first member access)."""
        return Object(self, self._as_type(type_), address)

    struct = object

    def global_object(self, symbol: str, type_: str | Type) -> Object:
        """The global variable `symbol` as an object of the type the caller names (BTF has no
        global variable types: `init_task` is a `struct task_struct`)."""
        return self.object(self.symbol(symbol), type_)

    def layout(self, type_: str | Type, fields: Iterable[str]) -> Layout:
        """A precomputed unpacker for `fields` of a struct (see objects.Layout), made once per
        type and field list (views ask for the same layouts once per task, file or socket)."""
        t = self._as_type(type_)
        key = (id(t), tuple(fields))
        hit = self._layouts.get(key)
        if hit is None:  # the type is kept with its layout, so its id is not reused
            hit = self._layouts[key] = (t, Layout(t, key[1]))
        return hit[1]

    def container_of(self, address: int, type_: str | Type, member: str) -> int:
        """Address of the `type_` containing `member` at `address`."""
        return address - self._as_type(type_).offsetof(member)

    def list_walk(self, head: int, type_: str | Type | None = None, member: str = "",
                  max_entries: int = 1_000_000, strict: bool = False) -> ListWalk:
        """Addresses of the entries of a `list_head` list (node addresses without a type).

        Bounded and cycle-checked: check `.complete` / `.error` after iterating, or pass strict=True
        to get CorruptStructure raised.
        """
        offset = self._as_type(type_).offsetof(member) if type_ is not None else 0
        return ListWalk(self.read, head, offset, max_entries=max_entries, strict=strict)

    def for_each_entry(self, head: int, type_: str | Type, member: str,
                       max_entries: int = 1_000_000, strict: bool = False) -> ListWalk:
        """Objects of a `list_head` list, like the kernel's list_for_each_entry (see list_walk)."""
        t = self._as_type(type_)
        return ListWalk(self.read, head, t.offsetof(member), make=lambda a: Object(self, t, a),
                        max_entries=max_entries, strict=strict)

    # -- memory model ------------------------------------------------------------------
    @property
    def page_offset(self) -> int | None:
        """PAGE_OFFSET, the randomised base of the direct map (value of `page_offset_base`)."""
        return self.pagetable.page_offset

    @cached_property
    def vmemmap_base(self) -> int:
        """Base of the `struct page` array (VMCOREINFO SYMBOL(vmemmap) on 6.12, else `vmemmap_base`)."""
        if "SYMBOL(vmemmap)" in self.vmcoreinfo:
            return int(self.vmcoreinfo["SYMBOL(vmemmap)"], 16)
        return self.read_u64(self.symbol("vmemmap_base"))

    # -- per-CPU -------------------------------------------------------------------------
    @cached_property
    def nr_cpu_ids(self) -> int:
        """Number of possible CPU ids (`nr_cpu_ids`, 1..NR_CPUS); ImplausibleValue otherwise."""
        return bounds.in_range(self.read_u32(self.symbol("nr_cpu_ids")), "nr_cpu_ids", 1,
                               bounds.NR_CPUS_MAX, self.reader.path)

    @cached_property
    def per_cpu_offsets(self) -> np.ndarray:
        """`__per_cpu_offset[0 .. nr_cpu_ids)` as uint64."""
        raw = self.read(self.symbol("__per_cpu_offset"), 8 * self.nr_cpu_ids)
        return np.frombuffer(raw, dtype="<u8")

    def per_cpu(self, var: str | int, cpu: int) -> int:
        """Address of CPU `cpu`'s copy of a per-CPU variable (a symbol name or its address)."""
        base = self.symbol(var) if isinstance(var, str) else var
        if not 0 <= cpu < self.nr_cpu_ids:
            raise KdnbError(f"cpu {cpu} out of range (nr_cpu_ids {self.nr_cpu_ids})")
        return (base + int(self.per_cpu_offsets[cpu])) & 0xFFFFFFFFFFFFFFFF

    def log_vmcoreinfo(self) -> dict[str, str]:
        """VMCOREINFO for reading the printk ring buffer: the note's, or (no note: tier 3) the
        same entries derived from kallsyms and BTF."""
        if "KDNB(discovered)" not in self.vmcoreinfo:
            return self.vmcoreinfo
        from .vmcoreinfo_btf import printk_entries
        return {**self.vmcoreinfo, **printk_entries(self)}

    @property
    def cache_key(self) -> str:
        """The on-disk cache key of this kernel build ("" when caching is off)."""
        return self._cache_key

    def _store_cache(self) -> None:
        if self._use_cache and self._cache_key:
            cache.store(self._cache_key, self._cached, self._cache_dir)

    def __repr__(self) -> str:
        loaded = f"{len(self._table)} symbols" if "_table" in self.__dict__ else "symbols not loaded"
        return f"<kdnb.Kernel {self.release} {loaded}>"

    def describe(self) -> dict[str, Any]:
        """Facts for a summary: release, banner check, paging levels, KASLR offset, PAGE_OFFSET."""
        pt = self.pagetable
        return {"release": self.release, "banner_ok": self.banner_ok, "paging_levels": pt.levels,
                "kernel_offset": pt.kernel_offset, "phys_base": pt.phys_base,
                "page_offset": pt.page_offset, "symbols": len(self._table)}
