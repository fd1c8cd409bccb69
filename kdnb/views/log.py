"""`Dump.log`: the kernel log from the lockless printk ring buffer (Linux >= 5.10).

Only VMCOREINFO offsets are used (the kernel exports them for this purpose), so the log reads
before, and without, any BTF. Descriptors, infos and the text ring are each read in one call.
"""

from __future__ import annotations

import struct
from typing import Callable

import numpy as np
import pandas as pd

from ..errors import CorruptStructure, KdnbError

LEVEL_NAMES = ["emerg", "alert", "crit", "err", "warning", "notice", "info", "debug"]
DESC_STATE_SHIFT = 62  # state in the top two bits of prb_desc.state_var
DESC_ID_MASK = (1 << DESC_STATE_SHIFT) - 1
DESC_COMMITTED, DESC_FINALIZED = 1, 2
CALLER_CPU_FLAG = 0x80000000
MAX_DESC_BITS = 24  # 16 M records: anything larger is a corrupt count_bits
MAX_DATA_BITS = 31

Reader = Callable[[int, int], bytes]


class _Offsets:
    """The VMCOREINFO offsets of the printk structures."""

    def __init__(self, info: dict[str, str]) -> None:
        def num(key: str) -> int:
            try:
                return int(info[key], 10)
            except KeyError:
                raise KdnbError(f"VMCOREINFO lacks {key}: the printk ring buffer cannot be "
                                "located (kernel older than 5.10?)") from None

        self.prb = int(info["SYMBOL(prb)"], 16) if "SYMBOL(prb)" in info else None
        self.desc_ring = num("OFFSET(printk_ringbuffer.desc_ring)")
        self.text_ring = num("OFFSET(printk_ringbuffer.text_data_ring)")
        self.count_bits = num("OFFSET(prb_desc_ring.count_bits)")
        self.descs = num("OFFSET(prb_desc_ring.descs)")
        self.infos = num("OFFSET(prb_desc_ring.infos)")
        self.head_id = num("OFFSET(prb_desc_ring.head_id)")
        self.tail_id = num("OFFSET(prb_desc_ring.tail_id)")
        self.desc_size = num("SIZE(prb_desc)")
        self.state_var = num("OFFSET(prb_desc.state_var)")
        self.text_lpos = num("OFFSET(prb_desc.text_blk_lpos)")
        self.lpos_begin = num("OFFSET(prb_data_blk_lpos.begin)")
        self.lpos_next = num("OFFSET(prb_data_blk_lpos.next)")
        self.info_size = num("SIZE(printk_info)")
        self.seq = num("OFFSET(printk_info.seq)")
        self.ts = num("OFFSET(printk_info.ts_nsec)")
        self.text_len = num("OFFSET(printk_info.text_len)")
        self.caller = num("OFFSET(printk_info.caller_id)")
        self.dev_info = num("OFFSET(printk_info.dev_info)")
        self.subsystem = num("OFFSET(dev_printk_info.subsystem)")
        self.subsystem_len = num("LENGTH(printk_info_subsystem)")
        self.device = num("OFFSET(dev_printk_info.device)")
        self.device_len = num("LENGTH(printk_info_device)")
        self.size_bits = num("OFFSET(prb_data_ring.size_bits)")
        self.data = num("OFFSET(prb_data_ring.data)")


