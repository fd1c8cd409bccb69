"""ORC decoding (both struct orc_entry layouts) and the unwinder on synthetic memory."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from kdnb.errors import FaultError, KdnbError
from kdnb.kernel.btf import BTF
from kdnb.kernel.symbols import SymbolHit
from kdnb.kernel.unwind import PT_REGS, Unwinder
from kdnb.kernel.unwind_orc import (LAYOUT_6_3, LAYOUT_PRE_6_3, REG_BP, REG_BP_INDIRECT, REG_PREV_SP,
                                    REG_SP, REG_SP_INDIRECT, REG_UNDEFINED, TYPE_CALL, TYPE_END_OF_STACK,
                                    TYPE_REGS, TYPE_REGS_PARTIAL, TYPE_UNDEFINED, OrcEntries,
                                    OrcTable, OrcTables, decode_entries, decode_ips,
                                    layout_from_btf, with_numbering)
from tests.test_btf import BTFBuilder


# -- struct orc_entry layouts ------------------------------------------------------------------
def _orc_btf(new: bool) -> BTF:
    """`struct orc_entry` as BTF describes it on 6.1 (type:2 end:1) or 6.12 (type:3 signal:1)."""
    b = BTFBuilder()
    s16 = b.int_("s16", 2, signed=True)
    uint = b.int_("unsigned int", 4)
    bits = [("sp_reg", 4, 32), ("bp_reg", 4, 36)]
    bits += [("type", 3, 40), ("signal", 1, 43)] if new else [("type", 2, 40), ("end", 1, 42)]
    members = [("sp_offset", s16, 0), ("bp_offset", s16, 16)]
    members += [(n, uint, (size << 24) | off) for n, size, off in bits]
    b.struct_("struct", "orc_entry", 6, members, kflag=True)
    return BTF(b.blob())


def _pack(sp_offset: int, bp_offset: int, bits: int) -> bytes:
    return struct.pack("<hhH", sp_offset, bp_offset, bits)


def test_layout_detected_from_btf() -> None:
    old = layout_from_btf(_orc_btf(False).type("struct orc_entry"))
    new = layout_from_btf(_orc_btf(True).type("struct orc_entry"))
    assert old == LAYOUT_PRE_6_3 and old.has_end and not old.has_signal
    assert new == LAYOUT_6_3 and new.has_signal and not new.has_end


def test_decode_pre_6_3_entries() -> None:
    # 6.1: CALL=0 REGS=1 REGS_PARTIAL=2; sp_reg UNDEFINED + end=1 is the end of the stack
    raw = b"".join([
        _pack(8, 0, REG_SP | (REG_UNDEFINED << 4) | (0 << 8)),  # call, sp+8
        _pack(16, -16, REG_SP | (REG_PREV_SP << 4) | (0 << 8)),  # call, bp saved at cfa-16
        _pack(0, 0, REG_SP | (1 << 8)),  # regs
        _pack(8, 0, REG_SP_INDIRECT | (2 << 8)),  # regs partial, indirect sp
        _pack(0, 0, REG_UNDEFINED | (1 << 10)),  # end of stack
        _pack(0, 0, REG_UNDEFINED),  # undefined (a blind spot)
    ])
    e = decode_entries(raw, LAYOUT_PRE_6_3)
    assert e.type.tolist() == [TYPE_CALL, TYPE_CALL, TYPE_REGS, TYPE_REGS_PARTIAL,
                               TYPE_END_OF_STACK, TYPE_UNDEFINED]
    assert e.signal.tolist() == [False, False, True, True, False, False]
    assert e.sp_offset.tolist() == [8, 16, 0, 8, 0, 0]
    assert e.bp_offset.tolist()[1] == -16 and e.bp_reg.tolist()[1] == REG_PREV_SP
    assert e.sp_reg.tolist()[3] == REG_SP_INDIRECT


def test_decode_6_3_entries() -> None:
    # 6.12: UNDEFINED=0 END=1 CALL=2 REGS=3 REGS_PARTIAL=4, explicit signal bit
    raw = b"".join([
        _pack(8, 0, REG_SP | (2 << 8)),
        _pack(8, 0, REG_SP | (2 << 8) | (1 << 11)),  # a call entry with signal set
        _pack(0, 0, REG_SP | (3 << 8) | (1 << 11)),
        _pack(-40, 0, REG_BP | (4 << 8) | (1 << 11)),
        _pack(0, 0, 1 << 8),
        _pack(0, 0, 0),
    ])
    e = decode_entries(raw, LAYOUT_6_3)
    assert e.type.tolist() == [TYPE_CALL, TYPE_CALL, TYPE_REGS, TYPE_REGS_PARTIAL,
                               TYPE_END_OF_STACK, TYPE_UNDEFINED]
    assert e.signal.tolist() == [False, True, True, True, False, False]
    assert e.sp_offset.tolist()[3] == -40 and e.sp_reg.tolist()[3] == REG_BP


@pytest.mark.parametrize("sp, prev_sp, bp_ind", [(REG_SP, REG_PREV_SP, 8), (3, 8, 10)])
def test_register_numbering_told_from_the_entries(sp: int, prev_sp: int, bp_ind: int) -> None:
    call = 2 << 8
    rows = [_pack(8, 0, sp | call)] * 40 + [_pack(16, -16, sp | (prev_sp << 4) | call)] * 30 \
        + [_pack(16, -16, REG_BP | (prev_sp << 4) | call)] * 20 + [_pack(-40, 0, bp_ind | (REG_BP << 4) | call)]
    layout = with_numbering(LAYOUT_6_3, b"".join(rows))
    e = decode_entries(b"".join(rows), layout)
    assert set(e.sp_reg.tolist()) == {REG_SP, REG_BP, REG_BP_INDIRECT}
    assert set(e.bp_reg.tolist()) == {0, REG_PREV_SP, REG_BP}


def test_unknown_register_numbering_is_refused() -> None:
    rows = [_pack(8, 0, 11 | (2 << 8))] * 10
    with pytest.raises(KdnbError, match="unknown register numbering"):
        with_numbering(LAYOUT_6_3, b"".join(rows))


def test_decode_ips_relative_to_slot() -> None:
    table = 0xFFFFFFFF82000000
    targets = [0xFFFFFFFF81000000, 0xFFFFFFFF81000010, 0xFFFFFFFF81ABCDEF]
    raw = b"".join(struct.pack("<i", t - (table + 4 * i)) for i, t in enumerate(targets))
    assert decode_ips(raw, table).tolist() == targets


def _entries(rows: list[tuple[int, int, int, int, int, bool]]) -> OrcEntries:
    """rows of (sp_reg, sp_offset, bp_reg, bp_offset, type, signal)."""
    a = list(zip(*rows))
    return OrcEntries(np.array(a[1], np.int16), np.array(a[3], np.int16), np.array(a[0], np.uint8),
                      np.array(a[2], np.uint8), np.array(a[4], np.uint8), np.array(a[5], bool))


def test_table_find_last_entry_at_or_below() -> None:
    ips = np.array([0x1000, 0x1010, 0x1010, 0x1040], np.uint64)
    e = _entries([(REG_SP, 8, 0, 0, TYPE_CALL, False), (REG_UNDEFINED, 0, 0, 0, TYPE_UNDEFINED, False),
                  (REG_SP, 16, 0, 0, TYPE_CALL, False), (REG_SP, 24, 0, 0, TYPE_CALL, False)])
    t = OrcTable(None, 0x1000, 0x1100, ips, e)
    assert t.find(0x1000).sp_offset == 8
    assert t.find(0x100F).sp_offset == 8
    assert t.find(0x1010).sp_offset == 16  # the real entry wins over the weak terminator
    assert t.find(0x10FF).sp_offset == 24
    assert t.find(0x0FFF) is None and t.find(0x1100) is None
    # an unsorted table (as read) is sorted once
    t2 = OrcTable("m", 0x1000, 0x1100, ips[::-1].copy(), OrcEntries(*(x[::-1].copy() for x in e)))
    assert t2.find(0x1020).sp_offset == 16


# -- the unwinder on synthetic memory ------------------------------------------------------------
TEXT = 0xFFFFFFFF81000000
STACK = 0xFFFFC90000010000
TOP = STACK + 0x4000
FUNCS = {  # name: (address, size)
    "f_a": (TEXT + 0x1000, 0x100), "f_b": (TEXT + 0x2000, 0x100), "f_c": (TEXT + 0x3000, 0x100),
    "asm_exc_page_fault": (TEXT + 0x4000, 0x100), "asm_sysvec_apic_timer_interrupt": (TEXT + 0x5000, 0x100),
    "nonstd": (TEXT + 0x6000, 0x100), "caller": (TEXT + 0x7000, 0x100), "thread_top": (TEXT + 0x8000, 0x100),
}


def fa(name: str, off: int = 0) -> int:
    return FUNCS[name][0] + off


class FakeKernel:
    """Memory as a dict of 4 KiB pages; symbols from FUNCS."""

    def __init__(self) -> None:
        self.pages: dict[int, bytearray] = {}

    def put(self, addr: int, data: bytes) -> None:
        for i, b in enumerate(data):
            a = addr + i
            self.pages.setdefault(a & ~0xFFF, bytearray(4096))[a & 0xFFF] = b

    def put64(self, addr: int, *values: int) -> None:
        self.put(addr, struct.pack(f"<{len(values)}Q", *values))

    def read(self, addr: int, size: int) -> bytes:
        out = b""
        while size > 0:
            page = self.pages.get(addr & ~0xFFF)
            if page is None:
                raise FaultError(addr, "pte")
            n = min(size, 4096 - (addr & 0xFFF))
            out += bytes(page[addr & 0xFFF:(addr & 0xFFF) + n])
            addr, size = addr + n, size - n
        return out

    def lookup(self, addr: int) -> SymbolHit | None:
        for name, (start, size) in FUNCS.items():
            if start <= addr < start + size:
                return SymbolHit(name, start, addr - start, size, None)
        return None

    def call(self, at: int, target: int) -> int:
        """Write `call target` at `at`; returns the return address."""
        self.put(at, b"\xe8" + struct.pack("<i", target - (at + 5)))
        return at + 5


CALL8 = (REG_SP, 8, REG_UNDEFINED, 0, TYPE_CALL, False)
CALL16_BP = (REG_SP, 16, REG_PREV_SP, -16, TYPE_CALL, False)
REGS = (REG_SP, 0, REG_UNDEFINED, 0, TYPE_REGS, True)
END = (REG_UNDEFINED, 0, REG_UNDEFINED, 0, TYPE_END_OF_STACK, False)
UNDEF = (REG_UNDEFINED, 0, REG_UNDEFINED, 0, TYPE_UNDEFINED, False)


def tables(entries: dict[str, tuple]) -> OrcTables:
    names = sorted(entries, key=lambda n: FUNCS[n][0])
    ips = np.array([FUNCS[n][0] for n in names], np.uint64)
    return OrcTables([OrcTable(None, TEXT, TEXT + 0x10000, ips, _entries([entries[n] for n in names]))],
                     LAYOUT_6_3)


def pt_regs(**values: int) -> bytes:
    return struct.pack(f"<{len(PT_REGS)}Q", *(values.get(n, 0) for n in PT_REGS))


ORC = {"f_a": CALL16_BP, "f_b": CALL8, "f_c": END, "asm_exc_page_fault": REGS,
       "asm_sysvec_apic_timer_interrupt": REGS, "nonstd": UNDEF, "caller": END, "thread_top": END}


def test_call_frames_to_user_mode() -> None:
    k = FakeKernel()
    sp = TOP - 0x200
    # f_a: saved bp at sp, return into f_b at sp+8; f_b: return into the syscall entry at sp+16;
    # the entry's pt_regs (user mode) at sp+24
    k.put64(sp, 0x1234, fa("f_b", 0x20), fa("asm_exc_page_fault", 0x30))
    k.put(sp + 24, pt_regs(ip=0x401000, sp=0x7FFE0000, cs=0x33, bp=0x55))
    u = Unwinder(k, tables(ORC))
    bt = u.from_regs({"rip": fa("f_a", 0x10), "rsp": sp, "rbp": 7, "cs": 0x10})
    assert [f.pc for f in bt.frames] == [fa("f_a", 0x10), fa("f_b", 0x20), fa("asm_exc_page_fault", 0x30),
                                         0x401000]
    assert [f.kind for f in bt.frames] == ["normal", "normal", "normal", "user"]
    assert [f.sp for f in bt.frames][:3] == [sp, sp + 16, sp + 24]
    assert bt.reason == "user mode" and bt.complete
    assert all(f.reliable for f in bt.frames)


def test_interrupt_frame_crossed_and_marked() -> None:
    k = FakeKernel()
    sp = TOP - 0x400
    # f_b was interrupted at f_c+5 (kernel mode): pt_regs right above f_b's return slot
    k.put64(sp, fa("asm_sysvec_apic_timer_interrupt", 0x10))
    k.put(sp + 8, pt_regs(ip=fa("f_c", 5), sp=sp + 0x300, cs=0x10, bp=0x99))
    u = Unwinder(k, tables(ORC))
    bt = u.from_regs({"rip": fa("f_b", 0x40), "rsp": sp, "rbp": 0, "cs": 0x10})
    assert [f.kind for f in bt.frames] == ["normal", "normal", "interrupt"]
    assert bt.frames[2].pc == fa("f_c", 5) and bt.frames[2].exact
    assert bt.reason == "end of stack" and bt.complete


def test_exception_frame_kind() -> None:
    k = FakeKernel()
    sp = TOP - 0x400
    k.put64(sp, fa("asm_exc_page_fault", 0x10))
    k.put(sp + 8, pt_regs(ip=fa("f_c", 7), sp=sp + 0x300, cs=0x10))
    bt = Unwinder(k, tables(ORC)).from_regs({"rip": fa("f_b", 0x40), "rsp": sp, "cs": 0x10})
    assert bt.frames[-1].kind == "exception"


def test_undefined_entry_falls_back_to_a_call_site_scan() -> None:
    k = FakeKernel()
    sp = TOP - 0x300
    ret = k.call(fa("caller", 0x20), fa("nonstd"))
    k.put64(sp, 0xDEAD, fa("f_b", 0x11), ret)  # noise first: f_b+0x11 is not a call site
    bt = Unwinder(k, tables(ORC)).from_regs({"rip": fa("nonstd", 0x40), "rsp": sp, "cs": 0x10})
    assert [f.pc for f in bt.frames] == [fa("nonstd", 0x40), ret]
    assert bt.frames[1].method == "scan" and not bt.frames[1].reliable
    assert bt.frames[1].sp == sp + 24
    assert bt.reason == "end of stack"


def test_no_entry_uses_the_frame_pointer() -> None:
    k = FakeKernel()
    sp = TOP - 0x300
    bp = sp + 0x40
    ret = k.call(fa("caller", 0x30), 0xFFFFFFFFA0000000)
    k.put64(bp, 0x4242, ret)
    u = Unwinder(k, tables(ORC))
    bt = u.from_regs({"rip": 0xFFFFFFFFA0000010, "rsp": sp, "rbp": bp, "cs": 0x10})  # JIT code
    assert [f.pc for f in bt.frames] == [0xFFFFFFFFA0000010, ret]
    assert bt.frames[1].method == "fp" and bt.frames[1].sp == bp + 16


def test_bad_frames_stop_with_a_reason() -> None:
    k = FakeKernel()
    sp = TOP - 0x300
    u = Unwinder(k, tables(ORC))
    # the stack page is not in the dump
    bt = u.from_regs({"rip": fa("f_b", 0x10), "rsp": sp, "cs": 0x10})
    assert len(bt.frames) == 1 and not bt.complete and "unreadable" in bt.reason
    # a return address that is not kernel text
    k.put64(sp, 0x1234)
    bt = u.__class__(k, tables(ORC)).from_regs({"rip": fa("f_b", 0x10), "rsp": sp, "cs": 0x10})
    assert "not kernel text" in bt.reason and not bt.complete
    # no ORC, no frame pointer, nothing to scan for
    bt = Unwinder(k, tables(ORC)).from_regs({"rip": 0xFFFFFFFFA0000010, "rsp": sp, "rbp": 0, "cs": 0x10})
    assert "no ORC entry" in bt.reason


def test_wrong_direction_and_max_frames() -> None:
    k = FakeKernel()
    sp = TOP - 0x1000
    k.put64(sp, *([fa("f_b", 0x20)] * 64))
    bt = Unwinder(k, tables(ORC), max_frames=5).from_regs({"rip": fa("f_b", 0x10), "rsp": sp, "cs": 0x10})
    assert len(bt.frames) == 5 and "after 5 frames" in bt.reason
    loop = dict(ORC, f_b=(REG_SP, 0, REG_UNDEFINED, 0, TYPE_CALL, False))
    k.put64(sp - 8, fa("f_b", 0x20))
    bt = Unwinder(k, tables(loop)).from_regs({"rip": fa("f_b", 0x10), "rsp": sp, "cs": 0x10})
    assert "wrong direction" in bt.reason and len(bt.frames) == 1


def test_sleeping_task_from_inactive_task_frame() -> None:
    k = FakeKernel()
    stack = STACK
    thread_sp = stack + 0x3E00
    # inactive_task_frame: r15 r14 r13 r12 bx bp ret_addr, then f_b's caller slot
    k.put64(thread_sp, 15, 14, 13, 12, 0xB, 0xBB, fa("f_b", 0x20), fa("thread_top", 0x8))
    bt = Unwinder(k, tables(ORC)).from_task(thread_sp, stack)
    assert [f.pc for f in bt.frames] == [fa("f_b", 0x20), fa("thread_top", 0x8)]
    assert bt.frames[0].sp == thread_sp + 56 and not bt.frames[0].exact
    assert bt.reason == "end of stack" and bt.complete
    bad = Unwinder(k, tables(ORC)).from_task(0xFFFFC90000F00000, None)
    assert bad.frames == [] and "cannot read" in bad.reason


def test_user_mode_start() -> None:
    bt = Unwinder(FakeKernel(), tables(ORC)).from_regs({"rip": 0x400000, "rsp": 0x7FFF0000, "cs": 0x33})
    assert [f.kind for f in bt.frames] == ["user"] and bt.reason == "user mode"


def test_bp_recovered_from_prev_sp_slot() -> None:
    k = FakeKernel()
    sp = TOP - 0x200
    # f_a saved the caller's bp at cfa-16; f_b's frame is found through bp (sp_reg BP)
    k.put64(sp, sp + 0x80, fa("f_b", 0x20))
    k.put64(sp + 0x80, 0, fa("f_c", 0x10))
    via_bp = dict(ORC, f_b=(REG_BP, 16, REG_PREV_SP, -16, TYPE_CALL, False))
    bt = Unwinder(k, tables(via_bp)).from_regs({"rip": fa("f_a", 0x10), "rsp": sp, "rbp": 1, "cs": 0x10})
    assert [f.pc for f in bt.frames] == [fa("f_a", 0x10), fa("f_b", 0x20), fa("f_c", 0x10)]
    assert bt.frames[2].sp == sp + 0x90


@pytest.mark.parametrize("name,kind", [("asm_sysvec_apic_timer_interrupt", "interrupt"),
                                       ("asm_common_interrupt", "interrupt"),
                                       ("asm_exc_page_fault", "exception"), ("asm_exc_nmi", "exception")])
def test_classify_entry(name: str, kind: str) -> None:
    from kdnb.kernel.unwind import classify_entry

    assert classify_entry(name) == kind


def test_irq_stack_switch_sp_indirect() -> None:
    """call_on_irqstack: the top slot of the IRQ stack holds the task stack's sp (deref, then add)."""
    k = FakeKernel()
    irq_sp = 0xFFFFC90000100000 - 0x100
    task_sp = TOP - 0x800
    k.put64(irq_sp, task_sp)
    k.put64(task_sp + 8, fa("f_c", 0x10))  # cfa = task_sp + 16, return address below it
    orc = dict(ORC, f_b=(REG_SP_INDIRECT, 16, REG_UNDEFINED, 0, TYPE_CALL, False))
    bt = Unwinder(k, tables(orc)).from_regs({"rip": fa("f_b", 0x10), "rsp": irq_sp, "cs": 0x10})
    assert [f.pc for f in bt.frames] == [fa("f_b", 0x10), fa("f_c", 0x10)]
    assert bt.frames[1].sp == task_sp + 16 and bt.reason == "end of stack"


