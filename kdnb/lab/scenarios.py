"""The crash scenarios: what each one sets up, how it is triggered and what the kernel should say."""

from __future__ import annotations

from dataclasses import dataclass, field

#: Objects the crash module keeps alive in its "kdnb_obj" cache in every module scenario.
LIVE_OBJECTS = 16
#: Objects the slab-leak scenario leaks from "kdnb_obj" before the sysrq crash.
LEAKED_OBJECTS = 2000
#: Sleeping processes the crowd scenario starts before its sysrq crash.
CROWD_TASKS = 5000

SYSRQ_PANIC = "Kernel panic - not syncing: sysrq triggered crash"
#: The program the nocore scenario's core_pattern pipes to for one crash: it does not exist.
NOCORE_HANDLER = "/nonexistent/kdnb-handler"
HUNG_PANIC = "Kernel panic - not syncing: hung_task: blocked tasks"


@dataclass(frozen=True)
class Scenario:
    """One way to crash a kernel, with a distinct root cause.

    ``steps`` are shell lines run by the first kernel's /init after the snapshot; the helper
    ``kdnb_as NAME [CPU] -- CMD`` (defined in /init) runs CMD in a subshell that renames itself
    NAME (via /proc/self/comm), optionally pins itself to CPU, and prints a KDNB-TASK line with
    its pid on the console.

    A ``qemu_dump`` scenario crashes nothing: no capture kernel is loaded, and once the guest
    prints ``KDNB-STEP dump-ready`` the host takes a dump of the running guest through QEMU's
    monitor (QMP ``dump-guest-memory``).

    ``cmdline`` is appended to the first kernel's command line; ``helpers`` names static
    programs (module/<name>.c) copied to the guest's /bin; ``knobs`` are the sizes a built
    scenario was made with (kdnb.lab.scale), recorded in its ground truth.

    ``io_throttle`` gives the guest a second virtio disk, /dev/vdb (16 MiB), with these QEMU
    ``-drive`` throttling options: with ``throttling.bps-write=1`` the first write passes the
    throttle's burst and the next one waits in QEMU for an hour, in flight in the guest.
    """

    name: str
    description: str
    trigger: str
    expected_panic: str
    crash_comm: str | None
    sysctls: dict[str, str] = field(default_factory=dict)
    module: bool = False
    module_params: dict[str, str] = field(default_factory=dict)
    steps: tuple[str, ...] = ()
    blocked: tuple[str, ...] = ()
    leaked_objects: int | None = None
    crash_timeout: int = 120
    qemu_dump: bool = False
    cmdline: str = ""
    helpers: tuple[str, ...] = ()
    knobs: dict[str, int] = field(default_factory=dict)
    io_throttle: str = ""

    def module_args(self) -> str:
        """insmod arguments for kdnb_crash.ko."""
        return " ".join(f"{k}={v}" for k, v in self.module_params.items())


def _mod(action: str, comm: str = "kdnb_trigger", cpu: int = 0) -> tuple[str, ...]:
    return (f"kdnb_as {comm} {cpu} -- 'echo {action} > /proc/kdnb_crash'",)


HUNG_SYSCTLS = {"kernel.hung_task_panic": "1", "kernel.hung_task_timeout_secs": "5",
                "kernel.hung_task_check_interval_secs": "2"}

