"""Kernel stack unwinding from a dump: ORC first, then guarded fallbacks, always bounded.

Start points are a CPU's registers (its NT_PRSTATUS note) or a sleeping task's saved context
(`task->thread.sp` -> `struct inactive_task_frame`). Each step follows the kernel's own
unwind_next_frame() (arch/x86/kernel/unwind_orc.c): look the ip up (ip - 1 for a return
address), compute the caller's stack pointer from sp/bp, read the return address, or the
`pt_regs`/iret frame for REGS/REGS_PARTIAL entries, which are crossed and marked. The walk ends
cleanly at user mode or an END_OF_STACK entry, and stops with a reason (never an exception) on a
bad frame.

Where ORC has nothing (no table covers the ip: BPF/ftrace trampolines; or an UNDEFINED entry, as
for functions objtool skips such as `__crash_kexec`, marked STACK_FRAME_NON_STANDARD), the
kernel's frame-pointer guess is tried, then a scan of the stack for a return address whose call
instruction targets the current function. Frames found that way are flagged unreliable.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable

from ..errors import KdnbError
from .stack_pages import StackReader
from .unwind_frames import Backtrace, Frame, Regs
from .unwind_orc import (FP_ENTRY, REG_BP, REG_BP_INDIRECT, REG_DI, REG_DX, REG_PREV_SP, REG_R10,
                         REG_R13, REG_SP, REG_SP_INDIRECT, REG_UNDEFINED, TYPE_CALL,
                         TYPE_END_OF_STACK, TYPE_REGS, TYPE_REGS_PARTIAL, TYPE_UNDEFINED, LAYOUT_6_3,
                         OrcEntry, OrcTables, read_orc_tables)

if TYPE_CHECKING:  # pragma: no cover
    from .kernel import Kernel

# struct pt_regs on x86_64 (user ABI, fixed): 21 longs
PT_REGS = ("r15", "r14", "r13", "r12", "bp", "bx", "r11", "r10", "r9", "r8", "ax", "cx", "dx",
           "si", "di", "orig_ax", "ip", "cs", "flags", "sp", "ss")
PT_REGS_SIZE = 8 * len(PT_REGS)
IRET_FRAME_OFFSET = 8 * PT_REGS.index("ip")  # the hardware iret frame: ip cs flags sp ss
IRET_FRAME_SIZE = PT_REGS_SIZE - IRET_FRAME_OFFSET
_PT_REGS = struct.Struct(f"<{len(PT_REGS)}Q")
_IRET = struct.Struct("<5Q")
# NT_PRSTATUS (user_regs_struct) names -> pt_regs names
PRSTATUS_TO_PT_REGS = {"r15": "r15", "r14": "r14", "r13": "r13", "r12": "r12", "rbp": "bp",
                       "rbx": "bx", "r11": "r11", "r10": "r10", "r9": "r9", "r8": "r8",
                       "rax": "ax", "rcx": "cx", "rdx": "dx", "rsi": "si", "rdi": "di",
                       "orig_rax": "orig_ax", "rip": "ip", "cs": "cs", "eflags": "flags",
                       "rsp": "sp", "ss": "ss"}

KERNEL_SPACE = 0xFFFF800000000000
KERNEL_TEXT = 0xFFFFFFFF80000000  # __START_KERNEL_map: vmlinux text, then modules
THREAD_SIZE = 16384  # x86_64 without KASAN (32 KiB with it)
IRQ_STACK_SIZE = 16384
MAX_FRAMES = 128
SCAN_SLOTS = 512  # how far (in longs) a return-address scan looks up the stack
@dataclass
class _State:
    ip: int
    sp: int
    bp: int
    signal: bool
    regs: Regs | None = None
    prev_regs: Regs | None = None


class _Stop(Exception):
    """Internal: the walk cannot go on (reason in args[0])."""


def classify_entry(name: str | None) -> str:
    """`interrupt` or `exception` for the entry code that saved a pt_regs (by its symbol)."""
    if name is None:
        return "exception"
    if ("interrupt" in name or name.startswith(("asm_sysvec_", "sysvec_", "irq_", "asm_irq"))
            or name in ("ret_from_intr", "common_interrupt")):
        return "interrupt"
    return "exception"


class Unwinder:
    """Unwinds kernel stacks of one dump. Build once, call `from_regs` / `from_task` many times.

    `kernel` needs `read`, `symbol`, `lookup` (kdnb.kernel.Kernel). `orc` can be given (tests);
    otherwise the dump's tables are read on first use.
    """

    def __init__(self, kernel: "Kernel", orc: OrcTables | None = None, max_frames: int = MAX_FRAMES,
                 thread_size: int | None = None) -> None:
        self.kernel = kernel
        self._orc = orc
        self.max_frames = max_frames
        self.mem = StackReader(kernel.read)
        self.thread_size = thread_size or THREAD_SIZE
        self.problems: list[str] = []

    # -- setup -------------------------------------------------------------------------
    @property
    def orc(self) -> OrcTables:
        """The dump's ORC tables (empty when the kernel has none: every step then falls back to
        frame pointers and call-site scans, and `problems` says why)."""
        if self._orc is None:
            try:
                self._orc = read_orc_tables(self.kernel)
                self.problems += self._orc.problems
            except KdnbError as exc:
                self.problems.append(f"no ORC unwind tables: {exc}")
                self._orc = OrcTables([], LAYOUT_6_3)
        return self._orc

    def _func(self, pc: int):
        try:
            return self.kernel.lookup(pc)
        except (KdnbError, AttributeError):
            return None

    # -- start points ----------------------------------------------------------------------
    def from_regs(self, regs: dict[str, int], stacks: Iterable[tuple[int, int]] = (),
                  first_kind: str = "normal", task_stack: int | None = None) -> Backtrace:
        """Unwind from a full register set (pt_regs names, or NT_PRSTATUS names).

        `task_stack` is the base of the running task's stack, `stacks` other known stack ranges
        (the CPU's IRQ stack): they tell a stack switch from a walk going the wrong way.
        """
        values = {PRSTATUS_TO_PT_REGS.get(k, k): int(v) for k, v in regs.items()
                  if PRSTATUS_TO_PT_REGS.get(k, k) in PT_REGS}
        r = Regs(values, full=True)
        ip, sp = values.get("ip", 0), values.get("sp", 0)
        if r.user_mode or ip < KERNEL_SPACE:
            return Backtrace([Frame(ip, sp, "user", True, "start")], "user mode", True)
        state = _State(ip, sp, values.get("bp", 0), True, r)
        known = ([(task_stack, task_stack + self.thread_size)] if task_stack else []) + list(stacks)
        return self._walk(state, Frame(ip, sp, first_kind, True, "start"), known, bool(task_stack))

    def from_task(self, thread_sp: int, stack: int | None = None) -> Backtrace:
        """Unwind a task that is not running: `task->thread.sp` and `task->stack`."""
        stacks = [(stack, stack + self.thread_size)] if stack else []
        try:
            raw = self.mem.read(thread_sp, 56)
        except KdnbError as exc:
            return Backtrace([], f"cannot read the saved context at {thread_sp:#x}: {exc}", False)
        # struct inactive_task_frame: r15 r14 r13 r12 bx bp ret_addr (x86_64)
        r15, r14, r13, r12, bx, bp, ret = struct.unpack("<7Q", raw)
        sp = thread_sp + 56
        # a new task that has not run yet resumes at the start of ret_from_fork(_asm): exact ip
        hit = self._func(ret)
        signal = hit is not None and hit.offset == 0 and hit.name in ("ret_from_fork", "ret_from_fork_asm")
        state = _State(ret, sp, bp, signal)
        return self._walk(state, Frame(ret, sp, "normal", signal, "start"), stacks, bool(stack))

    # -- the walk --------------------------------------------------------------------------
    def _walk(self, state: _State, first: Frame, stacks: list[tuple[int, int]],
              task_first: bool = False) -> Backtrace:
        """Step until the end; `stacks[0]` is the task's stack when `task_first`."""
        bt = Backtrace([first])
        stack = _which_stack(state.sp, stacks)
        while True:
            if len(bt.frames) >= self.max_frames:
                bt.reason = f"stopped after {self.max_frames} frames"
                return bt
            prev_sp, prev_stack = state.sp, stack
            try:
                frame = self._step(state)
            except _Stop as stop:
                bt.reason = str(stop.args[0])
                bt.complete = bool(stop.args[1]) if len(stop.args) > 1 else False
                return bt
            except KdnbError as exc:
                bt.reason = f"stack unreadable: {exc}"
                return bt
            stack = _which_stack(state.sp, stacks)
            if frame.kind != "user":
                if stack == prev_stack and state.sp <= prev_sp:
                    bt.reason = (f"stack going in the wrong direction at {self._name(frame.pc)} "
                                 f"(sp {state.sp:#x} <= {prev_sp:#x})")
                    return bt
                if task_first and prev_stack == 0 and stack != 0 and state.sp >= stacks[0][1]:
                    bt.reason = f"ran past the top of the task stack (sp {state.sp:#x})"
                    return bt
            bt.frames.append(frame)
            if frame.kind == "user":
                bt.reason, bt.complete = "user mode", True
                return bt

    def _name(self, pc: int) -> str:
        hit = self._func(pc)
        return f"{hit.name}+{hit.offset:#x}" if hit is not None else f"{pc:#x}"

    def _step(self, state: _State) -> Frame:
        """Advance `state` by one frame (kernel unwind_next_frame semantics) and return the frame."""
        lookup = state.ip if state.signal else state.ip - 1
        orc = self.orc.find(lookup)
        if orc is not None and orc.type == TYPE_END_OF_STACK:
            raise _Stop("end of stack", True)
        if orc is None or orc.type == TYPE_UNDEFINED:
            return self._fallback(state, orc is None)
        return self._apply(state, orc, "orc")

    def _apply(self, state: _State, orc: OrcEntry, method: str) -> Frame:
        mem = self.mem
        sp_reg = orc.sp_reg
        if sp_reg == REG_SP:
            sp = state.sp + orc.sp_offset
        elif sp_reg == REG_BP:
            sp = state.bp + orc.sp_offset
        elif sp_reg == REG_SP_INDIRECT:
            sp = mem.u64(state.sp) + orc.sp_offset
        elif sp_reg == REG_BP_INDIRECT:
            sp = mem.u64(state.bp + orc.sp_offset)
        elif sp_reg in (REG_R10, REG_R13, REG_DI, REG_DX):
            name = {REG_R10: "r10", REG_R13: "r13", REG_DI: "di", REG_DX: "dx"}[sp_reg]
            value = _get_reg(state, name)
            if value is None:
                raise _Stop(f"ORC at {self._name(state.ip)} needs register {name}, which is not saved")
            sp = value
        else:
            raise _Stop(f"ORC at {self._name(state.ip)}: unknown sp base register {sp_reg}")
        sp &= 0xFFFFFFFFFFFFFFFF
        kind = "normal"
        new_signal = orc.signal
        if orc.type == TYPE_CALL:
            ip = mem.u64(sp - 8)
            state.regs = state.prev_regs = None
            exact = False
            new_sp = sp
        elif orc.type == TYPE_REGS:
            values = dict(zip(PT_REGS, _PT_REGS.unpack(mem.read(sp, PT_REGS_SIZE))))
            regs = Regs(values, True, sp)
            ip, new_sp = values["ip"], values["sp"]
            state.regs, state.prev_regs = regs, None
            kind = "user" if regs.user_mode else classify_entry(self._func_name(state.ip))
            exact = True
        elif orc.type == TYPE_REGS_PARTIAL:
            ip, cs, flags, new_sp, ss = _IRET.unpack(mem.read(sp, IRET_FRAME_SIZE))
            regs = Regs({"ip": ip, "cs": cs, "flags": flags, "sp": new_sp, "ss": ss}, False,
                        sp - IRET_FRAME_OFFSET)
            if state.regs is not None and state.regs.full:
                state.prev_regs = state.regs
            state.regs = regs
            kind = "user" if regs.user_mode else classify_entry(self._func_name(state.ip))
            exact = True
        else:
            raise _Stop(f"ORC at {self._name(state.ip)}: unknown entry type {orc.type}")
        # the caller's bp
        bp_reg = orc.bp_reg
        if bp_reg == REG_UNDEFINED:
            value = _get_reg(state, "bp")
            new_bp = value if value is not None else state.bp
        elif bp_reg == REG_PREV_SP:
            new_bp = mem.u64(sp + orc.bp_offset)
        elif bp_reg == REG_BP:
            new_bp = mem.u64(state.bp + orc.bp_offset)
        else:
            raise _Stop(f"ORC at {self._name(state.ip)}: unknown bp base register {bp_reg}")
        if kind != "user" and ip < KERNEL_TEXT:
            raise _Stop(f"return address {ip:#x} above {self._name(state.ip)} is not kernel text")
        state.ip, state.sp, state.bp, state.signal = ip, new_sp, new_bp, new_signal
        return Frame(ip, new_sp, kind, exact, "regs" if orc.type != TYPE_CALL else method,
                     method == "orc")

    def _func_name(self, pc: int) -> str | None:
        hit = self._func(pc)
        return hit.name if hit is not None else None

    # -- fallbacks -------------------------------------------------------------------------
    def _fallback(self, state: _State, no_entry: bool) -> Frame:
        hit = self._func(state.ip if state.signal else state.ip - 1)
        target = hit.address if hit is not None else None
        what = "no ORC entry" if no_entry else "an undefined ORC entry"
        # 1. the kernel's guess: a frame-pointer frame (only when no table covers the ip)
        if no_entry:
            try:
                bp = state.bp
                if state.sp <= bp < state.sp + self.thread_size:
                    ret = self.mem.u64(bp + 8)
                    if self._is_call_site(ret, target, strict=False):
                        saved = dict(ip=state.ip, sp=state.sp, bp=state.bp, signal=state.signal,
                                     regs=state.regs, prev_regs=state.prev_regs)
                        try:
                            return self._apply(state, FP_ENTRY, "fp")
                        except (KdnbError, _Stop):
                            for k, v in saved.items():
                                setattr(state, k, v)
            except KdnbError:
                pass
        # 2. scan up the stack for a return address whose call targets this function
        if target is not None:
            found = self._scan(state.sp, target)
            if found is not None:
                slot, ret = found
                bp = self._saved_bp(hit.address, state.ip, slot + 8, state.bp)
                state.ip, state.sp, state.bp, state.signal = ret, slot + 8, bp, False
                state.regs = state.prev_regs = None
                return Frame(ret, slot + 8, "normal", False, "scan", False)
        raise _Stop(f"{what} for {self._name(state.ip)}; no frame-pointer or call-site fallback found")

    def _scan(self, sp: int, target: int) -> tuple[int, int] | None:
        end = sp + 8 * SCAN_SLOTS
        slot = sp
        while slot < end:
            try:
                value = self.mem.u64(slot)
            except KdnbError:
                return None
            if value >= KERNEL_TEXT and self._is_call_site(value, target, strict=True):
                return slot, value
            slot += 8
        return None

    def _is_call_site(self, ret: int, target: int | None, strict: bool) -> bool:
        """True when the instruction before `ret` is a call (to `target` when strict)."""
        if ret < KERNEL_TEXT:
            return False
        try:
            code = self.mem.read(ret - 7, 7)
        except KdnbError:
            return False
        if code[2] == 0xE8:  # call rel32
            dest = (ret + struct.unpack_from("<i", code, 3)[0]) & 0xFFFFFFFFFFFFFFFF
            if target is None or dest == target:
                return True
            if strict:
                # call-depth/`__pfx_` padding thunks: a call just before the function
                return 0 < target - dest <= 16
            return self._func(dest) is not None
        if strict:
            return False
        # indirect calls: ff /2 with 2, 3, 6 or 7 bytes of encoding
        return (code[5] == 0xFF and (code[6] >> 3) & 7 == 2) or \
               (code[4] == 0xFF and (code[5] >> 3) & 7 == 2) or \
               (code[1] == 0xFF and (code[2] >> 3) & 7 == 2) or \
               (code[0] == 0xFF and (code[1] >> 3) & 7 == 2)

    def _saved_bp(self, func: int, pc: int, cfa: int, bp: int) -> int:
        """rbp as the caller had it: find `push %rbp` in the function's prologue (best effort)."""
        try:
            code = self.mem.read(func, 48)
        except KdnbError:
            return bp
        i, pushes = 0, 0
        if code[:4] == b"\xf3\x0f\x1e\xfa":  # endbr64
            i = 4
        while i < len(code) - 2 and func + i < pc:
            b = code[i]
            if code[i:i + 5] == b"\x0f\x1f\x44\x00\x00" or b == 0xE8:  # fentry nop / call
                i += 5
            elif b == 0x55:  # push %rbp
                try:
                    return self.mem.u64(cfa - 8 * (pushes + 2))
                except KdnbError:
                    return bp
            elif 0x50 <= b <= 0x57:
                pushes, i = pushes + 1, i + 1
            elif b == 0x41 and 0x50 <= code[i + 1] <= 0x57:
                pushes, i = pushes + 1, i + 2
            elif code[i:i + 3] in (b"\x48\x89\xe5", b"\x48\x8b\xec"):  # mov %rsp,%rbp
                i += 3
            else:
                break
        return bp


def _get_reg(state: _State, name: str) -> int | None:
    """A register from the current pt_regs (or the full set before a partial one)."""
    if state.regs is None:
        return None
    if state.regs.full:
        return state.regs.values.get(name)
    if state.prev_regs is not None:
        return state.prev_regs.values.get(name)
    return None


def _which_stack(sp: int, stacks: list[tuple[int, int]]) -> int | tuple[str, int]:
    """Index of the known stack holding `sp`; else its THREAD_SIZE-aligned block (kernel stacks
    are THREAD_SIZE aligned, so a walk within one stack never changes block)."""
    for i, (lo, hi) in enumerate(stacks):
        if lo <= sp < hi:
            return i
    return ("block", sp // THREAD_SIZE)
