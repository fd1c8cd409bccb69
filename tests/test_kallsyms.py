"""kallsyms decoding on tiny tables built here: both base-relative encodings, 1- and 2-byte lengths."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from kdnb.errors import CorruptStructure, KdnbError, MissingDebugInfo, SymbolNotFound
from kdnb.kernel import kallsyms, kallsyms_scan
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


# every token is non-empty, as in the kernel's (unused codes get filler tokens no name contains)
TOKEN_LIST = TOKENS + [bytes([0x7F, i]) for i in range(len(TOKENS), 0x20)] + [bytes([c]) for c in range(0x20, 256)]


def _offsets(symbols: list[tuple[str, str, int]], encoding: str, offsets_at: int) -> list[int]:
    out = []
    for i, (_typ, _name, addr) in enumerate(symbols):
        if encoding == "place-relative":
            out.append(addr - (offsets_at + 4 * i))
        elif encoding == "absolute-percpu":
            out.append(addr if addr < BASE else BASE - 1 - addr)  # absolute per-CPU value / negative
        else:
            out.append(addr - BASE)
    return out


def _names(symbols: list[tuple[str, str, int]], tokens: list[bytes]) -> tuple[bytes, list[int]]:
    names, markers = bytearray(), []
    for i, (typ, name, _addr) in enumerate(symbols):
        if i % 256 == 0:
            markers.append(len(names))
        enc = _encode(typ.encode() + name.encode(), tokens)
        if len(enc) > 0x7F:
            names += bytes([(len(enc) & 0x7F) | 0x80, len(enc) >> 7])
        else:
            names.append(len(enc))
        names += enc
    return bytes(names), markers


def _token_table() -> tuple[bytes, bytes]:
    table = bytearray()
    index = []
    for tok in TOKEN_LIST:
        index.append(len(table))
        table += tok + b"\0"
    return bytes(table), np.array(index, dtype="<u2").tobytes()


def build_tables(symbols: list[tuple[str, str, int]], encoding: str) -> tuple[dict, dict[str, str]]:
    """Memory {address: bytes} and VMCOREINFO for (type, name, address) symbols."""
    table, index = _token_table()
    names, _markers = _names(symbols, TOKEN_LIST)
    layout = {
        "num_syms": 0xFFFFFFFF82000000, "names": 0xFFFFFFFF82000010,
        "token_table": 0xFFFFFFFF82100000, "token_index": 0xFFFFFFFF82110000,
        "offsets": 0xFFFFFFFF82120000, "relative_base": 0xFFFFFFFF82130000,
    }
    mem = {
        layout["num_syms"]: struct.pack("<I", len(symbols)),
        layout["names"]: names,
        layout["token_table"]: table,
        layout["token_index"]: index,
        layout["offsets"]: np.array(_offsets(symbols, encoding, layout["offsets"]), dtype="<i4").tobytes(),
        layout["relative_base"]: struct.pack("<Q", BASE),
    }
    if encoding == "place-relative":  # Linux 7.0+ has no kallsyms_relative_base
        del mem[layout.pop("relative_base")]
    info = {f"SYMBOL(kallsyms_{k})": f"{v:x}" for k, v in layout.items()}
    stext = [a for _t, n, a in symbols if n == "_stext"][0]
    info["SYMBOL(_stext)"] = f"{stext:x}"
    return mem, info


def build_image(symbols: list[tuple[str, str, int]]) -> tuple[int, bytes]:
    """A 5.10-style image (offsets, relative_base, num_syms, names, markers, token table, token
    index, 8-byte aligned) at 0xffffffff82000000 for the tier-2 scan."""
    start = 0xFFFFFFFF82000000
    table, index = _token_table()
    names, markers = _names(symbols, TOKEN_LIST)
    img = bytearray(b"\xcc" * 0x100)

    def align() -> None:
        img.extend(b"\0" * (-len(img) % 8))

    img += np.array(_offsets(symbols, "absolute-percpu", 0), dtype="<i4").tobytes()
    align()
    img += struct.pack("<Q", BASE) + struct.pack("<I", len(symbols))
    align()
    img += names
    align()
    img += np.array(markers, dtype="<u4").tobytes()
    align()
    img += table
    align()
    img += index
    img += b"\xcc" * 0x100
    return start, bytes(img)


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


def _expected(info: dict[str, str], symbols) -> dict[str, int]:
    expected = kallsyms.expected_symbols(info)
    assert set(expected) == {"_stext"}
    return expected


@pytest.mark.parametrize("encoding", kallsyms.ENCODINGS)
def test_decode_every_encoding(encoding: str) -> None:
    symbols = SYMBOLS if encoding == "absolute-percpu" else [s for s in SYMBOLS if s[2] >= BASE]
    mem, info = build_tables(symbols, encoding)
    tables = kallsyms.tables_from_vmcoreinfo(info)
    assert (tables.relative_base is None) == (encoding == "place-relative")
    raw = kallsyms.decode(reader(mem), tables, _expected(info, symbols))
    assert raw.encoding == encoding and raw.verified == ("_stext",)
    assert raw.names == [n for _t, n, _a in symbols]
    assert raw.types.decode() == "".join(t for t, _n, _a in symbols)
    assert raw.addresses.tolist() == [a for _t, _n, a in symbols]
    table = SymbolTable(raw.names, raw.addresses, raw.types)
    assert table.address("init_task") == BASE + 0x1000
    assert table.symbolize(BASE + 0x1010) == "init_task+0x10/0x1000"
    if encoding == "absolute-percpu":
        assert table.address("runqueues") == 0x31980
    with pytest.raises(SymbolNotFound):
        table.address("nope")


def test_wrong_stext_is_refused() -> None:
    mem, info = build_tables(SYMBOLS, "absolute-percpu")
    with pytest.raises(CorruptStructure, match="_stext"):
        kallsyms.decode(reader(mem), kallsyms.tables_from_vmcoreinfo(info), {"_stext": BASE + 0x40})


def test_scan_finds_the_tables_and_verifies_them() -> None:
    symbols = SYMBOLS + [("t", f"fn_{i}", BASE + 0x3000 + 16 * i) for i in range(600)]
    start, img = build_image(symbols + [("D", "init_uts_ns", 0)])
    start, img = build_image(symbols + [("D", "init_uts_ns", start + len(img) + 0x1000)])
    symbols.append(("D", "init_uts_ns", start + len(img) + 0x1000))

    def read(addr: int, size: int) -> bytes:
        off = addr - start
        if 0 <= off < len(img):
            return img[off:off + size].ljust(size, b"\0")
        return b"\0" * size
    expected = {"_stext": BASE, "init_uts_ns": start + len(img) + 0x1000}
    tables, raw = kallsyms_scan.find(read, expected, "synthetic")
    assert raw.names == [n for _t, n, _a in symbols]
    assert raw.addresses.tolist() == [a for _t, _n, a in symbols]
    assert raw.encoding == "absolute-percpu" and set(raw.verified) == set(expected)
    assert tables.relative_base == tables.num_syms - 8


def test_scan_refuses_an_image_without_tables() -> None:
    expected = {"_stext": BASE, "init_uts_ns": BASE + 0x10000}
    with pytest.raises(MissingDebugInfo, match="no kallsyms tables"):
        kallsyms_scan.find(lambda a, s: b"\x11" * s, expected, "synthetic")


def test_absolute_values_and_sizes() -> None:
    offs = np.array([0x100, -1, -0x11], dtype=np.int32)
    assert kallsyms.symbol_addresses(offs, "absolute-percpu", BASE, 0).tolist() == [0x100, BASE, BASE + 0x10]
    assert kallsyms.symbol_addresses(np.array([0, 0x10], np.int32), "base-relative", BASE, 0).tolist() \
        == [BASE, BASE + 0x10]
    assert kallsyms.symbol_addresses(np.array([0x10, 0x10], np.int32), "place-relative", None, BASE).tolist() \
        == [BASE + 0x10, BASE + 0x14]
    t = SymbolTable(["a", "b", "c"], np.array([BASE, BASE, BASE + 8], np.uint64), b"TTT")
    assert t.sizes.tolist() == [8, 8, -1]
    df = t.dataframe()
    assert str(df["address"].dtype) == "UInt64" and str(df["size"].dtype) == "Int64"
    assert df["size"].isna().tolist() == [False, False, True]
    assert df["module"].isna().all()


def test_no_tables_in_vmcoreinfo() -> None:
    assert kallsyms.tables_from_vmcoreinfo({"OSRELEASE": "5.10"}) is None


@pytest.mark.parametrize("mutate, match", [
    (lambda m, i: m.__setitem__(int(i["SYMBOL(kallsyms_num_syms)"], 16), struct.pack("<I", 200000)),
     "empty|past the table"),
    (lambda m, i: m.__setitem__(int(i["SYMBOL(kallsyms_num_syms)"], 16), struct.pack("<I", 0xFFFFFFFF)),
     "kallsyms_num_syms"),
    (lambda m, i: m.__setitem__(int(i["SYMBOL(kallsyms_token_table)"], 16), b"\x41" * 0x20000),
     "NUL"),
])
def test_corrupt_tables_raise_typed_errors(mutate, match) -> None:
    mem, info = build_tables(SYMBOLS, "absolute-percpu")
    mutate(mem, info)
    with pytest.raises(KdnbError, match=match):
        kallsyms.decode(reader(mem), kallsyms.tables_from_vmcoreinfo(info), {"_stext": BASE})
