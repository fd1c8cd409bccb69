"""Loaded modules' BTF: split BTF blobs on top of the vmlinux BTF, read from the dump on first need.

With CONFIG_DEBUG_INFO_BTF_MODULES a module carries a `.BTF` section of *split* BTF: its type ids
continue after vmlinux's last id and its string offsets after vmlinux's string section, so a
module struct's members point straight at vmlinux types (`struct gendisk *`).

Where the blob is in the dump: `struct module` has `btf_data`/`btf_data_size`, but the kernel
clears `btf_data` once the module's init has run (the `.BTF` section is not kept), so for a live
module the pointer is NULL. The kernel's own copy lives on the `btf_modules` list
(kernel/bpf/btf.c: `struct btf_module` -> `struct btf` -> `data`, `data_size`, with `start_id` and
`start_str_off` saying which base it was split from). We read that copy, and `btf_data` only for a
module still loading (pointer not yet cleared) that is not on the list.

Modules built without BTF (out of tree, no pahole) have neither: they are listed in `missing`.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, NamedTuple

from ..errors import KdnbError, TypeNotFound
from .btf import BTF

if TYPE_CHECKING:  # pragma: no cover
    from .kernel import Kernel
    from .types import Type

MAX_MODULE_BTF = 64 << 20  # a module's BTF is KiBs; refuse implausible sizes from a corrupt dump
_ATTR = "_kdnb_module_btf"  # where the registry is kept on its Kernel


class BTFSource(NamedTuple):
    """Where one module's split BTF sits in the dump."""

    module: str
    address: int  # of the blob
    size: int
    origin: str  # "btf_modules" (the kernel's copy) or "module.btf_data"
    start_id: int | None  # as the kernel recorded it (None when read from module.btf_data)
    start_str_off: int | None


def module_types(kernel: Kernel) -> ModuleBTF:
    """The module BTF registry of `kernel` (made on first use, kept on the kernel object)."""
    reg = kernel.__dict__.get(_ATTR)
    if reg is None:
        reg = ModuleBTF(kernel)
        kernel.__dict__[_ATTR] = reg
    return reg


