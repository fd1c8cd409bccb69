"""BTF parsing on a small blob built here: every kind, bitfields, nested and anonymous members."""

from __future__ import annotations

import struct

import pytest

from kdnb.errors import KdnbError, TypeNotFound
from kdnb.kernel.btf import BTF
from kdnb.kernel.objects import Layout

KIND = {"int": 1, "ptr": 2, "array": 3, "struct": 4, "union": 5, "enum": 6, "fwd": 7, "typedef": 8,
        "volatile": 9, "const": 10, "restrict": 11, "func": 12, "func_proto": 13, "var": 14,
        "datasec": 15, "float": 16, "decl_tag": 17, "type_tag": 18, "enum64": 19}


class BTFBuilder:
    """Append types (ids from 1) and strings, then `blob()`."""

    def __init__(self) -> None:
        self.strings = bytearray(b"\0")
        self.types = bytearray()
        self.count = 0

    def s(self, name: str) -> int:
        if not name:
            return 0
        off = len(self.strings)
        self.strings += name.encode() + b"\0"
        return off

    def add(self, kind: str, name: str = "", vlen: int = 0, size_or_type: int = 0,
            kflag: bool = False, extra: bytes = b"") -> int:
        info = (KIND[kind] << 24) | vlen | (int(kflag) << 31)
        self.types += struct.pack("<III", self.s(name), info, size_or_type) + extra
        self.count += 1
        return self.count

    def int_(self, name: str, size: int, signed: bool = False, char: bool = False) -> int:
        enc = (1 if signed else 0) | (2 if char else 0)
        return self.add("int", name, 0, size, extra=struct.pack("<I", (enc << 24) | size * 8))

    def struct_(self, kind: str, name: str, size: int, members: list, kflag: bool = False) -> int:
        extra = b"".join(struct.pack("<III", self.s(n), t, off) for n, t, off in members)
        return self.add(kind, name, len(members), size, kflag, extra)

    def blob(self) -> bytes:
        hdr = struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(self.types), len(self.types),
                          len(self.strings))
        return hdr + bytes(self.types) + bytes(self.strings)


@pytest.fixture(scope="module")
def btf() -> BTF:
    b = BTFBuilder()
    u32 = b.int_("unsigned int", 4)  # 1
    i32 = b.int_("int", 4, signed=True)  # 2
    char = b.int_("char", 1, char=True)  # 3
    u64 = b.int_("long long unsigned int", 8)  # 4
    typedef_u64 = b.add("typedef", "u64", size_or_type=u64)  # 5
    lh_ptr = b.add("ptr", size_or_type=7)  # 6 -> struct list_head
    b.struct_("struct", "list_head", 16, [("next", lh_ptr, 0), ("prev", lh_ptr, 64)])  # 7
    comm = b.add("array", extra=struct.pack("<III", char, u32, 16))  # 8: char[16]
    inner = b.struct_("struct", "sched_entity", 16, [("weight", u64, 0), ("sum_exec_runtime", typedef_u64, 64)])  # 9
    anon = b.struct_("union", "", 8, [("a", u32, 0), ("b", u64, 0)])  # 10
    task_ptr = b.add("ptr", size_or_type=12)  # 11 -> struct task
    # kind_flag struct: bit size in the top 8 bits of offset
    task = b.struct_("struct", "task", 72, [
        ("pid", i32, 0),
        ("flag_a", u32, (1 << 24) | 32),
        ("flag_b", i32, (3 << 24) | 33),
        ("tasks", 7, 64),
        ("comm", comm, 192),
        ("se", inner, 320),
        ("", anon, 448),
        ("parent", task_ptr, 512),
    ], kflag=True)
    assert task == 12
    b.add("const", size_or_type=u32)
    b.add("volatile", size_or_type=u32)
    b.add("restrict", size_or_type=lh_ptr)
    b.add("type_tag", "user", size_or_type=lh_ptr)
    b.add("enum", "pid_type", 2, 4, extra=struct.pack("<IiIi", b.s("PIDTYPE_PID"), 0, b.s("PIDTYPE_MAX"), -1),
          kflag=True)
    b.add("enum64", "big", 1, 8, extra=struct.pack("<III", b.s("HUGE"), 0, 0x80000000))
    b.add("fwd", "opaque_union", kflag=True)
    proto = b.add("func_proto", vlen=2, size_or_type=i32,
                  extra=struct.pack("<IIII", b.s("x"), u32, 0, 0))
    b.add("func", "do_thing", vlen=1, size_or_type=proto)
    var = b.add("var", "runqueues", size_or_type=u64, extra=struct.pack("<I", 1))
    b.add("datasec", ".data..percpu", 1, 8, extra=struct.pack("<III", var, 0, 8))
    b.add("float", "double", size_or_type=8)
    b.add("decl_tag", "tagged", size_or_type=proto, extra=struct.pack("<i", -1))
    return BTF(b.blob())


