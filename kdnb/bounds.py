"""The boundary for untrusted numbers: every size, count, offset or shift read from a dump that
sizes an allocation, a loop or a read passes through here first.

Each check returns the value as an `int` when it is physically possible and raises
`ImplausibleValue` (a `CorruptDump`) naming the file, the field and the value otherwise.
VMCOREINFO values are parsed by the kind their key declares (`SYMBOL` hex address, `OFFSET`
and `SIZE` decimal byte counts, `NUMBER` signed decimal, ...).
"""

from __future__ import annotations

import re

from .errors import ImplausibleValue, KdnbError

U64_MAX = (1 << 64) - 1
NR_CPUS_MAX = 8192  # x86_64 Kconfig: NR_CPUS range 2..8192 (MAXSMP)
PID_MAX_LIMIT = 4 * 1024 * 1024  # include/linux/threads.h: PID_MAX_LIMIT on 64-bit
MAX_PHYSMEM_BITS = 52  # x86_64 with 5-level paging; 46 with 4 levels
STRUCT_SIZE_MAX = 1 << 20  # no kernel struct (task_struct ~ 10 KiB, kmem_cache ~ 8 KiB) is near 1 MiB
KALLSYMS_MAX = 1 << 22  # 4 M symbols: a 6.x allmodconfig vmlinux has ~ 300 k
NUMA_NODES_MAX = 1024  # NODES_SHIFT <= 10 on x86_64

_INT = re.compile(r"-?[0-9]+\Z")
_HEX = re.compile(r"(0[xX])?[0-9a-fA-F]+\Z")


def in_range(value: int, field: str, lo: int, hi: int, path: str = "") -> int:
    """`value` when `lo <= value <= hi`, else ImplausibleValue."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise ImplausibleValue(field, value, "not an integer", path)
    if not lo <= value <= hi:
        raise ImplausibleValue(field, value, f"outside {lo:#x}..{hi:#x}", path)
    return value


def count(value: int, field: str, limit: int, path: str = "") -> int:
    """A count of things (0..limit)."""
    return in_range(value, field, 0, limit, path)


def shift(value: int, field: str, limit: int = 63, path: str = "") -> int:
    """A shift or bit count (0..limit)."""
    return in_range(value, field, 0, limit, path)


def field_offset(offset: int, width: int, container: int, field: str, path: str = "") -> int:
    """An offset of a `width`-byte field that must lie inside a `container`-byte structure."""
    if container < width:
        raise ImplausibleValue(field, offset, f"no room for {width} bytes in {container}", path)
    return in_range(offset, field, 0, container - width, path)


def power_of_two(value: int, field: str, lo: int, hi: int, path: str = "") -> int:
    """A power of two in lo..hi (page sizes, block sizes)."""
    in_range(value, field, lo, hi, path)
    if value & (value - 1):
        raise ImplausibleValue(field, value, "not a power of two", path)
    return value


def parse_int(text: str | None, field: str, base: int, path: str = "") -> int:
    """A decimal (base 10) or hex (base 16) number as the dump wrote it."""
    s = (text or "").strip()
    if not (_INT if base == 10 else _HEX).match(s):
        raise ImplausibleValue(field, text, f"not a base-{base} number", path)
    return int(s, base)


# Kinds of VMCOREINFO keys: (base, lo, hi). Specific keys first, then by prefix.
_KEYS: dict[str, tuple[int, int, int]] = {
    "PAGESIZE": (10, 4096, 1 << 16),
    "KERNELOFFSET": (16, 0, 1 << 31),  # the KASLR slide stays within KERNEL_IMAGE_SIZE (1 GiB)
    "CRASHTIME": (10, 0, 1 << 33),  # pandas Timestamps end in 2262
    "NUMBER(phys_base)": (10, -(1 << 52), 1 << 52),
    "NUMBER(MAX_PHYSMEM_BITS)": (10, 32, MAX_PHYSMEM_BITS),
    "NUMBER(pgtable_l5_enabled)": (10, 0, 1),
    "NUMBER(sme_mask)": (10, 0, U64_MAX),
    "NUMBER(KERNEL_IMAGE_SIZE)": (10, 1 << 20, 1 << 32),
}
_PREFIXES: dict[str, tuple[int, int, int]] = {
    "SYMBOL(": (16, 1, U64_MAX),
    "OFFSET(": (10, 0, STRUCT_SIZE_MAX),
    "SIZE(": (10, 1, STRUCT_SIZE_MAX),
    "LENGTH(": (10, 0, 1 << 24),
    "NUMBER(": (10, -(1 << 63), U64_MAX),
}


def vmcoreinfo_int(info: dict[str, str], key: str, path: str = "", default: int | None = None) -> int:
    """A VMCOREINFO value parsed and range-checked by the kind of its key.

    A missing key gives `default`, or KdnbError naming the key when there is no default."""
    text = info.get(key)
    if text is None:
        if default is None:
            raise KdnbError(f"{path + ': ' if path else ''}VMCOREINFO lacks {key}")
        return default
    kind = _KEYS.get(key) or next((v for p, v in _PREFIXES.items() if key.startswith(p)), (10, -(1 << 63), U64_MAX))
    base, lo, hi = kind
    return in_range(parse_int(text, f"VMCOREINFO {key}", base, path), f"VMCOREINFO {key}", lo, hi, path)
