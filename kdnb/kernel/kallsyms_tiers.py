"""Which kallsyms tables to decode, tier by tier, and the on-disk cache of the result.

Tier 1: the tables VMCOREINFO names; tier 2: a scan of the kernel image (VMCOREINFO names none);
tier 3: the same scan when there was no VMCOREINFO and the image was located from CR3 (the
decoded `linux_banner` must then hold the banner). Each result says how it was found and verified.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from ..errors import KdnbError
from . import kallsyms, kallsyms_scan
from .discover import banner_check

Reader = Callable[[int, int], bytes]
METHODS = {1: "kallsyms tables named by VMCOREINFO",
           2: "kallsyms tables found by scanning the kernel image",
           3: "no VMCOREINFO: kernel image located from CR3, kallsyms tables found by scanning it"}


def source(tier: int, tables: kallsyms.Tables, raw: kallsyms.RawSymbols, cached: bool) -> dict[str, Any]:
    """The `Kernel.symbol_source` record of a decoded table."""
    return {"tier": tier, "method": METHODS[tier], "encoding": raw.encoding,
            "verified": list(raw.verified), "cached": cached,
            "tables": {k: v for k, v in vars(tables).items() if v is not None}}


def from_cache(read: Reader, vmcoreinfo: dict[str, str], release: str,
               cached: dict[str, np.ndarray]) -> tuple[kallsyms.RawSymbols, dict[str, Any]] | None:
    """Names (and the tables' place) from the on-disk cache, re-checked against the dump;
    None when absent or not this kernel."""
    names_blob, where = cached.get("kallsyms_names"), cached.get("kallsyms_tables")
    if names_blob is None or where is None:
        return None
    expected = kallsyms.expected_symbols(vmcoreinfo)
    try:
        names = names_blob.tobytes().decode("utf-8").split("\n")
        types = cached["kallsyms_types"].tobytes()
        tier = int(cached["kallsyms_tier"])
        tables = kallsyms.Tables.from_relative(list(where), expected["_stext"])
        addresses, encoding, verified = kallsyms.read_addresses(read, tables, names, expected)
    except (KdnbError, KeyError, ValueError, UnicodeDecodeError):
        return None
    raw = kallsyms.RawSymbols(names, addresses, types, encoding, verified)
    if tier == 3:  # re-check what the discovery verified besides _stext
        extra = banner_check(read, release)(raw)
        if extra is None:
            return None
        raw.verified = (*verified, extra)
    return raw, source(tier, tables, raw, cached=True)


def decode(read: Reader, vmcoreinfo: dict[str, str], release: str,
           path: str) -> tuple[kallsyms.RawSymbols, dict[str, Any], dict[str, np.ndarray]]:
    """Decode through the first tier that applies: the symbols, their source record and the
    arrays to cache."""
    expected = kallsyms.expected_symbols(vmcoreinfo)
    tables = kallsyms.tables_from_vmcoreinfo(vmcoreinfo, path)
    if tables is not None:
        tier, raw = 1, kallsyms.decode(read, tables, expected, path)
    else:
        tier, end, check = 2, None, None
        if "KDNB(discovered)" in vmcoreinfo:
            tier, end = 3, int(vmcoreinfo["KDNB(image_end)"], 16)
            check = banner_check(read, release)
        tables, raw = kallsyms_scan.find(read, expected, path, end, check)
    arrays = {"kallsyms_names": np.frombuffer("\n".join(raw.names).encode("utf-8"), np.uint8),
              "kallsyms_types": np.frombuffer(raw.types, np.uint8),
              "kallsyms_tier": np.array(tier),
              "kallsyms_tables": np.array(tables.relative_to(expected["_stext"]), np.int64)}
    return raw, source(tier, tables, raw, cached=False), arrays
