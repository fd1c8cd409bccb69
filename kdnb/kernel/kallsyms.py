"""Decode the kernel's kallsyms tables with numpy.

Where the tables are comes from VMCOREINFO (Linux >= 6.0, `tables_from_vmcoreinfo`) or from a
scan of the kernel image (`kallsyms_scan`). Every count and size read from them passes
`kdnb.bounds`; a table that does not decode raises CorruptStructure.

The address encoding of `kallsyms_offsets` changed over time; `decode` tries each and keeps the one
that puts every symbol VMCOREINFO names where VMCOREINFO says:
- base-relative: `relative_base + (u32)offset` (CONFIG_KALLSYMS_BASE_RELATIVE, 4.6+);
- absolute per-CPU: a non-negative offset is the value itself, a negative one is
  `relative_base - 1 - offset` (CONFIG_KALLSYMS_ABSOLUTE_PERCPU, x86_64 SMP until 6.15);
- place-relative: `&kallsyms_offsets[i] + (s32)offset`, since a081b5789255 ("kallsyms: Get rid
  of kallsyms relative base", Linux 7.0), which also dropped `kallsyms_relative_base`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .. import bounds
from ..errors import CorruptStructure, KdnbError

Reader = Callable[[int, int], bytes]
START_KERNEL_MAP = 0xFFFFFFFF80000000
NAMES_MAX = 64 << 20  # the names blob: ~2 MB on a 7.2 distro kernel
TOKEN_TABLE_MAX = (1 << 16) + 256  # token_index entries are u16; one token past the last start
_SEP = 256  # pseudo-token: "\n" before each name
_EMPTY = 257  # pseudo-token: the second byte of a two-byte length
ENCODINGS = ("base-relative", "absolute-percpu", "place-relative")


@dataclass(frozen=True)
class Tables:
    """Virtual addresses of the kallsyms tables; `names_end` bounds the names blob."""

    num_syms: int
    names: int
    names_end: int
    token_table: int
    token_index: int
    offsets: int
    relative_base: int | None

    def relative_to(self, base: int) -> list[int]:
        """The addresses minus `base` (KASLR-invariant, for the on-disk cache); -1 for no base."""
        rb = -1 if self.relative_base is None else self.relative_base - base
        return [self.num_syms - base, self.names - base, self.names_end - base, self.token_table - base,
                self.token_index - base, self.offsets - base, rb]

    @classmethod
    def from_relative(cls, values: list[int], base: int) -> "Tables":
        """Inverse of `relative_to`."""
        *rest, rb = (int(v) for v in values)
        return cls(*(v + base for v in rest), relative_base=None if rb == -1 else rb + base)


@dataclass
class RawSymbols:
    """Symbols as parallel arrays: `names` (list of str), `addresses` (uint64), `types` (bytes,
    one per symbol), the `encoding` the addresses were decoded with and the VMCOREINFO symbols
    they were `verified` against."""

    names: list[str]
    addresses: np.ndarray
    types: bytes
    encoding: str = ""
    verified: tuple[str, ...] = ()


def tables_from_vmcoreinfo(vmcoreinfo: dict[str, str], path: str = "") -> Tables | None:
    """The tables VMCOREINFO names (Linux >= 6.0), or None when it names none of them."""
    keys = ("names", "num_syms", "token_table", "token_index", "offsets")
    if not any(f"SYMBOL(kallsyms_{t})" in vmcoreinfo for t in keys):
        return None
    addr = {t: bounds.vmcoreinfo_int(vmcoreinfo, f"SYMBOL(kallsyms_{t})", path) for t in keys}
    rb = vmcoreinfo.get("SYMBOL(kallsyms_relative_base)")
    relative_base = bounds.vmcoreinfo_int(vmcoreinfo, "SYMBOL(kallsyms_relative_base)", path) if rb else None
    # kallsyms_names has no length: it ends before the next table laid out after it
    after = [a for a in (*addr.values(), relative_base or 0) if a > addr["names"]]
    end = min(after) if after else addr["names"] + NAMES_MAX
    return Tables(addr["num_syms"], addr["names"], min(end, addr["names"] + NAMES_MAX),
                  addr["token_table"], addr["token_index"], addr["offsets"], relative_base)


def name_starts(blob: bytes, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions of each name's length prefix and of its first token (1- or 2-byte lengths)."""
    starts: list[int] = []
    append = starts.append
    pos, size = 0, len(blob)
    for i in range(count):
        if pos >= size:
            raise CorruptStructure(f"kallsyms_names: name {i} of {count} starts past the table "
                                   f"({pos:#x} >= {size:#x})")
        append(pos)
        length = blob[pos]
        if not length:  # every name holds at least its type letter
            raise CorruptStructure(f"kallsyms_names: name {i} of {count} is empty (at {pos:#x})")
        if length & 0x80:  # big symbol names (Linux 6.1+, commit 73bbb94466fd)
            pos += 2 + ((length & 0x7F) | (blob[pos + 1] << 7 if pos + 1 < size else 0))
        else:
            pos += 1 + length
    if pos > size:
        raise CorruptStructure(f"kallsyms_names: the last name runs past the table ({pos:#x} > {size:#x})")
    prefix = np.array(starts, dtype=np.int64)
    first = prefix + 1 + (np.frombuffer(blob, dtype=np.uint8)[prefix] >> 7)
    return prefix, first


