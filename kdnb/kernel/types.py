"""Type objects (from BTF): size, members with bit offsets, nested member paths, pointers, arrays."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

from ..errors import CorruptStructure, TypeNotFound

if TYPE_CHECKING:  # pragma: no cover
    from .btf import BTF

_QUALIFIERS = {"typedef", "const", "volatile", "restrict", "type_tag"}
_CV = {"const", "volatile", "restrict", "type_tag"}
MAX_CHAIN = 64  # typedef/qualifier/array/anonymous-member nesting: a real kernel needs < 10


def _cycle(t: "Type") -> CorruptStructure:
    return CorruptStructure(f"BTF type {t.id} ({t.kind} {t.name!r}): a chain of more than "
                            f"{MAX_CHAIN} types (a cycle in corrupt BTF)")
_PATH_PART = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)|\[(\d+)\]")
POINTER_SIZE = 8


class Enumerator(NamedTuple):
    """One enum constant."""

    name: str
    value: int


class Param(NamedTuple):
    """One function prototype parameter (`type_id` 0 with no name means `...`)."""

    name: str
    type_id: int


@dataclass
class Member:
    """A struct/union member. `bit_offset` counts from the start of the outermost type looked up."""

    name: str
    bit_offset: int
    bit_size: int  # 0 unless a bitfield
    btf: "BTF"
    type_id: int

    @property
    def offset(self) -> int:
        """Byte offset (of the byte holding the first bit, for a bitfield)."""
        return self.bit_offset // 8

    @property
    def type(self) -> "Type":
        """The member's type."""
        return self.btf.type(self.type_id)

    @property
    def is_bitfield(self) -> bool:
        """True for a bitfield (kind_flag bit size, or an int type narrower than its storage)."""
        return self.bit_size != 0

    def __repr__(self) -> str:
        bits = f":{self.bit_size}" if self.bit_size else ""
        return f"<Member {self.name}{bits} @{self.offset} ({self.bit_offset % 8}) {self.type.c_name}>"


