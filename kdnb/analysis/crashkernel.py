"""`crashkernel=` values in every syntax the kernel accepts (size, size@offset, RAM ranges,
high/low), parsed the way the kernel's memparse and parse_crashkernel read them."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40, "P": 1 << 50,
               "E": 1 << 60}


class CrashkernelError(ValueError):
    """A crashkernel= value the kernel would not accept."""


def parse_size(text: str) -> int:
    """`256M`, `0x1000000`, `1G`, `512k` -> bytes (the kernel's memparse)."""
    m = re.fullmatch(r"(0[xX][0-9a-fA-F]+|\d+)([KMGTPEkmgtpe]?)", text.strip())
    if not m:
        raise CrashkernelError(f"{text!r} is not a size")
    return int(m.group(1), 0) * _SIZE_UNITS[m.group(2).upper()]


@dataclass
class Crashkernel:
    """A parsed `crashkernel=` setting (one or more parameters on the command line)."""

    raw: list[str]
    kind: str  # "size", "size@offset", "ranges", "high", "auto"
    size: int | None = None  # what this machine gets (ranges resolved against its RAM)
    offset: int | None = None
    low: int | None = None  # crashkernel=X,low
    ranges: list[tuple[int, int | None, int]] = field(default_factory=list)  # start, end, size

    def describe(self) -> str:
        """Human summary."""
        parts = [f"crashkernel={r}" for r in self.raw]
        return " ".join(parts)


def parse_crashkernel(values: list[str], system_ram: int | None = None) -> Crashkernel:
    """Parse the values of every `crashkernel=` parameter (in command-line order).

    Syntaxes: `size[@offset]`, `start-[end]:size[,start-[end]:size...][@offset]` (ranges pick
    the size for this machine's RAM: start <= RAM < end), `size,high`, `size,low`.
    """
    if not values:
        raise CrashkernelError("no crashkernel= parameter")
    main: Crashkernel | None = None
    low = None
    for value in values:
        v = value.strip()
        if v.endswith(",low"):
            low = parse_size(v[:-4])
            continue
        if v == "auto":
            main = Crashkernel(values, "auto")
            continue
        if v.endswith(",high"):
            main = Crashkernel(values, "high", size=parse_size(v[:-5]))
            continue
        body, _, off = v.partition("@")
        offset = parse_size(off) if off else None
        if ":" in body:
            ranges = []
            for item in body.split(","):
                rng, sep, size = item.partition(":")
                if not sep:
                    raise CrashkernelError(f"range item {item!r} lacks ':size'")
                start, dash, end = rng.partition("-")
                if not dash:
                    raise CrashkernelError(f"range {rng!r} lacks '-'")
                lo = parse_size(start)
                hi = parse_size(end) if end else None
                if hi is not None and hi <= lo:
                    raise CrashkernelError(f"range {rng!r} ends before it starts")
                ranges.append((lo, hi, parse_size(size)))
            chosen = None
            if system_ram is not None:
                for lo, hi, size in ranges:
                    if lo <= system_ram and (hi is None or system_ram < hi):
                        chosen = size
                        break
                if chosen is None:
                    chosen = 0  # no range matches this RAM: nothing is reserved
            main = Crashkernel(values, "ranges", size=chosen, offset=offset, ranges=ranges)
        else:
            main = Crashkernel(values, "size@offset" if offset is not None else "size",
                               size=parse_size(body), offset=offset)
    if main is None:  # only a ,low part
        raise CrashkernelError("crashkernel=X,low without crashkernel=Y,high")
    main.raw = list(values)
    main.low = low
    return main