class ModuleBTF:
    """Every loaded module's BTF, found and parsed lazily.

    `sources` (module name -> BTFSource) is found on first use by walking `btf_modules` and the
    `modules` list; each blob is read and parsed only when a type is looked up in it. Parse times
    are in `parse_seconds`, modules without BTF in `missing`, problems in `problems` (also added
    to the kernel's `warnings`).
    """

    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel
        self._sources: dict[str, BTFSource] | None = None
        self._btfs: dict[str, BTF | None] = {}
        self._missing: list[str] = []
        self.problems: list[str] = []
        self.parse_seconds: dict[str, float] = {}

    # -- finding the blobs ---------------------------------------------------------------
    @property
    def sources(self) -> dict[str, BTFSource]:
        """Module name -> where its BTF is, for every loaded module that has BTF."""
        if self._sources is None:
            self._sources = self._find_sources()
        return self._sources

    @property
    def missing(self) -> list[str]:
        """Loaded modules without BTF (built without it: out of tree, no pahole)."""
        if self._sources is None:
            self._sources = self._find_sources()
        return self._missing

    def _find_sources(self) -> dict[str, BTFSource]:
        k = self.kernel
        modules = k.modules  # name, struct module address
        by_address = {m.address: m.name for m in modules}
        found: dict[str, BTFSource] = {}
        try:
            found.update(self._from_btf_modules(by_address))
        except KdnbError as exc:
            self._problem(f"btf_modules list unreadable: {exc}")
        try:
            mod_t = k.btf.type("struct module")
        except TypeNotFound:
            return found
        has_btf = mod_t.has_member("btf_data")
        for m in modules:
            if m.name in found:
                continue
            if not has_btf:  # kernel without CONFIG_DEBUG_INFO_BTF_MODULES
                self._missing.append(m.name)
                continue
            try:
                mod = k.object(m.address, mod_t)
                addr, size = int(mod["btf_data"]), int(mod["btf_data_size"])
            except KdnbError as exc:
                self._problem(f"module {m.name}: btf_data unreadable: {exc}")
                continue
            if addr and size:
                found[m.name] = BTFSource(m.name, addr, size, "module.btf_data", None, None)
            else:
                # no BTF built in (btf_data_size 0), or BTF the kernel refused to register
                if size:
                    self._problem(f"module {m.name}: {size} bytes of BTF but not on btf_modules "
                                  f"(the kernel did not accept it)")
                self._missing.append(m.name)
        return found

    def _from_btf_modules(self, by_address: dict[int, str]) -> dict[str, BTFSource]:
        """The kernel's registered module BTF copies (`btf_modules`, kernel/bpf/btf.c)."""
        k = self.kernel
        try:
            head = k.symbol("btf_modules")
            entry_t = k.btf.type("struct btf_module")
            btf_t = k.btf.type("struct btf")
        except KdnbError:
            return {}  # no CONFIG_DEBUG_INFO_BTF_MODULES, or types not in BTF: use module.btf_data
        has_split = btf_t.has_member("start_id")
        out: dict[str, BTFSource] = {}
        walk = k.for_each_entry(head, entry_t, "list", max_entries=100_000)
        for entry in walk:
            try:
                maddr = int(entry["module"])
                b = k.object(int(entry["btf"]), btf_t)
                name = by_address.get(maddr) or b["name"]
                if isinstance(name, bytes):
                    name = name.split(b"\0", 1)[0].decode("utf-8", "replace")
                out[str(name)] = BTFSource(
                    str(name), int(b["data"]), int(b["data_size"]), "btf_modules",
                    int(b["start_id"]) if has_split else None,
                    int(b["start_str_off"]) if has_split else None)
            except KdnbError as exc:
                self._problem(f"btf_modules entry at {entry.address:#x}: {exc}")
        if walk.error is not None:
            self._problem(f"btf_modules: {walk.error}")
        return out

    def _problem(self, text: str) -> None:
        self.problems.append(text)
        self.kernel.warnings.append(f"module BTF: {text}")

    # -- parsing ---------------------------------------------------------------------------
    def btf(self, module: str) -> BTF:
        """The split BTF of a loaded module (parsed on first call); raises TypeNotFound when the
        module is not loaded or has no BTF."""
        if module not in self._btfs:
            self._btfs[module] = self._load(module)
        got = self._btfs[module]
        if got is None:
            if module in self.missing:
                raise TypeNotFound(f"module {module!r} has no BTF (built without it, e.g. out of tree)")
            if module not in {m.name for m in self.kernel.modules}:
                raise TypeNotFound(f"no module {module!r} is loaded")
            raise TypeNotFound(f"module {module!r}: BTF unreadable ({'; '.join(self.problems[-1:])})")
        return got

    def _load(self, module: str) -> BTF | None:
        src = self.sources.get(module)
        if src is None:
            return None
        base = self.kernel.btf
        if not isinstance(base, BTF):
            self._problem(f"module {module}: vmlinux types do not come from BTF here, so there is no "
                          f"base for the module's split BTF")
            return None
        if not 0 < src.size <= MAX_MODULE_BTF:
            self._problem(f"module {module}: implausible BTF size {src.size}")
            return None
        if src.start_id is not None and src.start_id != len(base):
            self._problem(f"module {module}: its BTF continues type id {src.start_id}, but vmlinux "
                          f"BTF ends at {len(base) - 1} (another base?)")
            return None
        if src.start_str_off is not None and src.start_str_off != base.start_str_off + base.header["str_len"]:
            self._problem(f"module {module}: its BTF strings start at {src.start_str_off}, not after "
                          f"the vmlinux string section")
            return None
        t0 = time.perf_counter()
        try:
            btf = BTF(self.kernel.read(src.address, src.size), base=base, name=module)
        except KdnbError as exc:
            self._problem(f"module {module}: BTF at {src.address:#x} unreadable: {exc}")
            return None
        self.parse_seconds[module] = time.perf_counter() - t0
        return btf

    # -- lookup ----------------------------------------------------------------------------
    def type(self, name: str, module: str | None = None, fallback: Type | None = None) -> Type:
        """A type by C name from `module`'s BTF (its own types first, then vmlinux's), or, without
        `module`, the first loaded module defining it. A forward declaration is returned only when
        no module has the full definition: `fallback` (vmlinux's answer, possibly a fwd) then."""
        if module is not None:
            return self.btf(module).type(name)
        bare = name.rstrip()
        pointer = bare.endswith("*")
        target = bare[:-1] if pointer else bare
        fwd: Type | None = None
        for mod in self.sources:
            try:
                btf = self.btf(mod)
                tid = btf.find(target, own_only=True)
            except TypeNotFound:
                continue
            if btf.kind_of(tid) != "fwd":
                return btf.type(name) if pointer else btf.type(tid)
            fwd = fwd or (btf.type(name) if pointer else btf.type(tid))
        if fallback is not None:
            return fallback
        if fwd is not None:
            return fwd
        raise TypeNotFound(f"no type named {name!r} in vmlinux BTF nor in the BTF of "
                           f"{len(self.sources)} loaded module(s)")

    def summary(self) -> dict[str, object]:
        """How many modules have BTF, which do not, parse times so far."""
        return {"with_btf": sorted(self.sources), "missing": list(self.missing),
                "parse_seconds": dict(self.parse_seconds), "problems": list(self.problems)}
