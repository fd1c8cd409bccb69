"""`Dump.sockets`: the sockets processes hold open (crash `net -s`, `ss -a`, /proc/net/{unix,tcp,udp}).

The sockets are found through the tasks' open files (the fd walk of kdnb.views.files, once per
`files_struct`): a socket file's `private_data` is its `struct socket`, whose `sk` is the
`struct sock`. The address fields come from `sock_common` (`skc_rcv_saddr`/`skc_num` local,
`skc_daddr`/`skc_dport` remote, their v6 twins), the state from `skc_state` (TCP_* numbers, which
unix and UDP sockets reuse). Queue bytes are the ones /proc/net shows: for TCP `rcv_nxt -
copied_seq` (a listener: its accept backlog) and `write_seq - snd_una`, for unix the
bytes of the skbs on the receive queue (unix_inq_len) and `sk_wmem_alloc - 1`, for the rest
`sk_rmem_alloc` and `sk_wmem_alloc - 1`. A unix socket's peer is given by its inode. TCP
connections no file points at come from the established hash (kdnb.views.sockets_hash).
"""

from __future__ import annotations

import ipaddress
import struct
from typing import TYPE_CHECKING, Any

import pandas as pd

from ..errors import KdnbError
from .common import Gaps, fitting, read_or_none
from .files import OpenFiles
from .sockets_hash import unowned_tcp

if TYPE_CHECKING:  # pragma: no cover
    from ..api import Dump
    from ..kernel.kernel import Kernel

MAX_SKBS = 1 << 16  # skbs summed on one unix receive queue (net.unix.max_dgram_qlen is 512)
UNIX_PATH_MAX = 108
FAMILIES = {1: "unix", 2: "inet", 10: "inet6", 16: "netlink", 17: "packet"}
SOCK_TYPES = {1: "stream", 2: "dgram", 3: "raw", 4: "rdm", 5: "seqpacket", 6: "dccp", 10: "packet"}
#: include/net/tcp_states.h
TCP_STATES = ["", "ESTABLISHED", "SYN_SENT", "SYN_RECV", "FIN_WAIT1", "FIN_WAIT2", "TIME_WAIT",
              "CLOSE", "CLOSE_WAIT", "LAST_ACK", "LISTEN", "CLOSING", "NEW_SYN_RECV",
              "BOUND_INACTIVE"]
TCP_LISTEN = 10
IPPROTO_TCP = 6
COLUMNS = ["pid", "comm", "fd", "inode", "family", "type", "protocol", "state", "local_addr",
           "local_port", "remote_addr", "remote_port", "peer_inode", "rx_queue", "tx_queue", "uid",
           "socket", "sock"]


def _empty(socket: int | None, sk: int, sock_type: str) -> dict[str, Any]:
    """A row's socket columns before the sock is read."""
    return {"socket": socket, "sock": sk or None, "type": sock_type, "family": None, "protocol": None,
            "state": None, "local_addr": None, "local_port": None, "remote_addr": None,
            "remote_port": None, "peer_inode": None, "rx_queue": None, "tx_queue": None, "uid": None}


