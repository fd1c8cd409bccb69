"""`make()`: one scenario, end to end (fetch, build, boot, crash, capture, copy, ground truth)."""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from . import build as _build
from . import disk as _disk
from . import guest as _guest
from . import qemu as _qemu
from .apt import AptError
from .formats import Format, parse_formats
from .groundtruth import build as build_ground_truth
from .kernels import resolve as resolve_kernel
from .packages import LabError, PackageCache, fetch_kernel, fetch_tools
from .qmp import dump_guest_memory
from .scenarios import Scenario
from .scenarios import get as get_scenario
from .toolchain import toolchain_for

#: Boots tried when the kernel cannot reserve crashkernel memory (depends on the KASLR layout).
CRASHKERNEL_ATTEMPTS = 4
#: Smallest guest for a scenario QEMU dumps itself (no crashkernel region to reserve).
QEMU_DUMP_MIN_MEMORY_MIB = 128

#: Size of the throttled second disk of a scenario with ``io_throttle``.
IO_DISK_MIB = 16

#: Where x86_64 kernel text starts without KASLR (__START_KERNEL_map + 16 MiB).
START_KERNEL_TEXT = 0xFFFFFFFF81000000

#: Seconds allowed from one step to the next before the guest is declared stuck.
TIMEOUTS = {"start": 180.0, "init": 150.0, "crash": 180.0, "capture": 600.0, "default": 300.0}


