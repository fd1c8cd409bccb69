"""`Dump.irqs` and `Dump.softirqs`: interrupt counts per CPU (crash `irq -s`, /proc/interrupts,
/proc/softirqs).

IRQ descriptors live in the `sparse_irqs` maple tree (6.5+, 721255b9826b "genirq: Use a maple
tree for interrupt descriptor management"), before that in the `irq_desc_tree` radix tree
(CONFIG_SPARSE_IRQ, on in Debian). Each descriptor's per-CPU count is `kstat_irqs` (an
`unsigned int`, the first member of `struct irqstat` since 6.10); its handlers are the
`irqaction` chain. Softirq counts are the per-CPU `kstat.softirqs[]`, named by the kernel's own
`softirq_to_name[]`.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Any

import pandas as pd

from ..errors import KdnbError
from .common import Gaps, fitting, online_cpus, read_or_none
from .trees import MapleTree, maple_entries, xarray_entries

if TYPE_CHECKING:  # pragma: no cover
    from ..api import Dump
    from ..kernel.kernel import Kernel

MAX_IRQS = 1 << 16  # IRQ_BITMAP_BITS is NR_IRQS + 8196 (~ 10-20 k on x86_64)
MAX_ACTIONS = 256  # shared handlers of one line


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


def irqs_frame(dump: "Dump") -> pd.DataFrame:
    """One row per allocated IRQ descriptor: irq, chip (irq_chip name), hwirq, actions (the
    handlers' names, as in /proc/interrupts), handlers (their functions), total, then one column
    `cpuN` per online CPU with that CPU's count (Int64)."""
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
        rows.append({"irq": irq, "chip": chips.get(chip, ""), "hwirq": hwirq,
                     "actions": ", ".join(names), "handlers": ", ".join(handlers),
                     "total": None if None in counts else sum(counts),  # type: ignore[arg-type]
                     **{f"cpu{c}": n for c, n in zip(cpus, counts)}})
    rows.sort(key=lambda r: r["irq"])
    cols = ["irq", "chip", "hwirq", "actions", "handlers", "total"] + [f"cpu{c}" for c in cpus]
    df = pd.DataFrame({
        "irq": fitting([r["irq"] for r in rows], "Int32", "irq", gaps),
        "chip": pd.Categorical([r["chip"] for r in rows]),
        "hwirq": fitting([r["hwirq"] for r in rows], "UInt64", "hwirq", gaps),
        "actions": pd.array([r["actions"] for r in rows], dtype="string"),
        "handlers": pd.array([r["handlers"] for r in rows], dtype="string"),
        **{c: fitting([r[c] for r in rows], "Int64", c, gaps) for c in cols[5:]},
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