class _SockReader:
    """Layouts of socket, sock, tcp_sock, unix_sock; one socket's row at a time."""

    def __init__(self, k: "Kernel", gaps: Gaps) -> None:
        self.k, self.gaps = k, gaps
        self.socket = k.layout(k.type("struct socket"), ["type", "file", "sk"])
        s = k.type("struct sock")
        fields = ["__sk_common.skc_family", "__sk_common.skc_state", "__sk_common.skc_rcv_saddr",
                  "__sk_common.skc_daddr", "__sk_common.skc_num", "__sk_common.skc_dport",
                  "sk_protocol", "sk_type", "sk_backlog.rmem_alloc.counter",
                  "sk_wmem_alloc.refs.counter", "sk_ack_backlog", "sk_uid.val",
                  "sk_socket"]
        self.v6 = s.has_member("__sk_common.skc_v6_rcv_saddr")  # CONFIG_IPV6
        if self.v6:
            fields += ["__sk_common.skc_v6_rcv_saddr", "__sk_common.skc_v6_daddr"]
        self.sock = k.layout(s, fields)
        self.common = k.layout(k.type("struct sock_common"), [f.split(".", 1)[1] for f in fields
                                                              if f.startswith("__sk_common.")])
        self.rq_head = s.offsetof("sk_receive_queue")  # its first member is `next`
        tcp = k.type("struct tcp_sock")
        self.tcp = k.layout(tcp, ["rcv_nxt", "copied_seq", "write_seq", "snd_una"])
        u = k.type("struct unix_sock")
        self.unix = k.layout(u, ["addr", "peer"])
        ua = k.type("struct unix_address")
        self.ua_len, self.ua_name = ua.offsetof("len"), ua.offsetof("name")
        self.skb = k.layout(k.type("struct sk_buff"), ["next", "len"])
        self.alloc_ino = k.type("struct socket_alloc").offsetof("vfs_inode") + \
            k.type("struct inode").offsetof("i_ino")
        self.sock_off_in_alloc = k.type("struct socket_alloc").offsetof("socket")
        self.private_off = k.type("struct file").offsetof("private_data")
        try:
            self.netlink: Any = k.layout(k.type("struct netlink_sock"), ["portid", "dst_portid"])
        except KdnbError:
            self.netlink = None  # no netlink_sock in this kernel's BTF: no portids

    def row(self, file: int) -> dict[str, Any] | None:
        """The columns of the socket behind an open socket file."""
        k = self.k
        raw = read_or_none(k, file + self.private_off, 8, self.gaps, "file.private_data")
        if raw is None:
            return None
        (socket,) = struct.unpack("<Q", raw)
        data = read_or_none(k, socket, self.socket.size, self.gaps, "struct socket")
        if data is None:
            return None
        stype, sfile, sk = self.socket.unpack(data)
        if sfile != file:
            self.gaps.note(f"socket {socket:#x} of file {file:#x} points back at file {sfile:#x}", socket)
            return None
        out = _empty(socket, sk, SOCK_TYPES.get(stype, str(stype)))
        if sk:
            sd = read_or_none(k, sk, self.sock.size, self.gaps, "struct sock")
            if sd is not None:
                self._sock(out, sk, self.sock.unpack(sd))
        return out

    def sock_row(self, sk: int) -> dict[str, Any] | None:
        """The columns of a `struct sock` found without its file (pid and fd NA)."""
        sd = read_or_none(self.k, sk, self.sock.size, self.gaps, "struct sock")
        if sd is None:
            return None
        v = self.sock.unpack(sd)
        socket, inode = v[12], None
        if socket:
            try:
                inode = self.k.read_u64(socket - self.sock_off_in_alloc + self.alloc_ino)
            except KdnbError as exc:
                self.gaps.note(f"socket inode of sock {sk:#x}", socket, exc)
        out = _empty(socket or None, sk, SOCK_TYPES.get(v[7], str(v[7])))
        self._sock(out, sk, v)
        return {"pid": None, "comm": None, "fd": None, "inode": inode, **out}

    def common_row(self, sk: int) -> dict[str, Any] | None:
        """The columns of a TCP TIME_WAIT or request socket (only its sock_common is read)."""
        cd = read_or_none(self.k, sk, self.common.size, self.gaps, "struct sock_common")
        if cd is None:
            return None
        v = self.common.unpack(cd)
        out = _empty(None, sk, "stream")
        out.update(protocol=IPPROTO_TCP)
        self._common(out, v[:6], v[6:8])
        return {"pid": None, "comm": None, "fd": None, "inode": None, **out}

    def _common(self, out: dict[str, Any], v: tuple, v6: tuple) -> None:
        """family, state, addresses and ports from the sock_common fields."""
        family, state, saddr, daddr, num, dport = v
        out.update(family=FAMILIES.get(family, str(family)),
                   state=TCP_STATES[state] if 0 < state < len(TCP_STATES) else str(state))
        if family in (2, 10):
            if family == 2:
                local, remote = (str(ipaddress.IPv4Address(a.to_bytes(4, "little"))) for a in (saddr, daddr))
            elif self.v6:
                local, remote = (str(ipaddress.IPv6Address(a)) for a in v6)
            else:
                local = remote = None
            out.update(local_addr=local, remote_addr=remote, local_port=num,
                       remote_port=int.from_bytes(dport.to_bytes(2, "little"), "big"))

    def _sock(self, out: dict[str, Any], sk: int, v: tuple) -> None:
        family, state, _s, _d, _n, _p, proto, _sk_type, rmem, wmem, backlog, uid, _socket = v[:13]
        out.update(protocol=proto, uid=uid, rx_queue=rmem, tx_queue=max(wmem - 1, 0))
        self._common(out, v[:6], v[13:15])
        if family in (2, 10):
            if proto == IPPROTO_TCP and out["type"] == "stream":
                td = read_or_none(self.k, sk, self.tcp.size, self.gaps, "struct tcp_sock")
                if td is not None:  # get_tcp4_sock(): a listener's rx_queue is its accept backlog
                    rcv_nxt, copied, write_seq, snd_una = self.tcp.unpack(td)
                    out.update(rx_queue=backlog if state == TCP_LISTEN else max((rcv_nxt - copied) & 0xFFFFFFFF, 0),
                               tx_queue=(write_seq - snd_una) & 0xFFFFFFFF)
        elif family == 1:
            self._unix(out, sk)
        elif family == 16 and self.netlink is not None:
            nd = read_or_none(self.k, sk, self.netlink.size, self.gaps, "struct netlink_sock")
            if nd is not None:
                portid, dst = self.netlink.unpack(nd)
                out.update(local_port=portid, remote_port=dst)

    def _unix(self, out: dict[str, Any], sk: int) -> None:
        k = self.k
        ud = read_or_none(k, sk, self.unix.size, self.gaps, "struct unix_sock")
        if ud is None:
            return
        addr, peer = self.unix.unpack(ud)
        try:
            if addr:
                n = k.read_u32(addr + self.ua_len)
                if 2 < n <= 2 + UNIX_PATH_MAX:
                    path = k.read(addr + self.ua_name + 2, n - 2)
                    out["local_addr"] = "@" + path[1:].decode("utf-8", "replace") if path[:1] == b"\0" \
                        else path.split(b"\0", 1)[0].decode("utf-8", "replace")
            if peer:
                peer_socket = k.read_u64(peer + self.sock.offsets["sk_socket"])
                if peer_socket:
                    out["peer_inode"] = k.read_u64(peer_socket - self.sock_off_in_alloc + self.alloc_ino)
            out["rx_queue"] = self._queued_bytes(sk)
        except KdnbError as exc:
            self.gaps.note(f"unix_sock {sk:#x}", sk, exc)

    def _queued_bytes(self, sk: int) -> int | None:
        """Sum of skb->len on sk_receive_queue (bounded, cycle-checked)."""
        head = sk + self.rq_head
        node, seen, total = self.k.read_u64(head), set(), 0
        while node != head:
            if node in seen or len(seen) >= MAX_SKBS:
                self.gaps.note(f"receive queue of sock {sk:#x} loops or exceeds {MAX_SKBS} skbs", sk)
                return None
            seen.add(node)
            node, length = self.skb.unpack(self.k.read(node, self.skb.size))
            total += length
        return total