def read_log(read: Reader, vmcoreinfo: dict[str, str]) -> tuple[pd.DataFrame, list[str]]:
    """Decode every finalized record; returns the DataFrame and a list of problems met."""
    off = _Offsets(vmcoreinfo)
    if off.prb is None:
        raise KdnbError("VMCOREINFO lacks SYMBOL(prb): no printk ring buffer to read")
    (prb,) = struct.unpack("<Q", read(off.prb, 8))  # prb is a pointer to the ring buffer
    ring = read(prb, max(off.desc_ring, off.text_ring) + 64)
    dr = off.desc_ring
    count_bits = struct.unpack_from("<I", ring, dr + off.count_bits)[0]
    descs_addr, infos_addr = (struct.unpack_from("<Q", ring, dr + o)[0] for o in (off.descs, off.infos))
    head_id, tail_id = (struct.unpack_from("<Q", ring, dr + o)[0] for o in (off.head_id, off.tail_id))
    tr = off.text_ring
    size_bits = struct.unpack_from("<I", ring, tr + off.size_bits)[0]
    data_addr = struct.unpack_from("<Q", ring, tr + off.data)[0]
    if count_bits > MAX_DESC_BITS or size_bits > MAX_DATA_BITS:
        raise CorruptStructure(f"printk ring buffer at {prb:#x} is corrupt "
                               f"(count_bits {count_bits}, size_bits {size_bits})")
    count = 1 << count_bits
    data_size = 1 << size_bits
    descs = read(descs_addr, count * off.desc_size)
    infos = read(infos_addr, count * off.info_size)
    data = read(data_addr, data_size)
    problems: list[str] = []

    ids = _live_ids(head_id, tail_id, count)
    idx = ids & (count - 1)
    d = np.frombuffer(descs, dtype=np.uint64).reshape(count, off.desc_size // 8)
    state_var = d[idx, off.state_var // 8]
    begin = d[idx, (off.text_lpos + off.lpos_begin) // 8]
    nxt = d[idx, (off.text_lpos + off.lpos_next) // 8]
    state = state_var >> np.uint64(DESC_STATE_SHIFT)
    live = ((state == DESC_COMMITTED) | (state == DESC_FINALIZED)) & \
        ((state_var & np.uint64(DESC_ID_MASK)) == (ids & np.uint64(DESC_ID_MASK)))
    rows = []
    for i in np.flatnonzero(live).tolist():
        base = int(idx[i]) * off.info_size
        seq, ts = struct.unpack_from("<QQ", infos, base + off.seq)[0], \
            struct.unpack_from("<Q", infos, base + off.ts)[0]
        text_len, facility, flags_level = struct.unpack_from("<HBB", infos, base + off.text_len)
        caller = struct.unpack_from("<I", infos, base + off.caller)[0]
        dev = base + off.dev_info
        subsystem = _cstr(infos[dev + off.subsystem: dev + off.subsystem + off.subsystem_len])
        device = _cstr(infos[dev + off.device: dev + off.device + off.device_len])
        text = _text(data, int(begin[i]), int(nxt[i]), data_size, text_len)
        if text is None:
            problems.append(f"record seq {seq}: text block lpos {int(begin[i]):#x}-"
                            f"{int(nxt[i]):#x} is invalid")
            text = ""
        rows.append((seq, ts, flags_level >> 5, facility, caller, text, subsystem, device))
    return _frame(rows), problems


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


def _frame(rows: list[tuple]) -> pd.DataFrame:
    rows.sort(key=lambda r: r[0])
    seq, ts, level, facility, caller, text, subsystem, device = (list(c) for c in zip(*rows)) \
        if rows else ([],) * 8
    return pd.DataFrame({
        "seq": pd.array(seq, dtype="Int64"),
        "time": pd.to_timedelta(np.asarray(ts, dtype=np.int64), unit="ns"),
        "level": pd.array(level, dtype="Int8"),
        "level_name": pd.Categorical([LEVEL_NAMES[lv] for lv in level], categories=LEVEL_NAMES,
                                     ordered=True),
        "facility": pd.array(facility, dtype="Int8"),
        "caller": pd.array([_caller(c) for c in caller], dtype="string"),
        "text": pd.array(text, dtype="string"),
        "subsystem": pd.array(subsystem, dtype="string"),
        "device": pd.array(device, dtype="string"),
    })


def _caller(caller_id: int) -> str:
    if caller_id & CALLER_CPU_FLAG:
        return f"C{caller_id & ~CALLER_CPU_FLAG}"
    return f"T{caller_id}"


def format_dmesg(log: pd.DataFrame) -> list[str]:
    """The log as makedumpfile --dump-dmesg prints it: `[seconds.micros] text`, continuation
    lines of a multi-line record indented under the first."""
    lines = []
    for t, text in zip(log["time"], log["text"]):
        us = t.value // 1000
        prefix = f"[{us // 1_000_000:5d}.{us % 1_000_000:06d}] "
        first, *rest = str(text).split("\n")
        lines.append(prefix + first)
        lines.extend(" " * len(prefix) + part for part in rest)
    return lines
