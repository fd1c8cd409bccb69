"""What runs inside the guests: the /init scripts and the two initramfs images.

The first kernel's /init loads the capture kernel with ``kexec -p``, starts named workload
processes, writes a /proc snapshot to the virtio disk and provokes the crash. The capture
kernel's /init runs makedumpfile on /proc/vmcore for each requested format and powers off.
Both print ``KDNB-STEP <name>`` / ``KDNB-TASK`` / ``KDNB-FAIL`` lines that the host follows.
"""

from __future__ import annotations

import lzma
import shlex
from dataclasses import dataclass
from pathlib import Path

from .formats import Format
from .initramfs import Initramfs
from .packages import LabError, ToolFiles
from .scenarios import Scenario

#: Modules (besides built-ins) both guests need: the virtio disk, fw_cfg (vmcoreinfo), loop.
WANTED_MODULES = ("virtio_blk", "virtio_pci", "qemu_fw_cfg", "loop")

CAPTURE_APPEND = "console=ttyS0 irqpoll nr_cpus=1 reset_devices panic=5"

#: Symbols copied from /proc/kallsyms into the snapshot (kallsyms-subset.txt).
KALLSYMS_SUBSET = ("_stext", "_text", "linux_banner", "init_task", "page_offset_base",
                   "vmemmap_base", "vmalloc_base", "__per_cpu_offset", "runqueues", "jiffies",
                   "init_top_pgt", "phys_base", "prb", "modules", "slab_caches", "init_uts_ns",
                   "vmcoreinfo_data", "__start_BTF", "__stop_BTF", "kallsyms_num_syms",
                   "kallsyms_names", "kallsyms_offsets", "kallsyms_relative_base",
                   "kallsyms_token_table", "kallsyms_token_index", "kallsyms_markers")

#: Sysctls recorded in the snapshot (sysctl.txt, `name = value` lines), to check d.sysctl against.
SNAPSHOT_SYSCTLS = ("kernel.panic", "kernel.panic_on_oops", "kernel.panic_on_warn",
                    "kernel.panic_print", "kernel.panic_on_rcu_stall", "kernel.hung_task_panic",
                    "kernel.hung_task_timeout_secs", "kernel.hung_task_check_interval_secs",
                    "kernel.hung_task_warnings", "kernel.softlockup_panic", "kernel.hardlockup_panic",
                    "kernel.watchdog_thresh", "kernel.unknown_nmi_panic",
                    "kernel.panic_on_unrecovered_nmi", "kernel.panic_on_io_nmi", "kernel.kptr_restrict",
                    "kernel.dmesg_restrict", "kernel.core_pattern", "fs.suid_dumpable", "kernel.sysrq",
                    "kernel.printk", "kernel.tainted", "kernel.pid_max", "kernel.threads-max",
                    "kernel.randomize_va_space", "vm.panic_on_oom", "vm.oom_kill_allocating_task",
                    "vm.overcommit_memory", "vm.overcommit_ratio", "vm.overcommit_kbytes",
                    "vm.min_free_kbytes", "vm.swappiness")

#: /proc files copied into the snapshot besides the fixed ones (missing ones are skipped).
SNAPSHOT_PROC = {"zoneinfo.txt": "/proc/zoneinfo", "buddyinfo.txt": "/proc/buddyinfo",
                 "vmstat.txt": "/proc/vmstat", "mounts.txt": "/proc/mounts",
                 "net-dev.txt": "/proc/net/dev", "net-unix.txt": "/proc/net/unix",
                 "sockstat.txt": "/proc/net/sockstat", "interrupts.txt": "/proc/interrupts",
                 "softirqs.txt": "/proc/softirqs", "timer_list.txt": "/proc/timer_list",
                 "diskstats.txt": "/proc/diskstats", "partitions.txt": "/proc/partitions",
                 "net-tcp.txt": "/proc/net/tcp", "net-tcp6.txt": "/proc/net/tcp6",
                 "net-udp.txt": "/proc/net/udp", "net-udp6.txt": "/proc/net/udp6"}

#: Workload processes the first kernel starts: (comm, kdnb_work arguments).
WORKLOAD = (("kdnb_sleeper", "sleep"), ("kdnb_spin_cpu1", "spin 1"),
            ("kdnb_fifo_rd", "fifo /kdnb.fifo"), ("kdnb_sockets", "sockets"))