def sockets_frame(dump: "Dump") -> pd.DataFrame:
    """One row per open socket file descriptor of any task, then one per TCP connection of the
    established hash no task holds (TIME_WAIT, SYN_RECV, orphans, connections waiting to be
    accepted; pid, comm and fd NA): pid (thread-group leader), comm, fd,
    inode (the socket's, as `socket:[ino]` names it), family (unix, inet, inet6, netlink, packet or
    the number), type (stream, dgram, raw, seqpacket, ...), protocol (IPPROTO_* / netlink protocol),
    state (TCP state names: ESTABLISHED, LISTEN, CLOSE, ...), local_addr, local_port, remote_addr,
    remote_port (inet; a unix socket's bound path in local_addr, `@name` when abstract; netlink
    portids in the ports), peer_inode (unix), rx_queue, tx_queue (bytes, as /proc/net shows them),
    uid, socket (struct socket), sock (struct sock)."""
    k = dump.kernel
    gaps = Gaps()
    reader = _SockReader(k, gaps)
    tasks = dump.tasks
    missed = tasks.attrs.get("kdnb", {}).get("incomplete")
    if missed:  # the sockets of tasks the walk missed are missed too
        gaps.note(f"the task list is incomplete ({missed['reason']})")
    files_off = k.type("struct task_struct").offsetof("files")
    seen: set[int] = set()
    rows: list[dict[str, Any]] = []
    fds = OpenFiles(k)
    order = tasks[tasks["pid"] > 0].sort_values(["tgid", "pid"])
    for pid, tgid, comm, task in zip(order["pid"], order["tgid"], order["comm"], order["address"]):
        raw = read_or_none(k, int(task) + files_off, 8, gaps, f"task_struct.files of pid {pid}")
        if raw is None:
            continue
        (files,) = struct.unpack("<Q", raw)
        if not files or files in seen:
            continue  # a kernel thread, or a files_struct shared with an earlier thread
        seen.add(files)
        try:
            open_files = fds.rows(files, gaps, only="socket")
        except KdnbError as exc:
            gaps.note(f"files_struct of pid {pid}", files, exc)
            continue
        for f in open_files:
            if f["type"] != "socket":
                continue
            row = reader.row(f["file"])
            if row is not None:
                rows.append({"pid": int(tgid), "comm": str(comm), "fd": f["fd"], "inode": f["inode"], **row})
    known = {r["sock"] for r in rows if r["sock"]}
    rows += unowned_tcp(k, known, reader.sock_row, reader.common_row, gaps)
    return gaps.attach(_frame(rows, gaps), "sockets")


def _frame(rows: list[dict[str, Any]], gaps: Gaps) -> pd.DataFrame:
    col = {c: [r[c] for r in rows] for c in COLUMNS}
    ints = {"pid": "Int32", "fd": "Int32", "inode": "UInt64", "protocol": "UInt16",
            "local_port": "UInt32", "remote_port": "UInt32", "peer_inode": "UInt64",
            "rx_queue": "Int64", "tx_queue": "Int64", "uid": "UInt32", "socket": "UInt64",
            "sock": "UInt64"}
    data: dict[str, Any] = {c: fitting(col[c], dt, c, gaps) for c, dt in ints.items()}
    data["comm"] = pd.Categorical(col["comm"])
    data["family"] = pd.Categorical(col["family"])
    data["type"] = pd.Categorical(col["type"])
    data["state"] = pd.Categorical(col["state"])
    for c in ("local_addr", "remote_addr"):
        data[c] = pd.array(col[c], dtype="string")
    return pd.DataFrame(data, columns=COLUMNS)
