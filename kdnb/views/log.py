"""`Dump.log`: the kernel log from the lockless printk ring buffer (Linux >= 5.10).

Only VMCOREINFO offsets are used (the kernel exports them for this purpose), so the log reads
before, and without, any BTF. Descriptors, infos and the text ring are each read in one call.
"""

from __future__ import annotations

import struct
from typing import Callable

import numpy as np
import pandas as pd

from ..bounds import field_offset, vmcoreinfo_int
from ..errors import CorruptStructure, KdnbError

LEVEL_NAMES = ["emerg", "alert", "crit", "err", "warning", "notice", "info", "debug"]
DESC_STATE_SHIFT = 62  # state in the top two bits of prb_desc.state_var
DESC_ID_MASK = (1 << DESC_STATE_SHIFT) - 1
DESC_COMMITTED, DESC_FINALIZED = 1, 2
CALLER_CPU_FLAG = 0x80000000
MAX_DESC_BITS = 24  # 16 M records: anything larger is a corrupt count_bits
MAX_DATA_BITS = 31
MAX_RING_BYTES = 1 << 30  # descriptors + infos + text: log_buf_len=128M takes ~ 600 MiB

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


def _read(read: Reader, addr: int, size: int, what: str) -> bytes:
    data = read(addr, size)
    if len(data) != size:
        raise CorruptStructure(f"{what} at {addr:#x}: read {len(data)} of {size} bytes")
    return data


def _column(buf: bytes, offset: int, stride: int, count: int, dtype: str = "<u8") -> np.ndarray:
    """The field at `offset` of each of `count` records of `stride` bytes (any alignment)."""
    return np.ndarray((count,), dtype=dtype, buffer=buf, offset=offset, strides=(stride,))


