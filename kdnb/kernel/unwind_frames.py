"""What a kernel stack walk produces: frames, the backtrace of one stack, register sets."""

from __future__ import annotations

from dataclasses import dataclass, field

KINDS = ("normal", "exception", "interrupt", "user")


@dataclass
class Frame:
    """One frame: its pc and stack pointer, how the pc was found."""

    pc: int
    sp: int
    kind: str = "normal"  # normal, exception, interrupt, user
    exact: bool = True  # pc is an exact instruction (start, or from pt_regs), not a return address
    method: str = "orc"  # start, orc, regs, fp, scan
    reliable: bool = True


@dataclass
class Backtrace:
    """The frames of one stack, innermost first, and why the walk ended."""

    frames: list[Frame] = field(default_factory=list)
    reason: str = ""
    complete: bool = False  # ended at user mode or the end of the kernel stack

    def __len__(self) -> int:
        return len(self.frames)


@dataclass
class Regs:
    """A register set: a pt_regs on the stack (address known) or NT_PRSTATUS values."""

    values: dict[str, int]
    full: bool = True
    address: int | None = None

    @property
    def user_mode(self) -> bool:
        return bool(self.values.get("cs", 0) & 3)
