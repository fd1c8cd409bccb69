"""Decode the kernel's kallsyms tables (the ones VMCOREINFO points at, Linux >= 6.0) with numpy."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..errors import KdnbError, MissingDebugInfo

_TABLES = ("names", "num_syms", "token_table", "token_index", "offsets", "relative_base")
_SEP = 256  # pseudo-token: "\n" before each name
_EMPTY = 257  # pseudo-token: the second byte of a two-byte length


@dataclass
class RawSymbols:
    """Symbols as parallel arrays: `names` (list of str), `addresses` (uint64), `types` (bytes, one per symbol)."""

    names: list[str]
    addresses: np.ndarray
    types: bytes


def _name_starts(blob: bytes, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions of each name's length prefix and of its first token (1- or 2-byte lengths)."""
    prefix = []
    append = prefix.append
    pos = 0
    for _ in range(count):
        append(pos)
        length = blob[pos]
        if length & 0x80:  # big symbol names (Linux 6.1+, commit 73bbb94466fd)
            pos += 2 + ((length & 0x7F) | (blob[pos + 1] << 7))
        else:
            pos += 1 + length
    starts = np.array(prefix, dtype=np.int64)
    first = starts + 1 + (np.frombuffer(blob, dtype=np.uint8)[starts] >> 7)
    return starts, first


def expand_names(blob: bytes, count: int, token_table: bytes, token_index: bytes) -> list[str]:
    """Decode `count` token-compressed names (each still led by its type letter)."""
    prefix, first = _name_starts(blob, count)
    if not count:
        return []
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
    ends = nul[np.searchsorted(nul, starts)]
    # pseudo-tokens: "\n" and "" appended after the real table
    table = np.concatenate([table, np.frombuffer(b"\n", dtype=np.uint8)])
    starts = np.concatenate([starts, [len(table) - 1, 0]]).astype(np.int32)
    lengths = np.concatenate([ends - starts[:256], [1, 0]]).astype(np.int32)

    # int32 throughout: the arrays are millions long and allocation dominates
    tok_len = lengths[stream]
    out_end = np.cumsum(tok_len, dtype=np.int32)
    total = int(out_end[-1]) if len(out_end) else 0
    # byte j of the output comes from table[starts[tok] + (j - start of that token's output)]
    src = np.repeat(starts[stream] - (out_end - tok_len), tok_len)
    src += np.arange(total, dtype=np.int32)
    text = table[src].tobytes().decode("latin-1")
    return text.split("\n")[1:]


def symbol_addresses(offsets: np.ndarray, relative_base: int, absolute_percpu: bool) -> np.ndarray:
    """kallsyms_sym_address() for every symbol, in either base-relative encoding."""
    if absolute_percpu:
        # non-negative: the absolute value (per-CPU offsets); negative: relative_base - 1 - offset
        signed = offsets.astype(np.int64)
        rel = np.uint64(relative_base) - np.uint64(1) - signed.astype(np.uint64)
        return np.where(signed >= 0, signed.astype(np.uint64), rel)
    return np.uint64(relative_base) + offsets.astype(np.uint32).astype(np.uint64)


def table_addresses(vmcoreinfo: dict[str, str]) -> dict[str, int]:
    """Addresses of the kallsyms tables from VMCOREINFO; raises MissingDebugInfo."""
    try:
        return {t: int(vmcoreinfo[f"SYMBOL(kallsyms_{t})"], 16) for t in _TABLES}
    except KeyError as exc:
        raise MissingDebugInfo(
            f"VMCOREINFO has no {exc.args[0]} (kernel < 6.0?): pass vmlinux= or system_map="
        ) from None


def read_names(read: Callable[[int, int], bytes], vmcoreinfo: dict[str, str]) -> tuple[list[str], bytes]:
    """Decode every symbol name and type letter through `read(vaddr, size)`."""
    addr = table_addresses(vmcoreinfo)
    (count,) = struct.unpack("<I", read(addr["num_syms"], 4))
    # kallsyms_names has no length in VMCOREINFO: it ends before the next table laid out after it
    after = [a for a in addr.values() if a > addr["names"]]
    names_blob = read(addr["names"], min(after) - addr["names"]) if after else b""
    token_index = read(addr["token_index"], 512)
    starts = np.frombuffer(token_index, dtype="<u2")
    token_table = _read_token_table(read, addr["token_table"], int(starts.max()))
    names = expand_names(names_blob, count, token_table, token_index)
    if len(names) != count:
        raise KdnbError(f"kallsyms: decoded {len(names)} names, expected {count}")
    types = "".join(n[0] for n in names).encode("latin-1")
    return [n[1:] for n in names], types


def read_addresses(read: Callable[[int, int], bytes], vmcoreinfo: dict[str, str],
                   names: list[str]) -> np.ndarray:
    """Every symbol's address, choosing the base-relative encoding that puts `_stext` where
    VMCOREINFO says (the check makedumpfile and drgn make)."""
    addr = table_addresses(vmcoreinfo)
    (count,) = struct.unpack("<I", read(addr["num_syms"], 4))
    if count != len(names):
        raise KdnbError(f"kallsyms: {count} symbols in the dump, {len(names)} names given")
    (relative_base,) = struct.unpack("<Q", read(addr["relative_base"], 8))
    offsets = np.frombuffer(read(addr["offsets"], 4 * count), dtype="<i4")
    stext = int(vmcoreinfo.get("SYMBOL(_stext)", "0"), 16)
    try:
        i = names.index("_stext")
    except ValueError:
        raise KdnbError("kallsyms: no _stext symbol; cannot tell the address encoding") from None
    for absolute_percpu in (False, True):
        addresses = symbol_addresses(offsets, relative_base, absolute_percpu)
        if int(addresses[i]) == stext or not stext:
            return addresses
    raise KdnbError(f"kallsyms: _stext decodes to no known encoding (VMCOREINFO says {stext:#x})")


def decode(read: Callable[[int, int], bytes], vmcoreinfo: dict[str, str]) -> RawSymbols:
    """Read and decode kallsyms through `read(vaddr, size)` using the VMCOREINFO SYMBOL() entries."""
    names, types = read_names(read, vmcoreinfo)
    return RawSymbols(names, read_addresses(read, vmcoreinfo, names), types)


def _read_token_table(read: Callable[[int, int], bytes], addr: int, last_start: int) -> bytes:
    """The token table up to the NUL that ends its last token."""
    size = last_start + 64
    while True:
        data = read(addr, size)
        if data.find(b"\0", last_start) >= 0:
            return data
        size *= 2