def test_iret_frame_regs_partial() -> None:
    k = FakeKernel()
    sp = TOP - 0x400
    k.put64(sp, fa("asm_sysvec_apic_timer_interrupt", 0x8))
    # the hardware iret frame only: ip cs flags sp ss
    k.put64(sp + 8, fa("f_c", 3), 0x10, 0x246, sp + 0x200, 0x18)
    orc = dict(ORC, asm_sysvec_apic_timer_interrupt=(REG_SP, 0, REG_UNDEFINED, 0, TYPE_REGS_PARTIAL, True))
    bt = Unwinder(k, tables(orc)).from_regs({"rip": fa("f_b", 0x40), "rsp": sp, "rbp": 0x77, "cs": 0x10})
    assert [f.kind for f in bt.frames] == ["normal", "normal", "interrupt"]
    assert bt.frames[2].pc == fa("f_c", 3) and bt.frames[2].sp == sp + 0x200


def test_without_orc_tables_frame_pointers_still_walk() -> None:
    """A kernel without ORC (no __start_orc_unwind_ip): frame pointers, checked against call sites."""

    class NoOrc(FakeKernel):
        def symbol(self, name: str) -> int:
            from kdnb.errors import SymbolNotFound

            raise SymbolNotFound(name)

        def type(self, name: str):
            from kdnb.errors import TypeNotFound

            raise TypeNotFound(name)

    k = NoOrc()
    sp = TOP - 0x300
    bp1, bp2 = sp + 0x20, sp + 0x60
    r1 = k.call(fa("f_b", 0x30), fa("f_a"))
    r2 = k.call(fa("f_c", 0x30), fa("f_b"))
    k.put64(bp1, bp2, r1)
    k.put64(bp2, 0, r2)
    u = Unwinder(k)
    bt = u.from_regs({"rip": fa("f_a", 0x10), "rsp": sp, "rbp": bp1, "cs": 0x10})
    assert [f.pc for f in bt.frames][:3] == [fa("f_a", 0x10), r1, r2]
    assert all(f.method == "fp" and not f.reliable for f in bt.frames[1:3])
    assert any("no ORC" in p for p in u.problems)
