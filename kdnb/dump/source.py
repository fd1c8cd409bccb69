"""Random access to the bytes of a dump file: plain files and makedumpfile's flattened stream."""

from __future__ import annotations

import os
import struct

import numpy as np

from ..errors import CorruptDump, TruncatedDump

FLAT_SIGNATURE = b"makedumpfile"
FLAT_HEADER_SIZE = 4096
FLAT_END = -1
FLAT_SPAN_FACTOR = 2  # the kdump file a stream stands for is about as large as the stream


class PlainSource:
    """A regular file read with pread."""

    flattened = False

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd = os.open(path, os.O_RDONLY)
        self.size = os.fstat(self._fd).st_size

    def pread(self, offset: int, size: int) -> bytes:
        """Up to `size` bytes at logical `offset` (short at the end of the data, empty past it)."""
        size = min(size, self.size - offset)
        if offset < 0 or size <= 0:
            return b""
        return os.pread(self._fd, size, offset)

    def close(self) -> None:
        """Close the file descriptor."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class FlattenedSource(PlainSource):
    """makedumpfile's flattened format (`-F`, QEMU kdump files), indexed once.

    The stream is a 4 KiB header then records `{be64 offset, be64 size, data}` that place
    data at logical offsets of the kdump file it stands for; an offset of -1 ends it.
    """

    flattened = True

    def __init__(self, path: str) -> None:
        super().__init__(path)
        try:
            self._index()
        except BaseException:
            self.close()
            raise

    def _index(self) -> None:
        head = os.pread(self._fd, FLAT_HEADER_SIZE, 0)
        if len(head) < 32 or not head.startswith(FLAT_SIGNATURE):
            raise CorruptDump(f"{self.path}: flattened header missing or short")
        ftype, version = struct.unpack_from(">qq", head, 16)
        if ftype != 1 or version != 1:
            raise CorruptDump(f"{self.path}: flattened header type {ftype} version {version} "
                              "(expected 1, 1)")
        logical, sizes, physical = [], [], []
        pos = FLAT_HEADER_SIZE
        self.problems: list[str] = []
        self.complete = False
        while True:
            rec = os.pread(self._fd, 16, pos)
            if len(rec) < 16:
                self.problems.append(f"flattened stream ends at {pos:#x} without its end marker")
                break
            off, size = struct.unpack(">qq", rec)
            if off == FLAT_END:
                self.complete = True
                break
            if off < 0 or size < 0 or size > 1 << 40:
                raise CorruptDump(f"{self.path}: bad flattened record at {pos:#x} "
                                  f"(offset {off}, size {size})")
            data_pos = pos + 16
            if data_pos + size > self.size:
                self.problems.append(f"flattened record at {pos:#x} runs past the end of the file")
                size = self.size - data_pos
            if off + size > FLAT_SPAN_FACTOR * self.size:
                self.problems.append(f"flattened record at {pos:#x} places {size} bytes at "
                                     f"{off:#x}, far past what a stream of {self.size} bytes "
                                     "holds: record ignored")
                pos = data_pos + size
                continue
            logical.append(off)
            sizes.append(size)
            physical.append(data_pos)
            pos = data_pos + size
        order = np.argsort(np.asarray(logical, dtype=np.int64), kind="stable")
        self._logical = np.asarray(logical, dtype=np.int64)[order]
        self._sizes = np.asarray(sizes, dtype=np.int64)[order]
        self._physical = np.asarray(physical, dtype=np.int64)[order]
        self.records = len(logical)
        self.size = int((self._logical + self._sizes).max()) if len(logical) else 0

    def pread(self, offset: int, size: int) -> bytes:
        """Bytes at a logical offset of the reassembled kdump file (zeros in gaps)."""
        out = bytearray()
        pos = max(offset, 0)
        end = min(offset + size, self.size)
        while pos < end:
            i = int(np.searchsorted(self._logical, pos, side="right")) - 1
            if i < 0 or pos >= self._logical[i] + self._sizes[i]:
                nxt = int(np.searchsorted(self._logical, pos, side="right"))
                if nxt >= len(self._logical):
                    break  # past the end of the data
                gap_end = min(end, int(self._logical[nxt]))
                out += bytes(gap_end - pos)
                pos = gap_end
                continue
            rec_off = pos - int(self._logical[i])
            n = min(end - pos, int(self._sizes[i]) - rec_off)
            out += os.pread(self._fd, n, int(self._physical[i]) + rec_off)
            pos += n
        return bytes(out)


def read_exact(source: PlainSource, offset: int, size: int, what: str) -> bytes:
    """Read exactly `size` bytes or raise TruncatedDump naming `what`."""
    data = source.pread(offset, size)
    if len(data) < size:
        raise TruncatedDump(f"{source.path}: {what} at offset {offset:#x} needs {size} bytes, "
                            f"file has {len(data)}")
    return data
