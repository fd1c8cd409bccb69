"""Parse BTF (the kernel's compact type format): one pass over the type headers, details on demand."""

from __future__ import annotations

import struct

import numpy as np

from ..errors import CorruptStructure, KdnbError, TypeNotFound
from .types import Enumerator, Member, Param, Type

BTF_MAGIC = 0xEB9F
_HEADER = struct.Struct("<HBBIIIII")  # magic, version, flags, hdr_len, type_off, type_len, str_off, str_len

KINDS = ("void", "int", "ptr", "array", "struct", "union", "enum", "fwd", "typedef", "volatile",
         "const", "restrict", "func", "func_proto", "var", "datasec", "float", "decl_tag",
         "type_tag", "enum64")
# bytes after the 12-byte header: fixed part, and per-vlen item
_FIXED = (0, 4, 0, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 4, 0, 0)
_PER_ITEM = (0, 0, 0, 0, 12, 12, 8, 0, 0, 0, 0, 0, 0, 8, 0, 12, 0, 0, 0, 12)
# which kinds a C-spelled name can mean: "struct x", "enum x", "func x" ..., or a bare "u64"
_NAMESPACES = {"struct": [4], "union": [5], "enum": [6, 19], "func": [12], "var": [14],
               "datasec": [15], "decl_tag": [17]}
_UNPREFIXED = [1, 8, 16]  # int, typedef, float
_SIZED = {1, 4, 5, 6, 15, 16, 19}  # kinds whose third header word is a size (else a type id)
_INT_ENCODING = {1: "signed", 2: "char", 4: "bool"}
# C spellings -> the names gcc/pahole put in BTF
_ALIASES = {
    "unsigned": "unsigned int", "signed": "int", "short": "short int",
    "unsigned short": "short unsigned int", "long": "long int", "unsigned long": "long unsigned int",
    "long long": "long long int", "unsigned long long": "long long unsigned int",
    "signed char": "signed char", "unsigned char": "unsigned char",
}


