"""Dump.log as kdnb built it at commit f3af2b8, before the log's fast paths: the oracle that
tests/test_log_identical.py holds the current build to (frame, dtypes and problems identical).

The functions the fast paths changed are kept here as they were (read_log, _text_array, _frame,
_strings, _callers, read_log_records, _live_records, _live_chunk); the ones they did not change
are imported from kdnb."""

from __future__ import annotations

import struct

import numpy as np
import pandas as pd

from kdnb.errors import CorruptStructure
from kdnb.views.log import LEVEL_NAMES, _caller, _cstr, _fit
from kdnb.views.log_records import (
    CHUNK_SLOTS,
    DESC_COMMITTED,
    DESC_FINALIZED,
    DESC_ID_MASK,
    DESC_STATE_SHIFT,
    MAX_DATA_BITS,
    MAX_DESC_BITS,
    MAX_RING_BYTES,
    SEQ_LIMIT,
    LogRecords,
    Reader,
    _column,
    _info_fields,
    _Layout,
    _live_ids,
    _read,
    _slot_runs,
    _spans,
)


def read_log(read: Reader, vmcoreinfo: dict[str, str], path: str = "") -> tuple[pd.DataFrame, list[str]]:
    """Decode every finalized record; returns the DataFrame and a list of problems met.

    Offsets, sizes and the ring's counts come from the dump: each is checked against the
    structure holding it and against what was read (ImplausibleValue or CorruptStructure)."""
    records = read_log_records(read, vmcoreinfo, path)
    problems = records.problems
    texts = _text_array(records)
    records.blob = b""  # the undecoded ring is not needed past here: free it before the frame
    frame = _frame(records, texts, problems)
    del texts
    nul = int(frame["text"].str.fullmatch("\0+").sum()) if len(frame) else 0
    if nul:
        problems.append(f"{nul} of {len(frame)} records have text of NUL bytes only "
                        "(the text ring read is not the kernel's)")
    return frame, problems


def _text_array(records: LogRecords) -> pd.api.extensions.ExtensionArray | list[str]:
    """The records' texts as one arrow string array made from the blob's bytes in one gather,
    when every record's bytes are valid UTF-8 (then decoding changes nothing); else, or when
    text blocks overlap (a corrupt ring), each record decoded with its bad bytes replaced (also
    when pandas keeps strings without pyarrow: pyarrow is optional)."""
    if pd.StringDtype().storage != "pyarrow":
        return records.texts()
    import pyarrow as pa

    first, last = records.first, records.last
    by = np.argsort(first, kind="stable")  # blob order
    lo, hi = first[by], last[by]
    filled = hi > lo
    lo_f, hi_f = lo[filled], hi[filled]
    if len(lo_f) == 0 or bool((lo_f[1:] < hi_f[:-1]).any()):
        return records.texts()
    edge = np.zeros(len(records.blob) + 1, np.int8)
    edge[lo_f] += 1  # the starts are distinct, and so are the ends: blocks do not overlap
    edge[hi_f] -= 1
    inside = np.cumsum(edge[:-1], dtype=np.int8).view(bool)
    data = np.frombuffer(records.blob, np.uint8)[inside]
    offsets = np.zeros(len(by) + 1, np.int64)
    np.cumsum(hi - lo, out=offsets[1:])
    in_blob_order = pa.LargeStringArray.from_buffers(len(by), pa.py_buffer(offsets), pa.py_buffer(data))
    try:
        in_blob_order.validate(full=True)  # UTF-8 checked value by value
    except pa.ArrowInvalid:
        return records.texts()
    seq_order = np.empty(len(by), np.int64)
    seq_order[by] = np.arange(len(by))
    return pd.arrays.ArrowStringArray(pa.chunked_array([in_blob_order.take(pa.array(seq_order))]))


def _strings(raw: np.ndarray) -> list[str]:
    """`_cstr` of each fixed-size field, decoded once per distinct value."""
    out = np.full(len(raw), "", dtype=object)
    named = np.flatnonzero(raw != b"")  # most records have no dev_info: skip the sort for them
    if len(named):
        values, inverse = np.unique(raw[named], return_inverse=True)
        out[named] = np.array([_cstr(bytes(v)) for v in values.tolist()], dtype=object)[inverse.reshape(-1)]
    return out.tolist()


