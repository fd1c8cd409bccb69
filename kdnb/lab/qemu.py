"""Run a guest in QEMU: accelerator choice, command line, console capture, timeouts."""

from __future__ import annotations

import fcntl
import os
import re
import selectors
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .packages import LabError

KVM_GET_API_VERSION = 0xAE00


#: A 64 KiB firmware image whose reset vector prints "K" on COM1 and halts (real-mode code:
#: mov dx,0x3f8; mov al,'K'; out dx,al; hlt; jmp $-1).
_PROBE_CODE = bytes([0xBA, 0xF8, 0x03, 0xB0, 0x4B, 0xEE, 0xF4, 0xEB, 0xFD])


def probe_firmware() -> bytes:
    """The probe firmware image (code at the reset vector, offset 0xFFF0)."""
    img = bytearray(65536)
    img[0xFFF0:0xFFF0 + len(_PROBE_CODE)] = _PROBE_CODE
    return bytes(img)


def qemu_probe(accel_name: str, timeout: float = 10.0, binary: str = "qemu-system-x86_64") -> bool:
    """Boot the probe firmware with ``accel_name`` and report whether a vCPU really ran it."""
    import tempfile

    if shutil.which(binary) is None:
        return False
    with tempfile.NamedTemporaryFile(suffix=".bin") as fw:
        fw.write(probe_firmware())
        fw.flush()
        proc = subprocess.Popen([binary, "-machine", "q35", "-accel", accel_name, "-bios", fw.name,
                                 "-display", "none", "-nodefaults", "-serial", "stdio",
                                 "-monitor", "none", "-no-reboot"],
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        got = b""
        try:
            assert proc.stdout is not None
            os.set_blocking(proc.stdout.fileno(), False)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and b"K" not in got and proc.poll() is None:
                time.sleep(0.05)
                got += proc.stdout.read() or b""
        finally:
            _kill(proc)
            if proc.stdout:
                proc.stdout.close()
    return b"K" in got


_KVM_VERDICT: tuple[bool, str] | None = None


def kvm_usable() -> tuple[bool, str]:
    """Whether QEMU may use KVM here, and why (not). Decided once per process.

    ``KDNB_LAB_ACCEL=tcg|kvm`` forces the choice. A nested PVM host (/sys/module/kvm_pvm)
    exposes a /dev/kvm that runs real-mode code but cannot run a stock kernel (the guest hangs
    after "Probing EDD"), so it counts as unusable. Otherwise /dev/kvm must answer
    KVM_GET_API_VERSION with 12 and a probe guest must really execute under KVM.
    """
    global _KVM_VERDICT
    if os.environ.get("KDNB_LAB_ACCEL") in ("tcg", "kvm"):
        return os.environ["KDNB_LAB_ACCEL"] == "kvm", "KDNB_LAB_ACCEL"
    if _KVM_VERDICT is not None:
        return _KVM_VERDICT
    if Path("/sys/module/kvm_pvm").exists():
        verdict = (False, "nested PVM (/sys/module/kvm_pvm) cannot run a stock kernel")
    else:
        try:
            fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
            try:
                ver = fcntl.ioctl(fd, KVM_GET_API_VERSION)
            finally:
                os.close(fd)
        except OSError as e:
            verdict = (False, f"/dev/kvm: {e.strerror}")
        else:
            if ver != 12:
                verdict = (False, f"KVM API version {ver}")
            elif not qemu_probe("kvm"):
                verdict = (False, "probe guest did not run under KVM")
            else:
                verdict = (True, "KVM API 12, probe guest ran")
    _KVM_VERDICT = verdict
    return verdict


def accel() -> str:
    """'kvm' or 'tcg'."""
    return "kvm" if kvm_usable()[0] else "tcg"


def cpu_model(cpu: str | None) -> str:
    """QEMU -cpu value: 4-level paging by default, `la57` for 5-level paging."""
    if cpu in (None, "", "default", "la48"):
        return "max,la57=off"
    if cpu == "la57":
        return "max"
    raise LabError(f"unknown cpu option {cpu!r} (use la57 or leave it out)")


@dataclass
class QemuConfig:
    """Everything that goes on the QEMU command line."""

    kernel: Path
    initrd: Path
    append: str
    disk: Path
    memory_mib: int = 512
    smp: int = 2
    cpu: str = "max,la57=off"
    accel: str = "tcg"
    binary: str = "qemu-system-x86_64"
    vmcoreinfo: bool = True
    qmp: Path | None = None
    extra_drives: tuple[str, ...] = ()

    def command(self) -> list[str]:
        """The QEMU command line. ``vmcoreinfo`` adds ``-device vmcoreinfo`` (QEMU's own
        dumps then carry the guest's VMCOREINFO note); ``qmp`` opens a QMP socket there;
        ``extra_drives`` are ``-drive`` values of more disks, after the capture disk (vdb, ...)."""
        cmd = [self.binary, "-machine", "q35", "-accel", self.accel, "-cpu", self.cpu,
               "-smp", str(self.smp), "-m", f"{self.memory_mib}M",
               "-nodefaults", "-display", "none", "-no-reboot",
               "-serial", "stdio", "-monitor", "none"]
        if self.qmp is not None:
            cmd += ["-qmp", f"unix:{self.qmp},server=on,wait=off"]
        if self.vmcoreinfo:
            cmd += ["-device", "vmcoreinfo"]
        cmd += ["-drive", f"file={self.disk},format=raw,if=virtio,cache=unsafe"]
        for drive in self.extra_drives:
            cmd += ["-drive", drive]
        return cmd + ["-kernel", str(self.kernel), "-initrd", str(self.initrd),
                      "-append", self.append]


def crashkernel_for(memory_mib: int) -> str:
    """crashkernel= size that leaves the first kernel room and the capture kernel enough."""
    if memory_mib <= 256:
        return "96M"
    if memory_mib <= 384:
        return "128M"
    if memory_mib <= 768:
        return "160M"
    return "256M"


def parse_memory(memory: str | int) -> int:
    """'512M', '1G', 512 -> MiB."""
    if isinstance(memory, int):
        return memory
    m = re.fullmatch(r"\s*(\d+)\s*([MmGg]?)i?[Bb]?\s*", str(memory))
    if not m:
        raise LabError(f"cannot parse memory size {memory!r} (use e.g. 512M or 1G)")
    n = int(m.group(1))
    return n * 1024 if m.group(2).lower() == "g" else n


@dataclass
class RunResult:
    """What happened in one QEMU run."""

    returncode: int | None
    console: list[str]
    steps: dict[str, float] = field(default_factory=dict)   # step name -> host seconds since start
    wall_seconds: float = 0.0
    timed_out: str | None = None
    hook_error: str | None = None


#: Steps printed by the guests, with the phase name shown to the user.
PHASES = {"init": "boot", "kexec-loaded": "boot", "crash": "crash", "triggered": "crash",
          "dump-ready": "dump", "capture": "capture",
          "capture-done": "copy"}


def run(cfg: QemuConfig, log_path: Path, timeouts: dict[str, float],
        progress: Callable[[str], None] | None = None,
        hooks: dict[str, Callable[[], None]] | None = None) -> RunResult:
    """Run QEMU until it exits, streaming the serial console into ``log_path``.

    ``timeouts`` maps the last step seen ('start', 'init', 'crash', 'capture') to the seconds
    allowed until the next one; a stuck guest is killed (SIGTERM, then SIGKILL) and
    `RunResult.timed_out` names the phase. ``hooks`` maps a step name to a function called
    (once) when the guest prints it; a LabError there ends the run (`RunResult.hook_error`).
    QEMU never outlives this call.
    """
    if shutil.which(cfg.binary) is None:
        raise LabError(f"boot: {cfg.binary} not found (apt-get install qemu-system-x86)")
    say = progress or (lambda s: None)
    hooks = dict(hooks or {})
    cmd = cfg.command()
    start = time.monotonic()
    res = RunResult(None, [])
    last_step, last_t = "start", start
    say(f"boot: {cfg.accel.upper()} guest, {cfg.memory_mib} MiB, {cfg.smp} vCPUs, -cpu {cfg.cpu}")
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    sel = selectors.DefaultSelector()
    assert proc.stdout is not None
    os.set_blocking(proc.stdout.fileno(), False)
    sel.register(proc.stdout, selectors.EVENT_READ)
    buf = b""
    try:
        with open(log_path, "wb") as log:
            while True:
                now = time.monotonic()
                limit = timeouts.get(last_step, timeouts.get("default", 300))
                if now - last_t > limit:
                    res.timed_out = last_step
                    break
                for _key, _ in sel.select(timeout=0.5):
                    chunk = proc.stdout.read(65536) or b""
                    if not chunk:
                        continue
                    log.write(chunk)
                    log.flush()
                    buf += chunk
                    *lines, buf = buf.split(b"\n")
                    for raw in lines:
                        line = raw.decode("utf-8", "replace").rstrip("\r")
                        res.console.append(line)
                        m = re.search(r"KDNB-STEP (\S+)", line)
                        if m and "echo" not in line:
                            st = m.group(1)
                            res.steps.setdefault(st, time.monotonic() - start)
                            if st in PHASES or st.startswith("capture-"):
                                last_step, last_t = (st if st in timeouts else last_step), time.monotonic()
                            say(f"{PHASES.get(st, 'capture')}: {st} at {res.steps[st]:.1f}s")
                            if st in hooks:
                                try:
                                    hooks.pop(st)()
                                except LabError as e:
                                    res.hook_error = str(e)
                        elif "KDNB-FAIL" in line or "KDNB-WARN" in line:
                            say(line.strip())
                if res.hook_error:
                    break
                if proc.poll() is not None:
                    rest = proc.stdout.read() or b""
                    log.write(rest)
                    buf += rest
                    if buf:
                        res.console += buf.decode("utf-8", "replace").split("\n")
                    break
    finally:
        if proc.poll() is None:
            _kill(proc)
        sel.close()
        proc.stdout.close()
    res.returncode = proc.returncode
    res.wall_seconds = time.monotonic() - start
    return res


def _kill(proc: subprocess.Popen) -> None:
    """Terminate QEMU's whole process group, then make sure it is gone."""
    for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def console_tail(lines: list[str], n: int = 25) -> str:
    """The last ``n`` console lines, for error messages."""
    return "\n".join("    " + l for l in lines[-n:])


def default_progress(msg: str) -> None:
    """Print a progress line to stderr."""
    print(f"[kdnb lab] {msg}", file=sys.stderr, flush=True)
