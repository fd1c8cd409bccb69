"""Loaded modules' own symbol tables (`struct module` -> `kallsyms` -> symtab/strtab/typetab)."""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from ..errors import KdnbError
from .symbols import SymbolTable, sizes_to_next

if TYPE_CHECKING:  # pragma: no cover
    from .kernel import Kernel

_ELF64_SYM = np.dtype([("st_name", "<u4"), ("st_info", "u1"), ("st_other", "u1"),
                       ("st_shndx", "<u2"), ("st_value", "<u8"), ("st_size", "<u8")])
MAX_MODULE_SYMBOLS = 1_000_000


class ModuleInfo(NamedTuple):
    """A loaded module: where its `struct module` is and how many symbols it has."""

    name: str
    address: int
    num_symbols: int


def module_symbols(kernel: "Kernel") -> tuple[SymbolTable, list[ModuleInfo], list[str]]:
    """Symbols of every module on the `modules` list, the modules found, and problems met."""
    mod_t = kernel.type("struct module")
    kal_t = kernel.type("struct mod_kallsyms")
    names: list[str] = []
    addrs: list[np.ndarray] = []
    types: list[bytes] = []
    sizes: list[np.ndarray] = []
    mods: list[str | None] = []
    infos: list[ModuleInfo] = []
    problems: list[str] = []
    walk = kernel.list_walk(kernel.symbol("modules"), "struct module", "list")
    for maddr in walk:
        try:
            mod = kernel.object(maddr, mod_t)
            name = mod["name"]
            kal = kernel.object(mod["kallsyms"], kal_t)
            count = int(kal["num_symtab"])
            if count > MAX_MODULE_SYMBOLS:
                raise KdnbError(f"implausible num_symtab {count}")
            syms = np.frombuffer(kernel.read(kal["symtab"], count * _ELF64_SYM.itemsize), dtype=_ELF64_SYM)
            keep = np.flatnonzero((syms["st_name"] != 0) & (syms["st_shndx"] != 0))
            strtab = _read_strtab(kernel, kal["strtab"], int(syms["st_name"].max()) if count else 0)
            typetab = kernel.read(kal["typetab"], count) if kal["typetab"] else b"?" * count
        except KdnbError as exc:
            problems.append(f"module at {maddr:#x}: {exc}")
            continue
        st_name = syms["st_name"][keep].tolist()
        mod_names = [strtab[o:strtab.index(b"\0", o)].decode("utf-8", "replace") for o in st_name]
        values = syms["st_value"][keep]
        names += mod_names
        addrs.append(values)
        types.append(bytes(typetab[i] for i in keep.tolist()))
        sizes.append(sizes_to_next(values))  # as the kernel prints them: distance to the next
        mods += [name] * len(mod_names)
        infos.append(ModuleInfo(name, maddr, len(mod_names)))
    if walk.error is not None:
        problems.append(str(walk.error))
    table = SymbolTable(
        names,
        np.concatenate(addrs) if addrs else np.empty(0, np.uint64),
        b"".join(types),
        np.concatenate(sizes) if sizes else np.empty(0, np.int64),
        mods,
    )
    return table, infos, problems


def _read_strtab(kernel: "Kernel", addr: int, last: int) -> bytes:
    """The string table up to the NUL ending the string at offset `last`."""
    return kernel.read(addr, last) + kernel.read_cbytes(addr + last) + b"\0"
