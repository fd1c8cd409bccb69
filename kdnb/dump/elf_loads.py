"""ELF program headers as numpy columns: the PT_LOAD table, its physical index and segments.

A makedumpfile -E vmcore of a fragmented machine has one PT_LOAD per run of pages (hundreds of
thousands): the headers are decoded in one pass, the index of disjoint physical pieces is built
with array operations and searched with np.searchsorted.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from ..bounds import MAX_PHYSMEM_BITS, U64_MAX, count
from ..errors import CorruptDump
from .segtable import SegmentTable

PT_LOAD, PT_NOTE = 1, 4
PHYS_LIMIT = 1 << MAX_PHYSMEM_BITS
OFFSET_CAP = 1 << 62  # a p_offset past any file: reads there find the file's end
PHDR_TABLE_MAX = 1 << 26  # 64 MiB: 2**20 program headers of 64 bytes (elf.PHDRS_MAX)
# (field, offset, width) of Elf64_Phdr and Elf32_Phdr
PHDR_FIELDS = {
    64: (56, {"type": (0, 4), "offset": (8, 8), "vaddr": (16, 8), "paddr": (24, 8),
              "filesz": (32, 8), "memsz": (40, 8)}),
    32: (32, {"type": (0, 4), "offset": (4, 4), "vaddr": (8, 4), "paddr": (12, 4),
              "filesz": (16, 4), "memsz": (20, 4)}),
}


def read_phdrs(fd: int, path: str, elfclass: int, little: bool, phoff: int, phentsize: int,
               nph: int) -> dict[str, np.ndarray]:
    """The `nph` program headers at `phoff`, `phentsize` bytes apart, as uint64 columns."""
    size, fields = PHDR_FIELDS[elfclass]
    need = (nph - 1) * phentsize + size if nph else 0
    count(need, "ELF program header table bytes (e_phnum x e_phentsize)", PHDR_TABLE_MAX, path)
    raw = os.pread(fd, need, phoff) if need else b""
    if len(raw) < need:
        raise CorruptDump(f"{path}: ELF headers end early or are malformed (program header "
                          f"table at {phoff:#x} needs {need} bytes, the file has {len(raw)})")
    out = {}
    for name, (at, width) in fields.items():
        dtype = np.dtype(f"{'<' if little else '>'}u{width}")
        col = np.ndarray((nph,), dtype=dtype, buffer=raw, offset=at, strides=(phentsize,)) \
            if nph else np.zeros(0, dtype=dtype)
        out[name] = col.astype(np.uint64)
    return out


@dataclass(frozen=True)
class Loads:
    """The plausible PT_LOADs: index (among all PT_LOADs), paddr, vaddr, offset, filesz, memsz."""

    index: np.ndarray  # int64
    paddr: np.ndarray  # uint64, and all below: paddr + memsz <= PHYS_LIMIT
    vaddr: np.ndarray
    offset: np.ndarray
    filesz: np.ndarray
    memsz: np.ndarray

    def __len__(self) -> int:
        return len(self.index)

    def by_paddr(self) -> np.ndarray:
        """Row order by (paddr, -filesz), ties in header order."""
        return np.lexsort((-self.filesz.astype(np.int64), self.paddr.astype(np.int64)))


def plausible_loads(ph: dict[str, np.ndarray]) -> tuple[Loads, list[tuple[int, str]]]:
    """The PT_LOADs that can describe physical memory, and (header number, problem) for the rest."""
    rows = np.flatnonzero(ph["type"] == PT_LOAD)
    paddr, vaddr, filesz, memsz = (ph[k][rows] for k in ("paddr", "vaddr", "filesz", "memsz"))
    index = np.arange(len(rows), dtype=np.int64)
    big = filesz > memsz
    limit = np.uint64(PHYS_LIMIT)
    past = ~big & ((paddr > limit) | (memsz > limit - np.minimum(paddr, limit)))
    wraps = ~big & ~past & (memsz > 0) & (memsz - np.uint64(1) > np.uint64(U64_MAX) - vaddr)
    problems = []
    for i in np.flatnonzero(big | past | wraps).tolist():
        p, v, fs, ms = int(paddr[i]), int(vaddr[i]), int(filesz[i]), int(memsz[i])
        if big[i]:
            why = f"p_filesz {fs:#x} > p_memsz {ms:#x}"
        elif past[i]:
            why = f"p_paddr {p:#x} + p_memsz {ms:#x} is past the {MAX_PHYSMEM_BITS}-bit physical limit"
        else:
            why = f"p_vaddr {v:#x} + p_memsz {ms:#x} wraps the address space"
        problems.append((int(rows[i]), f"PT_LOAD {i} ignored: {why}"))
    ok = ~(big | past | wraps)
    loads = Loads(index[ok], paddr[ok], vaddr[ok], ph["offset"][rows][ok], filesz[ok], memsz[ok])
    return loads, problems


@dataclass(frozen=True)
class PieceIndex:
    """Disjoint physical pieces sorted by start; offset -1 marks an excluded (zero) piece."""

    start: np.ndarray  # int64
    end: np.ndarray  # int64
    offset: np.ndarray  # int64, capped at OFFSET_CAP

    def find(self, paddr: int) -> tuple[int, int, int] | None:
        """(start, end, offset) of the piece holding `paddr`, or None (a hole)."""
        i = int(self.start.searchsorted(paddr, side="right")) - 1
        if i < 0 or paddr >= self.end.item(i):
            return None
        return self.start.item(i), self.end.item(i), self.offset.item(i)


def piece_index(loads: Loads) -> PieceIndex:
    """Each load's present part then its excluded tail, in (paddr, -filesz) order; where a piece
    overlaps what earlier pieces reach, the earlier one is kept (the piece starts where they end)."""
    order = loads.by_paddr()
    paddr = loads.paddr[order].astype(np.int64)
    present_end = paddr + loads.filesz[order].astype(np.int64)
    start = np.column_stack((paddr, present_end)).ravel()
    end = np.column_stack((present_end, paddr + loads.memsz[order].astype(np.int64))).ravel()
    offset = np.minimum(loads.offset[order], np.uint64(OFFSET_CAP)).astype(np.int64)
    offset = np.column_stack((offset, np.full(len(order), -1, dtype=np.int64))).ravel()
    reach = np.zeros(len(end), dtype=np.int64)  # furthest end of the pieces before each
    if len(end) > 1:
        np.maximum.accumulate(end[:-1], out=reach[1:])
    clipped = np.maximum(start, reach)
    offset = np.where(offset >= 0, offset + (clipped - start), -1)
    keep = clipped < end
    return PieceIndex(clipped[keep], end[keep], offset[keep])


def overlapping_pairs(loads: Loads) -> list[tuple[int, int, int, int]]:
    """(row, earlier row, lo, hi) where a load's present bytes overlap those of the load reaching
    furthest before it (by paddr order), physical [lo, hi)."""
    order = loads.by_paddr()
    if len(order) < 2:
        return []
    paddr = loads.paddr[order].astype(np.int64)
    filesz = loads.filesz[order].astype(np.int64)
    ends = paddr + filesz
    cummax = np.maximum.accumulate(ends)
    grows = np.empty(len(ends), dtype=bool)
    grows[0] = True
    grows[1:] = ends[1:] > cummax[:-1]
    reach = np.maximum.accumulate(np.where(grows, np.arange(len(ends)), 0))
    hits = np.flatnonzero((paddr[1:] < cummax[:-1]) & (filesz[1:] > 0)) + 1
    out = []
    for j in hits.tolist():
        r = int(reach[j - 1])
        out.append((int(order[j]), int(order[r]), int(paddr[j]), min(int(ends[j]), int(ends[r]))))
    return out


def load_segments(loads: Loads, file_size: int) -> SegmentTable:
    """Per load in header order: its present part, the part past the end of the file
    (truncated) and its p_memsz tail (excluded), rows of zero length left out."""
    n = len(loads)
    room = np.where(loads.offset < np.uint64(file_size), np.uint64(file_size) - loads.offset, 0)
    avail = np.minimum(loads.filesz, room.astype(np.uint64))
    present_end = loads.paddr + loads.filesz
    start = np.column_stack((loads.paddr, loads.paddr + avail, present_end)).ravel()
    end = np.column_stack((loads.paddr + avail, present_end, loads.paddr + loads.memsz)).ravel()
    state = np.tile(np.array([1, 3, 2], dtype=np.uint8), n)
    # p_vaddr + p_memsz is at most 2**64 (plausible_loads), so a kept row's vaddr fits in 64
    # bits (p_vaddr + p_filesz wraps to 0 only when p_filesz = p_memsz: no excluded row), and
    # avail > 0 only when p_offset lies inside the file
    vaddr = np.column_stack((loads.vaddr, loads.vaddr + avail, loads.vaddr + loads.filesz)).ravel()
    offset = np.column_stack((loads.offset, loads.offset + avail, np.zeros(n, dtype=np.uint64))).ravel()
    offset_ok = np.tile(np.array([True, True, False]), n)  # an excluded tail has no file offset
    source = np.repeat(loads.index, 3)
    table = SegmentTable(start, end, state, vaddr, offset, offset_ok, "PT_LOAD", source)
    return table.select(start < end)
