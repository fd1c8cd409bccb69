"""The records of the lockless printk ring buffer (Linux >= 5.10) as numpy columns and one
undecoded text blob: what `Dump.log` is built from, and what the root cause searches directly.

Only VMCOREINFO offsets are used (the kernel exports them for this purpose), so the log reads
before, and without, any BTF. Descriptors, infos and the text ring are each read in one call.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..bounds import field_offset, vmcoreinfo_int
from ..errors import CorruptStructure, KdnbError

DESC_STATE_SHIFT = 62  # state in the top two bits of prb_desc.state_var
DESC_ID_MASK = (1 << DESC_STATE_SHIFT) - 1
DESC_COMMITTED, DESC_FINALIZED = 1, 2
MAX_DESC_BITS = 24  # 16 M records: anything larger is a corrupt count_bits
MAX_DATA_BITS = 31
MAX_RING_BYTES = 1 << 30  # descriptors + infos + text: log_buf_len=128M takes ~ 600 MiB
CHUNK_SLOTS = 1 << 13  # descriptors + infos read at a time: 8192 * (24 + 88) bytes on 6.1
SEQ_LIMIT = 1 << 63  # seq is the key: a record without one below this is dropped

Reader = Callable[[int, int], bytes]
U64_FIELD, U32_FIELD = 8, 4


class _Layout:
    """The VMCOREINFO offsets and sizes of the printk structures, each field checked to lie
    inside its structure (ImplausibleValue otherwise)."""

    def __init__(self, info: dict[str, str], path: str = "") -> None:
        def num(key: str, default: int | None = None) -> int:
            if key not in info and default is None:
                raise KdnbError(f"VMCOREINFO lacks {key}: the printk ring buffer cannot be "
                                "located (kernel older than 5.10?)")
            return vmcoreinfo_int(info, key, path, default)

        def inside(key: str, width: int, container: int, name: str) -> int:
            return field_offset(num(key), width, container, f"VMCOREINFO {key} (in {name} of {container} bytes)",
                                path)

        if "SYMBOL(prb)" not in info:
            raise KdnbError("VMCOREINFO lacks SYMBOL(prb): no printk ring buffer to read")
        self.prb = num("SYMBOL(prb)")
        desc_ring_size = num("SIZE(prb_desc_ring)", 48)
        data_ring_size = num("SIZE(prb_data_ring)", 32)
        rb_size = num("SIZE(printk_ringbuffer)", max(num("OFFSET(printk_ringbuffer.desc_ring)") +
                                                     desc_ring_size,
                                                     num("OFFSET(printk_ringbuffer.text_data_ring)") +
                                                     data_ring_size))
        self.rb_size = rb_size
        dr = inside("OFFSET(printk_ringbuffer.desc_ring)", desc_ring_size, rb_size, "printk_ringbuffer")
        tr = inside("OFFSET(printk_ringbuffer.text_data_ring)", data_ring_size, rb_size,
                    "printk_ringbuffer")
        self.count_bits = dr + inside("OFFSET(prb_desc_ring.count_bits)", U32_FIELD, desc_ring_size,
                                      "prb_desc_ring")
        self.descs, self.infos, self.head_id, self.tail_id = (
            dr + inside(f"OFFSET(prb_desc_ring.{f})", U64_FIELD, desc_ring_size, "prb_desc_ring")
            for f in ("descs", "infos", "head_id", "tail_id"))
        self.size_bits = tr + inside("OFFSET(prb_data_ring.size_bits)", U32_FIELD, data_ring_size,
                                     "prb_data_ring")
        self.data = tr + inside("OFFSET(prb_data_ring.data)", U64_FIELD, data_ring_size, "prb_data_ring")
        self.desc_size = num("SIZE(prb_desc)")
        lpos_size = num("SIZE(prb_data_blk_lpos)", 16)
        self.state_var = inside("OFFSET(prb_desc.state_var)", U64_FIELD, self.desc_size, "prb_desc")
        text_lpos = inside("OFFSET(prb_desc.text_blk_lpos)", lpos_size, self.desc_size, "prb_desc")
        self.lpos_begin, self.lpos_next = (
            text_lpos + inside(f"OFFSET(prb_data_blk_lpos.{f})", U64_FIELD, lpos_size, "prb_data_blk_lpos")
            for f in ("begin", "next"))
        self.info_size = num("SIZE(printk_info)")
        self.seq, self.ts = (inside(f"OFFSET(printk_info.{f})", U64_FIELD, self.info_size, "printk_info")
                             for f in ("seq", "ts_nsec"))
        # text_len (u16), facility (u8), flags:5 + level:3 (u8) are unpacked together
        self.text_len = inside("OFFSET(printk_info.text_len)", 4, self.info_size, "printk_info")
        self.caller = inside("OFFSET(printk_info.caller_id)", U32_FIELD, self.info_size, "printk_info")
        self.subsystem_len = num("LENGTH(printk_info_subsystem)")
        self.device_len = num("LENGTH(printk_info_device)")
        dev_size = num("SIZE(dev_printk_info)", self.subsystem_len + self.device_len)
        dev = inside("OFFSET(printk_info.dev_info)", dev_size, self.info_size, "printk_info")
        self.subsystem = dev + inside("OFFSET(dev_printk_info.subsystem)", self.subsystem_len, dev_size,
                                      "dev_printk_info")
        self.device = dev + inside("OFFSET(dev_printk_info.device)", self.device_len, dev_size,
                                   "dev_printk_info")


@dataclass
class LogRecords:
    """The finalized records in seq order: one numpy column per printk_info field, and each
    record's text as the undecoded bytes `blob[first[i]:last[i]]` (empty for a data-less or
    invalid block). `problems` lists what was met while reading."""

    seq: np.ndarray  # u64, ascending, each < 2^63
    ts: np.ndarray  # u64 nanoseconds
    level: np.ndarray  # u8
    facility: np.ndarray  # u8
    caller: np.ndarray  # u32
    subsystem: np.ndarray  # fixed-size bytes
    device: np.ndarray  # fixed-size bytes
    first: np.ndarray  # int64 offsets into blob
    last: np.ndarray
    blob: bytes
    problems: list[str]

    def __len__(self) -> int:
        return len(self.seq)

    def texts(self, lo: int = 0, hi: int | None = None) -> list[str]:
        """The decoded texts of records lo..hi (invalid UTF-8 replaced, as the kernel's own
        readers show it)."""
        blob = self.blob
        return [blob[a:b].decode("utf-8", "replace")
                for a, b in zip(self.first[lo:hi].tolist(), self.last[lo:hi].tolist())]


def _read(read: Reader, addr: int, size: int, what: str) -> bytes:
    data = read(addr, size)
    if len(data) != size:
        raise CorruptStructure(f"{what} at {addr:#x}: read {len(data)} of {size} bytes")
    return data


def _column(buf: bytes, offset: int, stride: int, count: int, dtype: str = "<u8") -> np.ndarray:
    """The field at `offset` of each of `count` records of `stride` bytes (any alignment)."""
    return np.ndarray((count,), dtype=dtype, buffer=buf, offset=offset, strides=(stride,))


def read_log_records(read: Reader, vmcoreinfo: dict[str, str], path: str = "") -> LogRecords:
    """Every finalized record of the ring, undecoded.

    Offsets, sizes and the ring's counts come from the dump: each is checked against the
    structure holding it and against what was read (ImplausibleValue or CorruptStructure)."""
    off = _Layout(vmcoreinfo, path)
    (prb,) = struct.unpack("<Q", _read(read, off.prb, 8, "prb"))  # prb points to the ring buffer
    ring = _read(read, prb, off.rb_size, "printk_ringbuffer")
    (count_bits,) = struct.unpack_from("<I", ring, off.count_bits)
    (size_bits,) = struct.unpack_from("<I", ring, off.size_bits)
    descs_addr, infos_addr, head_id, tail_id, data_addr = (
        struct.unpack_from("<Q", ring, o)[0] for o in (off.descs, off.infos, off.head_id, off.tail_id, off.data))
    if count_bits > MAX_DESC_BITS or size_bits > MAX_DATA_BITS or count_bits > size_bits:
        raise CorruptStructure(f"printk ring buffer at {prb:#x} is corrupt "
                               f"(count_bits {count_bits}, size_bits {size_bits})")
    count = 1 << count_bits
    data_size = 1 << size_bits
    total = count * (off.desc_size + off.info_size) + data_size
    if total > MAX_RING_BYTES:
        raise CorruptStructure(f"printk ring buffer at {prb:#x} would span {total:#x} bytes "
                               f"({count} descriptors of {off.desc_size} + {off.info_size} bytes, "
                               f"{data_size} text bytes): implausibly large")
    cols, begin, nxt = _live_records(read, off, descs_addr, infos_addr, _live_ids(head_id, tail_id, count),
                                     count)  # the descriptor and info bytes are freed by now
    first, last, bad, base, end = _spans(begin, nxt, data_size, cols["text_len"])
    problems = [f"record seq {int(cols['seq'][i])}: text block lpos {int(begin[i]):#x}-"
                f"{int(nxt[i]):#x} is invalid" for i in bad]
    blob = _read(read, data_addr + base, end - base, "printk text ring") if end > base else b""
    seq = cols["seq"]
    keep = seq < np.uint64(SEQ_LIMIT)
    order: slice | np.ndarray = slice(None)  # the ids' order is already the seqs' in a sound ring
    if not keep.all():
        problems.append(f"{int((~keep).sum())} record(s) with a seq past 2^63 dropped")
    if not keep.all() or not bool((seq[1:] >= seq[:-1]).all()):
        kept = np.flatnonzero(keep)
        order = kept[np.argsort(seq[kept], kind="stable")]
    return LogRecords(cols["seq"][order], cols["ts"][order], cols["level"][order], cols["facility"][order],
                      cols["caller"][order], cols["subsystem"][order], cols["device"][order],
                      (first[order] - base).astype(np.int64), (last[order] - base).astype(np.int64),
                      blob, problems)


def _live_records(read: Reader, off: _Layout, descs_addr: int, infos_addr: int, ids: np.ndarray,
                  count: int) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """The info columns and text lpos (begin, next) of the live records, oldest first; the
    slots are read CHUNK_SLOTS at a time and their fields copied straight into columns made
    once, so no whole descriptor or info array, and no second copy of a column, is ever held."""
    fields = _info_fields(off)
    out = {key: np.empty(len(ids), dtype) for key, (_, dtype) in fields.items()}
    out["begin"], out["next"] = np.empty(len(ids), np.uint64), np.empty(len(ids), np.uint64)
    filled = 0
    for c in range(0, len(ids), CHUNK_SLOTS):
        filled = _live_chunk(read, off, fields, descs_addr, infos_addr, ids[c:c + CHUNK_SLOTS], count,
                             out, filled)
    cols = {key: values[:filled] for key, values in out.items()}
    cols["level"] = cols["level"] >> np.uint8(5)  # the top 3 bits of the flags:5 + level:3 byte
    return cols, cols.pop("begin"), cols.pop("next")


def _info_fields(off: _Layout) -> dict[str, tuple[int, str]]:
    """The printk_info fields kept: offset and dtype of each."""
    return {"seq": (off.seq, "<u8"), "ts": (off.ts, "<u8"), "text_len": (off.text_len, "<u2"),
            "facility": (off.text_len + 2, "u1"), "level": (off.text_len + 3, "u1"),
            "caller": (off.caller, "<u4"), "subsystem": (off.subsystem, f"S{off.subsystem_len}"),
            "device": (off.device, f"S{off.device_len}")}


def _live_chunk(read: Reader, off: _Layout, fields: dict[str, tuple[int, str]], descs_addr: int,
                infos_addr: int, ids: np.ndarray, count: int, out: dict[str, np.ndarray], filled: int) -> int:
    """Copies the fields, begin and next of the live records among consecutive ids (at least
    one) into the columns `out` from row `filled`; returns the rows filled after them."""
    # only the slots of these ids are read, in two pieces when they wrap past the last slot
    # (they do from the start: the first record's id sits in the last slot); the ids are
    # consecutive, so the i-th slot read holds the i-th id
    lo, span = int(ids[0]) & (count - 1), len(ids)
    descs, infos = (b"".join(_read(read, addr + a * size, (b - a) * size, what)
                             for a, b in _slot_runs(lo, span, count))
                    for addr, size, what in ((descs_addr, off.desc_size, "printk descriptors"),
                                             (infos_addr, off.info_size, "printk infos")))
    state_var = _column(descs, off.state_var, off.desc_size, span)
    state = state_var >> np.uint64(DESC_STATE_SHIFT)
    live = ((state == DESC_COMMITTED) | (state == DESC_FINALIZED)) & \
        ((state_var & np.uint64(DESC_ID_MASK)) == (ids & np.uint64(DESC_ID_MASK)))
    at: slice | np.ndarray = slice(None) if live.all() else np.flatnonzero(live)
    rows = slice(filled, filled + (span if isinstance(at, slice) else len(at)))
    for key, (offset, dtype) in fields.items():
        out[key][rows] = _column(infos, offset, off.info_size, span, dtype)[at]
    out["begin"][rows] = _column(descs, off.lpos_begin, off.desc_size, span)[at]
    out["next"][rows] = _column(descs, off.lpos_next, off.desc_size, span)[at]
    return rows.stop


def _slot_runs(lo: int, span: int, count: int) -> list[tuple[int, int]]:
    """The ring slots lo, lo + 1, ... (span of them, modulo count) as [start, end) runs."""
    if lo + span <= count:
        return [(lo, lo + span)]
    return [(lo, count), (0, lo + span - count)]


def _live_ids(head_id: int, tail_id: int, count: int) -> np.ndarray:
    """Descriptor ids from tail to head (ids wrap at the id mask)."""
    n = (head_id - tail_id) & DESC_ID_MASK
    if n >= count:  # a corrupt head/tail: look at the newest `count` ids only
        n = count - 1
        tail_id = (head_id - n) & DESC_ID_MASK
    ids = (np.arange(n + 1, dtype=np.uint64) + np.uint64(tail_id)) & np.uint64(DESC_ID_MASK)
    return ids


def _spans(begin: np.ndarray, nxt: np.ndarray, size: int,
           text_len: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[int], int, int]:
    """Where each record's text lies in the text ring, the block arithmetic done on whole
    columns (u64 never overflows here: begin // size + 1 stands for (begin + size) // size):
    [first, last) ring offsets (an empty span at `base` for a data-less or invalid block), the
    positions of the invalid blocks, and [base, end), the span the valid blocks cover."""
    usize = np.uint64(size)
    dataless = ((begin | nxt) & np.uint64(1)).astype(bool) | (begin == nxt)
    wraps_n = nxt // usize
    same = begin // usize == wraps_n
    wrapped = ~same & (begin // usize + np.uint64(1) == wraps_n)
    length = np.where(same, nxt - begin, nxt % usize)
    invalid = ~dataless & (~(same | wrapped) | (same & (nxt < begin)) | (length < np.uint64(8)))
    first = np.where(same, begin % usize, np.uint64(0)) + np.uint64(8)
    last = np.minimum(first + np.minimum(text_len.astype(np.uint64), length - np.uint64(8)),
                      usize)  # a slice of the whole ring stopped at its end
    ok = ~dataless & ~invalid
    base = int(first[ok].min()) if ok.any() else 0
    end = max(int(last[ok].max()), base) if ok.any() else 0
    last = np.where(ok, np.maximum(last, first), np.uint64(base))
    first = np.where(ok, first, np.uint64(base))
    return first, last, np.flatnonzero(invalid).tolist(), base, end
