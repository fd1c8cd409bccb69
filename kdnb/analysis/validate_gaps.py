"""What a view recorded about the parts it could not read, sorted for validation.

A view lists its gaps in `df.attrs["kdnb"]["incomplete"]` (reasons and faulting addresses, see
kdnb.views.common.Gaps) and its list walks in `df.attrs["kdnb"]["walk"]`. A gap is either
*missing memory* (the page is not in the dump: filtered, truncated, lost, corrupt page data),
which says something about the capture, or *structural* (a cycle, a NULL or wild pointer, a
list that ends early), which says the kernel data itself is damaged.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from ..errors import KdnbError

MISSING_MARK = "is not in the dump"  # PageNotInDump's message (kdnb.errors)
_PADDR = re.compile(r"physical address (0x[0-9a-f]+) " + MISSING_MARK)
_CORRUPT_PAGE = re.compile(r"\bpfn 0x[0-9a-f]+\b")  # CorruptDump messages of the page readers
MAX_SHOWN = 8


def gap_kind(text: str) -> str:
    """`excluded`, `truncated`, `lost`, `hole`, `corrupt` or `missing` for memory the dump lacks;
    `structure` for a gap in the kernel's own data (cycle, NULL or wild pointer)."""
    if MISSING_MARK in text:
        tail = text[text.index(MISSING_MARK):]
        for kind in ("excluded", "truncated", "lost", "hole"):
            if kind in tail:
                return kind
        if "beyond the end" in tail:
            return "truncated"
        if "empty" in tail:
            return "lost"
        return "missing"
    if _CORRUPT_PAGE.search(text):
        return "corrupt"
    return "structure"


def error_kind(exc: BaseException) -> str:
    """gap_kind of an exception a view or reader raised."""
    return gap_kind(str(exc))


@dataclass
class ViewFindings:
    """A view's DataFrame (or the KdnbError it raised) and its gaps, split by kind."""

    name: str
    df: pd.DataFrame | None
    error: KdnbError | None
    problems: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    structural: list[str] = field(default_factory=list)
    addresses: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        info = self.attrs.get("incomplete") or {}
        self.problems = [str(p) for p in info.get("problems", [])]
        self.addresses = [int(a) for a in info.get("addresses", [])]
        for p in self.problems:
            (self.structural if gap_kind(p) == "structure" else self.missing).append(p)

    @property
    def attrs(self) -> dict[str, Any]:
        """`df.attrs["kdnb"]` ({} when the view failed)."""
        return dict(self.df.attrs.get("kdnb", {})) if self.df is not None else {}

    @property
    def walk(self) -> dict[str, Any]:
        """What the view's list walk recorded (`attrs["kdnb"]["walk"]`)."""
        return dict(self.attrs.get("walk") or {})

    @property
    def rows(self) -> int:
        """Rows the view produced (0 when it failed)."""
        return len(self.df) if self.df is not None else 0

    def kinds(self) -> dict[str, int]:
        """How many missing-memory gaps of each kind."""
        out: dict[str, int] = {}
        for p in self.missing:
            kind = gap_kind(p)
            out[kind] = out.get(kind, 0) + 1
        return out


def physical_addresses(problems: list[str]) -> list[str]:
    """The physical addresses named by the first missing-memory gaps (PageNotInDump messages)."""
    out: list[str] = []
    for p in problems:
        m = _PADDR.search(p)
        if m and m.group(1) not in out:
            out.append(m.group(1))
            if len(out) == MAX_SHOWN:
                break
    return out
