"""Typed access to kernel memory: whole-struct objects, precomputed layouts, bounded list walks."""

from __future__ import annotations

import struct
from operator import itemgetter
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

from ..errors import CorruptStructure, KdnbError, TypeNotFound
from .types import Member, Type

if TYPE_CHECKING:  # pragma: no cover
    from .kernel import Kernel

_INT_CODES = {1: "b", 2: "h", 4: "i", 8: "q"}
_FLOAT_CODES = {4: "f", 8: "d"}
_U64 = struct.Struct("<Q")
DEFAULT_MAX_ENTRIES = 1_000_000


def scalar_code(t: Type) -> str | None:
    """struct-module code of a scalar type (int, enum, pointer, float), or None."""
    s = t.strip()
    if s.kind == "ptr":
        return "Q"
    if s.kind in ("int", "enum", "enum64"):
        code = _INT_CODES.get(s.size or 0)
        if code is None:
            return None
        return code if s.is_signed else code.upper()
    if s.kind == "float":
        return _FLOAT_CODES.get(s.size or 0)
    return None


def is_char_array(t: Type) -> bool:
    """True for `char [N]` (decoded as a NUL-terminated string)."""
    s = t.strip()
    if s.kind != "array":
        return False
    e = s.target.strip()
    return e.kind == "int" and e.size == 1 and ("char" in e.name or e.encoding == "char")


def decode_cstring(raw: bytes) -> str:
    """Bytes up to the first NUL, decoded leniently."""
    end = raw.find(b"\0")
    return (raw if end < 0 else raw[:end]).decode("utf-8", "replace")


def _bitfield(data: bytes, base: int, m: Member, signed: bool) -> int:
    first = base + m.bit_offset // 8
    nbytes = (m.bit_offset % 8 + m.bit_size + 7) // 8
    raw = int.from_bytes(data[first:first + nbytes], "little")
    value = (raw >> (m.bit_offset % 8)) & ((1 << m.bit_size) - 1)
    if signed and value >> (m.bit_size - 1):
        value -= 1 << m.bit_size
    return value


def member_value(kernel: "Kernel", data: bytes, base: int, m: Member, address: int) -> Any:
    """Python value of member `m` of the struct whose bytes start at `data[base]`.

    Scalars and pointers are ints, `char [N]` is a str, other arrays are lists, nested
    structs/unions are Objects on the same bytes, bitfields are ints.
    """
    t = m.type
    if m.bit_size:
        return _bitfield(data, base, m, t.is_signed)
    off = base + m.offset
    code = scalar_code(t)
    if code is not None:
        return struct.unpack_from("<" + code, data, off)[0]
    s = t.strip()
    size = s.size or 0
    if is_char_array(s):
        return decode_cstring(data[off:off + size])
    if s.kind == "array":
        elem = s.target
        esz = elem.size or 0
        ecode = scalar_code(elem)
        if ecode is not None:
            return list(struct.unpack_from(f"<{s.length}{ecode}", data, off))
        return [Object(kernel, elem, address + m.offset + i * esz, data[off + i * esz:off + (i + 1) * esz])
                for i in range(s.length)]
    if s.kind in ("struct", "union"):
        return Object(kernel, s, address + m.offset, data[off:off + size])
    return data[off:off + size]


class Object:
    """A kernel object of a known type at an address; its bytes are read once, on first use.

    `obj["pid"]`, `obj.member("se.sum_exec_runtime")`, `obj.deref("mm")`, `obj.address`.
    """

    __slots__ = ("kernel", "type", "address", "_data")

    def __init__(self, kernel: "Kernel", type_: Type, address: int, data: bytes | None = None) -> None:
        self.kernel = kernel
        self.type = type_
        self.address = address
        self._data = data

    @property
    def data(self) -> bytes:
        """The object's bytes (read from the dump on first access)."""
        if self._data is None:
            size = self.type.size
            if size is None:
                raise KdnbError(f"{self.type.c_name} has no size")
            self._data = self.kernel.read(self.address, size)
        return self._data

    def member(self, path: str) -> Any:
        """Value of a member path (see member_value for the Python types)."""
        m = self.type.member(path)
        return member_value(self.kernel, self.data, 0, m, self.address)

    __getitem__ = member

    def member_address(self, path: str) -> int:
        """Address of a member (for `&task->tasks`)."""
        return self.address + self.type.offsetof(path)

    def deref(self, path: str) -> "Object":
        """Follow a pointer member to an Object of the pointed-to type."""
        m = self.type.member(path)
        t = m.type.strip()
        if t.kind != "ptr":
            raise TypeNotFound(f"{self.type.c_name}.{path} is not a pointer")
        return Object(self.kernel, t.target.strip(), self.member(path))

    def value(self) -> Any:
        """The whole object as a Python value (an int for scalars, str for char arrays)."""
        code = scalar_code(self.type)
        if code is not None:
            return struct.unpack_from("<" + code, self.data)[0]
        if is_char_array(self.type):
            return decode_cstring(self.data)
        return self

    def to_dict(self) -> dict[str, Any]:
        """Named members and their values (anonymous members flattened)."""
        return {name: member_value(self.kernel, self.data, 0, m, self.address)
                for name, m in self.type.strip()._member_map().items()}

    def __repr__(self) -> str:
        return f"<Object {self.type.c_name} at {self.address:#x}>"