def modinfo_depends(ko: bytes) -> list[str]:
    """The ``depends=`` list from a module's .modinfo section."""
    import io

    from elftools.elf.elffile import ELFFile

    sec = ELFFile(io.BytesIO(ko)).get_section_by_name(".modinfo")
    if sec is None:
        return []
    for item in sec.data().split(b"\0"):
        if item.startswith(b"depends="):
            return [d for d in item[8:].decode().split(",") if d]
    return []


def module_load_order(modules_dir: Path, wanted: tuple[str, ...] = WANTED_MODULES) -> list[str]:
    """Paths (relative to ``modules_dir``) of ``wanted`` and their dependencies, deps first.

    Debian's package has no modules.dep (depmod runs at install time), so dependencies come
    from each module's own .modinfo ``depends=``. Built-in modules (modules.builtin) are skipped.
    """
    by_name: dict[str, str] = {}
    for p in sorted((modules_dir / "kernel").rglob("*.ko*")):
        by_name.setdefault(_modname(p.name), str(p.relative_to(modules_dir)))
    builtin = set()
    bf = modules_dir / "modules.builtin"
    if bf.exists():
        builtin = {_modname(p) for p in bf.read_text().split()}
    order: list[str] = []

    def visit(name: str, depth: int = 0) -> None:
        if name in builtin:
            return
        if name not in by_name:
            raise LabError(f"build initramfs: module {name} is neither in {modules_dir} nor built in")
        path = by_name[name]
        if path in order or depth > 20:
            return
        for d in modinfo_depends(_ko_bytes(modules_dir / path)):
            visit(d.replace("-", "_"), depth + 1)
        if path not in order:
            order.append(path)

    for name in wanted:
        visit(name)
    return order


def _modname(path: str) -> str:
    base = path.rsplit("/", 1)[-1]
    for ext in (".ko.xz", ".ko.zst", ".ko.gz", ".ko"):
        base = base.removesuffix(ext)
    return base.replace("-", "_")


def _ko_bytes(path: Path) -> bytes:
    """A module file, decompressed (busybox insmod wants a plain .ko)."""
    data = path.read_bytes()
    if path.name.endswith(".xz"):
        return lzma.decompress(data)
    if path.name.endswith(".zst"):
        import zstandard
        return zstandard.ZstdDecompressor().decompressobj().decompress(data)
    return data


PRELUDE = r"""#!/bin/sh
export PATH=/bin:/sbin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mkdir -p /tmp /mnt
up() { read u rest < /proc/uptime; echo "$u"; }
step() { echo "KDNB-STEP $* t=$(up)"; }
fail() { echo "KDNB-FAIL $*"; sync; poweroff -f; }
for m in $(cat /lib/modules/order); do insmod "/lib/modules/$m" || echo "KDNB-WARN insmod $m failed"; done
i=0; while [ ! -b /dev/vda ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
[ -b /dev/vda ] || fail "no /dev/vda (virtio disk)"
mount -t ext4 /dev/vda /mnt || fail "mount /dev/vda"
"""


def wants_elf32(formats: list[Format]) -> bool:
    """Whether the capture kernel must be loaded with ELF32 core headers."""
    return any(f.elf32_headers for f in formats)


