"""kdump readiness on fixture trees (tests/fixtures/readiness) and the corpus snapshots."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from kdnb.analysis.readiness import CrashkernelError, makedumpfile_latest_kernel, \
    parse_crashkernel, parse_size, readiness
from kdnb.analysis.readiness_cli import main as readiness_main
from tests.conftest import corpus_dir

FIXTURES = Path(__file__).parent / "fixtures" / "readiness"
PLENTY = lambda path: 100 << 30  # noqa: E731 - free bytes at any path
G, M = 1 << 30, 1 << 20


@pytest.fixture()
def tree(tmp_path: Path) -> Path:
    """A writable copy of the Debian 12 fixture tree (ready as shipped)."""
    dst = tmp_path / "root"
    shutil.copytree(FIXTURES / "debian12", dst)
    return dst


def edit(root: Path, rel: str, text: str | None) -> None:
    p = root / rel
    if text is None:
        p.unlink()
    else:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)


def cmdline(root: Path, ck: str) -> None:
    edit(root, "proc/cmdline", f"root=/dev/vda1 ro console=ttyS0 {ck} panic=5\n")


def test_fixture_tree_is_ready(tree: Path) -> None:
    r = readiness(str(tree), free_space=PLENTY)
    assert r.verdict == "ready", str(r)
    assert r.exit_code == 0
    json.dumps(r.to_dict())
    assert "ready" in r._repr_html_()
    assert set(r.checks["status"].astype(str)) == {"pass"}


# -- crashkernel= syntaxes -----------------------------------------------------------------

@pytest.mark.parametrize("value,ram,kind,size,offset", [
    ("256M", 4 * G, "size", 256 * M, None),
    ("0x10000000", 4 * G, "size", 256 * M, None),
    ("128M@16M", 4 * G, "size@offset", 128 * M, 16 * M),
    ("512M-2G:64M,2G-:128M", 1 * G, "ranges", 64 * M, None),
    ("512M-2G:64M,2G-:128M", 8 * G, "ranges", 128 * M, None),
    ("512M-2G:64M,2G-:128M", 256 * M, "ranges", 0, None),
    ("1G-4G:256M,4G-64G:512M@16M", 16 * G, "ranges", 512 * M, 16 * M),
    ("512M,high", 8 * G, "high", 512 * M, None),
])
def test_parse_crashkernel(value: str, ram: int, kind: str, size: int, offset: int | None) -> None:
    ck = parse_crashkernel([value], ram)
    assert (ck.kind, ck.size, ck.offset) == (kind, size, offset)


def test_parse_crashkernel_high_low_and_errors() -> None:
    ck = parse_crashkernel(["1G,high", "72M,low"], 16 * G)
    assert (ck.kind, ck.size, ck.low) == ("high", G, 72 * M)
    for bad in (["lots"], ["2G-1G:64M"], ["512M-2G"], ["64M,low"], []):
        with pytest.raises(CrashkernelError):
            parse_crashkernel(bad, G)
    assert parse_size("1k") == 1024


@pytest.mark.parametrize("ck,status,verdict", [
    ("crashkernel=256M", "pass", "ready"),
    ("crashkernel=256M@0x2e000000", "pass", "ready"),
    ("crashkernel=512M-2G:256M,2G-:512M", "pass", "ready"),
    ("crashkernel=2G-4G:256M", "fail", "not ready"),  # no range covers ~1 GiB
    ("crashkernel=256M,high crashkernel=64M,low", "pass", "ready"),
    ("crashkernel=banana", "fail", "not ready"),
    ("", "fail", "not ready"),
])
def test_crashkernel_on_tree(tree: Path, ck: str, status: str, verdict: str) -> None:
    cmdline(tree, ck)
    r = readiness(str(tree), free_space=PLENTY)
    assert r.status("crashkernel.cmdline") == status, str(r)
    assert r.verdict == verdict, str(r)


def test_reservation_smaller_than_requested(tree: Path) -> None:
    cmdline(tree, "crashkernel=512M")
    r = readiness(str(tree), free_space=PLENTY)
    assert r.status("crashkernel.reserved") == "warn"
    assert "512 MiB requested" in r["crashkernel.reserved"].detail


def test_nothing_reserved(tree: Path) -> None:
    iomem = (tree / "proc/iomem").read_text()
    edit(tree, "proc/iomem", "\n".join(l for l in iomem.splitlines() if "Crash kernel" not in l))
    edit(tree, "sys/kernel/kexec_crash_size", "0\n")
    r = readiness(str(tree), free_space=PLENTY)
    assert r.status("crashkernel.reserved") == "fail"
    assert r.verdict == "not ready"


def test_hidden_iomem_uses_sysfs(tree: Path) -> None:
    iomem = (tree / "proc/iomem").read_text()
    hidden = "\n".join("00000000-00000000 : " + l.split(" : ", 1)[1] if " : " in l else l
                       for l in iomem.splitlines())
    edit(tree, "proc/iomem", hidden)
    r = readiness(str(tree), free_space=PLENTY)
    assert r.status("crashkernel.reserved") == "pass", str(r)


# -- config, capture, storage, core dumps -------------------------------------------------

def test_missing_config(tree: Path) -> None:
    edit(tree, "boot/config-6.1.0-56-cloud-amd64", None)
    r = readiness(str(tree), free_space=PLENTY)
    assert r.status("config.found") == "warn"
    assert r.status("config.kexec") == "skip"
    assert r.verdict == "at risk"


def test_config_gz_and_missing_options(tree: Path) -> None:
    import gzip

    cfg = (tree / "boot/config-6.1.0-56-cloud-amd64").read_text()
    edit(tree, "boot/config-6.1.0-56-cloud-amd64", None)
    cfg = cfg.replace("CONFIG_KEXEC=y", "# CONFIG_KEXEC is not set") \
        .replace("CONFIG_KEXEC_FILE=y", "").replace("CONFIG_DEBUG_INFO_BTF=y", "") \
        .replace("CONFIG_DEBUG_INFO=y", "")
    (tree / "proc/config.gz").write_bytes(gzip.compress(cfg.encode()))
    r = readiness(str(tree), free_space=PLENTY)
    assert r["config.found"].evidence["source"] == "/proc/config.gz"
    assert r.status("config.kexec") == "fail"
    assert r.status("config.debug_info") == "fail"
    assert r.verdict == "not ready"


def test_not_relocatable(tree: Path) -> None:
    path = tree / "boot/config-6.1.0-56-cloud-amd64"
    path.write_text(path.read_text().replace("CONFIG_RELOCATABLE=y", "# CONFIG_RELOCATABLE is not set"))
    cmdline(tree, "crashkernel=256M@0x2e000000")
    r = readiness(str(tree), free_space=PLENTY)
    assert r.status("config.relocatable") == "fail"
    assert "0x1000000" in r["config.relocatable"].detail
    cmdline(tree, "crashkernel=256M@16M")
    r = readiness(str(tree), free_space=PLENTY)
    assert r.status("config.relocatable") == "pass"


def test_capture_kernel_not_loaded(tree: Path) -> None:
    edit(tree, "sys/kernel/kexec_crash_loaded", "0\n")
    r = readiness(str(tree), free_space=PLENTY)
    assert r.status("capture.loaded") == "fail"
    assert "kdump-config load" in r["capture.loaded"].consequence
    assert r.verdict == "not ready"


def test_service_missing_or_disabled(tree: Path) -> None:
    edit(tree, "etc/systemd/system/multi-user.target.wants/kdump-tools.service", None)
    r = readiness(str(tree), free_space=PLENTY)
    assert r.status("capture.service") == "fail"
    edit(tree, "etc/default/kdump-tools", None)
    r = readiness(str(tree), free_space=PLENTY)
    assert r.status("capture.service") == "fail"
    # a RHEL-style kdumpctl setup
    edit(tree, "etc/kdump.conf", "path /var/crash\ncore_collector makedumpfile -l --message-level 7 -d 31\n")
    edit(tree, "etc/systemd/system/multi-user.target.wants/kdump.service", "")
    r = readiness(str(tree), free_space=PLENTY)
    assert r.status("capture.service") == "pass"
    assert r["capture.service"].evidence["name"] == "kdumpctl"


def test_makedumpfile_too_old_for_612(tree: Path) -> None:
    edit(tree, "proc/sys/kernel/osrelease", "6.12.117+deb12-cloud-amd64\n")
    (tree / "boot/config-6.1.0-56-cloud-amd64").rename(tree / "boot/config-6.12.117+deb12-cloud-amd64")
    status = (tree / "var/lib/dpkg/status").read_text().replace("1:1.7.6-1", "1:1.7.2-1")
    edit(tree, "var/lib/dpkg/status", status)
    r = readiness(str(tree), free_space=PLENTY)
    c = r["capture.makedumpfile"]
    assert c.status == "fail", str(r)
    assert "-d 1" in c.consequence and "-d 17" in c.consequence
    # with a safe dump level the same tool only warns
    edit(tree, "etc/default/kdump-tools", 'USE_KDUMP=1\nMAKEDUMP_ARGS="-c -d 17"\n')
    r = readiness(str(tree), free_space=PLENTY)
    assert r.status("capture.makedumpfile") == "warn"
    edit(tree, "usr/sbin/makedumpfile", None)
    edit(tree, "var/lib/dpkg/status", "")
    r = readiness(str(tree), free_space=PLENTY)
    assert r.status("capture.makedumpfile") == "fail"


def test_makedumpfile_table() -> None:
    assert makedumpfile_latest_kernel((1, 7, 2)) == (6, 0)
    assert makedumpfile_latest_kernel((9, 0, 0)) is None


def test_free_space(tree: Path) -> None:
    r = readiness(str(tree), free_space=lambda p: 1 * M)
    assert r.status("storage.space") == "fail"
    r = readiness(str(tree), free_space=lambda p: 300 * M)
    assert r.status("storage.space") == "warn"
    # the real statvfs on the fixture's own file system
    assert readiness(str(tree)).status("storage.space") in ("pass", "warn", "fail")


def test_core_dump_settings(tree: Path) -> None:
    edit(tree, "proc/self/limits", "Max core file size        0                    unlimited            bytes\n")
    edit(tree, "proc/sys/kernel/core_pattern", "core\n")
    edit(tree, "proc/sys/fs/suid_dumpable", "0\n")
    r = readiness(str(tree), free_space=PLENTY)
    assert r.status("coredump.rlimit") == "fail"  # no core below one page
    assert r.status("coredump.pattern") == "warn"  # relative: the cwd decides
    assert r.status("coredump.suid_dumpable") == "warn"
    edit(tree, "proc/sys/kernel/core_pattern", "|/usr/share/apport/apport -p%p\n")
    r = readiness(str(tree), free_space=PLENTY)
    assert r.status("coredump.pattern") == "pass"
    assert r.status("coredump.handler") == "fail"  # the handler is not installed
    assert r.status("coredump.rlimit") == "pass"  # a pipe receives the core whatever the limit
    edit(tree, "usr/share/apport/apport", "")
    assert readiness(str(tree), free_space=PLENTY).status("coredump.handler") == "fail"  # not +x
    (tree / "usr/share/apport/apport").chmod(0o755)
    r = readiness(str(tree), free_space=PLENTY)
    assert r.status("coredump.handler") == "warn"  # apport keeps packaged programs' cores only
    edit(tree, "etc/default/apport", "enabled=0\n")
    assert readiness(str(tree), free_space=PLENTY).status("coredump.handler") == "fail"


def test_cli(tree: Path, capsys: pytest.CaptureFixture) -> None:
    edit(tree, "sys/kernel/kexec_crash_loaded", "0\n")
    assert readiness_main(["--root", str(tree), "--json"]) == 2
    assert json.loads(capsys.readouterr().out)["verdict"] == "not ready"


@pytest.mark.parametrize("name", ["k6.1-sysrq", "k6.12-hung_task"])
def test_corpus_snapshot_folders(name: str) -> None:
    snap = corpus_dir(name) / "snapshot"
    r = readiness(str(snap))
    assert r.status("crashkernel.cmdline") == "pass"
    assert r.status("crashkernel.reserved") == "pass", str(r)
    assert r.status("capture.loaded") == "pass"
    assert r["crashkernel.reserved"].evidence["kexec_crash_size"] > 0
    assert r.verdict in ("ready", "at risk")
