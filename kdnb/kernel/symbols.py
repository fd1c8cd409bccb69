"""A symbol table: name lookup, address-to-symbol lookup, and the `symbols` DataFrame."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pandas as pd

from ..errors import SymbolNotFound


class SymbolHit(NamedTuple):
    """The symbol an address falls in."""

    name: str
    address: int
    offset: int
    size: int
    module: str | None


def sizes_to_next(addresses: np.ndarray) -> np.ndarray:
    """Distance from each address to the next larger one (-1 for the highest)."""
    ordered = np.sort(addresses, kind="stable")  # kallsyms order is address order: a linear pass
    uniq = ordered[np.concatenate([[True], ordered[1:] != ordered[:-1]])] if len(ordered) else ordered
    nxt = np.searchsorted(uniq, addresses, side="right")
    sizes = np.full(len(addresses), -1, dtype=np.int64)
    has = nxt < len(uniq)
    sizes[has] = (uniq[nxt[has]] - addresses[has]).astype(np.int64)
    return sizes


class SymbolTable:
    """vmlinux symbols (plus module symbols added later) as parallel arrays."""

    def __init__(self, names: list[str], addresses: np.ndarray, types: bytes,
                 sizes: np.ndarray | None = None, modules: list[str | None] | None = None) -> None:
        self.names = names
        self.addresses = np.asarray(addresses, dtype=np.uint64)
        self.types = types
        self._sizes = sizes
        self.modules: list[str | None] = modules if modules is not None else [None] * len(names)
        self._by_name: dict[str, int] | None = None
        self._sorted: tuple[np.ndarray, np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.names)

    @property
    def sizes(self) -> np.ndarray:
        """Symbol sizes in bytes (-1 when unknown); computed on first use."""
        if self._sizes is None:
            self._sizes = sizes_to_next(self.addresses)
        return self._sizes

    @sizes.setter
    def sizes(self, value: np.ndarray) -> None:
        self._sizes = value

    def extend(self, other: "SymbolTable") -> None:
        """Append another table (a module's symbols)."""
        self.sizes = np.concatenate([self.sizes, other.sizes])  # before the addresses change
        self.names = self.names + other.names
        self.addresses = np.concatenate([self.addresses, other.addresses])
        self.types = self.types + other.types
        self.modules = self.modules + other.modules
        if self._by_name is not None:  # keep the index: earlier (vmlinux) names win
            base = len(self.names) - len(other.names)
            other_types = np.frombuffer(other.types, dtype=np.uint8)
            is_global = (other_types >= ord("A")) & (other_types <= ord("Z"))
            for i in np.concatenate([np.flatnonzero(is_global), np.flatnonzero(~is_global)]).tolist():
                self._by_name.setdefault(other.names[i], base + i)
        self._sorted = None

    def _index(self) -> dict[str, int]:
        if self._by_name is None:
            # global symbols win over local ones of the same name; the first of each kind wins
            types = np.frombuffer(self.types, dtype=np.uint8)
            is_global = (types >= ord("A")) & (types <= ord("Z"))
            # later pairs overwrite earlier ones: locals first, then globals, each in reverse
            order = np.concatenate([np.flatnonzero(~is_global)[::-1], np.flatnonzero(is_global)[::-1]]).tolist()
            self._by_name = dict(zip(map(self.names.__getitem__, order), order))
        return self._by_name

    def index_of(self, name: str) -> int:
        """Row of a symbol by name; raises SymbolNotFound."""
        i = self._index().get(name)
        if i is None:
            raise SymbolNotFound(f"no symbol named {name!r}")
        return i

    def address(self, name: str) -> int:
        """Address of a symbol by name; raises SymbolNotFound."""
        return int(self.addresses[self.index_of(name)])

    def __contains__(self, name: str) -> bool:
        return name in self._index()

    def lookup(self, addr: int) -> SymbolHit | None:
        """The symbol containing `addr` (prefers text/data over absolute per-CPU symbols)."""
        if self._sorted is None:
            types = np.frombuffer(self.types, dtype=np.uint8)
            usable = np.flatnonzero((types != ord("A")) & (types != ord("a")))
            order = usable[np.argsort(self.addresses[usable], kind="stable")]
            self._sorted = (self.addresses[order], order)
        addrs, order = self._sorted
        if not 0 <= addr < 1 << 64:  # e.g. a register value from a corrupt note
            return None
        k = int(np.searchsorted(addrs, np.uint64(addr), side="right")) - 1
        if k < 0:
            return None
        i = int(order[k])
        start = int(addrs[k])
        size = int(self.sizes[i])
        if size > 0 and addr >= start + size:
            return None
        return SymbolHit(self.names[i], start, addr - start, size, self.modules[i])

    def symbolize(self, addr: int) -> str:
        """`func+0x1a/0x40 [mod]`, or the bare hex address when no symbol contains it."""
        hit = self.lookup(addr)
        if hit is None:
            return f"{addr & 0xFFFFFFFFFFFFFFFF:#x}"
        size = f"/{hit.size:#x}" if hit.size > 0 else ""
        mod = f" [{hit.module}]" if hit.module else ""
        return f"{hit.name}+{hit.offset:#x}{size}{mod}"

    def dataframe(self) -> pd.DataFrame:
        """name (string), address (UInt64), type (categorical letter), size (Int64, NA when unknown),
        module (categorical, NA for vmlinux)."""
        sizes = pd.array(self.sizes, dtype="Int64")
        sizes[self.sizes < 0] = pd.NA
        letters = np.frombuffer(self.types, dtype=np.uint8)
        present = np.unique(letters)
        type_codes = np.searchsorted(present, letters)
        mod_names = sorted({m for m in self.modules if m is not None})
        code_of = {m: i for i, m in enumerate(mod_names)}
        mod_codes = np.fromiter((code_of.get(m, -1) for m in self.modules), dtype=np.int32,
                                count=len(self.modules))
        return pd.DataFrame({
            "name": pd.array(self.names, dtype="string"),
            "address": pd.array(self.addresses, dtype="UInt64"),
            "type": pd.Categorical.from_codes(type_codes, categories=[chr(c) for c in present.tolist()]),
            "size": sizes,
            "module": pd.Categorical.from_codes(mod_codes, categories=mod_names),
        })