def expand_names(blob: bytes, count: int, token_table: bytes, token_index: bytes) -> list[str]:
    """Decode `count` token-compressed names (each still led by its type letter)."""
    if not count:
        return []
    prefix, first = name_starts(blob, count)
    last_len = blob[prefix[-1]]
    if last_len & 0x80:
        last_len = (last_len & 0x7F) | (blob[prefix[-1] + 1] << 7)
    end = int(first[-1]) + last_len
    stream = np.frombuffer(blob, dtype=np.uint8, count=end).astype(np.int16)
    stream[prefix] = _SEP
    stream[prefix[first - prefix == 2] + 1] = _EMPTY

    table = np.frombuffer(token_table, dtype=np.uint8)
    starts = np.frombuffer(token_index, dtype="<u2", count=256).astype(np.int32)
    nul = np.flatnonzero(table == 0)
    where = np.searchsorted(nul, starts)
    if not len(nul) or int(where.max()) >= len(nul):
        raise CorruptStructure("kallsyms_token_table: a token has no terminating NUL")
    ends = nul[where]
    # pseudo-tokens: "\n" and "" appended after the real table
    table = np.concatenate([table, np.frombuffer(b"\n", dtype=np.uint8)])
    starts = np.concatenate([starts, [len(table) - 1, 0]]).astype(np.int32)
    lengths = np.concatenate([ends - starts[:256], [1, 0]]).astype(np.int64)

    tok_len = lengths[stream]
    out_end = np.cumsum(tok_len)
    total = int(out_end[-1])
    if total > 32 * len(blob) + 1024:  # tokens are short: this is not a real table
        raise CorruptStructure(f"kallsyms: {count} names expand to {total} bytes")
    # byte j of the output comes from table[starts[tok] + (j - start of that token's output)]
    src = np.repeat(starts[stream] - (out_end - tok_len), tok_len)
    src += np.arange(total, dtype=np.int64)
    text = table[src].tobytes().decode("latin-1")
    return text.split("\n")[1:]


def symbol_addresses(offsets: np.ndarray, encoding: str, relative_base: int | None,
                     offsets_addr: int) -> np.ndarray | None:
    """kallsyms_sym_address() for every symbol in `encoding` (None when it needs a missing base)."""
    signed = offsets.astype(np.int64)
    if encoding == "place-relative":
        places = np.uint64(offsets_addr) + np.arange(len(offsets), dtype=np.uint64) * np.uint64(4)
        return places + signed.astype(np.uint64)
    if relative_base is None:
        return None
    if encoding == "absolute-percpu":
        rel = np.uint64(relative_base) - np.uint64(1) - signed.astype(np.uint64)
        return np.where(signed >= 0, signed.astype(np.uint64), rel)
    return np.uint64(relative_base) + offsets.astype(np.uint32).astype(np.uint64)


