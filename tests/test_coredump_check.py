"""`kdnb.coredump_check`: "why was no core dumped", reproduced for real.

On this machine a waiting process is started under one condition (RLIMIT_CORE 0, a directory
it cannot write, a set-uid binary with fs.suid_dumpable 0, a tiny RLIMIT_FSIZE), checked with
`coredump_check(pid=...)`, then sent SIGSEGV: the kernel's own answer (the wait status's
core-dumped flag, the file on disk) must agree with the check. The same settings are read from
the data/ vmcores' kernel memory, and from file trees for the handler configurations.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

import kdnb
from kdnb.analysis.coredump_check import coredump_check
from kdnb.analysis.coredump_settings import UNLIMITED, from_dump, parse_limits, parse_systemd_coredump
from kdnb.cli import main as kdnb_main
from kdnb.samples import CORES_DIR
from tests.conftest import DATA

BINARY = CORES_DIR / "crashers"
NOBODY = 65534
DUMPS = sorted(p for p in DATA.glob("*/vmcore.*"))


def _pattern() -> str:
    return Path("/proc/sys/kernel/core_pattern").read_text().strip()


FILE_PATTERN = not _pattern().startswith("|") and "%" not in os.path.dirname(_pattern())
needs_file_pattern = pytest.mark.skipif(not FILE_PATTERN or os.path.isabs(_pattern()),
                                        reason="needs a relative file core_pattern on this machine")
needs_root = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"),
                                reason="needs root and setpriv")


class Waiting:
    """A `crashers wait` process started with given limits, user and working directory."""

    def __init__(self, cwd: Path, core: int = resource.RLIM_INFINITY,
                 fsize: int = resource.RLIM_INFINITY, user: int | None = None,
                 exe: Path = BINARY) -> None:
        def limits() -> None:
            resource.setrlimit(resource.RLIMIT_CORE, (core, resource.RLIM_INFINITY))
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, resource.RLIM_INFINITY))
        argv = [str(exe), "wait"]
        if user is not None:
            argv = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *argv]
        self.proc = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.PIPE, text=True,
                                     preexec_fn=limits)
        line = self.proc.stdout.readline()
        assert line.startswith("ready"), line
        self.pid = self.proc.pid

    def crash(self) -> bool:
        """SIGSEGV it; whether the kernel says it dumped core."""
        os.kill(self.pid, signal.SIGSEGV)
        _, status = os.waitpid(self.pid, 0)
        self.proc.returncode = 0  # reaped here
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGSEGV
        return os.WCOREDUMP(status)


def _cores(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if p.name.startswith("core")]


@needs_file_pattern
def test_control_case_dumps(tmp_path: Path) -> None:
    """Unlimited and writable: no check fails, and the kernel does write the core."""
    w = Waiting(tmp_path)
    r = coredump_check(pid=w.pid)
    assert r.failing() == [], str(r)
    assert r["coredump.directory"].status == "pass"
    assert r["coredump.rlimit"].status == "pass"
    assert w.crash()
    assert _cores(tmp_path)


@needs_file_pattern
def test_rlimit_core_zero(tmp_path: Path) -> None:
    w = Waiting(tmp_path, core=0)
    r = coredump_check(pid=w.pid)
    assert r.verdict == "no core"
    assert r.failing() == ["coredump.rlimit"], str(r)
    assert r["coredump.rlimit"].evidence["rlimit_core"] == "0"
    assert not w.crash()
    assert not _cores(tmp_path)


@needs_file_pattern
def test_rlimit_fsize_tiny(tmp_path: Path) -> None:
    w = Waiting(tmp_path, fsize=1024)
    r = coredump_check(pid=w.pid)
    assert r.status("coredump.fsize") == "fail"
    w.crash()
    assert all(p.stat().st_size <= 1024 for p in _cores(tmp_path))


@needs_root
@needs_file_pattern
def test_unwritable_directory(tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir(mode=0o755)
    shutil.copy(BINARY, tmp_path / "crashers")
    os.chmod(tmp_path, 0o755)
    w = Waiting(folder, user=NOBODY, exe=tmp_path / "crashers")
    r = coredump_check(pid=w.pid)
    assert r.failing() == ["coredump.directory"], str(r)
    assert f"uid {NOBODY}" in r["coredump.directory"].detail
    assert not w.crash()
    assert not _cores(folder)


@needs_root
@needs_file_pattern
@pytest.mark.skipif(Path("/proc/sys/fs/suid_dumpable").read_text().strip() != "0",
                    reason="needs fs.suid_dumpable 0")
def test_setuid_binary(tmp_path: Path) -> None:
    exe = tmp_path / "crashers-suid"
    shutil.copy(BINARY, exe)
    os.chmod(exe, 0o4755)  # owned by root: a nobody run gets euid 0
    os.chmod(tmp_path, 0o777)
    w = Waiting(tmp_path, user=NOBODY, exe=exe)
    r = coredump_check(pid=w.pid)
    assert r.failing() == ["coredump.suid_dumpable"], str(r)
    assert "set-uid" in r["coredump.suid_dumpable"].detail
    assert not w.crash()
    assert not _cores(tmp_path)


def test_cli_on_this_machine(capsys: pytest.CaptureFixture) -> None:
    rc = kdnb_main(["coredump-check", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == out["exit_code"] == {"will dump": 0, "at risk": 1, "no core": 2}[out["verdict"]]
    assert {c["check"] for c in out["checks"]} >= {"coredump.rlimit", "coredump.pattern",
                                                   "coredump.directory", "coredump.log"}


# -- from a vmcore's kernel memory -------------------------------------------------------------

@pytest.mark.parametrize("path", DUMPS, ids=lambda p: p.parent.name)
def test_settings_from_vmcore(path: Path) -> None:
    d = kdnb.open(path)
    s = d.coredump_settings
    sysctl = d.sysctl.set_index("name")["value"]
    assert s.core_pattern == sysctl["kernel.core_pattern"] == "core"  # the guests' default
    assert (s.suid_dumpable, s.core_pipe_limit, s.core_uses_pid) == (0, 0, 0)
    assert s.config_coredump is True
    r = coredump_check(dump=d, pid=1)
    # init of a kernel gets INIT_RLIMITS: core 0, fsize unlimited; coredump_filter default 0x33
    assert r["coredump.rlimit"].evidence["rlimit_core"] == "0"
    assert r.status("coredump.rlimit") == "fail"
    assert r["coredump.fsize"].evidence["rlimit_fsize"] == "unlimited"
    assert r["coredump.filter"].evidence["coredump_filter"] == "0x33"
    # the cwd's inode read from the dump: the initramfs' tmpfs root, mode 1777, root's
    assert r.status("coredump.directory") == "pass", r["coredump.directory"].detail
    assert r["coredump.directory"].evidence["source"] == "the cwd's inode in the dump"
    assert "mode 1777" in r["coredump.directory"].detail
    state = from_dump(d, 1)
    assert state.uids == (0, 0, 0, 0) and state.cwd == "/"
    assert state.exe and state.exe.startswith("/")
    assert state.dumpable == 1  # exec'd by the kernel as root: dumpable
    if d.kernel.type("struct task_struct").has_member("exec_state"):  # 7.x: no longer in mm->flags
        task = int(d.tasks.set_index("pid").loc[1, "address"])
        mm = d.kernel.read_u64(task + d.kernel.type("struct task_struct").offsetof("mm"))
        assert d.kernel.read_u64(mm + d.kernel.type("struct mm_struct").offsetof("flags")) & 3 == 0


def test_vmcore_cli(capsys: pytest.CaptureFixture) -> None:
    path = DUMPS[0]
    assert kdnb_main(["coredump-check", "--dump", str(path), "--pid", "1"]) == 2
    out = capsys.readouterr().out
    assert "pid 1 (init)" in out and "RLIMIT_CORE of pid 1 in the dump is 0" in out
    # a pid that is no task (the process that crashed has exited): only the log can speak of it
    assert kdnb_main(["coredump-check", "--dump", str(path), "--pid", "999999"]) != 0
    assert "pid 999999, not a task in the dump" in capsys.readouterr().out


# -- file trees: pipe handlers and their configuration ----------------------------------------

def _tree(root: Path, pattern: str, **files: str) -> Path:
    for rel, text in {"proc/sys/kernel/core_pattern": pattern + "\n",
                      "proc/sys/fs/suid_dumpable": "0\n", "proc/sys/kernel/core_pipe_limit": "0\n",
                      "proc/self/limits": "Max file size  unlimited  unlimited  bytes\n"
                                          "Max core file size  0  unlimited  bytes\n",
                      **{k.replace("__", "/").replace("_dot_", "."): v for k, v in files.items()}
                      }.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return root


def test_systemd_coredump_tree(tmp_path: Path) -> None:
    handler = "/usr/lib/systemd/systemd-coredump"
    root = _tree(tmp_path, f"|{handler} %P %u %g %s %t %c %h")
    r = coredump_check(root=str(root))
    assert r.status("coredump.handler") == "fail"  # not installed in the tree
    (root / handler.lstrip("/")).parent.mkdir(parents=True)
    (root / handler.lstrip("/")).write_text("")
    (root / handler.lstrip("/")).chmod(0o755)
    r = coredump_check(root=str(root))
    assert r.status("coredump.handler") == "pass"
    assert r.status("coredump.rlimit") == "fail"  # systemd-coredump honours RLIMIT_CORE 0
    conf = root / "etc/systemd/coredump.conf.d/50-off.conf"
    conf.parent.mkdir(parents=True)
    conf.write_text("[Coredump]\nStorage=none\n")
    r = coredump_check(root=str(root))
    assert r.status("coredump.handler") == "fail" and "Storage=none" in r["coredump.handler"].detail


def test_pipe_limit_and_recursion_guard(tmp_path: Path) -> None:
    root = _tree(tmp_path, "|/bin/true", proc__sys__kernel__core_pipe_limit="4\n",
                 proc__self__limits="Max core file size  1  unlimited  bytes\n")
    (root / "bin").mkdir(exist_ok=True)
    (root / "bin/true").write_text("")
    (root / "bin/true").chmod(0o755)
    r = coredump_check(root=str(root))
    assert r.status("coredump.pipe_limit") == "warn"
    assert r.status("coredump.rlimit") == "fail"  # 1 is the kernel's recursion guard


def test_kernel_log_reason(tmp_path: Path) -> None:
    root = _tree(tmp_path, "core", proc__self__limits="Max core file size  unlimited  unlimited  bytes\n",
                 dmesg_dot_txt="[ 12.5] coredump: 4242(crashers): over coredump resource limit, "
                               "skipping core dump\n[ 13.0] eth0: link up\n")
    r = coredump_check(root=str(root), pid=4242)
    assert r.status("coredump.log") == "fail"
    assert "4242(crashers)" in r["coredump.log"].detail
    assert coredump_check(root=str(root), pid=77).status("coredump.log") == "pass"


def test_parsers() -> None:
    assert parse_limits("Max core file size        unlimited   unlimited  bytes\n"
                        "Max file size   1024   unlimited  bytes\n") == {"core": UNLIMITED, "fsize": 1024}
    conf = parse_systemd_coredump(["[Coredump]\nStorage=external\n", "[Coredump]\nProcessSizeMax=0\n"])
    assert conf["Storage"] == "external" and conf["ProcessSizeMax"] == "0"


def _pattern_writable() -> bool:
    return os.geteuid() == 0 and os.access("/proc/sys/kernel/core_pattern", os.W_OK)


@pytest.mark.skipif(not _pattern_writable(), reason="needs root and a writable core_pattern")
def test_pipe_to_a_missing_handler(tmp_path: Path) -> None:
    """core_pattern piped to a program that is not there, set for a moment on this machine and
    restored: the check names the handler, the kernel writes nothing and logs why."""
    knob = Path("/proc/sys/kernel/core_pattern")
    saved = knob.read_text()
    handler = f"/nonexistent/kdnb-handler-{os.getpid()}"
    try:
        knob.write_text(f"|{handler} %p\n")
        w = Waiting(tmp_path)
        r = coredump_check(pid=w.pid)
        assert r.failing() == ["coredump.handler"], str(r)
        assert handler in r["coredump.handler"].detail
        assert not w.crash()
    finally:
        knob.write_text(saved)
    assert not _cores(tmp_path)
    assert _pattern() == saved.strip()
    log = coredump_check().items
    lines = next(c for c in log if c.check == "coredump.log").evidence.get("lines", [])
    if shutil.which("dmesg") and subprocess.run(["dmesg"], capture_output=True).returncode == 0:
        assert any(handler in line for line in lines), lines