class Type:
    """A BTF type. Attributes beyond the common ones are set by the parser for their kind."""

    def __init__(self, btf: "BTF", type_id: int, kind: str, name: str, size: int | None,
                 target_id: int = 0) -> None:
        self.btf = btf
        self.id = type_id
        self.kind = kind
        self.name = name
        self._size = size
        self.target_id = target_id
        self.length = 0  # arrays
        self.index_type_id = 0
        self.members_raw: list[tuple[int, int, int]] = []
        self.kind_flag = False
        self.enumerators: list[Enumerator] = []
        self.signed = False
        self.params: list[Param] = []
        self.encoding = ""  # int: signed, unsigned, char, bool
        self.int_bits = 0
        self.int_offset = 0
        self.linkage = 0
        self.vars: list[tuple[int, int, int]] = []
        self.component_idx = -1
        self.fwd_kind = ""
        self._members: list[Member] | None = None
        self._lookup: dict[str, Member] | None = None

    # -- shape ---------------------------------------------------------------------------
    @property
    def size(self) -> int | None:
        """Size in bytes (through typedefs and qualifiers); None for void, functions, fwd."""
        t, count = self, 1
        for _ in range(MAX_CHAIN):
            if t._size is not None:
                return t._size * count
            if t.kind == "ptr":
                return POINTER_SIZE * count
            if t.kind in _QUALIFIERS:
                t = t.target
            elif t.kind == "array":
                count *= t.length
                t = t.target
            else:
                return None
        raise _cycle(self)

    @property
    def target(self) -> "Type":
        """Pointer target, array element, typedef/qualifier/var/func target type."""
        return self.btf.type(self.target_id)

    def strip(self) -> "Type":
        """This type with typedefs and const/volatile/restrict/type_tag removed."""
        t = self
        for _ in range(MAX_CHAIN):
            if t.kind not in _QUALIFIERS:
                return t
            t = t.target
        raise _cycle(self)

    def unqualified(self) -> "Type":
        """This type with const/volatile/restrict/type_tag removed (typedefs kept)."""
        t = self
        for _ in range(MAX_CHAIN):
            if t.kind not in _CV:
                return t
            t = t.target
        raise _cycle(self)

    @property
    def is_signed(self) -> bool:
        """True for a signed int or an enum with negative values."""
        t = self.strip()
        return t.encoding == "signed" or (t.kind in ("enum", "enum64") and t.signed)

    @property
    def c_name(self) -> str:
        """The C spelling: `struct task_struct`, `char *`, `u64`, `int [16]`."""
        return self._c_name(0)

    def _c_name(self, depth: int) -> str:
        if depth > MAX_CHAIN:
            raise _cycle(self)
        k = self.kind
        if k in ("struct", "union", "enum", "enum64"):
            return f"{'enum' if k == 'enum64' else k} {self.name or '<anon>'}"
        if k == "fwd":
            return f"{self.fwd_kind} {self.name}"
        if k == "ptr":
            return f"{self.target._c_name(depth + 1)} *"
        if k == "array":
            return f"{self.target._c_name(depth + 1)} [{self.length}]"
        if k in _CV:
            return f"{k} {self.target._c_name(depth + 1)}"
        if k == "func_proto":
            return "function"
        return self.name or k

    # -- members -------------------------------------------------------------------------
    @property
    def members(self) -> list[Member]:
        """Direct members of a struct/union (through typedefs); empty for other kinds."""
        t = self.strip()
        if t is not self:
            return t.members
        if self._members is None:
            self._members = self.btf.members(self) if self.kind in ("struct", "union") else []
        return self._members

    def _member_map(self, depth: int = 0) -> dict[str, Member]:
        """Members by name, with members of anonymous structs/unions lifted up (offsets adjusted)."""
        if self._lookup is None:
            if depth > MAX_CHAIN:
                raise _cycle(self)
            found: dict[str, Member] = {}
            for m in self.members:
                if m.name:
                    found.setdefault(m.name, m)
                    continue
                for sub in m.type.strip()._member_map(depth + 1).values():
                    found.setdefault(sub.name, Member(sub.name, m.bit_offset + sub.bit_offset,
                                                      sub.bit_size, sub.btf, sub.type_id))
            self._lookup = found
        return self._lookup

    def has_member(self, path: str) -> bool:
        """True when `path` names a member (detect kernel version differences with this)."""
        try:
            self.member(path)
        except TypeNotFound:
            return False
        return True

    def member(self, path: str) -> Member:
        """A member by name or nested path (`se.sum_exec_runtime`, `cpus_mask.bits[0]`).

        The returned Member's offsets count from the start of this type; raises TypeNotFound.
        """
        t = self.strip()
        bit_offset = 0
        found: Member | None = None
        for part in path.split("."):
            for m in _PATH_PART.finditer(part):
                name, index = m.groups()
                if name is not None:
                    mm = t._member_map().get(name) if t.kind in ("struct", "union") else None
                    if mm is None:
                        raise TypeNotFound(f"{self.c_name} has no member {path!r} ({t.c_name} lacks {name!r})")
                    found = Member(mm.name, bit_offset + mm.bit_offset, mm.bit_size, mm.btf, mm.type_id)
                else:
                    if t.kind != "array":
                        raise TypeNotFound(f"{path!r}: {t.c_name} is not an array")
                    elem = t.target
                    assert found is not None
                    found = Member(f"{found.name}[{index}]", bit_offset + int(index) * 8 * (elem.size or 0),
                                   0, self.btf, elem.id)
                bit_offset = found.bit_offset
                t = found.type.strip()
        if found is None:
            raise TypeNotFound(f"empty member path for {self.c_name}")
        return found

    def offsetof(self, path: str) -> int:
        """Byte offset of a member path."""
        return self.member(path).offset

    def __repr__(self) -> str:
        return f"<Type {self.c_name} size={self.size} id={self.id}>"
