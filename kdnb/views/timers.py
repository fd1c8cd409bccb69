"""`Dump.timers`: pending timers of each CPU (crash `timer`, `timer -r`, /proc/timer_list).

Timer-wheel timers hang in the hlists `timer_bases[base].vectors[]` of each CPU (BTF has no type
for the per-CPU array, so NR_BASES is found by reading bases while their own `cpu` and `clk`
members say they are this CPU's timer bases);
hrtimers are the red-black trees `hrtimer_bases.clock_base[].active` of each CPU. Expiries are
given relative to the crash: jiffies against `jiffies_64` (HZ inferred from jiffies and the
uptime, since INITIAL_JIFFIES is 2^32 - 300*HZ), hrtimer ktimes against the monotonic clock (the
timekeeper's boot time minus the BOOTTIME base's offset) plus each clock base's own offset.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Any

import pandas as pd

from ..errors import KdnbError
from .common import Gaps, fitting, online_cpus, read_or_none

if TYPE_CHECKING:  # pragma: no cover
    from ..api import Dump
    from ..kernel.kernel import Kernel

MAX_TIMERS = 1 << 20
MAX_BASES = 4  # NR_BASES: 2 (BASE_STD, BASE_DEF), 3 since 6.9 (BASE_LOCAL, BASE_GLOBAL, BASE_DEF)
HZ_CHOICES = (100, 250, 300, 1000)
HRTIMER_BASES = ["MONOTONIC", "REALTIME", "BOOTTIME", "TAI", "MONOTONIC_SOFT", "REALTIME_SOFT",
                 "BOOTTIME_SOFT", "TAI_SOFT"]  # enum hrtimer_base_type
BOOTTIME = 2
COLUMNS = ["cpu", "kind", "base", "expires", "expires_in", "function", "address"]


def infer_hz(jiffies: int, uptime_ns: int) -> int | None:
    """CONFIG_HZ from jiffies_64 = 2^32 - 300*HZ + HZ*uptime (None when no choice fits)."""
    seconds = uptime_ns / 1e9
    if abs(seconds - 300) < 1:
        return None
    hz = (jiffies - (1 << 32)) / (seconds - 300)
    best = min(HZ_CHOICES, key=lambda h: abs(h - hz))
    return best if abs(best - hz) < 0.05 * best else None


def _symbol(k: "Kernel", fn: int) -> str:
    hit = k.lookup(fn) if fn else None
    return hit.name if hit is not None else f"{fn:#x}"


def _wheel(k: "Kernel", cpu: int, jiffies: int | None, gaps: Gaps, out: list[dict[str, Any]]) -> None:
    base_t = k.type("struct timer_base")
    size = base_t.size or 0
    vec = base_t.member("vectors")
    nvec = vec.type.strip().length
    timer = k.layout(k.type("struct timer_list"), ["entry.next", "expires", "function"])
    entry_off = k.type("struct timer_list").offsetof("entry")
    head = k.layout(base_t, ["cpu", "clk"])
    start = k.per_cpu("timer_bases", cpu)
    for b in range(MAX_BASES):
        addr = start + b * size
        data = read_or_none(k, addr, size, gaps, f"timer_base {b} of cpu {cpu}")
        if data is None:
            continue
        base_cpu, clk = head.unpack(data)
        if base_cpu != cpu or jiffies is not None and abs(clk - jiffies) > 1 << 31:
            break  # past NR_BASES: another per-CPU variable
        heads = struct.unpack_from(f"<{nvec}Q", data, vec.offset)
        for node in heads:
            seen: set[int] = set()
            while node and node not in seen and len(out) < MAX_TIMERS:
                seen.add(node)
                t = node - entry_off
                raw = read_or_none(k, t, timer.size, gaps, "timer_list")
                if raw is None:
                    break
                node, expires, fn = timer.unpack(raw)
                out.append({"cpu": cpu, "kind": "timer", "base": str(b), "expires": expires,
                            "function": _symbol(k, fn), "address": t})


def _rb_nodes(k: "Kernel", root: int, gaps: Gaps, limit: int) -> list[int]:
    """Nodes of a red-black tree (struct rb_node: parent_color, right, left), in order."""
    out: list[int] = []
    stack: list[int] = []
    node, seen = root, set()
    while (stack or node) and len(out) < limit:
        if node:
            if node in seen:
                gaps.note(f"rb-tree cycle at {node:#x}", node)
                break
            seen.add(node)
            stack.append(node)
            raw = read_or_none(k, node, 24, gaps, "rb_node")
            node = struct.unpack_from("<Q", raw, 16)[0] if raw is not None else 0  # rb_left
        else:
            node = stack.pop()
            out.append(node)
            node = k.read_u64(node + 8)  # rb_right
    return out


def _hrtimers(k: "Kernel", cpu: int, gaps: Gaps, out: list[dict[str, Any]]) -> dict[int, int]:
    """Append the CPU's hrtimers; return each clock base's offset (ns) by index."""
    cb = k.type("struct hrtimer_cpu_base")
    base_t = k.type("struct hrtimer_clock_base")
    clock = cb.member("clock_base")
    n = clock.type.strip().length
    bsize = base_t.size or 0
    active_off = base_t.offsetof("active")
    offset_off = base_t.offsetof("offset")
    ht = k.type("struct hrtimer")
    timer = k.layout(ht, ["node.expires", "function"])
    node_off = ht.offsetof("node")
    addr = k.per_cpu("hrtimer_bases", cpu)
    data = read_or_none(k, addr, cb.size or 0, gaps, f"hrtimer_cpu_base of cpu {cpu}")
    offsets: dict[int, int] = {}
    if data is None:
        return offsets
    for i in range(n):
        b = clock.offset + i * bsize
        (root,) = struct.unpack_from("<Q", data, b + active_off)
        offsets[i] = struct.unpack_from("<q", data, b + offset_off)[0]
        try:
            nodes = _rb_nodes(k, root, gaps, MAX_TIMERS)
        except KdnbError as exc:
            gaps.note(f"hrtimer tree of cpu {cpu} base {i}", root, exc)
            continue
        for node in nodes:
            t = node - node_off
            raw = read_or_none(k, t, timer.size, gaps, "hrtimer")
            if raw is not None:
                expires, fn = timer.unpack(raw)
                out.append({"cpu": cpu, "kind": "hrtimer", "base": HRTIMER_BASES[i] if i < 8 else str(i),
                            "expires": expires, "function": _symbol(k, fn), "address": t,
                            "_offset": offsets[i]})
    return offsets


def timers_frame(dump: "Dump") -> pd.DataFrame:
    """One row per pending timer: cpu, kind (timer, hrtimer), base (wheel base index, or the
    hrtimer clock: MONOTONIC, REALTIME, BOOTTIME, TAI, *_SOFT), expires (jiffies, or ns of that
    clock), expires_in (Timedelta from the crash; negative: overdue), function, address."""
    k = dump.kernel
    gaps = Gaps()
    rows: list[dict[str, Any]] = []
    boot_offset = jiffies = None
    try:
        jiffies = k.read_u64(k.symbol("jiffies_64"))
    except KdnbError as exc:
        gaps.note("jiffies_64", None, exc)
    for cpu in online_cpus(k):
        try:
            _wheel(k, cpu, jiffies, gaps, rows)
        except KdnbError as exc:
            gaps.note(f"timer wheel of cpu {cpu}", None, exc)
        try:
            boot_offset = _hrtimers(k, cpu, gaps, rows).get(BOOTTIME, boot_offset)
        except KdnbError as exc:
            gaps.note(f"hrtimers of cpu {cpu}", None, exc)
    uptime = dump.sys_info.get("uptime")
    hz = mono = None
    if uptime is not None and not pd.isna(uptime):
        up = int(uptime.value)
        hz = infer_hz(jiffies, up) if jiffies is not None else None
        mono = up - (boot_offset or 0)
    for r in rows:
        if r["kind"] == "timer":
            delta = ((r["expires"] - jiffies + (1 << 63)) % (1 << 64) - (1 << 63)) if jiffies is not None else None
            r["expires_in"] = delta * 1_000_000_000 // hz if delta is not None and hz else None
        else:
            r["expires_in"] = r["expires"] - r.pop("_offset") - mono if mono is not None else None
    df = pd.DataFrame({
        "cpu": fitting([r["cpu"] for r in rows], "Int16", "cpu", gaps),
        "kind": pd.Categorical([r["kind"] for r in rows], categories=["timer", "hrtimer"]),
        "base": pd.array([r["base"] for r in rows], dtype="string"),
        "expires": fitting([r["expires"] for r in rows], "Int64", "expires", gaps),
        "expires_in": pd.to_timedelta(fitting([r["expires_in"] for r in rows], "Int64", "expires_in", gaps),
                                      unit="ns"),
        "function": pd.array([r["function"] for r in rows], dtype="string"),
        "address": fitting([r["address"] for r in rows], "UInt64", "address", gaps),
    }, columns=COLUMNS)
    df = df.sort_values(["cpu", "kind", "expires_in"], kind="stable").reset_index(drop=True)
    df.attrs["kdnb"] = {"hz": hz, "jiffies": jiffies}
    return gaps.attach(df, "timers")
