"""Helpers shared by the views: gap bookkeeping for dumps with holes, CPU masks, small reads."""

from __future__ import annotations

import struct
import warnings
from typing import TYPE_CHECKING, Any, Iterable

import pandas as pd

from ..errors import KdnbError

if TYPE_CHECKING:  # pragma: no cover
    from ..kernel.kernel import Kernel

_U64 = struct.Struct("<Q")
MAX_GAP_ADDRESSES = 1000  # keep attrs small on a badly damaged dump


class IncompleteViewWarning(UserWarning):
    """A view could not read part of what it walks (a page missing from the dump, a broken list)."""


class Gaps:
    """What a view could not read: reasons and the addresses that faulted.

    `note(what, address, exc)` records one gap; `attach(df, view)` stores them in
    `df.attrs["kdnb"]["incomplete"]` and warns once per view.
    """

    def __init__(self) -> None:
        self.reasons: list[str] = []
        self.addresses: list[int] = []

    def __bool__(self) -> bool:
        return bool(self.reasons)

    def note(self, what: str, address: int | None = None, exc: BaseException | None = None) -> None:
        """Record that `what` (e.g. "task_struct at 0x...") could not be read, and why."""
        text = what if exc is None else f"{what}: {exc}"
        if len(self.reasons) < MAX_GAP_ADDRESSES:
            self.reasons.append(text)
        if address is not None and len(self.addresses) < MAX_GAP_ADDRESSES:
            fault = getattr(exc, "vaddr", None)
            self.addresses.append(int(fault if fault is not None else address))

    def attach(self, df: pd.DataFrame, view: str) -> pd.DataFrame:
        """Mark `df` incomplete (attrs) and warn once when anything was missed."""
        if not self:
            return df
        info = {"reason": f"{view}: {len(self.reasons)} unreadable structure(s); first: {self.reasons[0]}",
                "problems": list(self.reasons), "addresses": list(self.addresses)}
        df.attrs["kdnb"] = {**df.attrs.get("kdnb", {}), "incomplete": info}
        warnings.warn(f"{view} is incomplete: {info['reason']} (see df.attrs['kdnb']['incomplete'])",
                      IncompleteViewWarning, stacklevel=3)
        return df


def read_or_none(kernel: "Kernel", address: int, size: int, gaps: Gaps | None, what: str) -> bytes | None:
    """`kernel.read`, or None (and a gap noted) when the memory is not in the dump."""
    try:
        return kernel.read(address, size)
    except KdnbError as exc:
        if gaps is not None:
            gaps.note(f"{what} at {address:#x}", address, exc)
        return None


def read_u64(kernel: "Kernel", address: int) -> int:
    return _U64.unpack(kernel.read(address, 8))[0]


def cpumask(kernel: "Kernel", symbol: str) -> list[int]:
    """CPU numbers set in a global `struct cpumask` (`__cpu_online_mask`, ...)."""
    n = kernel.nr_cpu_ids
    raw = kernel.read(kernel.symbol(symbol), ((n + 63) // 64) * 8)
    bits = int.from_bytes(raw, "little")
    return [cpu for cpu in range(n) if bits >> cpu & 1]


def online_cpus(kernel: "Kernel") -> list[int]:
    """Online CPUs, or every possible CPU id when the mask is unreadable."""
    try:
        cpus = cpumask(kernel, "__cpu_online_mask")
        if cpus:
            return cpus
    except KdnbError:
        pass
    return list(range(kernel.nr_cpu_ids))


def enum_values(kernel: "Kernel", enum: str) -> dict[str, int]:
    """Enumerators of a BTF enum by name."""
    return {e.name: e.value for e in kernel.type(enum).strip().enumerators}


# The kernel's taint_flags[] order (kernel/panic.c): bit i is TAINT_FLAGS[i]; bit 0 unset is 'G'.
TAINT_LETTERS = "PFSRMBUDAWCIOELKXTN"


def taint_letters(mask: int) -> str:
    """Letters of the set taint bits, in kernel order ("OE"); "" when untainted."""
    return "".join(c for i, c in enumerate(TAINT_LETTERS) if mask >> i & 1)


def uint64(values: Iterable[int | None]) -> pd.arrays.IntegerArray:
    return pd.array(list(values), dtype="UInt64")


_RANGES = {f"{u}Int{b}": ((0, (1 << b) - 1) if u else (-(1 << (b - 1)), (1 << (b - 1)) - 1))
           for u in ("", "U") for b in (8, 16, 32, 64)}


def fitting(values: Iterable[Any], dtype: str, column: str, gaps: Gaps | None = None) -> pd.arrays.IntegerArray:
    """`pd.array(values, dtype)` for a nullable integer dtype, where a value read from the dump
    that does not fit (a corrupt field) becomes NA and is noted in `gaps`, not fatal."""
    vals = list(values)
    try:
        return pd.array(vals, dtype=dtype)
    except (TypeError, ValueError, OverflowError):
        pass
    lo, hi = _RANGES[dtype]
    out: list[int | None] = []
    for v in vals:
        try:
            iv = None if v is None else int(v)
        except (TypeError, ValueError):
            iv = lo - 1
        out.append(iv if iv is None or lo <= iv <= hi else None)
    bad = sum(1 for v, o in zip(vals, out) if v is not None and o is None)
    if gaps is not None:
        gaps.note(f"{column}: {bad} value(s) that do not fit {dtype} read as NA")
    return pd.array(out, dtype=dtype)