SCENARIOS: dict[str, Scenario] = {s.name: s for s in [
    Scenario("sysrq", "echo c > /proc/sysrq-trigger (the classic kdump test)",
             "echo c > /proc/sysrq-trigger", SYSRQ_PANIC, "kdnb_trigger",
             sysctls={"kernel.sysrq": "1"},
             steps=("kdnb_as kdnb_trigger 0 -- 'echo c > /proc/sysrq-trigger'",)),
    Scenario("panic", "a module calls panic()",
             "echo panic > /proc/kdnb_crash", "Kernel panic - not syncing: kdnb_crash: deliberate panic",
             "kdnb_trigger", module=True, steps=_mod("panic")),
    Scenario("oops", "NULL pointer write in a module, panic_on_oops=1",
             "echo oops > /proc/kdnb_crash (sysctl: panic_on_oops=1)",
             "BUG: kernel NULL pointer dereference, address: 0000000000000000",
             "kdnb_trigger", sysctls={"kernel.panic_on_oops": "1"}, module=True, steps=_mod("oops")),
    Scenario("bug", "BUG() in a module, panic_on_oops=1",
             "echo bug > /proc/kdnb_crash (sysctl: panic_on_oops=1)",
             "kernel BUG at", "kdnb_trigger",
             sysctls={"kernel.panic_on_oops": "1"}, module=True, steps=_mod("bug")),
    Scenario("warn", "WARN() in a module, panic_on_warn=1",
             "echo warn > /proc/kdnb_crash (sysctl: panic_on_warn=1)",
             "Kernel panic - not syncing: kernel: panic_on_warn set ...",
             "kdnb_trigger", sysctls={"kernel.panic_on_warn": "1"}, module=True, steps=_mod("warn")),
    Scenario("softlockup", "a task spins with preemption off on CPU 1, softlockup_panic=1",
             "echo softlockup > /proc/kdnb_crash on CPU 1 (sysctl: softlockup_panic=1, watchdog_thresh=5)",
             "Kernel panic - not syncing: softlockup: hung tasks", "kdnb_softlockup",
             sysctls={"kernel.softlockup_panic": "1", "kernel.watchdog_thresh": "5"},
             module=True, steps=_mod("softlockup", "kdnb_softlockup", 1)),
    Scenario("hung", "a task sleeps uninterruptibly forever, hung_task_panic=1",
             "echo hung > /proc/kdnb_crash in background (sysctl: hung_task_panic=1, timeout=5s)",
             HUNG_PANIC, "khungtaskd", sysctls=HUNG_SYSCTLS, module=True,
             steps=("kdnb_as kdnb_hung 0 -- 'echo hung > /proc/kdnb_crash' &",),
             blocked=("kdnb_hung",)),
    Scenario("cascade", "a task spins on CPU 1 holding kdnb_lock; another blocks on it until hung_task_panic",
             "kdnb_holder: echo hold > /proc/kdnb_crash on CPU 1; kdnb_waiter: echo wait > "
             "/proc/kdnb_crash (sysctl: hung_task_panic=1, timeout=5s)",
             HUNG_PANIC, "khungtaskd", sysctls=HUNG_SYSCTLS, module=True,
             steps=("kdnb_as kdnb_holder 1 -- 'echo hold > /proc/kdnb_crash' &", "sleep 1",
                    "kdnb_as kdnb_waiter 0 -- 'echo wait > /proc/kdnb_crash' &"),
             blocked=("kdnb_waiter",)),
    Scenario("deadlock", "two tasks take kdnb_lock_a and kdnb_lock_b in opposite order (ABBA) "
             "until hung_task_panic",
             "kdnb_abba_a: echo abba-a > /proc/kdnb_crash on CPU 0; kdnb_abba_b: echo abba-b > "
             "/proc/kdnb_crash on CPU 1 (sysctl: hung_task_panic=1, timeout=5s)",
             HUNG_PANIC, "khungtaskd", sysctls=HUNG_SYSCTLS, module=True,
             steps=("kdnb_as kdnb_abba_a 0 -- 'echo abba-a > /proc/kdnb_crash' &",
                    "kdnb_as kdnb_abba_b 1 -- 'echo abba-b > /proc/kdnb_crash' &"),
             blocked=("kdnb_abba_a", "kdnb_abba_b")),
    Scenario("wq-stall", "a work item that never returns while another task flushes it, until "
             "hung_task_panic",
             "kdnb_flusher: echo wq-stall > /proc/kdnb_crash (queues kdnb_wq_fn, which sleeps "
             "forever, and flush_work()s it; sysctl: hung_task_panic=1, timeout=5s)",
             HUNG_PANIC, "khungtaskd", sysctls=HUNG_SYSCTLS, module=True,
             steps=("kdnb_as kdnb_flusher 0 -- 'echo wq-stall > /proc/kdnb_crash' &",),
             blocked=("kdnb_flusher",)),
    Scenario("rwsem", "a writer blocks behind a reader of kdnb_rwsem that sleeps forever, until "
             "hung_task_panic",
             "kdnb_reader: echo rwsem-read > /proc/kdnb_crash on CPU 1; kdnb_writer: echo "
             "rwsem-write > /proc/kdnb_crash (sysctl: hung_task_panic=1, timeout=5s)",
             HUNG_PANIC, "khungtaskd", sysctls=HUNG_SYSCTLS, module=True,
             steps=("kdnb_as kdnb_reader 1 -- 'echo rwsem-read > /proc/kdnb_crash' &", "sleep 1",
                    "kdnb_as kdnb_writer 0 -- 'echo rwsem-write > /proc/kdnb_crash' &"),
             blocked=("kdnb_writer",)),
    Scenario("rcu-stall", "a task spins with preemption off on CPU 1, panic_on_rcu_stall=1",
             "echo rcu-stall > /proc/kdnb_crash on CPU 1 (sysctl: panic_on_rcu_stall=1, "
             "rcu_cpu_stall_timeout=3)",
             "Kernel panic - not syncing: RCU Stall", "kdnb_rcu_stall",
             sysctls={"kernel.panic_on_rcu_stall": "1",
                      "/sys/module/rcupdate/parameters/rcu_cpu_stall_timeout": "3"},
             module=True, steps=_mod("rcu-stall", "kdnb_rcu_stall", 1)),
    Scenario("oom", "a memory hog with panic_on_oom=1",
             "kdnb_work kdnb_hog hog (sysctl: vm.panic_on_oom=1)",
             "Kernel panic - not syncing: Out of memory: system-wide panic_on_oom is enabled",
             "kdnb_hog", sysctls={"vm.panic_on_oom": "1"},
             steps=("kdnb_work kdnb_hog hog &", "echo \"KDNB-TASK comm=kdnb_hog pid=$!\" > /dev/kmsg")),
    Scenario("oom-kill", "a memory hog the OOM killer kills (vm.panic_on_oom=0), then a sysrq crash",
             "kdnb_work kdnb_hog hog until the OOM killer kills it; echo c > /proc/sysrq-trigger",
             SYSRQ_PANIC, "kdnb_trigger", sysctls={"kernel.sysrq": "1", "vm.panic_on_oom": "0"},
             steps=("kdnb_work kdnb_hog hog & h=$!", "echo \"KDNB-TASK comm=kdnb_hog pid=$h\" > /dev/kmsg",
                    "wait $h", "sleep 1", "kdnb_as kdnb_trigger 0 -- 'echo c > /proc/sysrq-trigger'")),
    Scenario("slab-leak", f"a module leaks {LEAKED_OBJECTS} objects from its kdnb_obj cache, then sysrq crash",
             f"insmod kdnb_crash.ko leak={LEAKED_OBJECTS}; echo c > /proc/sysrq-trigger",
             SYSRQ_PANIC, "kdnb_trigger", sysctls={"kernel.sysrq": "1"}, module=True,
             module_params={"leak": str(LEAKED_OBJECTS)},
             steps=("kdnb_as kdnb_trigger 0 -- 'echo c > /proc/sysrq-trigger'",),
             leaked_objects=LEAKED_OBJECTS),
    Scenario("crowd", f"{CROWD_TASKS} sleeping processes, then a sysrq crash (a big task list for "
             "the stack benchmarks)",
             f"{CROWD_TASKS} x sleep; echo c > /proc/sysrq-trigger", SYSRQ_PANIC, "kdnb_trigger",
             sysctls={"kernel.sysrq": "1"},
             steps=(f"i=0; while [ $i -lt {CROWD_TASKS} ]; do sleep 86400 & i=$((i+1)); done",
                    "kdnb_as kdnb_trigger 0 -- 'echo c > /proc/sysrq-trigger'")),
    Scenario("io-hang", "a task's write to a virtio disk QEMU throttles to 1 byte/s never "
             "completes; it waits in fsync until hung_task_panic",
             "kdnb_io: kdnb_work kdnb_io iohang /dev/vdb (4 KiB writes + fsync to a disk whose "
             "writes QEMU throttles to 1 byte/s; sysctl: hung_task_panic=1, timeout=5s)",
             HUNG_PANIC, "khungtaskd", sysctls=HUNG_SYSCTLS,
             steps=("kdnb_work kdnb_io iohang /dev/vdb &",
                    "echo \"KDNB-TASK comm=kdnb_io pid=$!\" > /dev/kmsg"),
             blocked=("kdnb_io",), io_throttle="throttling.bps-write=1"),
    Scenario("nocore", "processes that crash without a core (RLIMIT_CORE 0, an unwritable cwd, "
             "a set-uid program with fs.suid_dumpable 0, core_pattern piped to a missing program) "
             "beside a control that dumps, each leaving a waiting twin; then a sysrq crash",
             "kdnb_nocore pipe|ok|rlimit|dir|suid (each: a waiter kdnb_nc_CASE and a crasher "
             "kdnb_ncx_CASE; KDNB-NOCORE lines give the kernel's wait status); echo c > "
             "/proc/sysrq-trigger", SYSRQ_PANIC, "kdnb_trigger",
             sysctls={"kernel.sysrq": "1", "fs.suid_dumpable": "0", "kernel.core_pattern": "core"},
             helpers=("kdnb_nocore",),
             steps=("mkdir -m 0555 /nocore-ro",
                    "cp /bin/kdnb_nocore /bin/kdnb_nocore_suid && chmod 4755 /bin/kdnb_nocore_suid",
                    f"echo '|{NOCORE_HANDLER}' > /proc/sys/kernel/core_pattern", "kdnb_nocore pipe",
                    "echo core > /proc/sys/kernel/core_pattern",
                    "kdnb_nocore ok", "kdnb_nocore rlimit", "kdnb_nocore dir", "kdnb_nocore suid",
                    "sleep 1", "kdnb_as kdnb_trigger 0 -- 'echo c > /proc/sysrq-trigger'")),
    Scenario("idle", "no crash: QEMU's dump-guest-memory of the running guest (with "
             "--no-vmcoreinfo: no VMCOREINFO note in the dump)",
             "QMP dump-guest-memory (paging off) of the running guest", "", None,
             steps=("step dump-ready",), qemu_dump=True),
]}


def list_scenarios() -> list[str]:
    """Names of the scenarios `kdnb.lab.make` knows."""
    return list(SCENARIOS)


def get(name: str | Scenario) -> Scenario:
    """The scenario called ``name``, or ``name`` itself when it is a built Scenario (see
    kdnb.lab.scale); a KdnbError subclass names the known ones otherwise."""
    from .packages import LabError
    if isinstance(name, Scenario):
        return name
    try:
        return SCENARIOS[name]
    except KeyError:
        raise LabError(f"unknown scenario {name!r}; known: {', '.join(SCENARIOS)}") from None
