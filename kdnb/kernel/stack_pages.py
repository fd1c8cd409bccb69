"""Page-cached reads of kernel memory for the stack unwinder (stacks are read a long at a time)."""

from __future__ import annotations

import struct
from typing import Callable

from ..errors import KdnbError

PAGE = 4096
STACK_PAGES_CACHED = 1024  # 4 MiB: the last stacks walked and the code pages their call sites are in
_U64 = struct.Struct("<Q")


class StackReader:
    """Page-cached reads of kernel memory (stacks are read a long at a time); the cache keeps the
    `capacity` pages read last (first in, first out), not every stack of the dump."""

    def __init__(self, read: Callable[[int, int], bytes], capacity: int = STACK_PAGES_CACHED) -> None:
        self._read = read
        self._pages: dict[int, bytes | KdnbError] = {}
        self.capacity = capacity

    def page(self, addr: int) -> bytes:
        base = addr & ~(PAGE - 1)
        data = self._pages.get(base)
        if data is None:
            try:
                data = self._read(base, PAGE)
            except KdnbError as exc:
                data = exc
            if len(self._pages) >= self.capacity:
                del self._pages[next(iter(self._pages))]
            self._pages[base] = data
        if isinstance(data, KdnbError):
            raise data
        return data

    def read(self, addr: int, size: int) -> bytes:
        off = addr & (PAGE - 1)
        if off + size <= PAGE:
            return self.page(addr)[off:off + size]
        out = b""
        while size > 0:
            chunk = min(size, PAGE - (addr & (PAGE - 1)))
            out += self.page(addr)[addr & (PAGE - 1):(addr & (PAGE - 1)) + chunk]
            addr, size = addr + chunk, size - chunk
        return out

    def u64(self, addr: int) -> int:
        off = addr & (PAGE - 1)
        if off <= PAGE - 8:
            return _U64.unpack_from(self.page(addr), off)[0]
        return _U64.unpack(self.read(addr, 8))[0]
