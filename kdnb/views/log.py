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


def _column(buf: bytes, offset: int, stride: int, count: int) -> np.ndarray:
    """The u64 field at `offset` of each of `count` records of `stride` bytes (any alignment)."""
    return np.ndarray((count,), dtype="<u8", buffer=buf, offset=offset, strides=(stride,))


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
    descs = _read(read, descs_addr, count * off.desc_size, "printk descriptors")
    infos = _read(read, infos_addr, count * off.info_size, "printk infos")
    data = _read(read, data_addr, data_size, "printk text ring")
    problems: list[str] = []

    ids = _live_ids(head_id, tail_id, count)
    idx = ids & np.uint64(count - 1)
    state_var = _column(descs, off.state_var, off.desc_size, count)[idx]
    begin = _column(descs, off.lpos_begin, off.desc_size, count)[idx]
    nxt = _column(descs, off.lpos_next, off.desc_size, count)[idx]
    state = state_var >> np.uint64(DESC_STATE_SHIFT)
    live = ((state == DESC_COMMITTED) | (state == DESC_FINALIZED)) & \
        ((state_var & np.uint64(DESC_ID_MASK)) == (ids & np.uint64(DESC_ID_MASK)))
    rows = []
    for i in np.flatnonzero(live).tolist():
        base = int(idx[i]) * off.info_size
        (seq,) = struct.unpack_from("<Q", infos, base + off.seq)
        (ts,) = struct.unpack_from("<Q", infos, base + off.ts)
        text_len, facility, flags_level = struct.unpack_from("<HBB", infos, base + off.text_len)
        (caller,) = struct.unpack_from("<I", infos, base + off.caller)
        subsystem = _cstr(infos[base + off.subsystem: base + off.subsystem + off.subsystem_len])
        device = _cstr(infos[base + off.device: base + off.device + off.device_len])
        text = _text(data, int(begin[i]), int(nxt[i]), data_size, text_len)
        if text is None:
            problems.append(f"record seq {seq}: text block lpos {int(begin[i]):#x}-"
                            f"{int(nxt[i]):#x} is invalid")
            text = ""
        rows.append((seq, ts, flags_level >> 5, facility, caller, text, subsystem, device))
    frame = _frame(rows, problems)
    nul = int(frame["text"].str.fullmatch("\0+").sum()) if len(frame) else 0
    if nul:
        problems.append(f"{nul} of {len(frame)} records have text of NUL bytes only "
                        "(the text ring read is not the kernel's)")
    return frame, problems


def _live_ids(head_id: int, tail_id: int, count: int) -> np.ndarray:
    """Descriptor ids from tail to head (ids wrap at the id mask)."""
    n = (head_id - tail_id) & DESC_ID_MASK
    if n >= count:  # a corrupt head/tail: look at the newest `count` ids only
        n = count - 1
        tail_id = (head_id - n) & DESC_ID_MASK
    ids = (np.arange(n + 1, dtype=np.uint64) + np.uint64(tail_id)) & np.uint64(DESC_ID_MASK)
    return ids


def _text(data: bytes, begin: int, nxt: int, size: int, text_len: int) -> str | None:
    """The text of one record from its logical block positions (handles wrapped blocks)."""
    if begin & 1 or nxt & 1:  # data-less record (empty line or lost text)
        return ""
    if begin == nxt:
        return ""
    wraps = begin // size
    if wraps == nxt // size:
        start, length = begin % size, nxt - begin
    elif (begin + size) // size == nxt // size:  # the block wrapped to the start of the ring
        start, length = 0, nxt % size
    else:
        return None
    length -= 8  # the block starts with the descriptor id
    if length < 0:
        return None
    raw = data[start + 8: start + 8 + min(text_len, length)]
    return raw.decode("utf-8", "replace")


def _cstr(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")


def _frame(rows: list[tuple], problems: list[str]) -> pd.DataFrame:
    kept = [r for r in rows if r[0] < 1 << 63]  # seq is the key: a record without one is dropped
    if len(kept) < len(rows):
        problems.append(f"{len(rows) - len(kept)} record(s) with a seq past 2^63 dropped")
    rows = sorted(kept, key=lambda r: r[0])
    seq, ts, level, facility, caller, text, subsystem, device = (list(c) for c in zip(*rows)) \
        if rows else ([],) * 8
    ts = _fit(ts, 1 << 63, "ts_nsec", problems)
    facility = _fit(facility, 1 << 7, "facility", problems)
    return pd.DataFrame({
        "seq": pd.array(seq, dtype="Int64"),
        "time": pd.to_timedelta(pd.array(ts, dtype="Int64"), unit="ns"),
        "level": pd.array(level, dtype="Int8"),
        "level_name": pd.Categorical([LEVEL_NAMES[lv] for lv in level], categories=LEVEL_NAMES,
                                     ordered=True),
        "facility": pd.array(facility, dtype="Int8"),
        "caller": pd.array([_caller(c) for c in caller], dtype="string"),
        "text": pd.array(text, dtype="string"),
        "subsystem": pd.array(subsystem, dtype="string"),
        "device": pd.array(device, dtype="string"),
    })


def _fit(values: list[int], limit: int, name: str, problems: list[str]) -> list[int | None]:
    """Values below `limit` (the column's dtype), the others NA and counted as a problem."""
    bad = sum(v >= limit for v in values)
    if not bad:
        return values
    problems.append(f"{bad} record(s) have a {name} too large for its column (shown as NA)")
    return [v if v < limit else None for v in values]


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
