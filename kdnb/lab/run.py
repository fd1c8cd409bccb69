"""`make()`: one scenario, end to end (fetch, build, boot, crash, capture, copy, ground truth)."""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable, Sequence

from . import build as _build
from . import disk as _disk
from . import guest as _guest
from . import qemu as _qemu
from .formats import default_dump_level, parse_formats
from .groundtruth import build as build_ground_truth
from .packages import (LabError, PackageCache, fetch_kernel, fetch_toolchain, fetch_tools,
                       resolve_release, series_of)
from .scenarios import get as get_scenario

#: Boots tried when the kernel cannot reserve crashkernel memory (depends on the KASLR layout).
CRASHKERNEL_ATTEMPTS = 4

#: Smallest guest per kernel series (found by trial under TCG): below it either no crashkernel
#: region fits, or kexec_load fails with EINVAL because the capture kernel + initrd exceed
#: half of the first kernel's RAM (6.12 at 256 MiB).
MIN_MEMORY_MIB = {"6.1": 256, "6.12": 384}

#: Seconds allowed from one step to the next before the guest is declared stuck.
TIMEOUTS = {"start": 180.0, "init": 150.0, "crash": 180.0, "capture": 600.0, "default": 300.0}


def make(scenario: str, kernel: str = "6.1", formats: Sequence[str] | str = ("kdump-zlib",),
         memory: str | int = "512M", out_dir: str | Path | None = None,
         dump_level: int | None = None, cpu: str | None = None,
         cache_dir: str | Path | None = None,
         progress: Callable[[str], None] | None = _qemu.default_progress,
         keep_work: bool = False) -> Path:
    """Make a real crash dump of ``scenario`` on a Debian ``kernel`` (6.1, 6.12 or a full
    release) in QEMU and return the path of the first dump file written.

    The output folder (``out_dir``, default ``./k<series>-<scenario>``) gets ``vmcore.<format>``
    files, ``ground-truth.json``, ``dmesg.txt`` (makedumpfile --dump-dmesg), ``snapshot/``
    (the guest's /proc just before the crash) and ``console.log``.
    """
    say = progress or (lambda s: None)
    t_start = time.monotonic()
    sc = get_scenario(scenario)
    fmts = parse_formats(formats)
    mem = _qemu.parse_memory(memory)
    cpu_model = _qemu.cpu_model(cpu)
    cache = PackageCache(Path(cache_dir) if cache_dir else _default_cache())

    say(f"fetch: kernel {kernel}, busybox, kexec-tools, makedumpfile (cache {cache.root})")
    release = resolve_release(kernel)
    series = series_of(release)
    level = default_dump_level(series) if dump_level is None else int(dump_level)
    need = MIN_MEMORY_MIB.get(series, 256)
    if mem < need:
        raise LabError(f"memory {mem} MiB is too small for {release}: use at least {need} MiB "
                       "(first kernel + crashkernel region; kexec_load refuses a capture image "
                       "bigger than half the first kernel's RAM)")
    if not 0 <= level <= 31:
        raise LabError(f"dump level must be 0..31, not {level}")
    out = Path(out_dir) if out_dir else Path.cwd() / f"k{series}-{sc.name}"
    with cache.locked():
        kfiles = fetch_kernel(cache, release, headers=sc.module)
        tools = fetch_tools(cache)
        t_fetch = time.monotonic()
        say(f"build: {release}, scenario {sc.name}, formats {','.join(f.name for f in fmts)}, "
            f"-d {level}")
        ko = None
        if sc.module:
            ko = _build.build_crash_module(kfiles.headers_dir, cache.root, release,
                                           env=fetch_toolchain(cache))
        helper = _build.build_workload_helper(cache.root)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="kdnb-lab-"))
    try:
        imgs = _guest.build_images(work, sc, fmts, level, tools, kfiles.vmlinuz,
                                   kfiles.modules_dir, ko, helper)
        n_full = sum(1 for f in fmts if not f.filtered)
        n_elf = sum(1 for f in fmts if f.filtered and f.makedumpfile_opts == ("-E",))
        n_kd = len(fmts) - n_full - n_elf
        t_build = time.monotonic()

        crashkernel = _qemu.crashkernel_for(mem)
        append = f"console=ttyS0 crashkernel={crashkernel} panic=5 loglevel=7 kdnb.scenario={sc.name}"
        timeouts = dict(TIMEOUTS)
        timeouts["crash"] = TIMEOUTS["crash"] + sc.crash_timeout
        for attempt in range(1, CRASHKERNEL_ATTEMPTS + 1):
            disk = _disk.make_disk(work / "disk.img", _disk.disk_size_mib(mem, n_full, n_elf, n_kd))
            cfg = _qemu.QemuConfig(kernel=kfiles.vmlinuz, initrd=imgs.first, append=append,
                                   disk=disk, memory_mib=mem, cpu=cpu_model, accel=_qemu.accel())
            res = _qemu.run(cfg, out / "console.log", timeouts, say)
            if not _crashkernel_failed(res) or attempt == CRASHKERNEL_ATTEMPTS:
                break
            # KASLR put the kernel where no aligned crashkernel area was left: boot again.
            say(f"boot: crashkernel={crashkernel} could not be reserved (KASLR layout); retrying")
        t_qemu = time.monotonic()
        try:
            _check_run(res)
        except LabError:
            _salvage_snapshot(disk, work, out)
            raise

        say("copy: reading the capture disk with debugfs")
        fs = _disk.read_disk(disk, work / "fs")
        capdir, snapdir = fs / "out", fs / "snapshot"
        out_files: dict[str, Path] = {}
        notes: list[str] = []
        for f in fmts:
            src = capdir / f.filename(level)
            if not src.exists() or src.stat().st_size == 0:
                log = (capdir / f"{f.name}.log")
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
        for k in ("init", "crash", "capture", "capture-done"):
            if k in res.steps:
                timings[f"guest_{k.replace('-', '_')}"] = res.steps[k]
        gt = build_ground_truth(
            scenario=sc, release=release, snapshot=out / "snapshot", out_files=out_files,
            capture_dir=capdir, console=res.console, first_cmdline=append, memory_mib=mem,
            crashkernel=crashkernel, accel=cfg.accel, cpu_model=cpu_model, dump_level=level,
            formats=[f.name for f in fmts],
            capture_commands=[f.command(level, f.filename(level)) for f in fmts],
            wall_seconds=res.wall_seconds, timings=timings, smp=cfg.smp)
        gt["accel_reason"] = _qemu.kvm_usable()[1]
        gt["elf_class"] = {n: _elf_class(p) for n, p in out_files.items() if _elf_class(p)}
        gt["lab_warnings"] = notes
        (out / "ground-truth.json").write_text(json.dumps(gt, indent=1) + "\n")
        say(f"done: {', '.join(f'{n} {p.stat().st_size / 1e6:.1f} MB' for n, p in out_files.items())}"
            f" in {out} ({timings['total']:.0f}s)")
        return next(iter(out_files.values()))
    finally:
        if keep_work:
            say(f"work folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


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


def _crashkernel_failed(res: "_qemu.RunResult") -> bool:
    return any("cannot allocate crashkernel" in l or "crashkernel reservation failed" in l
               for l in res.console)


def _check_run(res: "_qemu.RunResult") -> None:
    """Raise a LabError naming the step that failed, with the console tail."""
    tail = _qemu.console_tail(res.console)
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
    if "capture-done" not in res.steps:
        where = ("boot" if "init" not in res.steps else "crash" if "capture" not in res.steps
                 else "capture")
        raise LabError(f"{where}: QEMU exited (rc={res.returncode}) before the capture finished"
                       f"\nconsole tail:\n{tail}")
