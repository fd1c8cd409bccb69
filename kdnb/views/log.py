"""`Dump.log`: the kernel log from the lockless printk ring buffer (Linux >= 5.10).

The records come from kdnb.views.log_records (VMCOREINFO offsets only, so the log reads before,
and without, any BTF); this module decodes them into the DataFrame.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .log_records import LogRecords, Reader, _spans, read_log_records

LEVEL_NAMES = ["emerg", "alert", "crit", "err", "warning", "notice", "info", "debug"]
CALLER_CPU_FLAG = 0x80000000


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


def _text(data: bytes, begin: int, nxt: int, size: int, text_len: int) -> str | None:
    """The text of one record from its logical block positions (None for an invalid block)."""
    first, last, bad, _, _ = _spans(np.array([begin], dtype=np.uint64), np.array([nxt], dtype=np.uint64),
                                       size, np.array([text_len], dtype=np.uint16))
    return None if bad else data[int(first[0]):int(last[0])].decode("utf-8", "replace")


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
