"""Builders of heavily fragmented real-format dumps from a real dump's pages (tests/test_dump_fragmented.py)."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

import kdnb
from kdnb.dump.kdump import KdumpDump
from tests.test_scale_lazy import write_sparse_kdump

PT_LOAD, PT_NOTE, PN_XNUM = 1, 4, 0xFFFF
EHDR, PHDR, SHDR = 64, 56, 64


def present_and_excluded(d: kdnb.Dump) -> tuple[np.ndarray, np.ndarray]:
    """The pfns a kdump sample stores and the pfns it excluded (RAM not written)."""
    codes = d.reader.page_states()
    return np.flatnonzero(codes == 1), np.flatnonzero(codes == 2)


def raw_notes(r: KdumpDump) -> bytes:
    """The ELF note blob of a kdump file, as its sub-header places it."""
    return r.source.pread(r.header["offset_note"], r.header["size_note"])


def write_page_per_load_elf(path: Path, source: str | Path, split: int = 2,
                            vaddr_base: int = 0xFFFF888000000000) -> Path:
    """An ELF64 vmcore of `source`'s memory with `split` PT_LOADs per stored page (each a
    1/split page, file data in pfn order) and one p_filesz = 0 PT_LOAD per excluded page;
    PN_XNUM (e_phnum 0xffff, the count in section 0's sh_info) when they are more than 0xfffe."""
    with kdnb.open(source) as d:
        r = d.reader
        psz = r.page_size
        piece = psz // split
        present, excluded = present_and_excluded(d)
        notes = raw_notes(r)
        paddr = np.concatenate(((present[:, None] * psz + piece * np.arange(split)).ravel(), excluded * psz))
        filesz = np.concatenate((np.full(len(present) * split, piece), np.zeros(len(excluded), dtype=np.int64)))
        memsz = np.where(filesz > 0, piece, psz)
        order = np.argsort(paddr, kind="stable")
        paddr, filesz, memsz = paddr[order], filesz[order], memsz[order]
        nph = 1 + len(paddr)
        phoff = EHDR + SHDR
        note_off = phoff + nph * PHDR
        data_off = -(-(note_off + len(notes)) // psz) * psz
        ph = np.zeros(nph, dtype=[("type", "<u4"), ("flags", "<u4"), ("offset", "<u8"),
                                  ("vaddr", "<u8"), ("paddr", "<u8"), ("filesz", "<u8"),
                                  ("memsz", "<u8"), ("align", "<u8")])
        ph[0] = (PT_NOTE, 0, note_off, 0, 0, len(notes), len(notes), 0)
        ph["type"][1:], ph["flags"][1:] = PT_LOAD, 7
        ph["offset"][1:] = np.where(filesz > 0, data_off + np.cumsum(filesz) - filesz, 0)
        ph["paddr"][1:], ph["vaddr"][1:] = paddr, vaddr_base + paddr.astype(np.uint64)
        ph["filesz"][1:], ph["memsz"][1:] = filesz, memsz
        ident = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8)
        ehdr = ident + struct.pack("<HHIQQQIHHHHHH", 4, 62, 1, 0, phoff, EHDR, 0, EHDR, PHDR,
                                   min(nph, PN_XNUM), SHDR, 1, 0)
        shdr0 = struct.pack("<IIQQQQIIQQ", 0, 0, 0, 0, 0, 0, 0, nph, 0, 0)
        with open(path, "wb") as f:
            f.write(ehdr + shdr0 + ph.tobytes() + notes)
            f.seek(data_off)
            for pfn in present.tolist():
                f.write(r.read_page(pfn))
    return path


def fragmented_kdump(path: Path, source: str | Path, ram_pages: int) -> Path:
    """A kdump file of `ram_pages` frames: below the source's max_pfn the source's stored pages
    (its real bytes, notes and VMCOREINFO), above it every other frame stored (zeros)."""
    with kdnb.open(source) as d:
        r = d.reader
        present, _ = present_and_excluded(d)
        stored = np.zeros(ram_pages, dtype=np.uint8)
        stored[r.max_pfn::2] = 1
        stored[present] = 1
        pages = {pfn: r.read_page(pfn) for pfn in present.tolist()}
        return write_sparse_kdump(path, ram_pages, stored, pages, raw_notes(r), r.vmcoreinfo_raw)
