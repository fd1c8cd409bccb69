"""The system-state views of a `Dump` (crash `kmem -i`, `vm`, `files`, `dev`, `net`, `irq`,
`timer`, `sysctl`): a mixin so api.py stays the user object's core."""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from .analysis.coredump_settings import CoredumpSettings
    from .analysis.oom import OomContext


class SystemViews:
    """Memory, processes' memory and files, block devices, network, interrupts, timers, sysctls."""

    @cached_property
    def meminfo(self) -> pd.DataFrame:
        """Memory counters (/proc/meminfo, crash `kmem -i`): index item (total, free, used, ...,
        swap, commit, hugepages, direct map), columns pages, bytes, proc (the /proc/meminfo field);
        see kdnb.views.meminfo."""
        from .views.meminfo import meminfo_frame

        return self._provenance(meminfo_frame(self))

    @cached_property
    def zones(self) -> pd.DataFrame:
        """Memory zones of each NUMA node (/proc/zoneinfo): node, zone, populated, start_pfn,
        spanned, present, managed, free, min, low, high, boost, reserved_highatomic (pages),
        address; see kdnb.views.zones."""
        from .views.zones import zones_frame

        return self._provenance(zones_frame(self))

    @cached_property
    def buddyinfo(self) -> pd.DataFrame:
        """Free blocks by order of each populated zone (/proc/buddyinfo): node, zone, order,
        free_blocks, free_pages; see kdnb.views.zones."""
        from .views.zones import buddyinfo_frame

        return self._provenance(buddyinfo_frame(self))

    @cached_property
    def sysctl(self) -> pd.DataFrame:
        """The sysctls that decide what a crash does: name, value (as /proc/sys shows it),
        number, symbol, address; see kdnb.views.sysctl."""
        from .views.sysctl import sysctl_frame

        return self._provenance(sysctl_frame(self))

    @cached_property
    def cmdline(self) -> str:
        """The kernel command line (`saved_command_line`, /proc/cmdline)."""
        from .views.sysctl import cmdline

        return cmdline(self)

    @cached_property
    def coredump_settings(self) -> "CoredumpSettings":
        """What decided whether a crashing process left a core, from kernel memory:
        core_pattern, core_uses_pid, core_pipe_limit, suid_dumpable, CONFIG_COREDUMP and the
        log's coredump messages; `kdnb.coredump_check(dump=d, pid=P)` adds a task's own limits,
        dumpable flag, filter and credentials and judges them."""
        from .analysis.coredump_settings import from_dump

        return from_dump(self)

    def vmas(self, pid: int) -> pd.DataFrame:
        """The memory map of a process (/proc/PID/maps, crash `vm`): pid, comm, start, end,
        perms, flags, offset, dev, inode, path, kind (file, shmem, anon, heap, stack, special),
        address; see kdnb.views.vmas."""
        from .views.vmas import vmas_frame

        return self._provenance(vmas_frame(self, pid))

    @cached_property
    def maps(self) -> pd.DataFrame:
        """`vmas()` of every process, one row per VMA; see kdnb.views.vmas."""
        from .views.vmas import maps_frame

        return self._provenance(maps_frame(self))

    def files(self, pid: int) -> pd.DataFrame:
        """Open files of a process (crash `files`, /proc/PID/fd + fdinfo): pid, fd, path, type
        (regular, directory, char, block, fifo, pipe, socket, link, anon_inode, unknown), flags,
        cloexec, mode, pos, inode, mnt_id, file; see kdnb.views.files."""
        from .views.files import files_frame

        return self._provenance(files_frame(self, pid))

    @cached_property
    def irqs(self) -> pd.DataFrame:
        """Interrupts (/proc/interrupts, crash `irq -s`): irq, chip, hwirq, actions, handlers,
        total, cpuN per online CPU; see kdnb.views.irqs."""
        from .views.irqs import irqs_frame

        return self._provenance(irqs_frame(self))

    @cached_property
    def softirqs(self) -> pd.DataFrame:
        """Softirq counts (/proc/softirqs): softirq, total, cpuN; see kdnb.views.irqs."""
        from .views.irqs import softirqs_frame

        return self._provenance(softirqs_frame(self))

    @cached_property
    def timers(self) -> pd.DataFrame:
        """Pending timers and hrtimers per CPU (crash `timer`): cpu, kind, base, expires,
        expires_in (from the crash), function, address; see kdnb.views.timers."""
        from .views.timers import timers_frame

        return self._provenance(timers_frame(self))

    @cached_property
    def block(self) -> pd.DataFrame:
        """Disks and partitions (crash `dev -d`, /proc/partitions): name, dev, major, minor,
        partno, start_sect, sectors, bytes, openers, disk, queue, address; see kdnb.views.block."""
        from .views.block import block_frame

        return self._provenance(block_frame(self))

    @cached_property
    def inflight_io(self) -> pd.DataFrame:
        """Block requests in flight on every blk-mq disk (crash `dev -d`, corelens inflight-io):
        disk, hw_queue, tag, op, flags, sector, bytes, state, start_ns, age (s), io_start_ns,
        io_age, bios, pid, comm, request, queue, task; see kdnb.views.inflight_io."""
        from .views.inflight_io import inflight_io_frame

        return self._provenance(inflight_io_frame(self))

    @cached_property
    def net(self) -> pd.DataFrame:
        """Network interfaces of every namespace (crash `net`): netns, name, ifindex, flags,
        flag_names, mtu, operstate, mac, ipv4, address; see kdnb.views.net."""
        from .views.net import net_frame

        return self._provenance(net_frame(self))

    @cached_property
    def sockets(self) -> pd.DataFrame:
        """Sockets the tasks hold open (crash `net -s`, /proc/net/{unix,tcp,udp}): pid, comm, fd,
        inode, family, type, protocol, state, local/remote address and port, peer_inode,
        rx_queue, tx_queue, uid, socket, sock; see kdnb.views.sockets."""
        from .views.sockets import sockets_frame

        return self._provenance(sockets_frame(self))

    @cached_property
    def oom(self) -> "OomContext | None":
        """The OOM context (the failed allocation's gfp_mask, flags and order, the constraint,
        the victim with its RSS, zones vs watermarks) from the log's last oom-killer report,
        cross-checked with memory; None when the log has none; see kdnb.analysis.oom."""
        from .analysis.oom import oom_context

        return oom_context(self)