def make(scenario: str | Scenario, kernel: str = "6.1", formats: Sequence[str] | str | None = None,
         memory: str | int = "512M", out_dir: str | Path | None = None,
         dump_level: int | None = None, cpu: str | None = None,
         cache_dir: str | Path | None = None,
         progress: Callable[[str], None] | None = _qemu.default_progress,
         keep_work: bool = False, vmcoreinfo: bool = True) -> Path:
    """Make a real crash dump of ``scenario`` on a Debian ``kernel`` (5.10, 6.1, 6.12, 7.2 or
    a full release of those series) in QEMU and return the path of the first dump file written.

    The output folder (``out_dir``, default ``./k<series>-<scenario>``) gets ``vmcore.<format>``
    files, ``ground-truth.json``, ``dmesg.txt`` (makedumpfile --dump-dmesg), ``snapshot/``
    (the guest's /proc just before the crash), ``console.log`` and ``capture-logs/``.
    ``formats`` defaults to kdump-zlib.

    Scenario ``idle`` crashes nothing and loads no capture kernel: when the guest has taken its
    snapshot, the host asks QEMU (QMP ``dump-guest-memory``, paging off) for ``vmcore.qemu-elf``
    (ELF: one PT_LOAD per RAM block with vaddr = paddr, NT_PRSTATUS per vCPU whose "pid" is
    vCPU index + 1, QEMU register notes) or ``vmcore.qemu-kdump-zlib`` (QEMU's flattened
    kdump). ``vmcoreinfo=False`` (CLI ``--no-vmcoreinfo``) leaves out ``-device vmcoreinfo``,
    so the dump has no VMCOREINFO note: ground-truth.json then has ``vmcoreinfo: {}``, the
    KASLR offset and symbol addresses from the guest's /proc/kallsyms, ``dump_level`` 0 and
    no dmesg.txt; capture-logs/qemu-dump.log records the QMP command, size and time.
    """
    say = progress or (lambda s: None)
    t_start = time.monotonic()
    sc = get_scenario(scenario)
    fmts = parse_formats(formats if formats else ("qemu-elf",) if sc.qemu_dump else ("kdump-zlib",))
    _check_formats(sc.name, sc.qemu_dump, fmts, vmcoreinfo)
    mem = _qemu.parse_memory(memory)
    cpu_model = _qemu.cpu_model(cpu)
    cache = PackageCache(Path(cache_dir) if cache_dir else _default_cache())

    with cache.locked():
        say(f"fetch: kernel {kernel}, busybox, kexec-tools, makedumpfile (cache {cache.root})")
        try:
            release, series = resolve_kernel(kernel, lambda suite: cache.for_suite(suite).apt)
        except (ValueError, AptError) as e:
            raise LabError(f"resolve kernel {kernel}: {e}") from None
        level = (0 if sc.qemu_dump else series.dump_level) if dump_level is None else int(dump_level)
        need = QEMU_DUMP_MIN_MEMORY_MIB if sc.qemu_dump else series.min_memory_mib
        if mem < need:
            raise LabError(f"memory {mem} MiB is too small for {release}: use at least {need} MiB "
                           "(first kernel + crashkernel region; kexec_load refuses a capture image "
                           "bigger than half the first kernel's RAM)")
        if not 0 <= level <= 31:
            raise LabError(f"dump level must be 0..31, not {level}")
        out = Path(out_dir) if out_dir else Path.cwd() / f"k{series.name}-{sc.name}"
        chroot_gcc = series.compiler == "sid-gcc"
        kfiles = fetch_kernel(cache, release, series, headers=sc.module and not chroot_gcc)
        tools = fetch_tools(cache, series)
        t_fetch = time.monotonic()
        say(f"build: {release}, scenario {sc.name}, formats {','.join(f.name for f in fmts)}, "
            f"-d {level}")
        ko = None
        if sc.module:
            ko = _build.build_crash_module(kfiles.headers_dir, cache.root, release,
                                           toolchain_for(cache, series.compiler, release))
        helper = _build.build_workload_helper(cache.root)
        extra = {n: _build.build_static_helper(cache.root, n) for n in sc.helpers}
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="kdnb-lab-"))
    try:
        imgs = _guest.build_images(work, sc, fmts, level, tools, kfiles.vmlinuz,
                                   kfiles.modules_dir, ko, helper, extra)
        n_full = sum(1 for f in fmts if not f.filtered and f.qemu is None)
        n_elf = sum(1 for f in fmts if f.filtered and f.makedumpfile_opts == ("-E",))
        n_kd = len(fmts) - n_full - n_elf
        t_build = time.monotonic()

        crashkernel = "" if sc.qemu_dump else _qemu.crashkernel_for(mem)
        append = (f"console=ttyS0 {f'crashkernel={crashkernel} ' if crashkernel else ''}panic=5 "
                  f"loglevel=7 kdnb.scenario={sc.name}" + (f" {sc.cmdline}" if sc.cmdline else ""))
        timeouts = dict(TIMEOUTS)
        timeouts["crash"] = TIMEOUTS["crash"] + sc.crash_timeout
        qemu_log: list[str] = []
        for attempt in range(1, CRASHKERNEL_ATTEMPTS + 1):
            disk = _disk.make_disk(work / "disk.img", _disk.disk_size_mib(mem, n_full, n_elf, n_kd))
            cfg = _qemu.QemuConfig(kernel=kfiles.vmlinuz, initrd=imgs.first, append=append,
                                   disk=disk, memory_mib=mem, cpu=cpu_model, accel=_qemu.accel(),
                                   vmcoreinfo=vmcoreinfo,
                                   qmp=work / "qmp.sock" if sc.qemu_dump else None,
                                   extra_drives=_io_drives(work, sc.io_throttle))
            hooks = ({"dump-ready": lambda: _qemu_dumps(work / "qmp.sock", fmts, level, out,
                                                        qemu_log, say)}
                     if sc.qemu_dump else None)
            res = _qemu.run(cfg, out / "console.log", timeouts, say, hooks)
            if not _crashkernel_failed(res) or attempt == CRASHKERNEL_ATTEMPTS:
                break
            # KASLR put the kernel where no aligned crashkernel area was left: boot again.
            say(f"boot: crashkernel={crashkernel} could not be reserved (KASLR layout); retrying")
        t_qemu = time.monotonic()
        try:
            _check_run(res, sc.qemu_dump)
        except LabError:
            _salvage_snapshot(disk, work, out)
            raise

        say("copy: reading the capture disk with debugfs")
        fs = _disk.read_disk(disk, work / "fs")
        capdir, snapdir = fs / "out", fs / "snapshot"
        capdir.mkdir(exist_ok=True)
        if qemu_log:
            (capdir / "qemu-dump.log").write_text("\n".join(qemu_log) + "\n")
        out_files, notes = _collect(fmts, level, capdir, out, res, say)
        if (out / "snapshot").exists():
            shutil.rmtree(out / "snapshot")
        shutil.copytree(snapdir, out / "snapshot")
        capture_logs = out / "capture-logs"
        capture_logs.mkdir(exist_ok=True)
        for p in capdir.iterdir():
            if p.suffix in (".log", ".txt") and p.name != "dmesg.txt":
                shutil.copy(p, capture_logs / p.name)
        t_copy = time.monotonic()

        timings = {"fetch": t_fetch - t_start, "build": t_build - t_fetch, "qemu": t_qemu - t_build,
                   "copy": t_copy - t_qemu, "total": t_copy - t_start, "boots": attempt}
        for k in ("init", "crash", "dump-ready", "capture", "capture-done"):
            if k in res.steps:
                timings[f"guest_{k.replace('-', '_')}"] = res.steps[k]
        capture_commands = [f"QMP dump-guest-memory format={f.qemu} paging=false" if f.qemu
                            else f.command(level, f.filename(level)) for f in fmts]
        gt = build_ground_truth(
            scenario=sc, release=release, snapshot=out / "snapshot", out_files=out_files,
            capture_dir=capdir, console=res.console, first_cmdline=append, memory_mib=mem,
            crashkernel=crashkernel or "none", accel=cfg.accel, cpu_model=cpu_model,
            dump_level=level, formats=[f.name for f in fmts], capture_commands=capture_commands,
            wall_seconds=res.wall_seconds, timings=timings, smp=cfg.smp)
        text = gt["kallsyms_first_kernel"].get("_text")
        if gt["kaslr_kerneloffset"] is None and text:  # no VMCOREINFO: from /proc/kallsyms
            gt["kaslr_kerneloffset"] = hex(int(text, 16) - START_KERNEL_TEXT)
        gt["kernel_series"] = series.name
        gt["makedumpfile_suite"] = tools.makedumpfile_suite
        gt["qemu_device_vmcoreinfo"] = vmcoreinfo
        gt["accel_reason"] = _qemu.kvm_usable()[1]
        gt["elf_class"] = {n: _elf_class(p) for n, p in out_files.items() if _elf_class(p)}
        gt["lab_warnings"] = notes
        if sc.knobs:
            from .scale import facts as scale_facts
            gt["scale"] = scale_facts(sc.knobs, res.console)
        (out / "ground-truth.json").write_text(json.dumps(gt, indent=1) + "\n")
        say(f"done: {', '.join(f'{n} {p.stat().st_size / 1e6:.1f} MB' for n, p in out_files.items())}"
            f" in {out} ({timings['total']:.0f}s)")
        return next(iter(out_files.values()))
    finally:
        if keep_work:
            say(f"work folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def _io_drives(work: Path, throttle: str) -> tuple[str, ...]:
    """The io-hang scenario's second disk (vdb): a sparse 16 MiB raw image with ``throttle``."""
    if not throttle:
        return ()
    img = work / "io.img"
    with open(img, "wb") as f:
        f.truncate(IO_DISK_MIB << 20)
    return (f"file={img},format=raw,if=virtio,cache=unsafe,{throttle}",)


def _check_formats(name: str, qemu_dump: bool, fmts: list[Format], vmcoreinfo: bool) -> None:
    """QEMU formats only with a QEMU-dumped scenario and the other way round."""
    bad = [f.name for f in fmts if (f.qemu is None) == qemu_dump]
    if bad:
        want = "qemu-elf, qemu-kdump-zlib" if qemu_dump else "the makedumpfile/copy formats"
        raise LabError(f"scenario {name} cannot write {', '.join(bad)}; use {want}")
    if not vmcoreinfo and not qemu_dump:
        raise LabError("--no-vmcoreinfo only applies to dumps QEMU writes (scenario idle): "
                       "the capture kernel's /proc/vmcore always carries the kernel's VMCOREINFO")


def _qemu_dumps(sock: Path, fmts: list[Format], level: int, out: Path, log: list[str],
                say: Callable[[str], None]) -> None:
    """Take every requested QEMU dump of the running guest, then quit QEMU."""
    for i, f in enumerate(fmts):
        dest = out / f.filename(level)
        dest.unlink(missing_ok=True)
        t0 = time.monotonic()
        say(f"dump: QMP dump-guest-memory format={f.qemu} -> {dest.name}")
        dump_guest_memory(sock, dest.resolve(), f.qemu or "elf", quit=i == len(fmts) - 1)
        dest.chmod(0o644)  # QEMU creates it 0600
        log.append(f"dump-guest-memory format={f.qemu} paging=false file={dest.name} "
                   f"bytes={dest.stat().st_size} secs={time.monotonic() - t0:.2f}")


def _collect(fmts: list[Format], level: int, capdir: Path, out: Path, res: _qemu.RunResult,
             say: Callable[[str], None]) -> tuple[dict[str, Path], list[str]]:
    """Move the capture kernel's dumps (and dmesg.txt) into ``out``; QEMU's are there already."""
    out_files: dict[str, Path] = {}
    notes: list[str] = []
    for f in fmts:
        if f.qemu is not None:
            out_files[f.filename(level)] = out / f.filename(level)
            continue
        src = capdir / f.filename(level)
        if not src.exists() or src.stat().st_size == 0:
            log = capdir / f"{f.name}.log"
            detail = log.read_text(errors="replace")[-1500:] if log.exists() else "(no log)"
            raise LabError(f"capture: {f.name} produced no {src.name}:\n{detail}\n"
                           f"console tail:\n{_qemu.console_tail(res.console)}")
        dst = out / src.name
        shutil.move(str(src), dst)
        dst.chmod(0o644)
        if f.elf32_headers and _elf_class(dst) != 1:
            note = (f"{dst.name}: kexec-tools ignored --elf32-core-headers (its x86_64 code "
                    "never applies it), /proc/vmcore was ELF64")
            notes.append(note)
            say(f"capture: warning: {note}")
        out_files[src.name] = dst
    if (capdir / "dmesg.txt").exists():
        shutil.copy(capdir / "dmesg.txt", out / "dmesg.txt")
        (out / "dmesg.txt").chmod(0o644)
    return out_files, notes


def _default_cache() -> Path:
    from .packages import DEFAULT_CACHE
    return DEFAULT_CACHE


def _salvage_snapshot(disk: Path, work: Path, out: Path) -> None:
    """After a failed run, copy whatever the first kernel wrote (kexec.log, snapshot) to
    ``out/failed-snapshot`` for diagnosis; never raises."""
    try:
        fs = _disk.read_disk(disk, work / "failed-fs")
        if (fs / "snapshot").is_dir():
            dest = out / "failed-snapshot"
            shutil.rmtree(dest, ignore_errors=True)
            shutil.copytree(fs / "snapshot", dest)
    except Exception:  # noqa: BLE001 - best effort only
        pass


def _elf_class(path: Path) -> int | None:
    """EI_CLASS of an ELF file (1 = ELF32, 2 = ELF64), None for other files."""
    with open(path, "rb") as fh:
        head = fh.read(5)
    return head[4] if head[:4] == b"\x7fELF" and len(head) == 5 else None


def _crashkernel_failed(res: _qemu.RunResult) -> bool:
    return any("cannot allocate crashkernel" in l or "crashkernel reservation failed" in l
               for l in res.console)


def _check_run(res: _qemu.RunResult, qemu_dump: bool = False) -> None:
    """Raise a LabError naming the step that failed, with the console tail."""
    tail = _qemu.console_tail(res.console)
    if res.hook_error:
        raise LabError(f"dump: {res.hook_error}\nconsole tail:\n{tail}")
    fail = next((l for l in res.console if "KDNB-FAIL" in l and "echo" not in l), None)
    if res.timed_out:
        phase = {"start": "boot (first /init never ran)", "init": "boot (no crash step)",
                 "crash": "crash (capture kernel never started)",
                 "capture": "capture (did not finish)"}.get(res.timed_out, res.timed_out)
        raise LabError(f"{phase}: guest stuck, killed after timeout\nconsole tail:\n{tail}")
    if _crashkernel_failed(res):
        raise LabError("boot: the kernel could not reserve crashkernel memory; give the guest more "
                       f"memory (--memory 512M)\nconsole tail:\n{tail}")
    if fail:
        hint = ""
        if "kexec_load failed: Invalid argument" in fail:
            hint = ("\nhint: the capture kernel + initrd must fit in half of the first kernel's "
                    "RAM; give the guest more memory")
        raise LabError(f"guest step failed: {fail.split('KDNB-FAIL', 1)[1].strip()}{hint}"
                       f"\nconsole tail:\n{tail}")
    if qemu_dump:
        if "dump-ready" not in res.steps:
            raise LabError(f"boot: QEMU exited (rc={res.returncode}) before the guest was ready "
                           f"to be dumped\nconsole tail:\n{tail}")
        return
    if "capture-done" not in res.steps:
        where = ("boot" if "init" not in res.steps else "crash" if "capture" not in res.steps
                 else "capture")
        raise LabError(f"{where}: QEMU exited (rc={res.returncode}) before the capture finished"
                       f"\nconsole tail:\n{tail}")
