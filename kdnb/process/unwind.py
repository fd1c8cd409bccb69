"""Userspace stack unwinding from a core: DWARF call-frame information (.eh_frame of the mapped
images, .debug_frame of them or their debug files, parsed by pyelftools), frame pointers where
no CFI covers a pc, and the return address at the stack pointer when the pc is not code at all
(a call through a wild pointer) or, for the innermost frame without CFI, points into code (a
function that has not set up its frame yet). Each frame says how it was found; every walk is
bounded.

Register numbers are the x86_64 psABI's DWARF numbering (0 rax, 1 rdx, 2 rcx, 3 rbx, 4 rsi,
5 rdi, 6 rbp, 7 rsp, 8-15 r8-r15, 16 the return address). A caller's pc is a return address, so
it is looked up at pc - 1 (the call instruction), except after a signal frame ('S' augmentation),
whose saved pc is exact.
"""

from __future__ import annotations

import bisect
import os
import struct
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Callable

from elftools.common.exceptions import DWARFError, ELFError
from elftools.dwarf.callframe import FDE, RegisterRule
from elftools.dwarf.dwarf_expr import DWARFExprParser

from .images import Image, open_elf

DWARF_REGS = ("rax", "rdx", "rcx", "rbx", "rsi", "rdi", "rbp", "rsp", "r8", "r9", "r10", "r11",
              "r12", "r13", "r14", "r15", "rip")
RA, SP, BP = 16, 7, 6
CALLEE_SAVED = frozenset({3, 6, 12, 13, 14, 15})  # rbx rbp r12-r15 keep their value by default
MAX_FRAMES = 1024
EXPR_STACK_MAX = 64
FDE_OVERLAP = 4  # FDEs looked back at: .eh_frame and .debug_frame may both cover a function
HOW = ("registers", "cfi .eh_frame", "cfi .debug_frame", "frame pointer", "return address at sp")


class _Unknown(Exception):
    """A CFI rule this unwinder cannot evaluate (an expression op it lacks, an unread value)."""


@dataclass
class CfiTable:
    """The FDEs of one image, by link-time address, and the parser for their expressions."""

    starts: list[int] = field(default_factory=list)
    entries: list[tuple[int, int, FDE, str, DWARFExprParser]] = field(default_factory=list)

    def find(self, addr: int) -> tuple[FDE, str, DWARFExprParser] | None:
        """The FDE covering a link-time address (.eh_frame before .debug_frame), or None."""
        i = bisect.bisect_right(self.starts, addr) - 1
        for lo, hi, fde, sec, parser in self.entries[max(0, i - FDE_OVERLAP):i + 1][::-1]:
            if lo <= addr < hi:
                return fde, sec, parser
        return None


def _load_cfi(sources: tuple[str | bytes, ...]) -> CfiTable:
    rows = []
    for n, source in enumerate(sources):
        with open_elf(source) as elf:
            if elf is None:
                continue
            try:
                dwarf = elf.get_dwarf_info(relocate_dwarf_sections=False)
                parser = DWARFExprParser(dwarf.structs)
                # .eh_frame of a debug file is NOBITS: only the image itself supplies it
                eh = dwarf.EH_CFI_entries() if n == 0 and dwarf.has_EH_CFI() else []
                dbg = dwarf.CFI_entries() if dwarf.has_CFI() else []
            except (DWARFError, ELFError, ValueError, KeyError, struct.error):
                continue
            for sec, entries in ((".eh_frame", eh), (".debug_frame", dbg)):
                for e in entries:
                    if isinstance(e, FDE) and e["address_range"]:
                        lo = e["initial_location"]
                        rows.append((lo, lo + e["address_range"], e, sec, parser))
    rows.sort(key=lambda r: r[0])
    return CfiTable([r[0] for r in rows], rows)


@lru_cache(maxsize=64)
def _cfi_cached(key: tuple) -> CfiTable:
    return _load_cfi(key[0])


def cfi_for(image: Image) -> CfiTable:
    """The image's CFI, cached per set of files (path, size, mtime) across cores."""
    sources = tuple(image.elf_sources())
    stamp = tuple((os.stat(s).st_size, os.stat(s).st_mtime_ns) if isinstance(s, str) and os.path.exists(s)
                  else hash(s) for s in sources)
    return _cfi_cached((sources, stamp))


