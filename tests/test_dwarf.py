"""Types from DWARF: a C file compiled here (layouts checked against the compiler's own offsetof and
sizeof), and, with KDNB_TEST_VMLINUX, the 6.1 -dbg vmlinux's DWARF against its BTF."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

import kdnb
from kdnb.errors import TypeNotFound
from kdnb.kernel.dwarf import DwarfTypes, index_key
from kdnb.kernel.objects import Layout, is_char_array

from .conftest import corpus_dir

SOURCE = r"""
#include <stddef.h>
#include <stdio.h>
#include <string.h>

typedef unsigned long long u64;
typedef u64 my_u64;
typedef int (*handler_t)(void *ctx, const char *fmt, ...);
enum color { RED = -2, GREEN = 0, BLUE = 7 };
enum big { BIG_ONE = 1, BIG_HUGE = 0x100000000ULL };
struct fwd_only;
struct list_head { struct list_head *next, *prev; };

struct bits {
	unsigned int a:3;
	signed int b:5;
	unsigned int c:1;
	u64 d:40;
	unsigned char e;
	int f:12;
};

struct outer {
	int id;
	union {
		long l;
		char bytes[8];
		struct { short lo, hi; };
	};
	struct {
		unsigned char kind;
		struct bits bits;
	} inner;
	int matrix[3][5];
	const volatile char name[16];
	enum color color;
	enum big big;
	handler_t handler;
	void (*cb)(int);
	struct fwd_only *opaque;
	struct list_head node;
	void *slots[256];
	my_u64 zero[0];
	u64 tail[];
};

union number { int i; double d; float f; unsigned char raw[12]; };
struct outer outer_instance;
union number number_instance;

