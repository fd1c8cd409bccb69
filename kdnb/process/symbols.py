"""Symbols of a mapped image from its ELF file's .symtab and .dynsym (and a debug file's), and
address -> `function+offset` the way gdb's minimal symbols do it: the nearest function symbol
at or below the address, flagged when the address lies past the symbol's size. Of aliases at
one address the sized one with the fewest leading underscores and the strongest binding is
shown (`raise`, not `gsignal`; `free`, not `__libc_free`)."""

from __future__ import annotations

import bisect
from dataclasses import dataclass

from elftools.elf.sections import SymbolTableSection

from .. import bounds
from .images import Image, open_elf

SYMBOLS_MAX = 1 << 22  # a large C++ library has ~ 10^5 symbols
CODE_TYPES = ("STT_FUNC", "STT_GNU_IFUNC")
BIND_RANK = {"STB_GLOBAL": 2, "STB_WEAK": 1}


def _rank(sym, size: int) -> tuple[bool, int, int, bool]:
    """How presentable an alias is: sized, few leading underscores, global, default visibility."""
    name = sym.name
    return (size > 0, -(len(name) - len(name.lstrip("_"))), BIND_RANK.get(sym["st_info"]["bind"], 0),
            sym["st_other"]["visibility"] == "STV_DEFAULT")


@dataclass(frozen=True)
class Symbol:
    """An address resolved to a symbol: name, offset into it, and whether it is inside it."""

    name: str
    offset: int
    size: int
    table: str  # .symtab or .dynsym
    inside: bool

    def __str__(self) -> str:
        return f"{self.name}+{self.offset:#x}" if self.offset else self.name


class SymbolTable:
    """The function symbols and data objects of one image (link-time addresses)."""

    def __init__(self, image: Image) -> None:
        funcs: dict[int, tuple[int, str, str, tuple]] = {}
        self.objects: dict[str, tuple[int, int]] = {}
        self.sources: list[str] = []
        for source in image.elf_sources():
            with open_elf(source) as elf:
                if elf is None:
                    continue
                for name in (".symtab", ".dynsym"):
                    section = elf.get_section_by_name(name)
                    if isinstance(section, SymbolTableSection):
                        self._add(section, name, funcs)
                        self.sources.append(name)
        items = sorted(funcs.items())
        self._addrs = [a for a, _ in items]
        self._info = [v for _, v in items]

    def _add(self, section: SymbolTableSection, table: str,
             funcs: dict[int, tuple[int, str, str, tuple]]) -> None:
        bounds.count(section.num_symbols(), f"{table} symbols", SYMBOLS_MAX)
        for sym in section.iter_symbols():
            if sym["st_shndx"] == "SHN_UNDEF" or not sym.name:
                continue
            value, size, kind = sym["st_value"], sym["st_size"], sym["st_info"]["type"]
            if kind in CODE_TYPES and value:
                rank = _rank(sym, size)
                old = funcs.get(value)
                if old is None or rank > old[3]:
                    funcs[value] = (size, sym.name, table, rank)
            elif kind == "STT_OBJECT" and value:
                self.objects.setdefault(sym.name, (value, size))

    def __len__(self) -> int:
        return len(self._addrs)

    def lookup(self, addr: int) -> Symbol | None:
        """The function at or below a link-time address, or None when none precedes it."""
        i = bisect.bisect_right(self._addrs, addr) - 1
        if i < 0:
            return None
        start = self._addrs[i]
        size, name, table, _rank = self._info[i]
        off = addr - start
        return Symbol(name, off, size, table, off < size or size == 0)

    def address(self, name: str) -> int | None:
        """The link-time address of a data object or function by name, or None."""
        if name in self.objects:
            return self.objects[name][0]
        for addr, (_size, sym, _t, _r) in zip(self._addrs, self._info):
            if sym == name:
                return addr
        return None