def expected_symbols(vmcoreinfo: dict[str, str]) -> dict[str, int]:
    """The kernel-image symbols VMCOREINFO states (pointer values such as mem_section are left out)."""
    out = {}
    for key, value in vmcoreinfo.items():
        if key.startswith("SYMBOL(") and not key.startswith("SYMBOL(kallsyms_"):
            try:
                addr = int(value, 16)
            except ValueError:
                continue
            if addr >= START_KERNEL_MAP:
                out[key[7:-1]] = addr
    return out


def _expected_hits(names: list[str], expected: dict[str, int]) -> list[tuple[int, str]]:
    """(index, name) of every symbol whose name VMCOREINFO states."""
    return [(i, n) for i, n in enumerate(names) if n in expected]


def _verify(hits: list[tuple[int, str]], addresses: np.ndarray,
            expected: dict[str, int]) -> tuple[list[str], list[str]]:
    """Which expected symbols decode to their address (matched) and which to another (wrong)."""
    found: dict[str, set[int]] = {}
    for i, name in hits:
        found.setdefault(name, set()).add(int(addresses[i]))
    matched = sorted(n for n, a in found.items() if expected[n] in a)
    wrong = sorted(n for n in found if n not in matched)
    return matched, wrong


def read_names(read: Reader, tables: Tables, path: str = "") -> tuple[list[str], bytes]:
    """Decode every symbol name and type letter through `read(vaddr, size)`."""
    (raw,) = struct.unpack("<I", read(tables.num_syms, 4))
    count = bounds.count(raw, "kallsyms_num_syms", bounds.KALLSYMS_MAX, path)
    size = bounds.in_range(tables.names_end - tables.names, "kallsyms_names size", 1, NAMES_MAX, path)
    names_blob = read(tables.names, size)
    token_index = read(tables.token_index, 512)
    last_start = int(np.frombuffer(token_index, dtype="<u2").max())
    token_table = read(tables.token_table, min(last_start + 256, TOKEN_TABLE_MAX))
    names = expand_names(names_blob, count, token_table, token_index)
    if len(names) != count:
        raise CorruptStructure(f"kallsyms: decoded {len(names)} names, expected {count}")
    types = "".join(n[:1] or "?" for n in names).encode("latin-1")
    return [n[1:] for n in names], types


def read_addresses(read: Reader, tables: Tables, names: list[str],
                   expected: dict[str, int]) -> tuple[np.ndarray, str, tuple[str, ...]]:
    """Every symbol's address, the encoding that puts the `expected` symbols (at least `_stext`)
    where VMCOREINFO says, and those symbols; raises CorruptStructure when no encoding does."""
    count = len(names)
    offsets = np.frombuffer(read(tables.offsets, 4 * count), dtype="<i4")
    relative_base = None
    if tables.relative_base is not None:
        (relative_base,) = struct.unpack("<Q", read(tables.relative_base, 8))
    if "_stext" not in expected:
        raise KdnbError("VMCOREINFO lacks SYMBOL(_stext): cannot tell the kallsyms address encoding")
    hits = _expected_hits(names, expected)
    for encoding in ENCODINGS:
        addresses = symbol_addresses(offsets, encoding, relative_base, tables.offsets)
        if addresses is None:
            continue
        matched, wrong = _verify(hits, addresses, expected)
        if "_stext" in matched and not wrong:
            return addresses, encoding, tuple(matched)
    raise CorruptStructure(f"kallsyms: no address encoding puts _stext at {expected['_stext']:#x}")


def decode(read: Reader, tables: Tables, expected: dict[str, int], path: str = "") -> RawSymbols:
    """Read and decode kallsyms at `tables`, checking the addresses against `expected`."""
    names, types = read_names(read, tables, path)
    addresses, encoding, verified = read_addresses(read, tables, names, expected)
    return RawSymbols(names, addresses, types, encoding, verified)
