"""`Dump.net`: network interfaces of every network namespace (crash `net`, `ip addr`).

`net_namespace_list` links each `struct net` (its `list`); each namespace's `dev_base_head`
links its `net_device`s (`dev_list`). Addresses are the link-layer `dev_addr` and the IPv4
`in_ifaddr` chain of `ip_ptr`. Counters are what dev_get_stats() would return, where kdnb
knows how the driver keeps them (kdnb.views.netstats); sockets are kdnb.views.sockets.
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING, Any

import pandas as pd

from .. import bounds
from ..errors import KdnbError
from .common import Gaps, fitting, read_or_none
from .netstats import COUNTERS, NetStats

if TYPE_CHECKING:  # pragma: no cover
    from ..api import Dump
    from ..kernel.kernel import Kernel

MAX_NAMESPACES = 1 << 16
MAX_DEVICES = 1 << 20
MAX_ADDRESSES = 4096
MAX_ADDR_LEN = 32  # MAX_ADDR_LEN
IFF_FLAGS = ["UP", "BROADCAST", "DEBUG", "LOOPBACK", "POINTOPOINT", "NOTRAILERS", "RUNNING",
             "NOARP", "PROMISC", "ALLMULTI", "MASTER", "SLAVE", "MULTICAST", "PORTSEL",
             "AUTOMEDIA", "DYNAMIC", "LOWER_UP", "DORMANT", "ECHO"]  # include/uapi/linux/if.h
OPERSTATES = ["UNKNOWN", "NOTPRESENT", "DOWN", "LOWERLAYERDOWN", "TESTING", "DORMANT", "UP"]
COLUMNS = ["netns", "name", "ifindex", "flags", "flag_names", "mtu", "operstate", "mac", "ipv4",
           *COUNTERS, "stats_source", "address"]


def _ipv4(k: "Kernel", in_dev: int, gaps: Gaps) -> str:
    """"a.b.c.d/len" of each in_ifaddr on the device, comma-separated."""
    if not in_dev:
        return ""
    ifa_t = k.type("struct in_ifaddr")
    layout = k.layout(ifa_t, ["ifa_next", "ifa_local", "ifa_prefixlen"])
    out, seen = [], set()
    ifa = read_or_none(k, in_dev + k.type("struct in_device").offsetof("ifa_list"), 8, gaps, "in_device")
    node = int.from_bytes(ifa, "little") if ifa is not None else 0
    while node and node not in seen and len(seen) < MAX_ADDRESSES:
        seen.add(node)
        raw = read_or_none(k, node, layout.size, gaps, "in_ifaddr")
        if raw is None:
            break
        node, local, prefix = layout.unpack(raw)
        out.append(f"{ipaddress.IPv4Address(local.to_bytes(4, 'little'))}/{prefix}")
    return ", ".join(out)


def net_frame(dump: "Dump") -> pd.DataFrame:
    """One row per network interface: netns (the namespace's inode number), name, ifindex,
    flags (IFF_*), flag_names (`UP,LOOPBACK,RUNNING`), mtu, operstate (RFC 2863: UP, DOWN, ...),
    mac, ipv4 (`127.0.0.1/8`, comma-separated), rx_packets, rx_bytes, rx_errors, rx_dropped,
    tx_packets, tx_bytes, tx_errors, tx_dropped (UInt64, /proc/net/dev's counters; NA where the
    driver keeps them in its own structures, the reason in attrs["kdnb"]["stats_na"]),
    stats_source (where they were read: stats, lstats, tstats, dstats, + core_stats), address
    (struct net_device)."""
    k = dump.kernel
    gaps = Gaps()
    net_t = k.type("struct net")
    nd = k.type("struct net_device")
    dev = k.layout(nd, ["name", "ifindex", "flags", "mtu", "operstate", "addr_len", "dev_addr", "ip_ptr"])
    rows: list[dict[str, Any]] = []
    stats = NetStats(k, gaps)
    try:
        nets = list(k.list_walk(k.symbol("net_namespace_list"), net_t, "list", max_entries=MAX_NAMESPACES))
    except KdnbError as exc:
        gaps.note("net_namespace_list", None, exc)
        nets = []
    inum_off = net_t.offsetof("ns.inum")
    for net in nets:
        try:
            inum = k.read_u32(net + inum_off)
            walk = k.list_walk(net + net_t.offsetof("dev_base_head"), nd, "dev_list", max_entries=MAX_DEVICES)
            devices = list(walk)
        except KdnbError as exc:
            gaps.note(f"devices of netns at {net:#x}", net, exc)
            continue
        if walk.error is not None:
            gaps.note(str(walk.error))
        for d in devices:
            raw = read_or_none(k, d, dev.size, gaps, "net_device")
            if raw is None:
                continue
            name, ifindex, flags, mtu, oper, addr_len, dev_addr, ip_ptr = dev.unpack(raw)
            mac = None
            try:
                n = bounds.count(addr_len, "net_device.addr_len", MAX_ADDR_LEN)
                mac = ":".join(f"{b:02x}" for b in k.read(dev_addr, n)) if dev_addr and n else ""
            except KdnbError as exc:
                gaps.note(f"dev_addr of {name}", dev_addr, exc)
            rows.append({"netns": inum, "name": name, "ifindex": ifindex, "flags": flags,
                         "flag_names": ",".join(f for i, f in enumerate(IFF_FLAGS) if flags >> i & 1),
                         "mtu": mtu, "operstate": OPERSTATES[oper] if oper < len(OPERSTATES) else str(oper),
                         "mac": mac, "ipv4": _ipv4(k, ip_ptr, gaps), "address": d,
                         **stats.of(d, name)})
    df = pd.DataFrame({
        "netns": fitting([r["netns"] for r in rows], "UInt32", "netns", gaps),
        "name": pd.array([r["name"] for r in rows], dtype="string"),
        "ifindex": fitting([r["ifindex"] for r in rows], "Int32", "ifindex", gaps),
        "flags": fitting([r["flags"] for r in rows], "UInt32", "flags", gaps),
        "flag_names": pd.array([r["flag_names"] for r in rows], dtype="string"),
        "mtu": fitting([r["mtu"] for r in rows], "UInt32", "mtu", gaps),
        "operstate": pd.Categorical([r["operstate"] for r in rows]),
        "mac": pd.array([r["mac"] for r in rows], dtype="string"),
        "ipv4": pd.array([r["ipv4"] for r in rows], dtype="string"),
        **{c: fitting([r[c] for r in rows], "UInt64", c, gaps) for c in COUNTERS},
        "stats_source": pd.array([r["stats_source"] for r in rows], dtype="string"),
        "address": fitting([r["address"] for r in rows], "UInt64", "address", gaps),
    }, columns=COLUMNS)
    if stats.na:
        df.attrs["kdnb"] = {**df.attrs.get("kdnb", {}), "stats_na": dict(stats.na)}
    return gaps.attach(df, "net")
