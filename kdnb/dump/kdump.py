"""makedumpfile's kdump-compressed format (header versions 1-6, 64-bit targets)."""

from __future__ import annotations

import struct
from datetime import datetime, timezone

import numpy as np

from ..bounds import count, in_range, power_of_two, vmcoreinfo_int
from ..errors import CorruptDump, ImplausibleValue, KdnbError
from .base import DumpReader, PageCache
from .codecs import DECOMPRESSORS, DUMP_DH_COMPRESSED_INCOMPLETE, DUMP_DH_EXCLUDED_VMEMMAP, \
    compression_names
from .notes import is_qemu, parse_notes, parse_vmcoreinfo, prstatus_notes, vmcoreinfo_note
from .segtable import SegmentTable, from_page_codes
from .source import PlainSource, read_exact

SIGNATURES = (b"KDUMP   ", b"DISKDUMP")
HEADER_SIZE = 464  # disk_dump_header up to tasks[]
UTS_FIELDS = ("sysname", "nodename", "release", "version", "machine", "domainname")
PAGE_DESC = np.dtype([("offset", "<i8"), ("size", "<u4"), ("flags", "<u4"),
                      ("page_flags", "<u8")])
POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)
MAX_PFN_LIMIT = 1 << 40  # 4 PiB of 4 KiB pages: anything above is a corrupt header
DESC_SIZE = PAGE_DESC.itemsize
_DESC_HEAD = struct.Struct("<qII")  # page_desc offset, size, flags
STATE_CHUNK = 1 << 20  # page frames classified per step of page_states()
DESC_BLOCK = 256  # page descriptors read per pread (6 KiB): neighbouring pages share one read
RUN_BYTES = 1 << 20  # stored bytes of neighbouring pages read with one pread at most
DESC_BLOCKS_CACHED = 1024  # 6 MiB of descriptors, 256 Ki pages (1 GiB) of the dump
NOTE_MAX = 1 << 24  # the ELF notes of 8192 CPUs take ~ 3 MiB
VMCOREINFO_MAX = 1 << 20


def parse_disk_dump_header(raw: bytes, path: str) -> dict:
    """Decode the 64-bit disk_dump_header block (fields in little-endian target order)."""
    (version,) = struct.unpack_from("<i", raw, 8)
    uts = {}
    for i, name in enumerate(UTS_FIELDS):
        field = raw[12 + 65 * i: 12 + 65 * (i + 1)]
        uts[name] = field.split(b"\0", 1)[0].decode("utf-8", "replace")
    (tv_sec, tv_usec, status, block_size, sub_hdr_size, bitmap_blocks, max_mapnr,
     total_ram_blocks, device_blocks, written_blocks, current_cpu, nr_cpus) = \
        struct.unpack_from("<qqIiiIIIIIii", raw, 408)
    power_of_two(block_size, "kdump header block_size", 512, 1 << 20, path)
    in_range(version, "kdump header header_version", 1, 64, path)
    count(sub_hdr_size, "kdump header sub_hdr_size", 1 << 20, path)
    return {
        "signature": raw[:8].decode("ascii", "replace"),
        "header_version": version,
        "utsname": uts,
        "timestamp": datetime.fromtimestamp(tv_sec, tz=timezone.utc)
        if 0 <= tv_sec < 1 << 34 else None,
        "timestamp_sec": tv_sec,
        "timestamp_usec": tv_usec,
        "status": status,
        "block_size": block_size,
        "sub_hdr_size": sub_hdr_size,
        "bitmap_blocks": bitmap_blocks,
        "max_mapnr": max_mapnr,
        "total_ram_blocks": total_ram_blocks,
        "device_blocks": device_blocks,
        "written_blocks": written_blocks,
        "current_cpu": current_cpu,
        "nr_cpus": nr_cpus,
    }


def parse_sub_header(raw: bytes, version: int) -> dict:
    """Decode kdump_sub_header; fields present depend on the header version."""
    out: dict = {}
    fields = [("phys_base", "Q", 0), ("dump_level", "i", 8), ("split", "i", 12)]
    if version >= 2:
        fields += [("start_pfn", "Q", 16), ("end_pfn", "Q", 24)]
    if version >= 3:
        fields += [("offset_vmcoreinfo", "Q", 32), ("size_vmcoreinfo", "Q", 40)]
    if version >= 4:
        fields += [("offset_note", "Q", 48), ("size_note", "Q", 56)]
    if version >= 5:
        fields += [("offset_eraseinfo", "Q", 64), ("size_eraseinfo", "Q", 72)]
    if version >= 6:
        fields += [("start_pfn_64", "Q", 80), ("end_pfn_64", "Q", 88), ("max_mapnr_64", "Q", 96)]
    for name, fmt, off in fields:
        if off + struct.calcsize(fmt) <= len(raw):
            out[name] = struct.unpack_from("<" + fmt, raw, off)[0]
    if "phys_base" in out and out["phys_base"] >= 1 << 63:
        out["phys_base"] -= 1 << 64
    return out


