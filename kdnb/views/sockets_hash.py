"""TCP connections no process holds open: the established hash `tcp_hashinfo.ehash`.

Every TCP connection past the listen state is on one `ehash` chain (an `hlist_nulls` list whose
end is an odd "nulls" value), linked by `sock_common.skc_nulls_node`: full sockets, TIME_WAIT
(`inet_timewait_sock`) and SYN_RECV request sockets (`request_sock`, state NEW_SYN_RECV), all
starting with a `sock_common`. A connection the tasks' files did not show (an orphan being
closed, one waiting in a listener's accept queue, a TIME_WAIT) becomes a row without pid or fd.
A namespace with its own ehash (net.ipv4.tcp_child_ehash_entries, 5.19+) is not walked.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .. import bounds
from ..errors import KdnbError
from .common import Gaps, read_or_none

if TYPE_CHECKING:  # pragma: no cover
    from ..kernel.kernel import Kernel

MAX_BUCKETS = 1 << 26  # tcp_hashinfo is sized from RAM: 2^26 buckets is a 64 GiB-of-pointers table
MAX_CONNECTIONS = 1 << 22
TCP_TIME_WAIT, TCP_NEW_SYN_RECV = 6, 12


def unowned_tcp(k: "Kernel", known: set[int], sock_row: Callable[[int], dict[str, Any] | None],
                common_row: Callable[[int], dict[str, Any] | None], gaps: Gaps) -> list[dict[str, Any]]:
    """Rows of the ehash's connections whose sock is not in `known`: full sockets through
    `sock_row(sk)`, TIME_WAIT and request sockets through `common_row(sk)` (sock_common only)."""
    try:
        h = k.type("struct inet_hashinfo")
        layout = k.layout(h, ["ehash", "ehash_mask"])
        ehash, mask = layout.unpack(k.read(k.symbol("tcp_hashinfo"), layout.size))
        n = bounds.count(mask + 1, "tcp_hashinfo.ehash_mask + 1", MAX_BUCKETS, k.reader.path)
        heads = k.read(ehash, 8 * n)
        node_off = k.type("struct sock_common").offsetof("skc_nulls_node")
        state_off = k.type("struct sock_common").offsetof("skc_state")
    except KdnbError as exc:
        gaps.note("tcp_hashinfo.ehash", None, exc)
        return []
    rows: list[dict[str, Any]] = []
    seen: set[int] = set()
    for i in range(n):
        node = int.from_bytes(heads[8 * i:8 * i + 8], "little")
        while node and not node & 1:  # an odd value ends an hlist_nulls chain
            sk = node - node_off
            if len(seen) >= MAX_CONNECTIONS:
                gaps.note(f"ehash: more than {MAX_CONNECTIONS} connections; the rest not read")
                return rows
            if sk in seen:
                gaps.note(f"ehash bucket {i}: its chain loops", node)
                break
            seen.add(sk)
            raw = read_or_none(k, node, 8, gaps, f"ehash node of bucket {i}")
            st = read_or_none(k, sk + state_off, 1, gaps, "sock_common.skc_state")
            if raw is None or st is None:
                break
            if sk not in known:
                row = common_row(sk) if st[0] in (TCP_TIME_WAIT, TCP_NEW_SYN_RECV) else sock_row(sk)
                if row is not None:
                    rows.append(row)
            node = int.from_bytes(raw, "little")
    return rows
