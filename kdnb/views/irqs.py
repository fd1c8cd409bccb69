"""`Dump.irqs` and `Dump.softirqs`: interrupt counts per CPU (crash `irq -s`, /proc/interrupts,
/proc/softirqs).

IRQ descriptors live in the `sparse_irqs` maple tree (6.5+, 721255b9826b "genirq: Use a maple
tree for interrupt descriptor management"), before that in the `irq_desc_tree` radix tree
(CONFIG_SPARSE_IRQ, on in Debian). Each descriptor's per-CPU count is `kstat_irqs` (an
`unsigned int`, the first member of `struct irqstat` since 6.10); its handlers are the
`irqaction` chain. Softirq counts are the per-CPU `kstat.softirqs[]`, named by the kernel's own
`softirq_to_name[]`.

The architecture's rows of /proc/interrupts (NMI, LOC, RES, CAL, TLB, ...; x86's
arch_show_interrupts()) are the per-CPU `irq_stat` (irq_cpustat_t) counters that this kernel's
BTF has (7.x: `counts[]` indexed by `enum irq_stat_counts`), before 7.x the per-CPU
`mce_exception_count`/`mce_poll_count` and the global `irq_err_count` and `irq_mis_count`
(total only).
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Any

import pandas as pd

from ..errors import KdnbError
from .common import Gaps, enum_values, fitting, online_cpus, read_or_none
from .trees import MapleTree, maple_entries, xarray_entries

if TYPE_CHECKING:  # pragma: no cover
    from ..api import Dump
    from ..kernel.kernel import Kernel

MAX_IRQS = 1 << 16  # IRQ_BITMAP_BITS is NR_IRQS + 8196 (~ 10-20 k on x86_64)
MAX_ACTIONS = 256  # shared handlers of one line
#: /proc/interrupts' x86 rows: (name, irq_cpustat_t member, enum irq_stat_counts suffix (7.x
#: keeps them in `counts[]`), description), in the kernel's order
ARCH_ROWS = (("NMI", "__nmi_count", "NMI", "Non-maskable interrupts"),
             ("LOC", "apic_timer_irqs", "APIC_TIMER", "Local timer interrupts"),
             ("SPU", "irq_spurious_count", "SPURIOUS", "Spurious interrupts"),
             ("PMI", "apic_perf_irqs", "APIC_PERF", "Performance monitoring interrupts"),
             ("IWI", "apic_irq_work_irqs", "IRQ_WORK", "IRQ work interrupts"),
             ("RTR", "icr_read_retry_count", "ICR_READ_RETRY", "APIC ICR read retries"),
             ("PLT", "x86_platform_ipis", "X86_PLATFORM_IPI", "Platform interrupts"),
             ("RES", "irq_resched_count", "RESCHEDULE", "Rescheduling interrupts"),
             ("CAL", "irq_call_count", "CALL_FUNCTION", "Function call interrupts"),
             ("TLB", "irq_tlb_count", "TLB", "TLB shootdowns"),
             ("TRM", "irq_thermal_count", "THERMAL_APIC", "Thermal event interrupts"),
             ("THR", "irq_threshold_count", "THRESHOLD_APIC", "Threshold APIC interrupts"),
             ("DFR", "irq_deferred_error_count", "DEFERRED_ERROR", "Deferred Error APIC interrupts"),
             ("MCE", None, "MCE_EXCEPTION", "Machine check exceptions"),
             ("MCP", None, "MCE_POLL", "Machine check polls"),
             ("HYP", "irq_hv_callback_count", "HYPERVISOR_CALLBACK", "Hypervisor callback interrupts"),
             ("HRE", "irq_hv_reenlightenment_count", "HYPERV_REENLIGHTENMENT",
              "Hyper-V reenlightenment interrupts"),
             ("HVS", "hyperv_stimer0_count", "HYPERV_STIMER0", "Hyper-V stimer0 interrupts"),
             ("ERR", None, "PIC_APIC_ERROR", ""),
             ("MIS", None, "IOAPIC_MISROUTED", ""),
             ("PIN", "kvm_posted_intr_ipis", "POSTED_INTR", "Posted-interrupt notification event"),
             ("NPI", "kvm_posted_intr_nested_ipis", "POSTED_INTR_NESTED", "Nested posted-interrupt event"),
             ("PIW", "kvm_posted_intr_wakeup_ipis", "POSTED_INTR_WAKEUP", "Posted-interrupt wakeup event"),
             ("VPMI", None, "PERF_GUEST_MEDIATED_PMI", "Perf Guest Mediated PMI"))
#: before 7.x the machine-check counts are per-CPU variables of their own
PERCPU_ROWS = {"MCE": "mce_exception_count", "MCP": "mce_poll_count"}
GLOBAL_ROWS = (("ERR", "irq_err_count"), ("MIS", "irq_mis_count"))


def _descriptors(k: "Kernel", gaps: Gaps) -> list[tuple[int, int]]:
    """(index, irq_desc address) of every allocated descriptor."""
    try:
        root = k.symbol("sparse_irqs")
    except KdnbError:
        head = k.read_u64(k.symbol("irq_desc_tree") + k.type("struct xarray").offsetof("xa_head"))
        return list(xarray_entries(k, head, gaps, MAX_IRQS))
    ma_root = k.read_u64(root + k.type("struct maple_tree").offsetof("ma_root"))
    return [(first, entry) for first, _last, entry in maple_entries(k, ma_root, MapleTree(k), gaps, MAX_IRQS)]


def _actions(k: "Kernel", first: int, layout: Any, gaps: Gaps) -> tuple[list[str], list[str]]:
    """Names and handler symbols along an irqaction chain."""
    names, handlers, seen = [], [], set()
    action = first
    while action and action not in seen and len(seen) < MAX_ACTIONS:
        seen.add(action)
        data = read_or_none(k, action, layout.size, gaps, "irqaction")
        if data is None:
            break
        handler, name, action = layout.unpack(data)
        try:
            names.append(k.read_cstring(name, 64) if name else "")
        except KdnbError as exc:
            gaps.note("irqaction name", name, exc)
        hit = k.lookup(handler) if handler else None
        handlers.append(hit.name if hit is not None else f"{handler:#x}")
    return names, handlers


def _arch_counters(k: "Kernel", gaps: Gaps) -> list[tuple[str, int, str]]:
    """(name, per-CPU address, description) of each architecture counter this kernel has."""
    out: list[tuple[str, int, str]] = []
    try:
        base, t = k.symbol("irq_stat"), k.type("irq_cpustat_t")
    except KdnbError as exc:
        gaps.note("irq_stat", None, exc)
        return out
    # 7.x: `unsigned int counts[IRQ_COUNT_MAX]` indexed by enum irq_stat_counts
    index = enum_values(k, "enum irq_stat_counts") if t.has_member("counts") else {}
    for name, member, suffix, text in ARCH_ROWS:
        if index:
            if f"IRQ_COUNT_{suffix}" in index:
                out.append((name, base + t.offsetof("counts") + 4 * index[f"IRQ_COUNT_{suffix}"], text))
        elif member is not None and t.has_member(member):
            out.append((name, base + t.offsetof(member), text))
        elif name in PERCPU_ROWS:
            try:
                out.append((name, k.symbol(PERCPU_ROWS[name]), text))
            except KdnbError:
                pass  # CONFIG_X86_MCE off, or the symbol not in kallsyms
    return out


def _arch_rows(k: "Kernel", cpus: list[int], gaps: Gaps) -> list[dict[str, Any]]:
    """The architecture rows (irq NA, name NMI/LOC/..., actions its description)."""
    rows: list[dict[str, Any]] = []
    for name, addr, text in _arch_counters(k, gaps):
        counts: list[int | None] = []
        for cpu in cpus:
            raw = read_or_none(k, k.per_cpu(addr, cpu), 4, gaps, f"{name} of cpu {cpu}")
            counts.append(struct.unpack("<I", raw)[0] if raw is not None else None)
        rows.append({"irq": None, "name": name, "chip": "", "hwirq": None, "actions": text, "handlers": "",
                     "total": None if None in counts else sum(counts),  # type: ignore[arg-type]
                     **{f"cpu{c}": n for c, n in zip(cpus, counts)}})
    have = {r["name"] for r in rows}
    for name, sym in GLOBAL_ROWS:
        try:
            if name not in have:
                total = struct.unpack("<i", k.read(k.symbol(sym), 4))[0]
                rows.append({"irq": None, "name": name, "chip": "", "hwirq": None, "actions": "",
                             "handlers": "", "total": total, **{f"cpu{c}": None for c in cpus}})
        except KdnbError:
            continue
    return rows


def irqs_frame(dump: "Dump") -> pd.DataFrame:
    """One row per allocated IRQ descriptor, then the architecture's rows: irq (NA for an
    architecture row), name (the irq number, or NMI, LOC, RES, CAL, TLB, ... as
    /proc/interrupts names them), chip (irq_chip name), hwirq, actions (the handlers' names, as in
    /proc/interrupts; an architecture row's description), handlers (their functions), total, then
    one column `cpuN` per online CPU with that CPU's count (Int64; NA for ERR and MIS, which
    the kernel counts globally)."""
    k = dump.kernel
    gaps = Gaps()
    desc_t = k.type("struct irq_desc")
    desc = k.layout(desc_t, ["irq_data.irq", "irq_data.hwirq", "irq_data.chip", "kstat_irqs", "action"])
    action = k.layout(k.type("struct irqaction"), ["handler", "name", "next"])
    chip_name_off = k.type("struct irq_chip").offsetof("name")
    cpus = online_cpus(k)
    offsets = k.per_cpu_offsets
    chips: dict[int, str] = {}
    rows: list[dict[str, Any]] = []
    for _index, addr in _descriptors(k, gaps):
        data = read_or_none(k, addr, desc.size, gaps, "irq_desc")
        if data is None:
            continue
        irq, hwirq, chip, kstat, first = desc.unpack(data)
        if chip and chip not in chips:
            try:
                chips[chip] = k.read_cstring(k.read_u64(chip + chip_name_off), 64)
            except KdnbError:
                chips[chip] = "?"
        counts: list[int | None] = []
        for cpu in cpus:
            raw = read_or_none(k, (kstat + int(offsets[cpu])) & (2**64 - 1), 4, gaps,
                               f"kstat_irqs of irq {irq} cpu {cpu}") if kstat else b"\0\0\0\0"
            counts.append(struct.unpack("<I", raw)[0] if raw is not None else None)
        names, handlers = _actions(k, first, action, gaps)
        rows.append({"irq": irq, "name": str(irq), "chip": chips.get(chip, ""), "hwirq": hwirq,
                     "actions": ", ".join(names), "handlers": ", ".join(handlers),
                     "total": None if None in counts else sum(counts),  # type: ignore[arg-type]
                     **{f"cpu{c}": n for c, n in zip(cpus, counts)}})
    rows.sort(key=lambda r: r["irq"])
    rows += _arch_rows(k, cpus, gaps)
    cols = ["irq", "name", "chip", "hwirq", "actions", "handlers", "total"] + [f"cpu{c}" for c in cpus]
    df = pd.DataFrame({
        "irq": fitting([r["irq"] for r in rows], "Int32", "irq", gaps),
        "name": pd.array([r["name"] for r in rows], dtype="string"),
        "chip": pd.Categorical([r["chip"] for r in rows]),
        "hwirq": fitting([r["hwirq"] for r in rows], "UInt64", "hwirq", gaps),
        "actions": pd.array([r["actions"] for r in rows], dtype="string"),
        "handlers": pd.array([r["handlers"] for r in rows], dtype="string"),
        **{c: fitting([r[c] for r in rows], "Int64", c, gaps) for c in cols[6:]},
    }, columns=cols)
    return gaps.attach(df, "irqs")


def softirqs_frame(dump: "Dump") -> pd.DataFrame:
    """One row per softirq (HI, TIMER, NET_TX, ... as /proc/softirqs names them): softirq,
    total, then one column `cpuN` per online CPU (Int64)."""
    k = dump.kernel
    gaps = Gaps()
    ks = k.type("struct kernel_stat")
    off = ks.offsetof("softirqs")
    n = ks.member("softirqs").type.strip().length
    names = _softirq_names(k, n, gaps)
    cpus = online_cpus(k)
    base = k.symbol("kstat")
    per_cpu: dict[int, tuple[int, ...] | None] = {}
    for cpu in cpus:
        raw = read_or_none(k, k.per_cpu(base, cpu) + off, 4 * n, gaps, f"kstat of cpu {cpu}")
        per_cpu[cpu] = struct.unpack(f"<{n}I", raw) if raw is not None else None
    counts = {f"cpu{c}": [v[i] if v is not None else None for i in range(n)] for c, v in per_cpu.items()}
    totals = [None if any(counts[c][i] is None for c in counts) else sum(counts[c][i] for c in counts)
              for i in range(n)]
    df = pd.DataFrame({"softirq": pd.array(names, dtype="string"),
                       "total": fitting(totals, "Int64", "total", gaps),
                       **{c: fitting(v, "Int64", c, gaps) for c, v in counts.items()}})
    return gaps.attach(df, "softirqs")


def _softirq_names(k: "Kernel", n: int, gaps: Gaps) -> list[str]:
    """The kernel's softirq_to_name[NR_SOFTIRQS] ("HI", "TIMER", ...); indexes where unreadable."""
    try:
        ptrs = struct.unpack(f"<{n}Q", k.read(k.symbol("softirq_to_name"), 8 * n))
        return [k.read_cstring(p, 32) for p in ptrs]
    except KdnbError as exc:
        gaps.note("softirq_to_name", None, exc)
        return [str(i) for i in range(n)]