def first_init(scenario: Scenario, formats: list[Format]) -> str:
    """The first kernel's /init script for ``scenario``."""
    # On x86_64, kexec-tools (2.0.25 and upstream) parses --elf32-core-headers but its x86_64
    # arch code never applies it: the elfcorehdr stays ELF64 (checked after the run, see run.py).
    extra = " -c --elf32-core-headers" if wants_elf32(formats) else ""
    kallsyms_rx = "|".join(KALLSYMS_SUBSET)
    lines = [PRELUDE, "step init", "S=/mnt/snapshot; mkdir -p $S",
             'kdnb_as() { _n=$1; _c=$2; shift 3; ( echo -n "$_n" > /proc/self/comm; '
             'read _p _r < /proc/self/stat; taskset -p "$(printf %x $((1 << _c)))" "$_p" >/dev/null 2>&1; '
             'echo "KDNB-TASK comm=$_n pid=$_p cpu=$_c" > /dev/kmsg; eval "$1" ) }']
    for k, v in scenario.sysctls.items():
        if k.startswith("/"):
            lines.append(f"echo {shlex.quote(v)} > {k} || echo 'KDNB-WARN cannot set {k}'")
        else:
            lines.append(f"sysctl -w {k}={shlex.quote(v)} >/dev/null || echo 'KDNB-WARN cannot set {k}'")
    if not scenario.qemu_dump:
        lines += [
            "t0=$(up)",
            f'kexec -p /boot/vmlinuz --initrd=/boot/capture.cpio.gz --append="{CAPTURE_APPEND}"{extra} > $S/kexec.log 2>&1',
            'rc=$?; echo "rc=$rc start=$t0 end=$(up)" >> $S/kexec.log',
            '[ "$(cat /sys/kernel/kexec_crash_loaded)" = 1 ] || fail "kexec -p did not load the capture kernel: $(grep -iE "fail|error|cannot|invalid|overlap" $S/kexec.log | head -n 3) / $(tail -n 2 $S/kexec.log)"',
            "step kexec-loaded",
            "rm -f /boot/vmlinuz /boot/capture.cpio.gz  # loaded: free their page-cache pages",
        ]
    if scenario.module:
        lines.append(f"insmod /lib/kdnb_crash.ko {scenario.module_args()} > $S/insmod.log 2>&1 "
                     "|| fail \"insmod kdnb_crash.ko: $(cat $S/insmod.log)\"")
    lines.append(": > $S/workload.txt; mkfifo /kdnb.fifo")
    for comm, args in WORKLOAD:
        lines.append(f'kdnb_work {comm} {args} & echo "{comm} $!" >> $S/workload.txt')
    # /init holds the FIFO open read-write (never blocks): kdnb_fifo_rd's open() returns and the
    # reader waits in pipe_read with the FIFO on its fd 3, a pipe d.files can show
    lines.append("exec 3<>/kdnb.fifo")
    sysctls = " ".join(SNAPSHOT_SYSCTLS)
    lines += [
        "sleep 1",
        *[f"cat {src} > $S/{name} 2>/dev/null" for name, src in SNAPSHOT_PROC.items()],
        f'for k in {sysctls}; do echo "$k = $(cat /proc/sys/$(echo $k | tr . /) 2>/dev/null)"; '
        "done > $S/sysctl.txt",
        'while read c p; do cat /proc/$p/maps > $S/maps-$c.txt; cat /proc/$p/smaps > $S/smaps-$c.txt; '
        'ls -l /proc/$p/fd > $S/fd-$c.txt; '
        'for f in /proc/$p/fdinfo/*; do echo "fd: ${f##*/}"; cat $f; done > $S/fdinfo-$c.txt; '
        "done < $S/workload.txt",
        "cat /proc/[0-9]*/stat > $S/proc-stat.txt 2>/dev/null",
        "ps -o pid,ppid,stat,comm,args > $S/ps.txt 2>/dev/null || ps > $S/ps.txt",
        "cat /proc/slabinfo > $S/slabinfo.txt",
        "cat /proc/meminfo > $S/meminfo.txt",
        "cat /proc/iomem > $S/iomem.txt",
        "cat /proc/modules > $S/modules.txt",
        "cat /proc/cmdline > $S/cmdline.txt",
        "cat /sys/kernel/vmcoreinfo > $S/sys-kernel-vmcoreinfo.txt",
        "cat /sys/kernel/kexec_crash_size > $S/kexec_crash_size.txt",
        "cat /proc/sys/kernel/tainted > $S/tainted.txt",
        "uname -a > $S/uname.txt",
        "dmesg > $S/dmesg-before.txt",
        "ls /sys/firmware/qemu_fw_cfg/by_name/etc > $S/fw_cfg.txt 2>/dev/null",
        f"grep -E ' ({kallsyms_rx})$' /proc/kallsyms > $S/kallsyms-subset.txt",
        f"echo {shlex.quote(scenario.trigger)} > $S/trigger.txt",
        "up > $S/uptime-at-snapshot.txt",
        "sync; umount /mnt || fail 'umount /mnt'",
        "step crash",
    ]
    lines += list(scenario.steps)
    lines += ["step triggered", "while :; do sleep 3600; done", ""]
    return "\n".join(lines)


def capture_init(formats: list[Format], dump_level: int) -> str:
    """The capture kernel's /init: makedumpfile for each format, then power off."""
    lines = [PRELUDE, "step capture",
             "[ -e /proc/vmcore ] || fail 'capture kernel has no /proc/vmcore'",
             "O=/mnt/out; mkdir -p $O",
             "cat /proc/cmdline > $O/capture-cmdline.txt",
             "stat -c %s /proc/vmcore > $O/proc-vmcore-bytes.txt",
             ": > $O/timings.txt"]

    def timed(label: str, cmd: str, log: str) -> list[str]:
        return [f"step capture-{label}", "t0=$(up)", f"{{ {cmd}; }} > $O/{log} 2>&1", "rc=$?", "t1=$(up)",
                f'echo "{label} rc=$rc start=$t0 end=$t1 secs=$(awk "BEGIN{{printf \\"%.2f\\", $t1-$t0}}")" >> $O/timings.txt',
                f'[ $rc = 0 ] || echo "KDNB-WARN {label} rc=$rc: $(tail -n 3 $O/{log})"']

    lines += timed("dmesg", "makedumpfile --dump-dmesg /proc/vmcore $O/dmesg.txt", "dmesg.log")
    for f in formats:
        lines += timed(f.name, f.command(dump_level, f"$O/{f.filename(dump_level)}"), f"{f.name}.log")
    lines += ["sync; umount /mnt", "step capture-done", "poweroff -f", ""]
    return "\n".join(lines)


