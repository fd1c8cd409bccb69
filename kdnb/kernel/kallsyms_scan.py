"""Find the kallsyms tables in the kernel image when VMCOREINFO does not name them (Linux < 6.0).

The tables have recognisable shapes, laid out by scripts/kallsyms.c:
- `kallsyms_token_table`: 256 NUL-terminated tokens; every byte value that occurs in a symbol
  name keeps a one-character token of itself, so the digits give the run "0\\0" "1\\0" ... "9\\0";
- `kallsyms_token_index`: 256 u16 offsets into the token table, 0 first, each past the last
  token's NUL;
- `kallsyms_markers`: u32 offsets into the names of every 256th symbol, 0 first, increasing,
  directly before the token table (before 6.2, which added kallsyms_seqs_of_names);
- `kallsyms_num_syms` directly before `kallsyms_names`, and `kallsyms_offsets` plus
  `kallsyms_relative_base` either before them (up to 6.1) or after the token index (later).
A candidate is accepted only when the decoded table puts every kernel-image symbol VMCOREINFO
states (`_stext`, `init_uts_ns`, `swapper_pg_dir`, `node_online_map`, ...) exactly where
VMCOREINFO says, and at least two of them.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable, Iterator

import numpy as np

from .. import bounds
from ..errors import CorruptStructure, KdnbError, MissingDebugInfo
from .kallsyms import TOKEN_TABLE_MAX, RawSymbols, Tables, read_addresses, read_names

Reader = Callable[[int, int], bytes]
DIGITS = b"".join(bytes([c]) + b"\0" for c in b"0123456789")
IMAGE_MAX = 256 << 20  # scanned bytes of the kernel image at most
_CHUNK = 1 << 20
MIN_VERIFIED = 2
SEQS_SPAN = 16 << 20  # bytes before the token table searched for markers + seqs_of_names


class Image:
    """Kernel virtual memory [start, end), read in 1 MiB chunks on first use; pages the dump
    lacks read as zeros (counted in `missing`)."""

    def __init__(self, read: Reader, start: int, end: int) -> None:
        self.start, self.end = start, end
        self._read = read
        self._chunks: dict[int, bytes] = {}
        self.missing = 0

    def chunk(self, i: int) -> bytes:
        """Chunk `i` (bytes start + i MiB ...), read once."""
        data = self._chunks.get(i)
        if data is None:
            addr = self.start + i * _CHUNK
            size = min(_CHUNK, self.end - addr)
            try:
                data = self._read(addr, size)
            except KdnbError:
                data = self._pages(addr, size)
            self._chunks[i] = data
        return data

    def _pages(self, addr: int, size: int) -> bytes:
        out = bytearray(size)
        for off in range(0, size, 4096):
            try:
                out[off:off + 4096] = self._read(addr + off, min(4096, size - off))
            except KdnbError:
                self.missing += 1
        return bytes(out)

    def read(self, vaddr: int, size: int) -> bytes:
        """Bytes of the image; CorruptStructure outside it."""
        off = vaddr - self.start
        if off < 0 or size < 0 or vaddr + size > self.end:
            raise CorruptStructure(f"kallsyms scan: {vaddr:#x}+{size:#x} is outside the kernel image")
        first, last = off // _CHUNK, (off + size - 1) // _CHUNK if size else off // _CHUNK
        data = b"".join(self.chunk(i) for i in range(first, last + 1))
        skip = off - first * _CHUNK
        return data[skip:skip + size]

    def u32(self, vaddr: int) -> int:
        """A little-endian u32 of the image."""
        return int.from_bytes(self.read(vaddr, 4), "little")

    def rfind_all(self, needle: bytes) -> Iterator[int]:
        """Addresses of `needle`, from the end of the image backwards."""
        for i in range((self.end - self.start - 1) // _CHUNK, -1, -1):
            base = self.start + i * _CHUNK
            data = self.read(base, min(_CHUNK + len(needle) - 1, self.end - base))
            hit = data.rfind(needle)
            while hit >= 0:
                yield base + hit
                hit = data.rfind(needle, 0, hit)


Check = Callable[[RawSymbols], "str | None"]


def find(read: Reader, expected: dict[str, int], path: str = "", end: int | None = None,
         check: Check | None = None) -> tuple[Tables, RawSymbols]:
    """Scan the kernel image from `_stext` to `end` (default: the highest expected symbol) for
    the tables. A candidate needs MIN_VERIFIED pieces of evidence: expected symbols at their
    address, plus what `check` (given the decoded symbols) names, if it names anything."""
    if "_stext" not in expected or len(expected) + (check is not None) < MIN_VERIFIED:
        raise MissingDebugInfo(f"{path}: VMCOREINFO states too few kernel symbols to verify a "
                               f"kallsyms scan ({', '.join(sorted(expected)) or 'none'})")
    start = expected["_stext"] & ~0xFFF
    end = bounds.in_range(end if end is not None else max(expected.values()) + 4096,
                          "kernel image end", start + 4096, start + IMAGE_MAX, path)
    image = Image(read, start, end)
    for hit in image.rfind_all(DIGITS):
        for token_table, token_index in _token_tables(image, hit):
            for tables, places in _layouts(image, token_table, token_index):
                try:
                    names, types = read_names(image.read, tables, path)
                except KdnbError:
                    continue
                for offsets, relative_base in places:
                    candidate = replace(tables, offsets=offsets, relative_base=relative_base)
                    try:
                        addresses, encoding, verified = read_addresses(image.read, candidate, names, expected)
                    except KdnbError:
                        continue
                    raw = RawSymbols(names, addresses, types, encoding, verified)
                    extra = check(raw) if check is not None else None
                    if extra:
                        raw.verified = (*verified, extra)
                    if len(raw.verified) >= MIN_VERIFIED:
                        if encoding == "place-relative":  # a relative base, if any, is not one
                            candidate = replace(candidate, relative_base=None)
                        return candidate, raw
    raise MissingDebugInfo(f"{path}: no kallsyms tables found in the kernel image "
                           f"{start:#x}-{end:#x} ({image.missing} pages missing): pass vmlinux= or system_map=")


def _token_tables(image: Image, digits: int) -> Iterator[tuple[int, int]]:
    """(token_table, token_index) pairs around a "0\\0..9\\0" run at `digits`."""
    base = digits + (digits & 1)
    window = image.read(base, min(TOKEN_TABLE_MAX + 1024, image.end - base) & ~1)
    idx = np.frombuffer(window, dtype="<u2").astype(np.int64)
    if len(idx) < 256:
        return
    steps = np.diff(idx) >= 2  # each token is at least one byte and its NUL
    runs = np.concatenate([[0], np.cumsum(steps)])
    j = np.flatnonzero(idx[: len(idx) - 255] == 0)
    j = j[(runs[j + 255] - runs[j]) == 255]
    for k in j:
        entries = idx[k:k + 256]
        table = digits - int(entries[ord("0")])
        index = base + 2 * int(k)
        if table < image.start or table + int(entries[255]) >= index:
            continue
        body = np.frombuffer(image.read(table, int(entries[255]) + 1), dtype=np.uint8)
        if (body[entries[1:] - 1] == 0).all() and (body[entries] != 0).all():
            yield table, index


def _markers_start(image: Image, token_table: int) -> tuple[int, list[int]] | None:
    """Start and values of kallsyms_markers, read backwards from the token table."""
    pos = token_table - 4
    if pos - 4 >= image.start and image.u32(pos) == 0 and image.u32(pos - 4) != 0:
        pos -= 4  # alignment padding after an odd number of markers
    values: list[int] = []
    while pos >= image.start and len(values) < bounds.KALLSYMS_MAX // 256:
        v = image.u32(pos)
        if values and v >= values[-1]:
            return None
        values.append(v)
        if v == 0:
            return pos, values[::-1]
        pos -= 4
    return None


Places = list[tuple[int, int | None]]


def _markers_before_seqs(image: Image, token_table: int) -> tuple[int, list[int]] | None:
    """kallsyms_markers when kallsyms_seqs_of_names (3 bytes a symbol; 6.2, and Debian's 6.1)
    lies between them and the token table: an increasing u32 run from 0 whose length fits the
    size of what follows it."""
    lo = max(image.start, token_table - min(SEQS_SPAN, 4 * bounds.KALLSYMS_MAX)) & ~3
    words = np.frombuffer(image.read(lo, (token_table - lo) & ~3), dtype="<u4").astype(np.int64)
    if len(words) < 2:
        return None
    breaks = np.flatnonzero(words[1:] <= words[:-1])  # the run from j ends at the first break >= j
    for j in np.flatnonzero(words[:-1] == 0)[::-1]:
        k = int(np.searchsorted(breaks, j))
        run = (int(breaks[k]) if k < len(breaks) else len(words) - 1) - int(j) + 1
        for groups in range(run, max(run - 8, 1), -1):  # the seqs may continue the run by chance
            seqs = lo + 4 * (int(j) + groups)
            for pad in (0, 4):
                size = token_table - (seqs + pad)
                n = size // 3
                if 0 <= size - 3 * n < 8 and 256 * (groups - 1) < n <= 256 * groups:
                    return lo + 4 * int(j), words[j:j + groups].tolist()
    return None


def _layouts(image: Image, token_table: int, token_index: int) -> Iterator[tuple[Tables, Places]]:
    """Candidate table sets for one token table (names before the markers) with the candidate
    places of the offsets (on either side)."""
    found = _markers_start(image, token_table) or _markers_before_seqs(image, token_table)
    if found is None:
        return
    markers_at, markers = found
    groups = len(markers)
    last = markers_at - markers[-1]  # where the last marked name starts, for names_start = 0
    for names in range(last & ~3, max(image.start, last - 256 * 130), -4):
        for gap in (4, 8):
            num_syms = names - gap
            if num_syms < image.start:
                continue
            n = image.u32(num_syms)
            if not 256 * (groups - 1) < n <= 256 * groups or not _marks_fit(image, names, markers):
                continue
            places = list(_offset_places(num_syms, n, token_index))
            yield Tables(num_syms, names, markers_at, token_table, token_index, *places[0]), places
            return


def _marks_fit(image: Image, names: int, markers: list[int]) -> bool:
    """Walking 256 names from `names` lands on the second marker."""
    if len(markers) < 2:
        return True
    pos = 0
    blob = image.read(names, markers[1] + 2)
    for _ in range(256):
        if pos >= len(blob):
            return False
        length = blob[pos]
        pos += 1 + length if not length & 0x80 else 2 + ((length & 0x7F) | (blob[pos + 1] << 7))
    return pos == markers[1]


def _offset_places(num_syms: int, count: int, token_index: int) -> Iterator[tuple[int, int | None]]:
    """(kallsyms_offsets, kallsyms_relative_base) candidates for both layouts."""
    size = 4 * count
    relative_base = num_syms - 8  # up to 6.1: offsets, relative_base, num_syms, names
    for pad in (0, 4):
        yield relative_base - size - pad, relative_base
    after = token_index + 512  # later: ..., token_table, token_index, offsets, relative_base
    for offsets in (after, (after + 7) & ~7):
        yield offsets, (offsets + size + 7) & ~7
        yield offsets, None
