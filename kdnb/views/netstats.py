"""Interface counters of a `net_device` as dev_get_stats() (/proc/net/dev) computes them.

dev_get_stats() asks the driver's `ndo_get_stats64` when it has one, else uses the generic
`dev->stats` (`struct net_device_stats`), adding the per-CPU software counters when the device
declares them (`pcpu_stat_type` == NETDEV_PCPU_STAT_TSTATS, 6.7+ 34d21de99cea "net: Move
{l,t,d}stats allocation to core and convert veth & vrf"), then adds the core drop counters
(per-CPU `core_stats` since 5.19 625788b58445 "net: add per-cpu storage and net->core_stats",
before that the atomics `rx_dropped`/`tx_dropped`). kdnb reproduces the driver callbacks whose
storage is generic: loopback_get_stats64 (per-CPU `lstats`, rx = tx) and dev_get_tstats64
(`dev->stats` + per-CPU `tstats`). Any other driver callback keeps its counters in the driver's
private structures: those counters are NA and the reason is kept in `na`.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Any

from ..errors import KdnbError
from .common import Gaps, cpumask, read_or_none

if TYPE_CHECKING:  # pragma: no cover
    from ..kernel.kernel import Kernel

COUNTERS = ["rx_packets", "rx_bytes", "rx_errors", "rx_dropped", "tx_packets", "tx_bytes",
            "tx_errors", "tx_dropped"]
#: per-CPU software counter structs: their u64 members and the counter each one adds to
PCPU = {"lstats": ("struct pcpu_lstats", {"packets": ("rx_packets", "tx_packets"),
                                          "bytes": ("rx_bytes", "tx_bytes")}),
        "tstats": ("struct pcpu_sw_netstats", {"rx_packets": ("rx_packets",), "rx_bytes": ("rx_bytes",),
                                               "tx_packets": ("tx_packets",), "tx_bytes": ("tx_bytes",)}),
        "dstats": ("struct pcpu_dstats", {"rx_packets": ("rx_packets",), "rx_bytes": ("rx_bytes",),
                                          "rx_drops": ("rx_dropped",), "tx_packets": ("tx_packets",),
                                          "tx_bytes": ("tx_bytes",), "tx_drops": ("tx_dropped",)})}
PCPU_STAT_TYPES = {1: "lstats", 2: "tstats", 3: "dstats"}  # enum netdev_stat_type
#: driver callbacks whose counters live in generic storage
CALLBACKS = {"loopback_get_stats64": "lstats", "dev_get_tstats64": "tstats"}


class NetStats:
    """Reads the counters of each device; `na` maps device name -> why its counters are NA."""

    def __init__(self, k: "Kernel", gaps: Gaps) -> None:
        self.k, self.gaps = k, gaps
        nd = k.type("struct net_device")
        fields = ["netdev_ops", "lstats"]
        self.stat_type = nd.has_member("pcpu_stat_type")
        self.core = nd.has_member("core_stats")
        fields += (["pcpu_stat_type"] if self.stat_type else []) + \
            (["core_stats"] if self.core else ["rx_dropped.counter", "tx_dropped.counter"])
        self.dev = k.layout(nd, fields)
        self.stats_off = nd.offsetof("stats")
        self.stats = k.layout(k.type("struct net_device_stats"), COUNTERS)
        ops = k.type("struct net_device_ops")
        self.ops = k.layout(ops, ["ndo_get_stats64", "ndo_get_stats"])
        self.core_layout = k.layout(k.type("struct net_device_core_stats"), ["rx_dropped", "tx_dropped"]) \
            if self.core else None
        try:
            self.cpus = cpumask(k, "__cpu_possible_mask") or list(range(k.nr_cpu_ids))
        except KdnbError:
            self.cpus = list(range(k.nr_cpu_ids))
        self.na: dict[str, str] = {}

    def of(self, dev: int, name: str) -> dict[str, Any]:
        """The counters of one device and `stats_source`; NA counters (reason in `na`) when
        its driver keeps them privately or they cannot be read."""
        out: dict[str, Any] = {c: None for c in COUNTERS}
        out["stats_source"] = None
        try:
            v = self.dev.unpack(self.k.read(dev, self.dev.size))
            ops, pcpu = v[0], v[1]
            stat_type = v[2] if self.stat_type else 0
            get64, get = self.ops.unpack(self.k.read(ops, self.ops.size)) if ops else (0, 0)
            source = self._source(get64 or get, stat_type, name)
            if source is None:
                return out
            counts = dict.fromkeys(COUNTERS, 0)
            if source != "lstats":  # loopback_get_stats64 fills only packets and bytes
                counts.update(zip(COUNTERS, self.stats.unpack(self.k.read(dev + self.stats_off,
                                                                          self.stats.size))))
            if source in PCPU and pcpu:
                self._add_pcpu(counts, source, pcpu)
            src = [source if source in PCPU else "stats"]
            if self.core:
                if v[-1]:
                    self._add_pcpu_core(counts, v[-1])
                    src.append("core_stats")
            else:
                counts["rx_dropped"] += v[-2]
                counts["tx_dropped"] += v[-1]
            out.update(counts, stats_source="+".join(src))
        except KdnbError as exc:
            self.gaps.note(f"counters of {name}", dev, exc)
            self.na[name] = f"unreadable: {exc}"
        return out

    def _source(self, callback: int, stat_type: int, name: str) -> str | None:
        """Where dev_get_stats() takes this device's counters from, or None (reason noted)."""
        if not callback:
            pcpu = PCPU_STAT_TYPES.get(stat_type)
            return "tstats" if pcpu == "tstats" else "stats"
        hit = self.k.lookup(callback)
        fn = hit.name if hit is not None else f"{callback:#x}"
        if fn in CALLBACKS:
            return CALLBACKS[fn]
        where = f" (module {hit.module})" if hit is not None and hit.module else ""
        self.na[name] = f"the driver's {fn}{where} keeps its counters in its own structures"
        return None

    def _add_pcpu(self, counts: dict[str, int], kind: str, pcpu: int) -> None:
        type_name, members = PCPU[kind]
        t = self.k.type(type_name)
        offs = [(t.offsetof(m), targets) for m, targets in members.items() if t.has_member(m)]
        size = max(o for o, _ in offs) + 8
        for cpu in self.cpus:
            raw = read_or_none(self.k, self.k.per_cpu(pcpu, cpu), size, self.gaps, f"{kind} of cpu {cpu}")
            if raw is None:
                raise KdnbError(f"{kind} of cpu {cpu} at {pcpu:#x} is not in the dump")
            for off, targets in offs:
                (value,) = struct.unpack_from("<Q", raw, off)
                for target in targets:
                    counts[target] += value

    def _add_pcpu_core(self, counts: dict[str, int], core: int) -> None:
        layout = self.core_layout
        assert layout is not None
        for cpu in self.cpus:
            raw = self.k.read(self.k.per_cpu(core, cpu), layout.size)
            rx, tx = layout.unpack(raw)
            counts["rx_dropped"] += rx
            counts["tx_dropped"] += tx