@dataclass
class GuestImages:
    """The two initramfs images written for one run."""

    first: Path
    capture: Path | None
    first_bytes: int
    capture_bytes: int


def _base_image(tools: ToolFiles, modules_dir: Path, order: list[str], init: str,
                libraries: dict[str, Path]) -> Initramfs:
    img = Initramfs()
    for d in ("bin", "sbin", "proc", "sys", "dev", "tmp", "mnt", "lib64", "lib/x86_64-linux-gnu"):
        img.add_dir(d)
    img.add_chardev("dev/console", 5, 1)
    img.add_chardev("dev/null", 1, 3, 0o666)
    img.add_host_file("bin/busybox", tools.busybox, 0o755)
    for applet in ("sh", "mount", "umount", "insmod", "sleep", "cat", "echo", "sysctl", "taskset",
                   "mkfifo", "ps", "uname", "dmesg", "ls", "grep", "sync", "poweroff", "stat",
                   "awk", "tail", "mkdir", "cp", "printf", "tr"):
        img.add_symlink(f"bin/{applet}", "busybox")
    for so, path in libraries.items():
        img.add_host_file(f"lib/x86_64-linux-gnu/{so}", path, 0o755)
    img.add_symlink("lib64/ld-linux-x86-64.so.2", "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2")
    # sid's loader searches only /usr/lib/x86_64-linux-gnu (merged /usr)
    img.add_symlink("usr/lib/x86_64-linux-gnu", "../../lib/x86_64-linux-gnu")
    for rel in order:
        name = rel.rsplit("/", 1)[-1]
        for ext in (".xz", ".zst", ".gz"):
            name = name.removesuffix(ext)
        img.add_file(f"lib/modules/{name}", _ko_bytes(modules_dir / rel))
    img.add_file("lib/modules/order", "\n".join(
        r.rsplit("/", 1)[-1].removesuffix(".xz").removesuffix(".zst").removesuffix(".gz")
        for r in order) + "\n")
    img.add_file("init", init, 0o755)
    return img


def build_images(workdir: Path, scenario: Scenario, formats: list[Format], dump_level: int,
                 tools: ToolFiles, vmlinuz: Path, modules_dir: Path, crash_module: Path | None,
                 work_helper: Path, helpers: dict[str, Path] | None = None) -> GuestImages:
    """Write capture.cpio.gz and first.cpio.gz into ``workdir`` (no capture image, kexec or
    vmlinuz copy for a scenario QEMU dumps itself); ``helpers`` (name -> static binary) go
    to the first image's /bin."""
    order = module_load_order(modules_dir)
    first = _base_image(tools, modules_dir, order, first_init(scenario, formats),
                        tools.kexec_libraries)
    first.add_host_file("bin/kdnb_work", work_helper, 0o755)
    for name, path in (helpers or {}).items():
        first.add_host_file(f"bin/{name}", path, 0o755)
    cap_path, cap_bytes = None, 0
    if not scenario.qemu_dump:
        cap = _base_image(tools, modules_dir, order, capture_init(formats, dump_level),
                          tools.makedumpfile_libraries)
        cap.add_host_file("bin/makedumpfile", tools.makedumpfile, 0o755)
        cap_path = workdir / "capture.cpio.gz"
        cap_bytes = cap.write(cap_path)
        first.add_host_file("sbin/kexec", tools.kexec, 0o755)
        first.add_host_file("boot/vmlinuz", vmlinuz, 0o644)
        first.add_file("boot/capture.cpio.gz", cap_path.read_bytes())
    if crash_module is not None:
        first.add_host_file("lib/kdnb_crash.ko", crash_module, 0o644)
    first_path = workdir / "first.cpio.gz"
    first_bytes = first.write(first_path, level=1)
    return GuestImages(first_path, cap_path, first_bytes, cap_bytes)
