"""kallsyms decoding on tiny tables built here: both base-relative encodings, 1- and 2-byte lengths."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from kdnb.errors import MissingDebugInfo, SymbolNotFound
from kdnb.kernel import kallsyms
from kdnb.kernel.symbols import SymbolTable

BASE = 0xFFFFFFFF81000000
TOKENS = [b"_s", b"text", b"init", b"_task", b"T", b"D", b"A"]


def _encode(name: bytes, tokens: list[bytes]) -> bytes:
    """Greedy token compression: a token index when a token matches, else the byte itself as a
    one-character token (the builder makes every byte value >= 0x20 a token of itself)."""
    out = bytearray()
    i = 0
    while i < len(name):
        for t_i, tok in enumerate(tokens):
            if tok and name.startswith(tok, i):
                out.append(t_i)
                i += len(tok)
                break
        else:
            out.append(name[i])
            i += 1
    return bytes(out)


def build_tables(symbols: list[tuple[str, str, int]], absolute_percpu: bool) -> tuple[dict, dict[str, str]]:
    """Memory {address: bytes} and VMCOREINFO for (type, name, address) symbols."""
    tokens = TOKENS + [b""] * (0x20 - len(TOKENS)) + [bytes([c]) for c in range(0x20, 256)]
    table = bytearray()
    index = []
    for tok in tokens:
        index.append(len(table))
        table += tok + b"\0"
    names = bytearray()
    offsets = []
    relative_base = BASE
    for typ, name, addr in symbols:
        enc = _encode(typ.encode() + name.encode(), tokens)
        if len(enc) > 0x7F:
            names += bytes([(len(enc) & 0x7F) | 0x80, len(enc) >> 7])
        else:
            names.append(len(enc))
        names += enc
        if absolute_percpu and addr < BASE:
            offsets.append(addr)  # absolute per-CPU value
        elif absolute_percpu:
            offsets.append(relative_base - 1 - addr)  # negative
        else:
            offsets.append(addr - relative_base)
    layout = {
        "num_syms": 0xFFFFFFFF82000000, "names": 0xFFFFFFFF82000010,
        "token_table": 0xFFFFFFFF82100000, "token_index": 0xFFFFFFFF82110000,
        "offsets": 0xFFFFFFFF82120000, "relative_base": 0xFFFFFFFF82130000,
    }
    mem = {
        layout["num_syms"]: struct.pack("<I", len(symbols)),
        layout["names"]: bytes(names),
        layout["token_table"]: bytes(table),
        layout["token_index"]: np.array(index, dtype="<u2").tobytes(),
        layout["offsets"]: np.array(offsets, dtype="<i4").tobytes(),
        layout["relative_base"]: struct.pack("<Q", relative_base),
    }
    info = {f"SYMBOL(kallsyms_{k})": f"{v:x}" for k, v in layout.items()}
    stext = [a for _t, n, a in symbols if n == "_stext"][0]
    info["SYMBOL(_stext)"] = f"{stext:x}"
    return mem, info


def reader(mem: dict[int, bytes]):
    def read(addr: int, size: int) -> bytes:
        start = max((s for s in mem if s <= addr), default=None)
        assert start is not None, f"read below the tables: {addr:#x}"
        chunk = mem[start][addr - start:addr - start + size]
        return chunk + b"\0" * (size - len(chunk))  # zero padding up to the next table
    return read


SYMBOLS = [
    ("A", "fixed_percpu_data", 0x0),
    ("A", "runqueues", 0x31980),
    ("T", "_stext", BASE),
    ("T", "_text", BASE),
    ("t", "x" * 200, BASE + 0x10),  # a 2-byte length
    ("D", "init_task", BASE + 0x1000),
    ("d", "text_init_local", BASE + 0x2000),
]


@pytest.mark.parametrize("absolute_percpu", [False, True])
def test_decode_both_encodings(absolute_percpu: bool) -> None:
    symbols = SYMBOLS if absolute_percpu else [s for s in SYMBOLS if s[2] >= BASE]
    mem, info = build_tables(symbols, absolute_percpu)
    raw = kallsyms.decode(reader(mem), info)
    assert raw.names == [n for _t, n, _a in symbols]
    assert raw.types.decode() == "".join(t for t, _n, _a in symbols)
    assert raw.addresses.tolist() == [a for _t, _n, a in symbols]
    table = SymbolTable(raw.names, raw.addresses, raw.types)
    assert table.address("init_task") == BASE + 0x1000
    assert table.symbolize(BASE + 0x1010) == "init_task+0x10/0x1000"
    if absolute_percpu:
        assert table.address("runqueues") == 0x31980
    with pytest.raises(SymbolNotFound):
        table.address("nope")


def test_absolute_values_and_sizes() -> None:
    offs = np.array([0x100, -1, -0x11], dtype=np.int32)
    assert kallsyms.symbol_addresses(offs, BASE, True).tolist() == [0x100, BASE, BASE + 0x10]
    assert kallsyms.symbol_addresses(np.array([0, 0x10], np.int32), BASE, False).tolist() == [BASE, BASE + 0x10]
    t = SymbolTable(["a", "b", "c"], np.array([BASE, BASE, BASE + 8], np.uint64), b"TTT")
    assert t.sizes.tolist() == [8, 8, -1]
    df = t.dataframe()
    assert str(df["address"].dtype) == "UInt64" and str(df["size"].dtype) == "Int64"
    assert df["size"].isna().tolist() == [False, False, True]
    assert df["module"].isna().all()


def test_missing_tables() -> None:
    with pytest.raises(MissingDebugInfo):
        kallsyms.decode(lambda a, s: b"", {"OSRELEASE": "5.10"})