def _frame(info: LogRecords, text: pd.api.extensions.ExtensionArray | list[str],
           problems: list[str]) -> pd.DataFrame:
    level = info.level
    return pd.DataFrame({
        "seq": pd.array(info.seq.astype(np.int64), dtype="Int64"),
        "time": pd.to_timedelta(_fit(info.ts, 1 << 63, "ts_nsec", problems), unit="ns"),
        "level": pd.array(level.astype(np.int8), dtype="Int8"),
        "level_name": pd.Categorical.from_codes(level.astype(np.int8), categories=LEVEL_NAMES,
                                                ordered=True),
        "facility": _fit(info.facility, 1 << 7, "facility", problems, "Int8"),
        "caller": pd.array(_callers(info.caller), dtype="string"),
        "text": pd.array(text, dtype="string"),
        "subsystem": pd.array(_strings(info.subsystem), dtype="string"),
        "device": pd.array(_strings(info.device), dtype="string"),
    })


def _callers(caller_ids: np.ndarray) -> list[str]:
    """`_caller` of each id, formatted once per distinct id."""
    values, inverse = np.unique(caller_ids, return_inverse=True)
    names = np.array([_caller(c) for c in values.tolist()], dtype=object)
    return names[inverse.reshape(-1)].tolist()


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
    keep = cols["seq"] < np.uint64(SEQ_LIMIT)
    if not keep.all():
        problems.append(f"{int((~keep).sum())} record(s) with a seq past 2^63 dropped")
    kept = np.flatnonzero(keep)
    order = kept[np.argsort(cols["seq"][kept], kind="stable")]
    return LogRecords(cols["seq"][order], cols["ts"][order], cols["level"][order], cols["facility"][order],
                      cols["caller"][order], cols["subsystem"][order], cols["device"][order],
                      (first[order] - base).astype(np.int64), (last[order] - base).astype(np.int64),
                      blob, problems)


def _live_records(read: Reader, off: _Layout, descs_addr: int, infos_addr: int, ids: np.ndarray,
                  count: int) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """The info columns and text lpos (begin, next) of the live records, oldest first; the
    slots are read CHUNK_SLOTS at a time into columns made once, so no whole descriptor or info
    array, and no second copy of a column, is ever held."""
    fields = _info_fields(off)
    out = {key: np.empty(len(ids), dtype) for key, (_, dtype) in fields.items()}
    out["begin"], out["next"] = np.empty(len(ids), np.uint64), np.empty(len(ids), np.uint64)
    filled = 0
    for c in range(0, len(ids), CHUNK_SLOTS):
        chunk = _live_chunk(read, off, fields, descs_addr, infos_addr, ids[c:c + CHUNK_SLOTS], count)
        n = len(chunk["begin"])
        for key, values in chunk.items():
            out[key][filled:filled + n] = values
        filled += n
    cols = {key: values[:filled] for key, values in out.items()}
    cols["level"] = cols["level"] >> np.uint8(5)  # the top 3 bits of the flags:5 + level:3 byte
    return cols, cols.pop("begin"), cols.pop("next")


def _live_chunk(read: Reader, off: _Layout, fields: dict[str, tuple[int, str]], descs_addr: int,
                infos_addr: int, ids: np.ndarray, count: int) -> dict[str, np.ndarray]:
    """The fields, begin and next of the live records among consecutive ids (at least one)."""
    # only the slots of these ids are read, in two pieces when they wrap past the last slot
    # (they do from the start: the first record's id sits in the last slot)
    lo, span = int(ids[0]) & (count - 1), len(ids)
    descs, infos = (b"".join(_read(read, addr + a * size, (b - a) * size, what)
                             for a, b in _slot_runs(lo, span, count))
                    for addr, size, what in ((descs_addr, off.desc_size, "printk descriptors"),
                                             (infos_addr, off.info_size, "printk infos")))
    idx = ((ids & np.uint64(count - 1)) - np.uint64(lo)) & np.uint64(count - 1)
    state_var = _column(descs, off.state_var, off.desc_size, span)[idx]
    state = state_var >> np.uint64(DESC_STATE_SHIFT)
    live = ((state == DESC_COMMITTED) | (state == DESC_FINALIZED)) & \
        ((state_var & np.uint64(DESC_ID_MASK)) == (ids & np.uint64(DESC_ID_MASK)))
    at = idx[live]  # ring slots of the live records, oldest first
    cols = {key: _column(infos, offset, off.info_size, span, dtype)[at] for key, (offset, dtype) in fields.items()}
    cols["begin"] = _column(descs, off.lpos_begin, off.desc_size, span)[at]
    cols["next"] = _column(descs, off.lpos_next, off.desc_size, span)[at]
    return cols
