"""kdnb.lab.debuginfo: the one-member extraction from a -dbg package (on .deb files built here
with dpkg-deb, shaped like bookworm's and sid's), and, marked `lab`, the real downloads of the
-dbg packages of the corpus kernels."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from kdnb.lab.debuginfo import MEMBER, cached_vmlinux, debug_vmlinux, extract_vmlinux
from kdnb.lab.packages import LabError
from tests.conftest import CORPUS

REL = "6.1.0-99-cloud-amd64"
pytestmark = pytest.mark.skipif(not shutil.which("dpkg-deb"), reason="dpkg-deb not installed")


def _deb(tmp: Path, files: dict[str, bytes], links: dict[str, str]) -> Path:
    """A minimal .deb holding ``files`` and symbolic ``links`` (paths relative to /)."""
    root = tmp / "pkg"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN" / "control").write_text(
        "Package: linux-image-test-dbg\nVersion: 1\nArchitecture: amd64\n"
        "Maintainer: kdnb tests <kdnb@example.invalid>\nDescription: test\n")
    for path, data in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(data)
    for path, target in links.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).symlink_to(target)
    out = tmp / "test.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "-Zgzip", "--build", str(root), str(out)],
                   check=True, capture_output=True)
    return out


def test_extracts_only_the_vmlinux(tmp_path: Path) -> None:
    vmlinux = b"\x7fELF" + bytes(range(256)) * 64
    deb = _deb(tmp_path, {f"usr/lib/debug/boot/vmlinux-{REL}": vmlinux,
                          f"usr/lib/debug/lib/modules/{REL}/kernel/x.ko": b"\x7fELFmodule"}, {})
    got = extract_vmlinux(deb, MEMBER.format(release=REL), tmp_path / "out")
    assert got.read_bytes() == vmlinux
    assert not list((tmp_path / "out").rglob("*.ko"))


def test_follows_the_link_sid_ships(tmp_path: Path) -> None:
    vmlinux = b"\x7fELF" + b"sid" * 1000
    deb = _deb(tmp_path, {f"usr/lib/debug/lib/modules/{REL}/vmlinux": vmlinux},
               {f"usr/lib/debug/boot/vmlinux-{REL}": f"../lib/modules/{REL}/vmlinux"})
    got = extract_vmlinux(deb, MEMBER.format(release=REL), tmp_path / "out")
    assert got.read_bytes() == vmlinux and not got.is_symlink()


def test_missing_member_and_escaping_link(tmp_path: Path) -> None:
    deb = _deb(tmp_path, {"usr/share/doc/x": b"x"}, {})
    with pytest.raises(LabError, match=f"no ./usr/lib/debug/boot/vmlinux-{REL}"):
        extract_vmlinux(deb, MEMBER.format(release=REL), tmp_path / "out")
    shutil.rmtree(tmp_path / "pkg")
    deb = _deb(tmp_path, {"usr/share/doc/x": b"x"},
               {f"usr/lib/debug/boot/vmlinux-{REL}": "../../../../../../etc/passwd"})
    with pytest.raises(LabError, match="links outside the package"):
        extract_vmlinux(deb, MEMBER.format(release=REL), tmp_path / "out2")


def test_bad_release_names(tmp_path: Path) -> None:
    for bad in ("../etc", "4.19.0-27-cloud-amd64"):
        with pytest.raises(LabError):
            debug_vmlinux(bad, tmp_path)
    assert cached_vmlinux("6.1.0-56-cloud-amd64", tmp_path) is None  # nothing fetched there


def _corpus_releases() -> list[str]:
    found = {json.loads(p.read_text())["kernel_release"] for p in CORPUS.glob("*/ground-truth.json")}
    return sorted(found) or ["6.1.0-56-cloud-amd64"]


@pytest.mark.lab
@pytest.mark.parametrize("release", _corpus_releases())
def test_debug_vmlinux_download(release: str) -> None:
    """Fetch (or reuse) the -dbg vmlinux of each corpus kernel: an ELF with DWARF whose
    linux_banner names the release."""
    from elftools.elf.elffile import ELFFile

    path = debug_vmlinux(release)
    assert cached_vmlinux(release) == path
    with open(path, "rb") as fh:
        elf = ELFFile(fh)
        assert elf.get_section_by_name(".debug_info") is not None
        assert f"Linux version {release} ".encode() in elf.get_section_by_name(".rodata").data()