class KdumpDump(DumpReader):
    """A kdump-compressed file, plain or flattened. Opening reads headers and bitmaps only."""

    def __init__(self, source: PlainSource, format_name: str) -> None:
        super().__init__(source.path)
        self.source = source
        self.format = format_name
        self.problems: list[str] = list(getattr(source, "problems", []))
        self._desc_blocks = PageCache(DESC_BLOCKS_CACHED)
        try:
            self._open()
        except BaseException:
            source.close()
            raise

    # -- opening -------------------------------------------------------------------------
    def _open(self) -> None:
        src = self.source
        head = read_exact(src, 0, HEADER_SIZE, "disk_dump_header")
        hdr = parse_disk_dump_header(head, self.path)
        bs = self.page_size = hdr["block_size"]
        sub_raw = src.pread(bs, min(hdr["sub_hdr_size"] * bs, 4096) if hdr["sub_hdr_size"] else 0)
        sub = parse_sub_header(sub_raw, hdr["header_version"]) if sub_raw else {}
        if hdr["sub_hdr_size"] and len(sub_raw) < 104:
            self.problems.append(f"sub-header at {bs:#x} is short ({len(sub_raw)} bytes)")
        max_mapnr = count(sub.get("max_mapnr_64") or hdr["max_mapnr"], "kdump max_mapnr",
                          MAX_PFN_LIMIT, self.path)
        self.start_pfn = sub.get("start_pfn_64", sub.get("start_pfn", 0)) if sub.get("split") \
            else 0
        self.end_pfn = (sub.get("end_pfn_64", sub.get("end_pfn", max_mapnr)) or max_mapnr) \
            if sub.get("split") else max_mapnr
        self._read_notes(hdr, sub)
        self._read_bitmaps(hdr, max_mapnr)
        self.max_pfn = min(max_mapnr, 8 * len(self._bitmap2))  # no page past the bitmaps exists
        status = hdr["status"]
        self.incomplete = bool(status & DUMP_DH_COMPRESSED_INCOMPLETE)
        phys_base = sub.get("phys_base")
        if "NUMBER(phys_base)" in self.vmcoreinfo:  # QEMU writes a wrong one into the sub-header
            try:
                phys_base = vmcoreinfo_int(self.vmcoreinfo, "NUMBER(phys_base)", self.path)
            except ImplausibleValue as exc:
                self.problems.append(str(exc))
        qemu = is_qemu(self.notes)
        self.header = {
            **hdr,
            **sub,
            "format": self.format,
            "compression": "+".join(compression_names(status)) or "none",
            "incomplete": self.incomplete,
            "excluded_vmemmap": bool(status & DUMP_DH_EXCLUDED_VMEMMAP),
            "max_mapnr": max_mapnr,
            "phys_base": phys_base,
            "dump_level": sub.get("dump_level"),
            "split": bool(sub.get("split")),
            "present_pages": int(self._rank_prefix[-1]) if len(self._rank_prefix) else 0,
            "ram_pages": self._ram_pages,
            "file_size": src.size,
            "qemu": qemu,
            "prstatus_notes": len(prstatus_notes(self.notes)),
            "problems": self.problems,
        }
        self._desc_off = bs * (1 + hdr["sub_hdr_size"] + hdr["bitmap_blocks"])
        self.header["descriptors_offset"] = self._desc_off

    def _read_notes(self, hdr: dict, sub: dict) -> None:
        if sub.get("size_note"):
            blob = self._blob(sub["offset_note"], sub["size_note"], NOTE_MAX, "ELF notes")
            self.notes = parse_notes(blob, self.problems)
        raw = None
        if sub.get("size_vmcoreinfo"):
            raw = self._blob(sub["offset_vmcoreinfo"], sub["size_vmcoreinfo"], VMCOREINFO_MAX,
                             "VMCOREINFO")
        if not raw:
            raw = vmcoreinfo_note(self.notes)
        if raw:
            self.vmcoreinfo_raw = raw
            self.vmcoreinfo = parse_vmcoreinfo(raw)

    def _blob(self, offset: int, size: int, limit: int, what: str) -> bytes:
        """Up to `limit` bytes the sub-header places at `offset`; a short read is a problem."""
        if offset >= self.source.size or size > limit:
            self.problems.append(f"{what} at {offset:#x} ({size} bytes) lies outside the file "
                                 f"({self.source.size} bytes) or is implausibly large")
            return b""
        blob = self.source.pread(offset, size)
        if len(blob) < size:
            self.problems.append(f"{what} at {offset:#x} cut short ({len(blob)} of {size} bytes)")
        return blob

    def _read_bitmaps(self, hdr: dict, max_mapnr: int) -> None:
        bs = hdr["block_size"]
        half = hdr["bitmap_blocks"] * bs // 2
        need = (max_mapnr + 7) // 8
        if half < need:
            self.problems.append(f"bitmaps cover {half * 8} page frames, max_mapnr is {max_mapnr}: "
                                 "pages past the bitmap are treated as absent")
        base = bs * (1 + hdr["sub_hdr_size"])
        nbytes = min(half, need, max(0, self.source.size - base))  # no bitmap byte past the file
        bm1 = self.source.pread(base, nbytes)
        bm2 = self.source.pread(base + half, nbytes)
        if len(bm1) < nbytes or len(bm2) < nbytes:
            self.problems.append(f"bitmaps at {base:#x} run past the end of the file")
        self._bitmap1 = np.zeros(nbytes, dtype=np.uint8)
        self._bitmap1[:len(bm1)] = np.frombuffer(bm1, dtype=np.uint8)
        self._bitmap2 = np.zeros(nbytes, dtype=np.uint8)
        self._bitmap2[:len(bm2)] = np.frombuffer(bm2, dtype=np.uint8)
        if max_mapnr % 8 and nbytes == need:  # ignore bits past max_mapnr in the last byte
            mask = np.uint8((1 << (max_mapnr % 8)) - 1)
            self._bitmap1[-1] &= mask
            self._bitmap2[-1] &= mask
        # exclusive prefix sums of set bits per byte: rank(pfn) in O(1)
        counts = POPCOUNT[self._bitmap2]
        self._rank_prefix = np.empty(nbytes + 1, dtype=np.int64 if max_mapnr >= 1 << 32
                                     else np.uint32)
        self._rank_prefix[0] = 0
        np.cumsum(counts, out=self._rank_prefix[1:], dtype=self._rank_prefix.dtype)
        self._rank_view = memoryview(self._rank_prefix)  # indexing gives Python ints, fast
        self._ram_pages = int(POPCOUNT[self._bitmap1].sum(dtype=np.int64))
        self._bm2_bytes = self._bitmap2.tobytes()

    # -- memory --------------------------------------------------------------------------
    def has_page(self, pfn: int) -> bool:
        """True when the 2nd bitmap marks page `pfn` as written to the file."""
        byte = pfn >> 3
        return 0 <= byte < len(self._bm2_bytes) and bool(self._bm2_bytes[byte] >> (pfn & 7) & 1)

    def _descriptor(self, pfn: int) -> tuple[int, int, int]:
        """(offset, size, flags) of a page the 2nd bitmap marks as written (its rank among them
        indexes the descriptor table)."""
        byte = pfn >> 3
        rank = self._rank_view[byte] + (self._bm2_bytes[byte] & ((1 << (pfn & 7)) - 1)).bit_count()
        block = self._desc_blocks.get(rank // DESC_BLOCK, self._descriptor_block)
        at = rank % DESC_BLOCK * DESC_SIZE
        if at + DESC_SIZE > len(block):
            raise self._missing(pfn * self.page_size, "its page descriptor lies beyond the end "
                                "of a truncated file")
        return _DESC_HEAD.unpack_from(block, at)

    def _descriptor_block(self, index: int) -> bytes:
        """Descriptors of ranks index * DESC_BLOCK onwards (short where the file ends)."""
        return self.source.pread(self._desc_off + index * DESC_BLOCK * DESC_SIZE,
                                 DESC_BLOCK * DESC_SIZE)

    def _locate(self, pfn: int) -> tuple[int, int, int]:
        """(file offset, stored size, flags) of page `pfn`; raises PageNotInDump or CorruptDump."""
        if not self.has_page(pfn):
            byte = pfn >> 3
            paddr = pfn * self.page_size
            if 0 <= byte < len(self._bitmap1) and self._bitmap1[byte] >> (pfn & 7) & 1:
                level = self.header.get("dump_level")
                raise self._missing(paddr, f"excluded by dump level {level}")
            raise self._missing(paddr, "not in the dump (a hole or beyond max_mapnr)")
        offset, size, flags = self._descriptor(pfn)
        if offset == 0 and size == 0:
            reason = "lost in an incomplete dump" if self.incomplete else \
                "its page descriptor is empty"
            raise self._missing(pfn * self.page_size, reason)
        if size > self.page_size or offset <= 0:
            raise CorruptDump(f"{self.path}: page descriptor of pfn {pfn:#x} is corrupt "
                              f"(offset {offset:#x}, size {size}, flags {flags:#x})")
        return offset, size, flags

    def _decode(self, pfn: int, offset: int, size: int, flags: int, data: bytes) -> bytes:
        """The page from its stored bytes (`data`, short when the file ends early)."""
        psz = self.page_size
        if len(data) < size:
            raise self._missing(pfn * psz, "beyond the end of a truncated file")
        if flags == 0:  # stored raw
            if size != psz:
                raise CorruptDump(f"{self.path}: raw page of pfn {pfn:#x} is {size} bytes, "
                                  f"not {psz}")
            return data
        codec = DECOMPRESSORS.get(flags)
        if codec is None:
            raise CorruptDump(f"{self.path}: pfn {pfn:#x} has unknown compression flags {flags:#x}")
        try:
            page = codec(data, psz)
        except Exception as exc:  # each codec has its own error type
            raise CorruptDump(f"{self.path}: pfn {pfn:#x} at offset {offset:#x} does not "
                              f"decompress ({type(exc).__name__}: {exc})") from exc
        if len(page) != psz:
            raise CorruptDump(f"{self.path}: pfn {pfn:#x} decompresses to {len(page)} bytes, "
                              f"not {psz}")
        return page

    def _load_page(self, pfn: int) -> bytes:
        offset, size, flags = self._locate(pfn)
        return self._decode(pfn, offset, size, flags, self.source.pread(offset, size))

    def _load_pages(self, pfns: list[int]) -> list[bytes]:
        """Pages whose stored bytes follow each other in the file are read with one pread (up to
        RUN_BYTES); the error raised is the one loading them in order would meet first."""
        located: list[tuple[int, int, int, int]] = []
        error: KdnbError | None = None
        for pfn in pfns:
            try:
                located.append((pfn, *self._locate(pfn)))
            except KdnbError as exc:
                error = exc
                break
        out: list[bytes] = []
        i = 0
        while i < len(located):
            start = end = located[i][1]
            j = i
            while j < len(located) and located[j][1] == end and end - start < RUN_BYTES:
                end += located[j][2]
                j += 1
            run = self.source.pread(start, end - start)
            for pfn, offset, size, flags in located[i:j]:
                out.append(self._decode(pfn, offset, size, flags,
                                        run[offset - start:offset - start + size]))
            i = j
        if error is not None:
            raise error
        return out

    # -- segments ------------------------------------------------------------------------
    def page_states(self) -> np.ndarray:
        """State code per page frame (index into segtable.STATE_NAMES), vectorised over the bitmaps in
        steps of STATE_CHUNK frames, so memory stays proportional to the frames described."""
        n = self.max_pfn
        codes = np.zeros(n, dtype=np.uint8)
        in_file = max(0, (self.source.size - self._desc_off) // DESC_SIZE)  # descriptors present
        for lo in range(0, n, STATE_CHUNK):
            hi = min(n, lo + STATE_CHUNK)
            exists = np.unpackbits(self._bitmap1[lo >> 3:(hi + 7) >> 3], bitorder="little")[:hi - lo]
            present = np.unpackbits(self._bitmap2[lo >> 3:(hi + 7) >> 3], bitorder="little")[:hi - lo]
            chunk = codes[lo:hi]
            chunk[exists.astype(bool)] = 2
            where = np.flatnonzero(present)
            if not len(where):
                continue
            first = int(self._rank_prefix[lo >> 3])
            descs = self._descriptors(first, min(len(where), max(0, in_file - first)))
            states = np.full(len(where), 3, dtype=np.uint8)  # truncated unless proven ok
            if len(descs):
                ok = (descs["offset"] > 0) & \
                    (descs["offset"] + descs["size"].astype(np.int64) <= self.source.size)
                states[:len(descs)][ok] = 1
                if self.incomplete:
                    empty = (descs["offset"] == 0) & (descs["size"] == 0)
                    states[:len(descs)][empty] = 4
            chunk[where] = states
        return codes

    def _descriptors(self, first: int, count: int) -> np.ndarray:
        """`count` page descriptors from rank `first` (fewer when the file ends)."""
        raw = self.source.pread(self._desc_off + first * DESC_SIZE, count * DESC_SIZE)
        got = len(raw) // DESC_SIZE
        return np.frombuffer(raw[:got * DESC_SIZE], dtype=PAGE_DESC)

    def segments(self) -> SegmentTable:
        return from_page_codes(self.page_states(), self.page_size)

    def close(self) -> None:
        super().close()
        self._desc_blocks.clear()
        self.source.close()


__all__ = ["KdumpDump", "SIGNATURES"]
