"""The sample dumps the fuzzer mutates and where their structures lie in the file."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import kdnb
from kdnb.dump.detect import sniff
from kdnb.dump.notes import decode_prstatus, parse_vmcoreinfo, prstatus_notes
from tests.builders import Spec

DATA = Path(__file__).resolve().parents[2] / "data"
PAGE = 4096
SUB_FIELDS = {  # kdump_sub_header (v6): name -> (offset, struct format)
    "phys_base": (0, "<q"), "dump_level": (8, "<i"), "split": (12, "<i"), "start_pfn": (16, "<Q"),
    "end_pfn": (24, "<Q"), "offset_vmcoreinfo": (32, "<Q"), "size_vmcoreinfo": (40, "<Q"),
    "offset_note": (48, "<Q"), "size_note": (56, "<Q"), "offset_eraseinfo": (64, "<Q"),
    "size_eraseinfo": (72, "<Q"), "start_pfn_64": (80, "<Q"), "end_pfn_64": (88, "<Q"),
    "max_mapnr_64": (96, "<Q"),
}
HEADER_FIELDS = {  # disk_dump_header: name -> (offset, struct format)
    "header_version": (8, "<i"), "tv_sec": (408, "<q"), "status": (424, "<I"), "block_size": (428, "<i"),
    "sub_hdr_size": (432, "<i"), "bitmap_blocks": (436, "<I"), "max_mapnr": (440, "<I"),
    "total_ram_blocks": (444, "<I"), "device_blocks": (448, "<I"), "written_blocks": (452, "<I"),
    "current_cpu": (456, "<I"), "nr_cpus": (460, "<i"),
}


def sample_paths() -> list[Path]:
    """Every data/*/vmcore.* that kdnb recognises (kdump, flattened or ELF), sorted."""
    out = []
    for path in sorted(DATA.glob("*/vmcore.*")):
        try:
            sniff(str(path))
        except kdnb.errors.KdnbError:
            continue
        out.append(path)
    return out


@dataclass
class KdumpLayout:
    """Offsets of a kdump-compressed file's parts, read once from the pristine file."""

    path: Path
    size: int
    bs: int
    sub_end: int  # end of the sub-header blocks (room for a grown VMCOREINFO)
    bitmap_off: int
    bitmap_half: int
    desc_off: int
    present: int
    note_off: int
    note_size: int
    vmci_off: int
    vmci_size: int
    vmcoreinfo: dict[str, str]
    rank_prefix: np.ndarray = field(repr=False)
    bitmap2: bytes = field(repr=False)

    kind = "kdump"

    def rank(self, pfn: int) -> int | None:
        """Index of pfn's page descriptor, or None when the page is not in the file."""
        byte = pfn >> 3
        if byte >= len(self.bitmap2) or not self.bitmap2[byte] >> (pfn & 7) & 1:
            return None
        return int(self.rank_prefix[byte]) + bin(self.bitmap2[byte] & ((1 << (pfn & 7)) - 1)).count("1")


def kdump_layout(path: Path) -> KdumpLayout:
    """The layout of a plain kdump-compressed sample."""
    raw = path.read_bytes()[:1 << 16]
    bs = struct.unpack_from("<i", raw, 428)[0]
    sub_blocks, bitmap_blocks = struct.unpack_from("<iI", raw, 432)
    sub = {name: struct.unpack_from(fmt, raw, bs + off)[0] for name, (off, fmt) in SUB_FIELDS.items()}
    with open(path, "rb") as f:
        f.seek(bs * (1 + sub_blocks))
        bitmaps = f.read(bitmap_blocks * bs)
        f.seek(sub["offset_vmcoreinfo"])
        vmci = f.read(sub["size_vmcoreinfo"])
    bm2 = np.frombuffer(bitmaps[len(bitmaps) // 2:], dtype=np.uint8)
    prefix = np.concatenate(([0], np.cumsum(np.unpackbits(bm2).reshape(-1, 8).sum(axis=1))))
    return KdumpLayout(path, path.stat().st_size, bs, bs * (1 + sub_blocks), bs * (1 + sub_blocks),
                       bitmap_blocks * bs // 2, bs * (1 + sub_blocks + bitmap_blocks), int(prefix[-1]),
                       sub["offset_note"], sub["size_note"], sub["offset_vmcoreinfo"],
                       sub["size_vmcoreinfo"], parse_vmcoreinfo(vmci), prefix, bm2.tobytes())


@dataclass
class ElfLayout:
    """Program headers and notes of an ELF64 vmcore, and the spec it was built from."""

    path: Path
    size: int
    phoff: int
    phnum: int
    phdrs: list[dict]  # p_type, p_offset, p_vaddr, p_paddr, p_filesz, p_memsz, at (file position)
    note_off: int
    note_size: int
    vmcoreinfo: dict[str, str]
    spec: Spec = field(repr=False)

    kind = "elf"

    def file_offset(self, paddr: int) -> int | None:
        """Where physical address `paddr` is stored in the file, or None."""
        for ph in self.phdrs:
            if ph["p_type"] == 1 and ph["p_paddr"] <= paddr < ph["p_paddr"] + ph["p_filesz"]:
                return ph["p_offset"] + paddr - ph["p_paddr"]
        return None


PHDR = struct.Struct("<IIQQQQQQ")
PHDR_NAMES = ("p_type", "p_flags", "p_offset", "p_vaddr", "p_paddr", "p_filesz", "p_memsz", "p_align")


def elf_layout(path: Path, spec: Spec) -> ElfLayout:
    """The layout of an ELF64 vmcore written by tests.builders.write_elf."""
    raw = path.read_bytes()[:1 << 20]
    phoff, = struct.unpack_from("<Q", raw, 32)
    phnum, = struct.unpack_from("<H", raw, 56)
    phdrs = []
    for i in range(phnum):
        at = phoff + i * PHDR.size
        ph = dict(zip(PHDR_NAMES, PHDR.unpack_from(raw, at)))
        ph["at"] = at
        phdrs.append(ph)
    note = next(ph for ph in phdrs if ph["p_type"] == 4)
    return ElfLayout(path, path.stat().st_size, phoff, phnum, phdrs, note["p_offset"], note["p_filesz"],
                     dict(spec.vmcoreinfo or {}), spec)


def elf_spec_from(path: Path) -> Spec:
    """The pages, excluded frames, CPUs and VMCOREINFO of a kdump sample, as a builder spec."""
    with kdnb.open(path) as d:
        psz = d.page_size
        pages, excluded = {}, set()
        for seg in d.segments.itertuples():
            for pfn in range(int(seg.start) // psz, int(seg.end) // psz):
                if seg.state == "present":
                    pages[pfn] = d.read_phys(pfn * psz, psz)
                elif seg.state == "excluded":
                    excluded.add(pfn)
        cpus = [decode_prstatus(n.desc) for n in prstatus_notes(d.reader.notes)]
        return Spec(pages=pages, excluded=excluded, max_pfn=d.reader.max_pfn,
                    vmcoreinfo=dict(d.vmcoreinfo), cpus=[c for c in cpus if c is not None])