def read_log(read: Reader, vmcoreinfo: dict[str, str], path: str = "") -> tuple[pd.DataFrame, list[str]]:
    """Decode every finalized record; returns the DataFrame and a list of problems met.

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
    ids = _live_ids(head_id, tail_id, count)
    # only the slots from tail to head are read, in two pieces when they wrap past the last slot
    # (they do from the start: the first record's id sits in the last slot)
    lo, span = int(ids[0]) & (count - 1), len(ids)
    descs, infos = (b"".join(_read(read, addr + a * size, (b - a) * size, what)
                             for a, b in _slot_runs(lo, span, count))
                    for addr, size, what in ((descs_addr, off.desc_size, "printk descriptors"),
                                             (infos_addr, off.info_size, "printk infos")))
    problems: list[str] = []

    idx = ((ids & np.uint64(count - 1)) - np.uint64(lo)) & np.uint64(count - 1)
    count = span
    state_var = _column(descs, off.state_var, off.desc_size, count)[idx]
    state = state_var >> np.uint64(DESC_STATE_SHIFT)
    live = ((state == DESC_COMMITTED) | (state == DESC_FINALIZED)) & \
        ((state_var & np.uint64(DESC_ID_MASK)) == (ids & np.uint64(DESC_ID_MASK)))
    at = idx[live]  # ring slots of the live records, oldest first
    begin = _column(descs, off.lpos_begin, off.desc_size, count)[at]
    nxt = _column(descs, off.lpos_next, off.desc_size, count)[at]
    infos_at = _InfoColumns(infos, off, count, at)
    texts, bad = _texts(lambda a, b: _read(read, data_addr + a, b - a, "printk text ring"),
                        begin, nxt, data_size, infos_at.text_len)
    problems = [f"record seq {int(infos_at.seq[i])}: text block lpos {int(begin[i]):#x}-"
                f"{int(nxt[i]):#x} is invalid" for i in bad]
    frame = _frame(infos_at, texts, problems)
    nul = int(frame["text"].str.fullmatch("\0+").sum()) if len(frame) else 0
    if nul:
        problems.append(f"{nul} of {len(frame)} records have text of NUL bytes only "
                        "(the text ring read is not the kernel's)")
    return frame, problems


class _InfoColumns:
    """The printk_info fields of the records in ring slots `at`, one numpy column each."""

    def __init__(self, infos: bytes, off: _Layout, count: int, at: np.ndarray) -> None:
        def col(offset: int, dtype: str) -> np.ndarray:
            return _column(infos, offset, off.info_size, count, dtype)[at]

        self.seq = col(off.seq, "<u8")
        self.ts = col(off.ts, "<u8")
        self.text_len = col(off.text_len, "<u2")
        self.facility = col(off.text_len + 2, "u1")
        self.level = col(off.text_len + 3, "u1") >> np.uint8(5)
        self.caller = col(off.caller, "<u4")
        self.subsystem = col(off.subsystem, f"S{off.subsystem_len}")
        self.device = col(off.device, f"S{off.device_len}")


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


def _texts(fetch: Callable[[int, int], bytes], begin: np.ndarray, nxt: np.ndarray, size: int,
           text_len: np.ndarray) -> tuple[list[str], list[int]]:
    """`_text` of every record, the block arithmetic done on whole columns (u64 never
    overflows here: begin // size + 1 stands for (begin + size) // size); returns the texts
    ("" for an invalid block) and the positions of the invalid ones. `fetch(a, b)` gives bytes
    a..b of the text ring: it is called once, for the span the valid blocks cover."""
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
    data = fetch(base, max(int(last[ok].max()), base)) if ok.any() else b""
    first = np.where(ok, first - np.uint64(base), 0)
    last = np.where(ok, np.maximum(last, first + np.uint64(base)) - np.uint64(base), 0)
    texts = [data[a:b].decode("utf-8", "replace") for a, b in zip(first.tolist(), last.tolist())]
    return texts, np.flatnonzero(invalid).tolist()


def _text(data: bytes, begin: int, nxt: int, size: int, text_len: int) -> str | None:
    """The text of one record from its logical block positions (None for an invalid block)."""
    texts, bad = _texts(lambda a, b: data[a:b], np.array([begin], dtype=np.uint64),
                        np.array([nxt], dtype=np.uint64), size, np.array([text_len], dtype=np.uint16))
    return None if bad else texts[0]


def _strings(raw: np.ndarray) -> list[str]:
    """`_cstr` of each fixed-size field, decoded once per distinct value."""
    out = np.full(len(raw), "", dtype=object)
    named = np.flatnonzero(raw != b"")  # most records have no dev_info: skip the sort for them
    if len(named):
        values, inverse = np.unique(raw[named], return_inverse=True)
        out[named] = np.array([_cstr(bytes(v)) for v in values.tolist()], dtype=object)[inverse.reshape(-1)]
    return out.tolist()


def _cstr(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")


def _frame(info: _InfoColumns, texts: list[str], problems: list[str]) -> pd.DataFrame:
    keep = info.seq < np.uint64(1 << 63)  # seq is the key: a record without one is dropped
    if not keep.all():
        problems.append(f"{int((~keep).sum())} record(s) with a seq past 2^63 dropped")
    kept = np.flatnonzero(keep)
    order = kept[np.argsort(info.seq[kept], kind="stable")]
    text = [texts[i] for i in order.tolist()]
    seq, ts, facility = info.seq[order], info.ts[order], info.facility[order]
    level = info.level[order]
    return pd.DataFrame({
        "seq": pd.array(seq.astype(np.int64), dtype="Int64"),
        "time": pd.to_timedelta(_fit(ts, 1 << 63, "ts_nsec", problems), unit="ns"),
        "level": pd.array(level.astype(np.int8), dtype="Int8"),
        "level_name": pd.Categorical.from_codes(level.astype(np.int8), categories=LEVEL_NAMES,
                                                ordered=True),
        "facility": _fit(facility, 1 << 7, "facility", problems, "Int8"),
        "caller": pd.array(_callers(info.caller[order]), dtype="string"),
        "text": pd.array(text, dtype="string"),
        "subsystem": pd.array(_strings(info.subsystem[order]), dtype="string"),
        "device": pd.array(_strings(info.device[order]), dtype="string"),
    })


def _fit(values: np.ndarray, limit: int, name: str, problems: list[str],
         dtype: str = "Int64") -> pd.api.extensions.ExtensionArray:
    """Values below `limit` (the column's dtype), the others NA and counted as a problem."""
    over = values >= np.uint64(limit) if values.dtype == np.uint64 else values >= limit
    bad = int(over.sum())
    if bad:
        problems.append(f"{bad} record(s) have a {name} too large for its column (shown as NA)")
    numpy_dtype = np.int64 if dtype == "Int64" else np.int8
    return pd.arrays.IntegerArray(np.where(over, 0, values).astype(numpy_dtype), over)


def _callers(caller_ids: np.ndarray) -> list[str]:
    """`_caller` of each id, formatted once per distinct id."""
    values, inverse = np.unique(caller_ids, return_inverse=True)
    names = np.array([_caller(c) for c in values.tolist()], dtype=object)
    return names[inverse.reshape(-1)].tolist()


def _caller(caller_id: int) -> str:
    if caller_id & CALLER_CPU_FLAG:
        return f"C{caller_id & ~CALLER_CPU_FLAG}"
    return f"T{caller_id}"


def format_dmesg(log: pd.DataFrame, caller: bool = False) -> list[str]:
    """The log as makedumpfile --dump-dmesg prints it: `[seconds.micros] text`, continuation
    lines of a multi-line record indented under the first; `caller=True` adds the caller id
    (`[    T257] `) as makedumpfile 1.7.8 does."""
    lines = []
    for t, text, who in zip(log["time"], log["text"], log["caller"]):
        us = t.value // 1000
        prefix = f"[{us // 1_000_000:5d}.{us % 1_000_000:06d}] " + (f"[{who:>8}] " if caller else "")
        first, *rest = str(text).split("\n")
        lines.append(prefix + first)
        lines.extend(" " * len(prefix) + part for part in rest)
    return lines