def test_header_and_count(btf: BTF) -> None:
    assert len(btf) == 26  # void + 25 types
    with pytest.raises(KdnbError):
        BTF(b"\x00" * 24)
    with pytest.raises(KdnbError):
        BTF(b"\x9f\xeb")


def test_struct_members_and_paths(btf: BTF) -> None:
    t = btf.type("struct task")
    assert t.kind == "struct" and t.size == 72
    assert [m.name for m in t.members] == ["pid", "flag_a", "flag_b", "tasks", "comm", "se", "", "parent"]
    assert t.offsetof("tasks") == 8
    assert t.offsetof("tasks.prev") == 16
    assert t.offsetof("se.sum_exec_runtime") == 48
    assert t.member("se.sum_exec_runtime").type.c_name == "u64"
    assert t.member("se.sum_exec_runtime").type.strip().name == "long long unsigned int"
    assert t.offsetof("comm[3]") == 27
    assert t.member("comm").type.length == 16
    assert t.member("comm").type.size == 16
    # anonymous union members are found from the outer struct
    assert t.offsetof("a") == 56 and t.offsetof("b") == 56
    assert t.member("parent").type.target.name == "task"
    assert t.has_member("pid") and not t.has_member("state")
    with pytest.raises(TypeNotFound):
        t.member("se.nope")


def test_bitfields(btf: BTF) -> None:
    t = btf.type("struct task")
    a, b = t.member("flag_a"), t.member("flag_b")
    assert (a.bit_offset, a.bit_size, a.offset) == (32, 1, 4)
    assert (b.bit_offset, b.bit_size) == (33, 3)
    data = bytearray(72)
    struct.pack_into("<i", data, 0, 42)
    data[4] = 0b0000_1011  # flag_a = 1, flag_b = 0b101 -> signed 3-bit = -3
    data[24:30] = b"init\0\0"
    struct.pack_into("<Q", data, 48, 12345)
    lay = Layout(t, ["comm", "pid", "flag_a", "flag_b", "se.sum_exec_runtime", "a", "b"])
    assert lay.unpack(bytes(data)) == ("init", 42, 1, -3, 12345, 0, 0)
    assert lay.size == 64


def test_other_kinds(btf: BTF) -> None:
    assert btf.type("unsigned int").size == 4
    assert btf.type("unsigned").size == 4
    assert btf.type("int").is_signed
    e = btf.type("enum pid_type")
    assert [(x.name, x.value) for x in e.enumerators] == [("PIDTYPE_PID", 0), ("PIDTYPE_MAX", -1)]
    e64 = btf.type("enum big")
    assert e64.kind == "enum64" and e64.enumerators[0].value == 1 << 63
    assert btf.type("union opaque_union").kind == "fwd"
    f = btf.type("func do_thing")
    assert f.kind == "func" and f.target.kind == "func_proto"
    assert [p.name for p in f.target.params] == ["x", ""]
    v = btf.type("var runqueues")
    assert v.kind == "var" and v.target.name == "long long unsigned int" and v.linkage == 1
    assert btf.type("datasec .data..percpu").vars == [(v.id, 0, 8)]
    assert btf.type("double").kind == "float"
    assert btf.type("decl_tag tagged").component_idx == -1
    kinds = {btf.type(i).kind for i in range(len(btf))}
    assert {"const", "volatile", "restrict", "type_tag", "typedef", "ptr", "array"} <= kinds
    assert btf.type("struct list_head *").kind == "ptr"
    assert btf.type("struct list_head *").size == 8
    with pytest.raises(TypeNotFound):
        btf.type("struct nonexistent")


def test_corrupt_btf_gives_typed_errors() -> None:
    """A typedef naming itself, an unknown kind and a record past the section: CorruptStructure."""
    from kdnb.errors import CorruptStructure
    b = BTFBuilder()
    b.add("typedef", "loop", 0, 1)  # id 1: typedef loop -> itself
    b.add("struct", "big", 500, 8)  # id 2: 500 members promised, none written
    data = bytearray(b.blob())
    btf = BTF(bytes(data))
    with pytest.raises(CorruptStructure, match="cycle"):
        btf.type("loop").strip()
    with pytest.raises(CorruptStructure, match="cycle"):
        _ = btf.type("loop").size
    with pytest.raises(CorruptStructure, match="past the type section"):
        btf.type(2)
    data[24 + 7] = 30  # the kind byte of type 1: 30 is no BTF kind
    with pytest.raises(CorruptStructure, match="unknown kind"):
        BTF(bytes(data)).type(1)
