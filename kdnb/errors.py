"""The kdnb error hierarchy: every failure a user can meet is a KdnbError with one clear line."""

from __future__ import annotations


class KdnbError(Exception):
    """Base class of every error kdnb raises on purpose."""


class FormatError(KdnbError):
    """The file is not a dump kdnb can read (names the file and what it looks like)."""


class CorruptDump(KdnbError):
    """The dump is recognised but a header, descriptor or note is inconsistent."""


class TruncatedDump(CorruptDump):
    """The file ends before data its headers promise."""


class PageNotInDump(KdnbError):
    """A physical page is not in the dump: excluded, a hole, truncated away, or lost."""

    def __init__(self, paddr: int, reason: str, path: str = "") -> None:
        self.paddr = paddr
        self.reason = reason
        self.path = path
        self.vaddr: int | None = None  # set when the read came through a virtual address
        where = f"{path}: " if path else ""
        super().__init__(f"{where}physical address {paddr:#x} is not in the dump ({reason})")


class FaultError(KdnbError):
    """A virtual address does not translate (names the address and the level where it stopped)."""

    def __init__(self, vaddr: int, level: str, detail: str = "") -> None:
        self.vaddr = vaddr
        self.level = level
        extra = f": {detail}" if detail else ""
        super().__init__(f"cannot translate {vaddr:#x}: not present at {level}{extra}")


class SymbolNotFound(KdnbError, KeyError):
    """No kernel or module symbol has this name."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else "symbol not found"


class TypeNotFound(KdnbError, KeyError):
    """No BTF (or DWARF) type has this name."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "type not found"


class CorruptStructure(KdnbError):
    """A kernel data structure is inconsistent (a list cycles, a pointer is wild)."""


class MissingDebugInfo(KdnbError):
    """The dump lacks what an analysis needs (no kallsyms, no BTF) and no vmlinux was given."""


class VmlinuxMismatch(KdnbError):
    """The vmlinux or System.map given is not the kernel of this dump."""


class ImplausibleValue(CorruptDump):
    """A number read from the dump is outside what is physically possible (names file, field, value)."""

    def __init__(self, field: str, value: object, why: str, path: str = "") -> None:
        self.field = field
        self.value = value
        self.path = path
        where = f"{path}: " if path else ""
        shown = f"{value:#x}" if isinstance(value, int) and abs(value) > 4096 else repr(value)
        super().__init__(f"{where}{field} = {shown} is implausible ({why})")
