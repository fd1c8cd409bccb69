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
    nul_free = _nul_free(texts)
    records.blob = b""  # the undecoded ring is not needed past here: free it before the frame
    frame = _frame(records, texts, problems)
    del texts
    nul = 0 if nul_free or not len(frame) else int(frame["text"].str.fullmatch("\0+").sum())
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
    in_order = bool((first[1:] >= first[:-1]).all())  # the ring has not wrapped since the oldest record
    by = np.arange(len(first)) if in_order else np.argsort(first, kind="stable")  # blob order
    lo, hi = (first, last) if in_order else (first[by], last[by])
    filled = hi > lo
    lo_f, hi_f = lo[filled], hi[filled]
    if len(lo_f) == 0 or bool((lo_f[1:] < hi_f[:-1]).any()):
        return records.texts()
    data = _gather(records.blob, lo_f, hi_f)
    offsets = np.zeros(len(by) + 1, np.int64)
    np.cumsum(hi - lo, out=offsets[1:])
    in_blob_order = pa.LargeStringArray.from_buffers(len(by), pa.py_buffer(offsets), pa.py_buffer(data))
    try:
        in_blob_order.validate(full=True)  # UTF-8 checked value by value
    except pa.ArrowInvalid:
        return records.texts()
    if not in_order:
        seq_order = np.empty(len(by), np.int64)
        seq_order[by] = np.arange(len(by))
        in_blob_order = in_blob_order.take(pa.array(seq_order))
    return pd.arrays.ArrowStringArray(pa.chunked_array([in_blob_order]))


def _gather(blob: bytes, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """The bytes blob[lo[i]:hi[i]] of every span, concatenated: the spans are sorted, non-empty
    and do not overlap, so a mask of alternating runs (span, gap to the next, ...) picks them
    (arrow's filter is about twice as fast as numpy's boolean indexing here)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    runs = np.empty(2 * len(lo), np.int64)
    runs[0::2] = hi - lo
    runs[1::2] = np.append(lo[1:], len(blob)) - hi
    picked = np.zeros(2 * len(lo), bool)
    picked[0::2] = True
    mask = np.packbits(np.repeat(picked, runs), bitorder="little")
    start = int(lo[0])
    values = pa.py_buffer(memoryview(blob)[start:])
    kept = pc.filter(pa.Array.from_buffers(pa.uint8(), len(blob) - start, [None, values]),
                     pa.Array.from_buffers(pa.bool_(), len(blob) - start, [None, pa.py_buffer(mask)]))
    return np.frombuffer(kept.buffers()[1], np.uint8, len(kept), kept.offset)


def _nul_free(texts: pd.api.extensions.ExtensionArray | list[str]) -> bool:
    """Whether no text holds a NUL byte, read off the arrow array's value bytes (False when the
    texts are Python strings: not known without a pass over them)."""
    if not isinstance(texts, pd.arrays.ArrowStringArray):
        return False
    import pyarrow as pa

    for chunk in texts.__arrow_array__().chunks:
        offsets, data = chunk.buffers()[1:3]
        if data is None:
            continue
        width = np.int64 if pa.types.is_large_string(chunk.type) else np.int32
        lo, hi = np.frombuffer(offsets, width)[[chunk.offset, chunk.offset + len(chunk)]]
        values = np.frombuffer(data, np.uint8)[lo:hi]
        if np.count_nonzero(values) != len(values):
            return False
    return True


def _text(data: bytes, begin: int, nxt: int, size: int, text_len: int) -> str | None:
    """The text of one record from its logical block positions (None for an invalid block)."""
    first, last, bad, _, _ = _spans(np.array([begin], dtype=np.uint64), np.array([nxt], dtype=np.uint64),
                                       size, np.array([text_len], dtype=np.uint16))
    return None if bad else data[int(first[0]):int(last[0])].decode("utf-8", "replace")


def _strings(raw: np.ndarray) -> pd.api.extensions.ExtensionArray:
    """`_cstr` of each fixed-size field, decoded once per distinct value."""
    codes = np.zeros(len(raw), np.int64)
    names = [""]
    # most records have no dev_info: skip the sort for them (a field whose first byte is NUL is "")
    named = np.flatnonzero(_first_bytes(raw)) if raw.dtype.itemsize else np.zeros(0, np.intp)
    if len(named):
        values, inverse = np.unique(raw[named], return_inverse=True)
        names += [_cstr(bytes(v)) for v in values.tolist()]
        codes[named] = inverse.reshape(-1) + 1
    return _string_column(names, codes)


def _first_bytes(raw: np.ndarray) -> np.ndarray:
    """The first byte of each fixed-size field (of at least one byte)."""
    return np.ascontiguousarray(raw).view(np.uint8).reshape(len(raw), raw.dtype.itemsize)[:, 0]


def _string_column(names: list[str], codes: np.ndarray) -> pd.api.extensions.ExtensionArray:
    """The "string" array of names[codes[i]]: one arrow take, no Python str per row, when
    pandas keeps strings in pyarrow."""
    if pd.StringDtype().storage != "pyarrow":
        return pd.array(np.array(names, dtype=object)[codes].tolist(), dtype="string")
    import pyarrow as pa

    table = pa.array(names, type=pa.large_string())
    return pd.arrays.ArrowStringArray(pa.chunked_array([table.take(pa.array(codes))]))


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
        "caller": _callers(info.caller),
        "text": pd.array(text, dtype="string"),
        "subsystem": _strings(info.subsystem),
        "device": _strings(info.device),
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


def _callers(caller_ids: np.ndarray) -> pd.api.extensions.ExtensionArray:
    """`_caller` of each id, formatted once per distinct id."""
    codes, values = pd.factorize(caller_ids)
    return _string_column([_caller(c) for c in values.tolist()], codes)


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
