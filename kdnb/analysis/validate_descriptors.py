"""kdump page descriptors checked against the way makedumpfile writes page data."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ..dump.kdump import PAGE_DESC
from .checks import Check
from .validate_context import Context

DESC_SIZE = PAGE_DESC.itemsize  # makedumpfile's page_desc_t: offset, size, flags, page_flags


def _read_descriptors(part: Any, desc_off: int, count: int) -> np.ndarray:
    """The first `count` page descriptors of a kdump file, or as many as the file holds."""
    in_file = max(0, (part.source.size - desc_off) // DESC_SIZE)
    raw = part.source.pread(desc_off, min(count, in_file) * DESC_SIZE)
    return np.frombuffer(raw[:len(raw) // DESC_SIZE * DESC_SIZE], dtype=PAGE_DESC)


def descriptors(ctx: Context) -> dict[str, Any]:
    """Page descriptors checked against the way makedumpfile writes page data: one after
    the other from the end of the descriptor table, the shared zero page once."""
    if "descriptors" in ctx.memo:
        return ctx.memo["descriptors"]
    out = {"descriptors": 0, "corrupt": 0, "truncated": 0, "missing": 0, "expected_end": 0,
           "file_size": 0, "first_bad": None}
    for part in ctx.kdump_parts():
        n = int(part.header.get("present_pages") or 0)
        fsize = part.source.size
        out["file_size"] += fsize
        if not n:
            continue
        desc_off = int(part.header.get("descriptors_offset") or 0)
        descs = _read_descriptors(part, desc_off, n)
        data_start = desc_off + DESC_SIZE * n
        offset = descs["offset"]
        size = descs["size"].astype(np.int64)
        flags = descs["flags"]
        empty = (offset == 0) & (size == 0)
        have = np.flatnonzero(~empty)
        out["descriptors"] += len(have)
        # descriptors past the end of a cut table are not read: count them as missing
        table_end = desc_off + DESC_SIZE * n
        if fsize < table_end:
            out["missing"] += n - max(0, (fsize - desc_off) // DESC_SIZE)
        o, sz, fl = offset[have], size[have], flags[have]
        bad = (sz <= 0) | (sz > part.page_size) | ((fl & ~np.uint32(0x27)) != 0) | \
            (o < data_start)
        # shared pages (the zero page) appear many times: keep their first occurrence only
        _, first_idx = np.unique(o, return_index=True)
        keep = np.zeros(len(o), dtype=bool)
        keep[first_idx] = True
        chain = np.flatnonzero(keep & ~bad)
        co, cs = o[chain].tolist(), sz[chain].tolist()
        starts = set(co)
        ends = {x + y for x, y in zip(co, cs)}
        # a descriptor whose data neither follows another page's data nor is followed by
        # one has a corrupt offset (page data is written back to back)
        brk = np.array([not (x in ends or x == data_start or x + y in starts)
                        for x, y in zip(co, cs)], dtype=bool)
        order = np.argsort(o[chain], kind="stable")
        so, ss = o[chain][order], sz[chain][order]
        gaps = np.flatnonzero(so[1:] != so[:-1] + ss[:-1]) if len(so) > 1 else np.empty(0, int)
        if len(gaps) and not brk.any():  # a size changed: blame the page before the gap
            brk[int(order[int(gaps[0])])] = True
        corrupt_idx = np.concatenate([np.flatnonzero(bad), chain[brk]])
        out["corrupt"] += len(corrupt_idx)
        good = chain[~brk]
        expected_end = data_start + int(sz[good].sum()) if len(good) else data_start
        # shared pages' data also lies in the chain (counted once via first occurrence)
        out["expected_end"] += max(expected_end, int((o[good] + sz[good]).max()) if len(good)
                                   else 0)
        past = (o[good] + sz[good]) > fsize
        out["truncated"] += int(past.sum())
        if len(corrupt_idx) and out["first_bad"] is None:
            i = int(corrupt_idx[0])
            out["first_bad"] = (f"descriptor {int(have[i])}: offset {int(o[i]):#x} size "
                                f"{int(sz[i])} flags {int(fl[i]):#x}")
    ctx.memo["descriptors"] = out
    return out


def check_format_descriptors(ctx: Context) -> Check:
    """Every kdump page descriptor points at page data inside the file."""
    if not ctx.kdump_parts():
        return Check("format.descriptors", "format", "pass",
                     "ELF dumps have no page descriptors (PT_LOADs checked instead)")
    a = descriptors(ctx)
    ev = {k: a[k] for k in ("descriptors", "corrupt", "truncated", "missing", "expected_end",
                            "file_size")}
    if a["corrupt"]:
        ev["first_bad"] = a["first_bad"]
        return Check("format.descriptors", "format", "fail",
                     f"{a['corrupt']} of {a['descriptors']} page descriptors are corrupt "
                     f"({a['first_bad']})",
                     "pages with corrupt descriptors cannot be read (or read wrong data)", ev)
    if a["missing"]:
        return Check("format.descriptors", "format", "warn",
                     f"{a['missing']} page descriptors lie beyond the end of the truncated "
                     "file (see file.truncated)", "their pages cannot be read", ev)
    return Check("format.descriptors", "format", "pass",
                 f"{a['descriptors']} page descriptors point at consecutive page data "
                 "inside the file", "", ev)


CHECKS: dict[str, Callable[[Context], Check]] = {"format.descriptors": check_format_descriptors}