@dataclass
class Step:
    """One unwound frame before symbolisation."""

    pc: int
    sp: int
    cfa: int | None
    how: str
    exact: bool  # the pc is the faulting/interrupted instruction, not a return address
    regs: dict[int, int]


class Walker:
    """Unwinds one thread. `read(addr, size)` reads process memory; `image_at(addr)` gives the
    image mapping an address; `executable(addr)` says whether an address is in code."""

    def __init__(self, read: Callable[[int, int], bytes], image_at: Callable[[int], Image | None],
                 executable: Callable[[int], bool], use_cfi: bool = True) -> None:
        self.read = read
        self.image_at = image_at
        self.executable = executable
        self.use_cfi = use_cfi

    def _u64(self, addr: int) -> int:
        try:
            return struct.unpack("<Q", self.read(addr, 8))[0]
        except Exception as exc:  # noqa: BLE001 - any unreadable word ends the rule
            raise _Unknown(f"cannot read {addr:#x}: {exc}") from None

    def walk(self, regs: dict[str, int], max_frames: int = MAX_FRAMES) -> tuple[list[Step], str]:
        """The frames from a thread's registers, innermost first, and why the walk ended."""
        state = {i: regs[name] for i, name in enumerate(DWARF_REGS) if name in regs}
        steps = [Step(state[RA], state[SP], None, "registers", True, state)]
        while len(steps) < max_frames:
            cur = steps[-1]
            nxt, why = self._step(cur, len(steps) == 1)
            if nxt is None:
                return steps, why
            if nxt.pc == 0:
                return steps, "end of stack (return address 0)"
            if nxt.sp <= cur.sp and nxt.how != "registers":
                return steps, f"stack pointer did not grow ({nxt.sp:#x} <= {cur.sp:#x}): stopped"
            if not self.executable(nxt.pc):
                return steps, f"return address {nxt.pc:#x} is not in an executable mapping: stopped"
            steps.append(nxt)
        return steps, f"stopped after {max_frames} frames"

    def _step(self, cur: Step, first: bool) -> tuple[Step | None, str]:
        image = self.image_at(cur.pc)
        cfi_problem = ""
        if self.use_cfi and image is not None:
            lookup = cur.pc if cur.exact else cur.pc - 1
            found = cfi_for(image).find(lookup - image.bias)
            if found is not None:
                try:
                    return self._cfi_step(cur, found, lookup - image.bias)
                except _Unknown as exc:
                    cfi_problem = f"CFI at {cur.pc:#x} not usable ({exc}); "
        if first:  # a wild call, or a function that has not pushed %rbp: the caller's pc at sp
            try:
                ra = self._u64(cur.sp)
            except _Unknown as exc:
                return None, str(exc)
            if not self.executable(cur.pc) or self.executable(ra):
                regs = {**cur.regs, RA: ra, SP: cur.sp + 8}
                return Step(ra, cur.sp + 8, cur.sp + 8, "return address at sp", False, regs), ""
        step, why = self._fp_step(cur)
        return step, cfi_problem + why

    def _cfi_step(self, cur: Step, found: tuple, rel: int) -> tuple[Step | None, str]:
        fde, section, parser = found
        row = None
        for r in fde.get_decoded().table:
            if r["pc"] <= rel:
                row = r
            else:
                break
        if row is None:
            raise _Unknown("no CFI row for the pc")
        rule = row["cfa"]
        if rule.expr is not None:
            cfa = self._expr(parser, rule.expr, cur.regs, None)
        else:
            if rule.reg not in cur.regs:
                raise _Unknown(f"CFA register {rule.reg} unknown")
            cfa = cur.regs[rule.reg] + rule.offset
        regs: dict[int, int] = {r: v for r, v in cur.regs.items() if r in CALLEE_SAVED}
        ra_reg = fde.cie["return_address_register"]
        for reg, rr in row.items():
            if reg in ("pc", "cfa"):
                continue
            value = self._rule(reg, rr, cfa, cur.regs, parser)
            if value is None:
                regs.pop(reg, None)
            else:
                regs[reg] = value
        if ra_reg not in regs:
            return None, "end of stack (the outermost frame's CFI leaves the return address undefined)"
        regs[SP] = cfa
        signal_frame = b"S" in (fde.cie.header.get("augmentation") or b"")
        how = "cfi " + section
        return Step(regs[ra_reg], cfa, cfa, how, signal_frame, regs), ""

    def _rule(self, reg: int, rr: RegisterRule, cfa: int, regs: dict[int, int],
              parser: DWARFExprParser) -> int | None:
        """A register's value in the caller by its CFI rule; None when undefined."""
        kind = rr.type
        if kind == RegisterRule.OFFSET:
            return self._u64(cfa + rr.arg)
        if kind == RegisterRule.VAL_OFFSET:
            return cfa + rr.arg
        if kind == RegisterRule.REGISTER:
            return regs.get(rr.arg)
        if kind == RegisterRule.SAME_VALUE:
            return regs.get(reg)
        if kind == RegisterRule.EXPRESSION:
            return self._u64(self._expr(parser, rr.arg, regs, cfa))
        if kind == RegisterRule.VAL_EXPRESSION:
            return self._expr(parser, rr.arg, regs, cfa)
        return None  # UNDEFINED, ARCHITECTURAL

    def _expr(self, parser: DWARFExprParser, expr: list[int], regs: dict[int, int], cfa: int | None) -> int:
        """Evaluate the DWARF expression ops CFI uses (breg, lit, const, arithmetic, deref)."""
        stack: list[int] = [] if cfa is None else [cfa]
        mask = (1 << 64) - 1
        for op in parser.parse_expr(expr):
            name, args = op.op_name, op.args
            if len(stack) > EXPR_STACK_MAX:
                raise _Unknown("expression stack too deep")
            if name.startswith("DW_OP_breg"):
                reg = int(name[10:])
                if reg not in regs:
                    raise _Unknown(f"register {reg} unknown")
                stack.append((regs[reg] + args[0]) & mask)
            elif name.startswith("DW_OP_lit"):
                stack.append(int(name[9:]))
            elif name.startswith("DW_OP_const"):
                stack.append(args[0] & mask)
            elif name == "DW_OP_plus_uconst":
                stack.append((stack.pop() + args[0]) & mask)
            elif name == "DW_OP_deref":
                stack.append(self._u64(stack.pop()))
            elif name in _BINARY:
                b, a = stack.pop(), stack.pop()
                stack.append(_BINARY[name](a, b) & mask)
            elif name == "DW_OP_dup":
                stack.append(stack[-1])
            elif name == "DW_OP_drop":
                stack.pop()
            elif name == "DW_OP_swap":
                stack[-1], stack[-2] = stack[-2], stack[-1]
            else:
                raise _Unknown(f"{name} not supported")
        if not stack:
            raise _Unknown("empty expression")
        return stack[-1]

    def _fp_step(self, cur: Step) -> tuple[Step | None, str]:
        bp = cur.regs.get(BP)
        if bp is None or bp < cur.sp or bp & 7:
            return None, "no CFI and no usable frame pointer: stopped"
        try:
            saved_bp, ra = self._u64(bp), self._u64(bp + 8)
        except _Unknown as exc:
            return None, f"frame pointer chain broken ({exc})"
        regs = {BP: saved_bp, SP: bp + 16, RA: ra}
        return Step(ra, bp + 16, bp + 16, "frame pointer", False, regs), ""


_BINARY: dict[str, Callable[[int, int], int]] = {
    "DW_OP_plus": lambda a, b: a + b, "DW_OP_minus": lambda a, b: a - b,
    "DW_OP_mul": lambda a, b: a * b, "DW_OP_and": lambda a, b: a & b, "DW_OP_or": lambda a, b: a | b,
    "DW_OP_xor": lambda a, b: a ^ b, "DW_OP_shl": lambda a, b: a << (b & 63),
    "DW_OP_shr": lambda a, b: a >> (b & 63), "DW_OP_ge": lambda a, b: int(a >= b),
    "DW_OP_gt": lambda a, b: int(a > b), "DW_OP_le": lambda a, b: int(a <= b),
    "DW_OP_lt": lambda a, b: int(a < b), "DW_OP_eq": lambda a, b: int(a == b),
    "DW_OP_ne": lambda a, b: int(a != b),
}
