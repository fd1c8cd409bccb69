"""Symbols and types from outside the dump: a System.map, or a vmlinux ELF (symtab, .BTF, DWARF, build id)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import numpy as np

from ..errors import FormatError, KdnbError
from .symbols import SymbolTable

if TYPE_CHECKING:  # pragma: no cover
    from .dwarf import DwarfTypes

KERNEL_SPACE = 0xFFFF800000000000
_ELF_TYPE_LETTER = {"STT_FUNC": "t", "STT_OBJECT": "d", "STT_NOTYPE": "t"}


def read_system_map(path: str | os.PathLike) -> SymbolTable:
    """Parse `addr type name` lines (System.map or /proc/kallsyms; module lines ignored)."""
    names: list[str] = []
    addrs: list[int] = []
    types: list[str] = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            parts = line.split()
            if len(parts) != 3:
                continue  # blank, or a module symbol "addr t name [mod]"
            try:
                addrs.append(int(parts[0], 16))
            except ValueError:
                raise FormatError(f"{path}: not a System.map (bad line {line.strip()!r})") from None
            types.append(parts[1][:1])
            names.append(parts[2])
    if not names:
        raise FormatError(f"{path}: no symbols")
    return SymbolTable(names, np.array(addrs, dtype=np.uint64), "".join(types).encode("latin-1"))


def relocate(table: SymbolTable, stext: int) -> SymbolTable:
    """Shift link-time addresses by the KASLR slide so `_stext` lands on SYMBOL(_stext)."""
    have = table.address("_stext")
    if have == stext or not stext:
        return table
    slide = np.uint64((stext - have) & 0xFFFFFFFFFFFFFFFF)
    types = np.frombuffer(table.types, dtype=np.uint8)
    # absolute symbols, and per-CPU ones (offsets into the per-CPU area, listed as 'D'), stay put
    absolute = (types == ord("A")) | (types == ord("a")) | (table.addresses < np.uint64(KERNEL_SPACE))
    addrs = np.where(absolute, table.addresses, table.addresses + slide)
    return SymbolTable(table.names, addrs, table.types, table.sizes)


class Vmlinux:
    """A vmlinux ELF: its symbols, build id, `.BTF` section, and bytes at a link-time address."""

    def __init__(self, path: str | os.PathLike) -> None:
        from elftools.elf.elffile import ELFFile  # pyelftools loads with the first vmlinux given

        self.path = os.fspath(path)
        self._file = open(self.path, "rb")
        try:
            self.elf = ELFFile(self._file)
        except Exception as exc:  # noqa: BLE001 - pyelftools raises many kinds
            self._file.close()
            raise FormatError(f"{self.path}: not an ELF file ({exc})") from None

    def close(self) -> None:
        """Close the file."""
        self._file.close()

    @property
    def build_id(self) -> str | None:
        """The GNU build id (hex), if the ELF has one."""
        from elftools.elf.sections import NoteSection

        for sec in self.elf.iter_sections():
            if isinstance(sec, NoteSection):
                for note in sec.iter_notes():
                    if note["n_name"] == "GNU" and note["n_type"] == "NT_GNU_BUILD_ID":
                        return note["n_desc"]
        return None

    def btf(self) -> bytes | None:
        """The `.BTF` section's bytes, or None."""
        sec = self.elf.get_section_by_name(".BTF")
        return sec.data() if sec is not None else None

    def dwarf_types(self, cache_dir: str | os.PathLike | None = None, *, use_cache: bool = True) -> DwarfTypes:
        """Types from the DWARF `.debug_info` (name index cached per build id; see kernel/dwarf.py)."""
        from .dwarf import DwarfTypes, index_key

        key = index_key(self.build_id, self.path) if use_cache else ""
        return DwarfTypes(self.elf, cache_key=key, cache_dir=cache_dir)

    def symbols(self) -> SymbolTable:
        """Symbols from `.symtab` (link-time addresses, sizes from st_size)."""
        from elftools.elf.sections import SymbolTableSection

        sec = self.elf.get_section_by_name(".symtab")
        if not isinstance(sec, SymbolTableSection):
            raise FormatError(f"{self.path}: no .symtab (stripped vmlinux)")
        names, addrs, types, sizes = [], [], [], []
        for sym in sec.iter_symbols():
            kind = sym["st_info"]["type"]
            if not sym.name or kind in ("STT_SECTION", "STT_FILE"):
                continue
            letter = "a" if sym["st_shndx"] == "SHN_ABS" else _ELF_TYPE_LETTER.get(kind, "d")
            if sym["st_info"]["bind"] != "STB_LOCAL":
                letter = letter.upper()
            names.append(sym.name)
            addrs.append(sym["st_value"])
            types.append(letter)
            sizes.append(sym["st_size"] or -1)
        table = SymbolTable(names, np.array(addrs, dtype=np.uint64), "".join(types).encode())
        given = np.array(sizes, dtype=np.int64)
        table.sizes = np.where(given > 0, given, table.sizes)
        return table

    def read(self, vaddr: int, size: int) -> bytes:
        """Bytes at a link-time virtual address from the PT_LOAD that holds it."""
        for seg in self.elf.iter_segments():
            if seg["p_type"] == "PT_LOAD" and seg["p_vaddr"] <= vaddr < seg["p_vaddr"] + seg["p_filesz"]:
                self._file.seek(seg["p_offset"] + vaddr - seg["p_vaddr"])
                return self._file.read(size)
        raise KdnbError(f"{self.path}: {vaddr:#x} is not in a PT_LOAD")
