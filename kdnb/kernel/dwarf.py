"""Types from DWARF (`.debug_info`) for kernels without BTF, with the interface `Kernel` uses for BTF.

A full DIE walk of a distribution vmlinux (~160 MB of `.debug_info`) takes many minutes in
pyelftools, so nothing is decoded up front. Indexing reads only the top-level DIEs of every
compile unit (skipping function bodies through DW_AT_sibling) and keeps the first definition of
each named struct/union/enum/typedef/base type: C name -> DIE offset. That index is cached on
disk per vmlinux build id (next to the kallsyms/BTF cache) and a type's DIE subtree is decoded
only when it is looked up. Type ids are `.debug_info` offsets of DIEs (0 is void).
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from elftools.elf.elffile import ELFFile

from ..errors import KdnbError, MissingDebugInfo, TypeNotFound
from . import cache
from .btf import _ALIASES
from .types import Enumerator, Member, Param, Type

INDEX_VERSION = 1
_NAMED_TAGS = {
    "DW_TAG_structure_type": "struct ", "DW_TAG_union_type": "union ",
    "DW_TAG_enumeration_type": "enum ", "DW_TAG_typedef": "", "DW_TAG_base_type": "",
}
_QUALIFIER_TAGS = {"DW_TAG_const_type": "const", "DW_TAG_volatile_type": "volatile",
                   "DW_TAG_restrict_type": "restrict"}
# qualifiers without a BTF counterpart: looked through
_TRANSPARENT_TAGS = {"DW_TAG_atomic_type", "DW_TAG_immutable_type", "DW_TAG_shared_type"}
_CU_REF_FORMS = {"DW_FORM_ref1", "DW_FORM_ref2", "DW_FORM_ref4", "DW_FORM_ref8", "DW_FORM_ref_udata"}
_FORM_BYTES = {"DW_FORM_data1": 1, "DW_FORM_data2": 2, "DW_FORM_data4": 4, "DW_FORM_data8": 8}
_CONST_FORMS = set(_FORM_BYTES) | {"DW_FORM_udata", "DW_FORM_sdata", "DW_FORM_implicit_const"}
# DW_ATE_*: signed, signed_char -> signed; boolean -> bool; unsigned(_char), UTF -> unsigned
_ENCODING = {0x5: "signed", 0x6: "signed", 0x2: "bool", 0x7: "unsigned", 0x8: "unsigned", 0x10: "unsigned"}
_FLOAT_ATES = {0x3, 0x4, 0x9, 0xF}  # complex_float, float, imaginary_float, decimal_float
DIM_SHIFT = 40  # inner dimensions of a multi-dimensional array get id `offset + (dim << DIM_SHIFT)`


def _progress(total: int, desc: str) -> tuple[Callable[[int], None], Callable[[], None]]:
    """(update(position), close()) of a progress bar on stderr: tqdm when installed, else a plain one."""
    try:
        from tqdm.auto import tqdm  # optional: used only when already installed
    except ImportError:
        tqdm = None
    if tqdm is not None:
        bar = tqdm(total=total, desc=desc, unit="B", unit_scale=True, leave=False, mininterval=1.0)
        state = {"n": 0}

        def update(pos: int) -> None:
            bar.update(pos - state["n"])
            state["n"] = pos

        return update, bar.close
    start = time.monotonic()
    last = [0.0]

    def plain(pos: int) -> None:
        now = time.monotonic()
        if now - last[0] < 0.5:
            return
        last[0] = now
        done = pos / total if total else 1.0
        filled = int(30 * done)
        sys.stderr.write(f"\r{desc} [{'#' * filled}{'.' * (30 - filled)}] {done:4.0%} {now - start:5.0f}s")
        sys.stderr.flush()

    def close() -> None:
        sys.stderr.write(f"\r{desc}: done in {time.monotonic() - start:.0f}s{' ' * 30}\n")
        sys.stderr.flush()

    return plain, close


class DwarfTypes:
    """Types decoded from DWARF, duck-typed like `BTF`: `type(id | name)`, `members(t)`, `len()`.

    `elf` is an open pyelftools ELFFile (a vmlinux, or a relocatable .o whose DWARF relocations
    are applied). `cache_key` (e.g. from `index_key`) enables the on-disk name index; `progress`
    shows a bar while indexing (default: when the `.debug_info` is larger than 4 MB).
    """

    def __init__(self, elf: ELFFile, *, cache_key: str = "", cache_dir: str | os.PathLike | None = None,
                 progress: bool | None = None) -> None:
        if not elf.has_dwarf_info() or elf.get_section_by_name(".debug_info") is None:
            raise MissingDebugInfo("no DWARF .debug_info section")
        self.elf = elf
        # a linked vmlinux built with --emit-relocs carries .rela.debug_* that are already applied
        self.dwarf = elf.get_dwarf_info(relocate_dwarf_sections=elf["e_type"] == "ET_REL",
                                        follow_links=False)
        self._cache_key = cache_key
        self._cache_dir = Path(cache_dir) if cache_dir is not None else None
        self._progress = progress
        self._index: dict[str, int] | None = None
        self._cu_offsets: np.ndarray | None = None
        self._types: dict[int, Type] = {}
        self.index_seconds = 0.0  # time to build (or load) the name index
        self.index_from_cache = False

    # -- the name index --------------------------------------------------------------------
    @property
    def index(self) -> dict[str, int]:
        """C name ("struct task_struct", "u64") -> DIE offset of its definition (built on first use)."""
        if self._index is None:
            start = time.perf_counter()
            loaded = self._load_index()
            self.index_from_cache = loaded
            if not loaded:
                self._build_index()
                self._store_index()
            self.index_seconds = time.perf_counter() - start
        assert self._index is not None
        return self._index

    def __len__(self) -> int:
        """Number of named types in the index."""
        return len(self.index)

    def _build_index(self) -> None:
        info = self.dwarf.debug_info_sec
        total = info.size if info is not None else 0
        show = self._progress if self._progress is not None else total > 4 << 20
        update, close = _progress(total, "kdnb: indexing DWARF types") if show else (None, None)
        defs: dict[str, int] = {}
        decls: dict[str, int] = {}
        cu_offsets = []
        try:
            for cu in self.dwarf.iter_CUs():
                cu_offsets.append(cu.cu_offset)
                top = cu.get_top_DIE()
                for die in cu.iter_DIE_children(top):
                    prefix = _NAMED_TAGS.get(die.tag)
                    if prefix is None:
                        continue
                    attrs = die.attributes
                    name = attrs.get("DW_AT_name")
                    if name is None:
                        continue
                    key = prefix + _text(name.value)
                    if "DW_AT_declaration" in attrs:
                        decls.setdefault(key, die.offset)
                    else:
                        defs.setdefault(key, die.offset)
                # drop the parsed DIEs: a whole vmlinux would not fit in memory otherwise
                cu._dielist = []
                cu._diemap = []
                if update is not None:
                    update(cu.cu_offset + cu.size)
        finally:
            if close is not None:
                close()
        for key, off in decls.items():
            defs.setdefault(key, off)
        self._index = defs
        self._cu_offsets = np.array(cu_offsets, dtype=np.uint64)

    def _load_index(self) -> bool:
        if not self._cache_key:
            return False
        arrays = cache.load(self._cache_key, self._cache_dir)
        if not arrays or int(arrays.get("dwarf_version", -1)) != INDEX_VERSION:
            return False
        try:
            names = arrays["dwarf_names"].tobytes().decode("utf-8").split("\n")
            offsets = arrays["dwarf_offsets"].tolist()
            cus = arrays["dwarf_cus"]
        except (KeyError, UnicodeDecodeError):
            return False
        info = self.dwarf.debug_info_sec
        if len(names) != len(offsets) or info is None or (len(offsets) and max(offsets) >= info.size):
            return False
        self._index = dict(zip(names, offsets))
        self._cu_offsets = cus.astype(np.uint64)
        return True

    def _store_index(self) -> None:
        if not self._cache_key or self._index is None:
            return
        names = "\n".join(self._index).encode("utf-8")
        cache.store(self._cache_key, {
            "dwarf_version": np.array(INDEX_VERSION),
            "dwarf_names": np.frombuffer(names, np.uint8),
            "dwarf_offsets": np.array(list(self._index.values()), dtype=np.uint64),
            "dwarf_cus": self._cu_offsets if self._cu_offsets is not None else np.zeros(0, np.uint64),
        }, self._cache_dir)

    # -- DIE access -------------------------------------------------------------------------
    def _die(self, offset: int) -> Any:
        self.index  # noqa: B018 - the CU offsets come with the index
        assert self._cu_offsets is not None
        i = int(np.searchsorted(self._cu_offsets, np.uint64(offset), side="right")) - 1
        if i < 0:
            raise TypeNotFound(f"DWARF offset {offset:#x} is before the first compile unit")
        cu = self.dwarf.get_CU_at(int(self._cu_offsets[i]))
        try:
            return cu.get_DIE_from_refaddr(offset)
        except Exception as exc:  # noqa: BLE001 - pyelftools raises DWARFError and struct errors
            raise TypeNotFound(f"no DWARF DIE at {offset:#x} ({exc})") from None

    @staticmethod
    def _ref(die: Any, attr: str = "DW_AT_type") -> int:
        """Global DIE offset an attribute refers to (0, i.e. void, when absent)."""
        a = die.attributes.get(attr)
        if a is None:
            return 0
        if a.form in _CU_REF_FORMS:
            return a.value + die.cu.cu_offset
        if a.form == "DW_FORM_ref_addr":
            return a.value
        raise KdnbError(f"DWARF reference form {a.form} is not supported")

    # -- lookup ---------------------------------------------------------------------------------
    def find(self, name: str) -> int:
        """DIE offset of a C-spelled type name; raises TypeNotFound."""
        key = " ".join(name.split())
        key = _ALIASES.get(key, key)
        prefix, _, bare = key.partition(" ")
        if prefix == "enum64":
            key = "enum " + bare
        off = self.index.get(key)
        if off is None:
            raise TypeNotFound(f"no type named {name!r} in DWARF")
        return off

    def type(self, key: int | str) -> Type:
        """A Type by id (DIE offset) or by C-spelled name ("struct task_struct", "char *")."""
        if isinstance(key, str) and key.rstrip().endswith("*"):
            target = self.type(key.rstrip()[:-1])
            return Type(self, -1, "ptr", "", None, target_id=target.id)  # type: ignore[arg-type]
        tid = self.find(key) if isinstance(key, str) else key
        t = self._types.get(tid)
        if t is None:
            t = self._decode(tid)
            self._types[tid] = t
        return t

    # -- decoding ---------------------------------------------------------------------------------
    def _decode(self, tid: int) -> Type:
        if tid == 0:
            return Type(self, 0, "void", "", 0)  # type: ignore[arg-type]
        if tid >> DIM_SHIFT:
            raise TypeNotFound(f"DWARF array dimension id {tid:#x} was never decoded")
        die = self._die(tid)
        tag = die.tag
        attrs = die.attributes
        name = _text(attrs["DW_AT_name"].value) if "DW_AT_name" in attrs else ""
        size = attrs["DW_AT_byte_size"].value if "DW_AT_byte_size" in attrs else None
        mk: Callable[..., Type] = lambda kind, sz, target=0: Type(self, tid, kind, name, sz,
                                                                  target_id=target)  # type: ignore[arg-type]
        if tag == "DW_TAG_base_type":
            ate = attrs["DW_AT_encoding"].value if "DW_AT_encoding" in attrs else 0x7
            if ate in _FLOAT_ATES:
                return mk("float", size)
            t = mk("int", size)
            t.encoding = _ENCODING.get(ate, "unsigned")
            t.int_bits = 8 * (size or 0)
            return t
        if tag == "DW_TAG_pointer_type" or tag == "DW_TAG_reference_type":
            return mk("ptr", size if size else None, self._ref(die))
        if tag == "DW_TAG_typedef":
            return mk("typedef", None, self._ref(die))
        if tag in _QUALIFIER_TAGS:
            return mk(_QUALIFIER_TAGS[tag], None, self._ref(die))
        if tag in _TRANSPARENT_TAGS:
            return self.type(self._ref(die))
        if tag in ("DW_TAG_structure_type", "DW_TAG_union_type", "DW_TAG_class_type"):
            kind = "union" if tag == "DW_TAG_union_type" else "struct"
            if "DW_AT_declaration" in attrs:
                full = self._definition(f"{kind} {name}", tid) if name else None
                if full is not None:
                    return full
                t = mk("fwd", None)
                t.fwd_kind = kind
                return t
            t = mk(kind, size or 0)
            t.members_raw = [(c.offset, 0, 0) for c in die.iter_children() if c.tag == "DW_TAG_member"]
            return t
        if tag == "DW_TAG_enumeration_type":
            if "DW_AT_declaration" in attrs and name:
                full = self._definition(f"enum {name}", tid)
                if full is not None:
                    return full
            return self._enum(die, mk, size)
        if tag == "DW_TAG_array_type":
            return self._array(die, name)
        if tag == "DW_TAG_subroutine_type":
            t = mk("func_proto", None, self._ref(die))
            for c in die.iter_children():
                if c.tag == "DW_TAG_formal_parameter":
                    pname = _text(c.attributes["DW_AT_name"].value) if "DW_AT_name" in c.attributes else ""
                    t.params.append(Param(pname, self._ref(c)))
                elif c.tag == "DW_TAG_unspecified_parameters":
                    t.params.append(Param("", 0))
            return t
        if tag == "DW_TAG_subprogram":
            return mk("func", None, tid)
        if tag == "DW_TAG_unspecified_type":
            return Type(self, tid, "void", name, 0)  # type: ignore[arg-type]
        raise TypeNotFound(f"DWARF DIE {tid:#x} ({tag}) is not a type")

    def _definition(self, key: str, decl: int) -> Type | None:
        """The full definition of a declared struct/union/enum, looked up by name."""
        off = self.index.get(key)
        if off is None or off == decl:
            return None
        full = self.type(off)
        return None if full.kind == "fwd" else full

    def _enum(self, die: Any, mk: Callable[..., Type], size: int | None) -> Type:
        size = size or 4
        underlying = self._ref(die)
        signed_base = False
        if underlying:
            try:
                signed_base = self.type(underlying).is_signed
            except KdnbError:
                pass
        values = []
        for c in die.iter_children():
            if c.tag != "DW_TAG_enumerator":
                continue
            a = c.attributes["DW_AT_const_value"]
            v = a.value
            nbytes = _FORM_BYTES.get(a.form)
            if nbytes is not None and signed_base and v >> (8 * min(nbytes, size) - 1) & 1:
                v -= 1 << (8 * min(nbytes, size))
            values.append(Enumerator(_text(c.attributes["DW_AT_name"].value), v))
        t = mk("enum64" if size > 4 else "enum", size)
        t.enumerators = values
        t.signed = any(e.value < 0 for e in values)
        return t

    def _array(self, die: Any, name: str) -> Type:
        """An array; `T x[2][3]` (one DIE, two subranges) becomes array 2 of (array 3 of T)."""
        lengths = []
        for c in die.iter_children():
            if c.tag not in ("DW_TAG_subrange_type", "DW_TAG_enumeration_type"):
                continue
            a = c.attributes
            length = 0
            if "DW_AT_count" in a and a["DW_AT_count"].form in _CONST_FORMS:
                length = a["DW_AT_count"].value
            elif "DW_AT_upper_bound" in a:
                ub = a["DW_AT_upper_bound"]
                nbytes = _FORM_BYTES.get(ub.form)
                if ub.form in _CONST_FORMS:
                    value = ub.value
                    if nbytes is not None and nbytes >= 4 and value == (1 << (8 * nbytes)) - 1:
                        value = -1  # older gcc's `[0]`: upper bound -1 (a data1 255 is a real bound)
                    lower = a["DW_AT_lower_bound"].value if "DW_AT_lower_bound" in a else 0
                    length = max(0, value - lower + 1)
            lengths.append(length)
        if not lengths:
            lengths = [0]
        base = die.offset
        elem = self._ref(die)
        # build from the innermost dimension out; the outermost keeps the DIE's own id
        for dim in range(len(lengths) - 1, -1, -1):
            tid = base + (dim << DIM_SHIFT)
            t = Type(self, tid, "array", name if dim == 0 else "", None, target_id=elem)  # type: ignore[arg-type]
            t.length = lengths[dim]
            self._types[tid] = t
            elem = tid
        return self._types[base]

    def members(self, t: Type) -> list[Member]:
        """Decode a struct/union's members (byte offsets, DWARF 4/5 and DWARF 2/3 bitfields)."""
        out = []
        for off, _, _ in t.members_raw:
            m = self._die(off)
            a = m.attributes
            name = _text(a["DW_AT_name"].value) if "DW_AT_name" in a else ""
            type_id = self._ref(m)
            byte_off = _member_location(a.get("DW_AT_data_member_location"))
            bit_size = a["DW_AT_bit_size"].value if "DW_AT_bit_size" in a else 0
            if "DW_AT_data_bit_offset" in a:
                bit_offset = a["DW_AT_data_bit_offset"].value
            elif bit_size and "DW_AT_bit_offset" in a:
                # DWARF 2/3: bits from the most significant bit of a storage unit of byte_size
                storage = a["DW_AT_byte_size"].value if "DW_AT_byte_size" in a else \
                    (self.type(type_id).size or 0)
                bit_offset = byte_off * 8 + storage * 8 - a["DW_AT_bit_offset"].value - bit_size
            else:
                bit_offset = byte_off * 8
            out.append(Member(name, bit_offset, bit_size, self, type_id))  # type: ignore[arg-type]
        return out


def _member_location(attr: Any) -> int:
    """DW_AT_data_member_location: a constant, or (DWARF 2) a DW_OP_plus_uconst expression."""
    if attr is None:
        return 0
    v = attr.value
    if isinstance(v, int):
        return v
    if isinstance(v, (list, bytes)) and v and v[0] == 0x23:  # DW_OP_plus_uconst, ULEB128
        result, shift = 0, 0
        for b in v[1:]:
            result |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                break
        return result
    raise KdnbError(f"unsupported DW_AT_data_member_location {v!r}")


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def index_key(build_id: str | None, path: str | os.PathLike) -> str:
    """Cache key of a file's DWARF index: its build id, else its path, size and mtime."""
    h = hashlib.sha256(b"kdnb-dwarf-index\0")
    if build_id:
        h.update(build_id.lower().encode())
    else:
        st = os.stat(path)
        h.update(f"{os.path.abspath(path)}\0{st.st_size}\0{st.st_mtime_ns}".encode())
    h.update(f"\0v{INDEX_VERSION}".encode())
    return "dwarf-" + h.hexdigest()[:34]
