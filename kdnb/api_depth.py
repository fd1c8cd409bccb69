"""The depth views of a `Dump` (crash `mount`, `runq`, `kmem ADDR`; corelens `lock`, `wq`): what
every task and CPU was doing, as a mixin so api.py stays the user object's core."""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from .views.whatis import WhatIs


class DepthViews:
    """Mounts, run queues, wait objects, workqueues, CPU state, address lookup."""

    @cached_property
    def mounts(self) -> pd.DataFrame:
        """Mounted filesystems and their superblocks' freeze state (crash `mount`): mnt_id, path,
        device, fstype, frozen, frozen_by, read_only, s_id, dev, superblock, address; see
        kdnb.views.mounts."""
        from .views.mounts import mounts_frame

        return self._provenance(mounts_frame(self))

    @cached_property
    def runq(self) -> pd.DataFrame:
        """Each CPU's run queue (crash `runq`): cpu, sched_class, current, pid, comm, state,
        prio, waited, nr_running, address; see kdnb.views.runq."""
        from .views.runq import runq_frame

        return self._provenance(runq_frame(self))

    @cached_property
    def locks(self) -> pd.DataFrame:
        """What blocked tasks wait on, one row per waiter (corelens `lock`): kind, address,
        belongs_to, owner_pid, owner_comm, owner_state, detail, pid, comm, state, waited,
        function, task, owner; see kdnb.views.locks (wait_for_edges / wait_for_cycles)."""
        from .views.locks import locks_frame

        return self._provenance(locks_frame(self))

    @cached_property
    def workqueues(self) -> pd.DataFrame:
        """Work items of every worker pool (corelens `wq`): pool, cpu, status, workqueue,
        function, work, pid, comm, stalled, worker; see kdnb.views.workqueue."""
        from .views.workqueue import workqueues_frame

        return self._provenance(workqueues_frame(self))

    @cached_property
    def cpu_state(self) -> pd.DataFrame:
        """What each CPU was doing at the crash: cpu, panic, pid, comm, state, idle, context
        (task, bh-off, softirq, irq, nmi), preempt_count, running_for, function, interrupted;
        see kdnb.views.cpu."""
        from .views.cpu import cpu_state_frame

        return self._provenance(cpu_state_frame(self))

    @cached_property
    def vmap_areas(self) -> pd.DataFrame:
        """Busy vmalloc-space areas (crash `kmem -v`): start, end, size, kind, caller, nr_pages,
        flags, pid/comm (whose kernel stack), vm, address; see kdnb.views.vmalloc."""
        from .views.vmalloc import vmap_areas_frame

        return self._provenance(vmap_areas_frame(self))

    def whatis(self, address: int) -> "WhatIs":
        """What a kernel address is (crash `kmem ADDR`): symbol, stack, task_struct, slab object
        (cache, object, free or allocated), page, or address-space region; see
        kdnb.views.whatis."""
        from .views.whatis import whatis

        return whatis(self, address)

    # -- backtraces -----------------------------------------------------------------------