def scan(data: bytes) -> tuple[dict, np.ndarray]:
    """Validate the header and return it with the word offset of every type record (index = id)."""
    header = scan_header(data)
    start = header["hdr_len"] + header["type_off"]
    type_len = header["type_len"]
    words = memoryview(data)[start:start + type_len - type_len % 4].cast("I")
    end = len(words)
    fixed = [f // 4 for f in _FIXED] + [0] * 12
    per = [p // 4 for p in _PER_ITEM] + [0] * 12
    positions = [0]  # id 0 is void
    append = positions.append
    i = 0
    while i < end:
        append(i)
        info = words[i + 1]
        kind = (info >> 24) & 0x1F
        i += 3 + fixed[kind] + per[kind] * (info & 0xFFFF)
    return header, np.array(positions, dtype=np.int64)


class BTF:
    """A BTF blob with lazily built name index and lazily decoded types.

    `positions` (word offsets of the type records, as `scan` returns) can come from a cache.

    With `base`, the blob is *split* BTF (a module's, on top of vmlinux's): its first type id is
    `len(base)` (the base's last id + 1) and string offsets from the base's string-section length
    on are its own; smaller ids and offsets are the base's, so its types refer into the base freely.
    """

    def __init__(self, data: bytes, positions: np.ndarray | None = None, base: BTF | None = None,
                 name: str = "vmlinux") -> None:
        self.data = data
        self.base = base
        self.name = name
        # first type id of this blob (ids below it are the base's; 0 is void) and first string offset
        self.start_id = len(base) if base is not None else 1
        self.start_str_off = base.start_str_off + base.header["str_len"] if base is not None else 0
        if positions is None:
            self.header, positions = scan(data)
        else:
            self.header = scan_header(data)
        self.positions = positions
        h = self.header
        start = h["hdr_len"] + h["type_off"]
        self._words = np.frombuffer(data, dtype="<u4", offset=start, count=h["type_len"] // 4)
        self._wordlist = memoryview(data)[start:start + h["type_len"] - h["type_len"] % 4].cast("I")
        self._str_start = h["hdr_len"] + h["str_off"]
        self._str_end = self._str_start + h["str_len"]
        self._heads: tuple[np.ndarray, np.ndarray] | None = None
        self._found: dict[str, int] = {}
        self._types: dict[int, Type] = {}

    def __len__(self) -> int:
        """Number of type ids, void and the base's included (the next blob's first id)."""
        return self.start_id + len(self.positions) - 1

    def own(self, type_id: int) -> bool:
        """True when `type_id` is defined in this blob (not in its base)."""
        return self.start_id <= type_id < len(self)

    def _index(self, type_id: int) -> int:
        """Index into `positions` of one of this blob's own type ids."""
        return type_id - self.start_id + 1

    # -- strings and headers -----------------------------------------------------------
    def string(self, offset: int) -> str:
        """The NUL-terminated string at `offset` in the string section."""
        if not offset:
            return ""
        if offset < self.start_str_off:
            assert self.base is not None
            return self.base.string(offset)
        start = self._str_start + offset - self.start_str_off
        if start >= self._str_end:
            raise CorruptStructure(f"{self.name} BTF: string offset {offset:#x} is past the string section")
        end = self.data.find(b"\0", start, self._str_end)
        return self.data[start:end if end >= 0 else self._str_end].decode("utf-8", "replace")

    def kind_of(self, type_id: int) -> str:
        """The kind name of a type id."""
        if type_id == 0:
            return "void"
        if type_id < self.start_id:
            assert self.base is not None
            return self.base.kind_of(type_id)
        return KINDS[(self._wordlist[self.positions[self._index(type_id)] + 1] >> 24) & 0x1F]

    # -- lookup ---------------------------------------------------------------------------
    def _header_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """name_off and kind of every own type id (from start_id; a union fwd counted as kind union)."""
        if self._heads is None:
            pos = self.positions[1:]
            info = self._words[pos + 1]
            kinds = ((info >> 24) & 0x1F).astype(np.int8)
            kinds[(kinds == 7) & (info >> 31 == 0)] = 4  # fwd struct
            kinds[(kinds == 7)] = 5  # the rest are fwd unions
            self._heads = (self._words[pos], kinds)
        return self._heads

    def find(self, name: str, own_only: bool = False) -> int:
        """Type id of a C-spelled type name; raises TypeNotFound.

        No global index is built: the name is searched in the (deduplicated) string section and
        its offset matched against all type headers at once with numpy; results are memoised.
        Split BTF looks at its own types first, then (unless `own_only`) at its base's; a full
        definition wins over a forward declaration wherever it is.
        """
        key = " ".join(name.split())
        key = _ALIASES.get(key, key)
        memo = (key, own_only)
        tid = self._found.get(memo)
        if tid is not None:
            return tid
        best = self._find_own(key)
        if self.base is not None and not own_only and (best is None or self.kind_of(best) == "fwd"):
            try:
                in_base = self.base.find(key)
            except TypeNotFound:
                in_base = None
            if in_base is not None and (best is None or self.base.kind_of(in_base) != "fwd"):
                best = in_base
        if best is None:
            where = f"{self.name} BTF" + (" (own types)" if own_only and self.base is not None else "")
            raise TypeNotFound(f"no type named {name!r} in {where}")
        self._found[memo] = best
        return best

    def _find_own(self, key: str) -> int | None:
        """`find` among this blob's own types only (None when absent)."""
        prefix, _, bare = key.partition(" ")
        kinds = _NAMESPACES.get(prefix)
        if kinds is None:
            kinds, bare = _UNPREFIXED, key
        name_offs, type_kinds = self._header_arrays()
        if not len(name_offs):
            return None
        wanted = np.isin(type_kinds, kinds)
        best: int | None = None
        for off in self._string_offsets(b"\0" + bare.encode() + b"\0"):
            ids = np.flatnonzero((name_offs == off) & wanted) + self.start_id
            for cand in ids.tolist():
                best = cand
                if self.kind_of(cand) != "fwd":  # prefer the full definition over a forward one
                    return best
            if best is not None:
                return best
        return best

    def _string_offsets(self, needle: bytes):
        """Offsets (as type headers spell them) of `needle[1:-1]` in this blob's and its bases'
        string sections: split BTF may name its types with strings of the base."""
        btf: BTF | None = self
        while btf is not None:
            at = btf.data.find(needle, btf._str_start, btf._str_end)
            while at >= 0:
                yield at + 1 - btf._str_start + btf.start_str_off
                at = btf.data.find(needle, at + 1, btf._str_end)
            btf = btf.base

    def type(self, key: int | str) -> Type:
        """A Type by id or by C-spelled name ("struct task_struct", "unsigned long", "char *")."""
        if isinstance(key, str) and key.rstrip().endswith("*"):
            target = self.type(key.rstrip()[:-1])
            return Type(self, -1, "ptr", "", None, target_id=target.id)
        tid = self.find(key) if isinstance(key, str) else key
        if tid < self.start_id and self.base is not None:
            return self.base.type(tid)
        t = self._types.get(tid)
        if t is None:
            t = self._decode(tid)
            self._types[tid] = t
        return t

    # -- decoding ----------------------------------------------------------------------
    def _decode(self, tid: int) -> Type:
        if tid == 0:
            return Type(self, 0, "void", "", 0)
        if not self.own(tid):
            raise TypeNotFound(f"BTF type id {tid} out of range for {self.name} BTF")
        w = self._wordlist
        p = int(self.positions[self._index(tid)])
        if p + 3 > len(w):
            raise CorruptStructure(f"{self.name} BTF: type {tid} starts past the type section")
        name_off, info, size_or_type = w[p], w[p + 1], w[p + 2]
        kind = (info >> 24) & 0x1F
        vlen = info & 0xFFFF
        kflag = bool(info >> 31)
        if kind >= len(KINDS):
            raise CorruptStructure(f"{self.name} BTF: type {tid} has unknown kind {kind}")
        if p + 3 + (_FIXED[kind] + _PER_ITEM[kind] * vlen) // 4 > len(w):
            raise CorruptStructure(f"{self.name} BTF: type {tid} ({KINDS[kind]}, {vlen} items) runs "
                                   "past the type section")
        name = self.string(name_off)
        kname = KINDS[kind]
        if kind in _SIZED:
            t = Type(self, tid, kname, name, size_or_type)
        else:
            t = Type(self, tid, kname, name, None, target_id=size_or_type)
        p += 3
        if kind == 1:  # int
            extra = w[p]
            t.encoding = _INT_ENCODING.get((extra >> 24) & 0xF, "unsigned")
            t.int_bits = extra & 0xFF
            t.int_offset = (extra >> 16) & 0xFF
        elif kind == 3:  # array
            t.target_id, t.index_type_id, t.length = w[p], w[p + 1], w[p + 2]
        elif kind in (4, 5):  # struct, union
            t.members_raw = [(w[q], w[q + 1], w[q + 2]) for q in range(p, p + 3 * vlen, 3)]
            t.kind_flag = kflag
        elif kind == 6:  # enum
            signed = kflag
            t.enumerators = [
                Enumerator(self.string(w[q]), _s32(w[q + 1]) if signed else w[q + 1])
                for q in range(p, p + 2 * vlen, 2)
            ]
            t.signed = signed
        elif kind == 19:  # enum64
            vals = []
            for q in range(p, p + 3 * vlen, 3):
                v = w[q + 1] | (w[q + 2] << 32)
                if kflag and v >> 63:
                    v -= 1 << 64
                vals.append(Enumerator(self.string(w[q]), v))
            t.enumerators = vals
            t.signed = kflag
        elif kind == 13:  # func_proto
            t.params = [Param(self.string(w[q]), w[q + 1]) for q in range(p, p + 2 * vlen, 2)]
        elif kind == 12:  # func: vlen is the linkage
            t.linkage = vlen
        elif kind == 14:  # var
            t.linkage = w[p]
        elif kind == 15:  # datasec
            t.vars = [(w[q], w[q + 1], w[q + 2]) for q in range(p, p + 3 * vlen, 3)]
        elif kind == 17:  # decl_tag
            t.component_idx = _s32(w[p])
        elif kind == 7:  # fwd: kind_flag says union
            t.fwd_kind = "union" if kflag else "struct"
        return t

    def members(self, t: Type) -> list[Member]:
        """Decode a struct/union's members (bit offsets honour kind_flag bitfields)."""
        out = []
        for name_off, type_id, offset in t.members_raw:
            if t.kind_flag:
                bit_size, bit_offset = offset >> 24, offset & 0xFFFFFF
            else:
                bit_size, bit_offset = 0, offset
            out.append(Member(self.string(name_off), bit_offset, bit_size, self, type_id))
        return out


def scan_header(data: bytes) -> dict:
    """Validate and return the BTF header fields."""
    if len(data) < _HEADER.size:
        raise KdnbError("BTF blob is too short")
    magic, version, _f, hdr_len, type_off, type_len, str_off, str_len = _HEADER.unpack_from(data)
    if magic != BTF_MAGIC or version != 1:
        raise KdnbError(f"not BTF (magic {magic:#x}, version {version})")
    if (hdr_len + type_off) % 4 or hdr_len + type_off + type_len > len(data) \
            or hdr_len + str_off + str_len > len(data):
        raise KdnbError("BTF header points outside the blob")
    return {"hdr_len": hdr_len, "type_off": type_off, "type_len": type_len,
            "str_off": str_off, "str_len": str_len}


def _s32(v: int) -> int:
    return v - (1 << 32) if v & 0x80000000 else v