class Layout:
    """Unpack many fields of a struct with one `struct.unpack_from`.

    `layout = k.layout("struct task_struct", ["pid", "tgid", "comm", "__state"])`, then
    `layout.unpack(data)` -> a tuple in that order (char arrays as str, bitfields as int, nested
    structs and other arrays as raw bytes). `layout.size` is how many bytes to read.
    """

    def __init__(self, type_: Type, fields: Sequence[str]) -> None:
        self.type = type_
        self.fields = tuple(fields)
        members = [type_.member(f) for f in fields]
        self.offsets = {f: m.offset for f, m in zip(fields, members)}
        plain: list[tuple[int, int, str, int]] = []  # (offset, size, code, field index)
        self._post: list[tuple[int, Callable[[bytes, int], Any]]] = []
        self._strings: list[int] = []
        end = 0
        for i, m in enumerate(members):
            t = m.type
            if m.bit_size:
                self._post.append((i, _bitfield_reader(m, t.is_signed)))
                end = max(end, (m.bit_offset + m.bit_size + 7) // 8)
                continue
            size = t.size or 0
            code = scalar_code(t) or f"{size}s"
            if is_char_array(t):
                self._strings.append(i)
            plain.append((m.offset, size, code, i))
            end = max(end, m.offset + size)
        self.size = end
        plain.sort()
        fmt = ["<"]
        pos = 0
        order: list[int] = []
        for off, size, code, i in plain:
            if off < pos:  # overlaps an earlier field (union member): unpack it on its own
                self._post.append((i, _plain_reader(off, code)))
                continue
            if off > pos:
                fmt.append(f"{off - pos}x")
            fmt.append(code)
            order.append(i)
            pos = off + size
        self._struct = struct.Struct("".join(fmt))
        n = len(members)
        self._order = order  # field index of each value struct.unpack_from returns
        self._n = n
        slot_of = {i: k for k, i in enumerate(order)}
        self._simple = len(order) == n and not self._strings
        self._getter = itemgetter(*[slot_of[i] for i in range(n)]) if self._simple and n > 1 else None

    def unpack(self, data: bytes, offset: int = 0) -> tuple:
        """The fields' values from a struct whose bytes start at `data[offset]`."""
        values = self._struct.unpack_from(data, offset)
        if self._simple:
            return self._getter(values) if self._getter else values
        out: list[Any] = [None] * self._n
        for k, i in enumerate(self._order):
            out[i] = values[k]
        for i in self._strings:
            if out[i] is not None:
                out[i] = decode_cstring(out[i])
        for i, reader in self._post:
            out[i] = reader(data, offset)
        return tuple(out)

    def unpack_dict(self, data: bytes, offset: int = 0) -> dict[str, Any]:
        """The fields as a dict."""
        return dict(zip(self.fields, self.unpack(data, offset)))


def _bitfield_reader(m: Member, signed: bool) -> Callable[[bytes, int], int]:
    return lambda data, base: _bitfield(data, base, m, signed)


def _plain_reader(off: int, code: str) -> Callable[[bytes, int], Any]:
    s = struct.Struct("<" + code)
    return lambda data, base: s.unpack_from(data, base + off)[0]


class ListWalk:
    """A bounded, cycle-checked walk of a kernel `list_head` list.

    Iterating yields entry addresses (the container's address: `node - offset`), or whatever
    `make(address)` returns. A cycle, more than `max_entries` entries, a NULL or unreadable
    `next` pointer stop the walk; then `complete` is False and `error` holds a CorruptStructure
    (raised instead when `strict` is True).
    """

    def __init__(self, read: Callable[[int, int], bytes], head: int, offset: int = 0,
                 make: Callable[[int], Any] | None = None, max_entries: int = DEFAULT_MAX_ENTRIES,
                 strict: bool = False) -> None:
        self._read = read
        self.head = head
        self.offset = offset
        self._make = make
        self.max_entries = max_entries
        self.strict = strict
        self.count = 0
        self.complete = False
        self.error: CorruptStructure | None = None

    def _stop(self, message: str, cause: Exception | None = None) -> None:
        self.error = CorruptStructure(f"list at {self.head:#x}: {message}")
        if self.strict:
            raise self.error from cause

    def __iter__(self) -> Iterator[Any]:
        self.count, self.complete, self.error = 0, False, None
        read, head, offset, make = self._read, self.head, self.offset, self._make
        seen: set[int] = set()
        node = head
        while True:
            try:
                (nxt,) = _U64.unpack(read(node, 8))
            except KdnbError as exc:
                self._stop(f"stopped after {self.count} entries: cannot read {node:#x} ({exc})", exc)
                return
            if nxt == head:
                self.complete = True
                return
            if nxt == 0:
                self._stop(f"NULL next pointer at {node:#x} after {self.count} entries")
                return
            if nxt in seen:
                self._stop(f"cycle: {nxt:#x} seen again after {self.count} entries")
                return
            if self.count >= self.max_entries:
                self._stop(f"more than {self.max_entries} entries")
                return
            seen.add(nxt)
            self.count += 1
            entry = nxt - offset
            yield make(entry) if make is not None else entry
            node = nxt