#define OFF(F) printf("offsetof %s %zu\n", #F, offsetof(struct outer, F))
#define BITS_OF(F) do { struct bits s; memset(&s, 0, sizeof s); s.F = -1; \
	unsigned char *p = (unsigned char *)&s; int first = -1, n = 0; \
	for (int i = 0; i < (int)(8 * sizeof s); i++) \
		if (p[i / 8] >> (i % 8) & 1) { if (first < 0) first = i; n++; } \
	printf("bits %s %d %d\n", #F, first, n); } while (0)

int main(void) {
	printf("sizeof struct_outer %zu\n", sizeof(struct outer));
	printf("sizeof struct_bits %zu\n", sizeof(struct bits));
	printf("sizeof union_number %zu\n", sizeof(union number));
	OFF(id); OFF(l); OFF(bytes); OFF(lo); OFF(hi); OFF(inner); OFF(inner.kind); OFF(inner.bits);
	OFF(inner.bits.e); OFF(matrix); OFF(matrix[2][3]); OFF(name); OFF(color); OFF(big);
	OFF(handler); OFF(cb); OFF(opaque); OFF(node); OFF(node.prev); OFF(slots); OFF(zero); OFF(tail);
	BITS_OF(a); BITS_OF(b); BITS_OF(c); BITS_OF(d); BITS_OF(f);
	struct bits v; memset(&v, 0, sizeof v);
	v.a = 5; v.b = -3; v.c = 1; v.d = 0x123456789aULL; v.e = 200; v.f = -100;
	printf("value");
	for (size_t i = 0; i < sizeof v; i++) printf(" %02x", ((unsigned char *)&v)[i]);
	printf("\n");
	return 0;
}
"""

# two compile units: the struct is only declared where it is used, defined in the other one
HOLDER = "struct hidden; struct holder { struct hidden *h; int n; } holder_instance;\n"
HIDDEN = "struct hidden { long x; char y[3]; } hidden_instance;\nint main(void) { return 0; }\n"

DWARF_FLAGS = {"dwarf5": ["-gdwarf-5"], "dwarf4": ["-gdwarf-4"], "dwarf2": ["-gdwarf-2", "-gstrict-dwarf"]}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The objects (one per DWARF version), and what the compiled program says about the layout."""
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed")
    tmp = tmp_path_factory.mktemp("dwarf")
    src = tmp / "layout.c"
    src.write_text(SOURCE)
    subprocess.run(["gcc", "-g", "-O0", "-o", str(tmp / "layout"), str(src)], check=True)
    out = subprocess.run([str(tmp / "layout")], check=True, capture_output=True, text=True).stdout
    facts: dict = {"sizeof": {}, "offsetof": {}, "bits": {}, "objects": {}}
    for line in out.splitlines():
        word, *rest = line.split()
        if word == "value":
            facts["value"] = bytes(int(x, 16) for x in rest)
        elif word == "bits":
            facts["bits"][rest[0]] = (int(rest[1]), int(rest[2]))
        else:
            facts[word][rest[0]] = int(rest[1])
    for version, flags in DWARF_FLAGS.items():
        obj = tmp / f"layout-{version}.o"
        subprocess.run(["gcc", "-g", *flags, "-c", "-o", str(obj), str(src)], check=True)
        facts["objects"][version] = obj
    (tmp / "holder.c").write_text(HOLDER)
    (tmp / "hidden.c").write_text(HIDDEN)
    subprocess.run(["gcc", "-g", "-o", str(tmp / "twocu"), str(tmp / "holder.c"), str(tmp / "hidden.c")],
                   check=True)
    facts["twocu"] = tmp / "twocu"
    return facts


def open_types(path: Path, **kwargs) -> DwarfTypes:
    return DwarfTypes(ELFFile(open(path, "rb")), **kwargs)


@pytest.fixture(params=sorted(DWARF_FLAGS))
def types(request: pytest.FixtureRequest, built: dict) -> DwarfTypes:
    return open_types(built["objects"][request.param])


def test_sizes_and_offsets_match_the_compiler(types: DwarfTypes, built: dict) -> None:
    assert types.type("struct outer").size == built["sizeof"]["struct_outer"]
    assert types.type("struct bits").size == built["sizeof"]["struct_bits"]
    assert types.type("union number").size == built["sizeof"]["union_number"]
    outer = types.type("struct outer")
    for path, offset in built["offsetof"].items():
        assert outer.offsetof(path) == offset, path


def test_bitfields_match_the_compiler(types: DwarfTypes, built: dict) -> None:
    bits = types.type("struct bits")
    for name, (first, count) in built["bits"].items():
        m = bits.member(name)
        assert (m.bit_offset, m.bit_size) == (first, count), name
    assert not bits.member("e").is_bitfield and bits.offsetof("e") == 7
    assert bits.member("b").type.is_signed and not bits.member("a").type.is_signed
    # the bytes the program wrote decode back to the values it stored
    layout = Layout(bits, ["a", "b", "c", "d", "e", "f"])
    assert layout.unpack(built["value"]) == (5, -3, 1, 0x123456789A, 200, -100)


def test_unions_anonymous_members_and_arrays(types: DwarfTypes) -> None:
    outer = types.type("struct outer")
    anon = [m for m in outer.members if not m.name]
    assert len(anon) == 1 and anon[0].type.kind == "union"
    assert [m.name for m in anon[0].type.members] == ["l", "bytes", ""]
    assert outer.member("inner").type.name == "" and outer.member("inner").type.kind == "struct"
    number = types.type("union number")
    assert [(m.name, m.offset) for m in number.members] == [("i", 0), ("d", 0), ("f", 0), ("raw", 0)]
    matrix = outer.member("matrix").type
    assert (matrix.kind, matrix.length, matrix.target.kind, matrix.target.length) == ("array", 3, "array", 5)
    assert matrix.size == 60 and matrix.target.target.name == "int"
    assert outer.member("slots").type.length == 256 and outer.member("slots").type.size == 2048
    assert outer.member("zero").type.length == 0 and outer.member("tail").type.length == 0
    assert outer.member("zero").type.target.strip().name == "long long unsigned int"
    assert is_char_array(outer.member("name").type) and outer.member("name").type.size == 16


def test_enums_typedefs_and_function_pointers(types: DwarfTypes) -> None:
    color = types.type("enum color")
    assert color.kind == "enum" and color.size == 4 and color.signed
    assert [(e.name, e.value) for e in color.enumerators] == [("RED", -2), ("GREEN", 0), ("BLUE", 7)]
    big = types.type("enum big")
    assert big.kind == "enum64" and big.size == 8
    assert dict(big.enumerators)["BIG_HUGE"] == 1 << 32
    assert types.type("my_u64").kind == "typedef" and types.type("my_u64").target.name == "u64"
    assert types.type("my_u64").strip() is types.type("unsigned long long")
    assert types.type("my_u64").size == 8
    proto = types.type("handler_t").strip().target
    assert proto.kind == "func_proto" and proto.target.name == "int"
    assert [types.type(p.type_id).c_name for p in proto.params[:2]] == ["void *", "const char *"]
    assert proto.params[2] == ("", 0)  # the `...`
    cb = types.type("struct outer").member("cb").type
    assert cb.kind == "ptr" and cb.target.kind == "func_proto" and cb.target.target.kind == "void"
    opaque = types.type("struct outer").member("opaque").type.target
    assert opaque.kind == "fwd" and opaque.fwd_kind == "struct" and opaque.size is None
    assert types.type("char *").target.name == "char" and types.type("char *").size == 8
    with pytest.raises(TypeNotFound):
        types.type("struct no_such_thing")
    with pytest.raises(TypeNotFound):
        types.type("struct fwd_only").member("x")


def test_declaration_resolves_to_the_definition_in_another_unit(built: dict) -> None:
    types = open_types(built["twocu"])
    hidden = types.type("struct holder").member("h").type.target
    assert hidden.kind == "struct" and hidden.size == 16
    assert [m.name for m in hidden.members] == ["x", "y"]
    assert types.type("struct hidden") is hidden


def test_index_is_cached_on_disk(built: dict, tmp_path: Path) -> None:
    path = built["objects"]["dwarf5"]
    key = index_key(None, path)
    first = open_types(path, cache_key=key, cache_dir=tmp_path, progress=True)
    assert not first.index_from_cache and len(first) > 5
    assert list(tmp_path.glob("*.npz"))
    second = open_types(path, cache_key=key, cache_dir=tmp_path)
    assert len(second) == len(first) and second.index_from_cache
    assert second.type("struct outer").offsetof("node.prev") == first.type("struct outer").offsetof("node.prev")
    assert index_key("ab" * 20, path) != key


VMLINUX = os.environ.get("KDNB_TEST_VMLINUX")  # the 6.1 -dbg vmlinux (BTF and DWARF), when present
STRUCTS = ("struct task_struct", "struct mm_struct", "struct page", "struct kmem_cache", "struct module",
           "struct rq", "struct sched_entity", "struct orc_entry", "struct pt_regs", "struct net_device",
           "struct signal_struct", "atomic_t", "enum pid_type")


@pytest.mark.skipif(not VMLINUX, reason="set KDNB_TEST_VMLINUX to the 6.1 -dbg vmlinux to run")
def test_vmlinux_dwarf_layouts_equal_btf(monkeypatch: pytest.MonkeyPatch) -> None:
    """Indexing the DWARF takes a minute or two when the cache is cold."""
    folder = corpus_dir("k6.1-sysrq")
    with kdnb.open(folder / "vmcore.kdump-zlib", vmlinux=VMLINUX) as btf_dump:
        btf_tasks = btf_dump.tasks
        k = btf_dump.kernel
        dwarf = k._vmlinux.dwarf_types(k._cache_dir)
        for name in STRUCTS:
            a, b = dwarf.type(name), k.type(name)
            assert (a.size, a.kind) == (b.size, b.kind), name
            assert [(m.name, m.bit_offset, m.bit_size, m.type.size) for m in a.members] == \
                [(m.name, m.bit_offset, m.bit_size, m.type.size) for m in b.members], name
            assert a.enumerators == b.enumerators, name
        task = dwarf.type("struct task_struct")
        for path in ("pid", "comm", "tasks", "se.sum_exec_runtime", "cpus_mask.bits[0]",
                     "sched_contributes_to_load"):
            assert task.member(path).bit_offset == k.type("struct task_struct").member(path).bit_offset
    monkeypatch.setenv("KDNB_TYPES", "dwarf")
    with kdnb.open(folder / "vmcore.kdump-zlib", vmlinux=VMLINUX) as dwarf_dump:
        assert type(dwarf_dump.kernel.btf).__name__ == "DwarfTypes"
        assert dwarf_dump.tasks.equals(btf_tasks)
