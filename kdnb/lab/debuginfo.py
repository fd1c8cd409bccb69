"""The DWARF vmlinux of a Debian kernel, from its ``linux-image-<release>-dbg`` package.

The package (260-350 MB, 1.7-2 GB unpacked: the vmlinux plus every module's debug info) is
downloaded through the lab's private apt configuration of the kernel's suite (apt.py), and
only ``usr/lib/debug/boot/vmlinux-<release>`` is taken out of it (``dpkg-deb --fsys-tarfile |
tar -x`` of that one member; on 7.2 that is a link to ``usr/lib/debug/lib/modules/<release>/
vmlinux``, which is taken in a second pass). The result is kept in ``<cache>/dbg/<release>/`` and the .deb is
deleted. Used by the side-by-side tests against drgn; kdnb itself never needs it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

from .apt import AptError
from .kernels import series_of
from .packages import DEFAULT_CACHE, LabError, PackageCache

#: Where Debian's -dbg packages put the kernel's DWARF vmlinux (bullseye to sid).
MEMBER = "./usr/lib/debug/boot/vmlinux-{release}"
ELF_MAGIC = b"\x7fELF"
MAX_LINKS = 4  # symlink hops followed inside the package


def dbg_dir(release: str, cache: Path = DEFAULT_CACHE) -> Path:
    """The folder holding the DWARF vmlinux of ``release`` (whether fetched yet or not)."""
    if "/" in release or release.startswith("."):
        raise LabError(f"debug vmlinux: {release!r} is not a kernel release")
    return Path(cache).expanduser() / "dbg" / release


def cached_vmlinux(release: str, cache: Path = DEFAULT_CACHE) -> Path | None:
    """The DWARF vmlinux of ``release`` when it was fetched before, else None (no download)."""
    d = dbg_dir(release, cache)
    path = d / f"vmlinux-{release}"
    return path if (d / ".kdnb-ok").exists() and path.is_file() else None


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """One fetch per release at a time (another lab run may want the same vmlinux)."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def dbg_package(release: str, packages: PackageCache) -> str:
    """The name of the -dbg package of ``release`` in its suite's package lists."""
    wanted = [f"linux-image-{release}-dbg", f"linux-image-{release}-dbg-unsigned"]
    try:
        names = packages.apt.names(r"^linux-image-.*-dbg")
    except AptError as e:
        raise LabError(f"debug vmlinux {release}: {e}") from None
    for name in wanted:
        if name in names:
            return name
    same = sorted(n for n in names if n.startswith(f"linux-image-{release.split('-')[0]}"))
    raise LabError(f"debug vmlinux {release}: {packages.suite} has no {wanted[0]} "
                   f"(its -dbg packages of that version: {', '.join(same) or 'none'})")


def extract_member(deb: Path, member: str, dest: Path) -> Path:
    """Stream ``member`` of the data archive of ``deb`` into ``dest`` (a folder); return it."""
    dest.mkdir(parents=True, exist_ok=True)
    try:
        deb_p = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE)
    except FileNotFoundError:
        raise LabError("debug vmlinux: dpkg-deb is not installed") from None
    assert deb_p.stdout is not None
    tar = subprocess.run(["tar", "-x", "-C", str(dest), "-f", "-", member], stdin=deb_p.stdout,
                         capture_output=True, text=True, check=False)
    deb_p.stdout.close()
    deb_err = deb_p.stderr.read().decode(errors="replace") if deb_p.stderr else ""
    deb_rc = deb_p.wait()
    out = dest / member
    if tar.returncode != 0 or not (out.is_file() or out.is_symlink()):
        raise LabError(f"debug vmlinux: no {member} in {deb.name} (tar rc={tar.returncode}: "
                       f"{tar.stderr.strip()[-300:]}; dpkg-deb rc={deb_rc}: {deb_err.strip()[-300:]})")
    return out


def extract_vmlinux(deb: Path, member: str, dest: Path) -> Path:
    """`extract_member`, following links inside the package (7.2: boot/vmlinux-R is a link)."""
    got = extract_member(deb, member, dest)
    for _ in range(MAX_LINKS):
        if not got.is_symlink():
            return got
        target = os.readlink(got)
        inside = os.path.normpath(target.lstrip("/") if target.startswith("/")
                                  else os.path.join(os.path.dirname(member), target))
        if inside.startswith(".."):
            raise LabError(f"debug vmlinux: {member} in {deb.name} links outside the package ({target})")
        member = "./" + inside
        got = extract_member(deb, member, dest)
    raise LabError(f"debug vmlinux: more than {MAX_LINKS} links from {member} in {deb.name}")


def debug_vmlinux(release: str, cache: Path = DEFAULT_CACHE) -> Path:
    """The DWARF vmlinux of the Debian kernel ``release`` (e.g. ``6.1.0-56-cloud-amd64``),
    downloaded and extracted once into ``<cache>/dbg/<release>/vmlinux-<release>``.

    Raises LabError when the release is not one the lab knows, its suite has no -dbg
    package for it, or the package holds no vmlinux.
    """
    done = cached_vmlinux(release, cache)
    if done is not None:
        return done
    try:
        series = series_of(release)
    except ValueError as e:
        raise LabError(f"debug vmlinux: {e}") from None
    folder = dbg_dir(release, cache)
    with _locked(folder):
        done = cached_vmlinux(release, cache)
        if done is not None:
            return done
        packages = PackageCache(Path(cache), series.suite)
        name = dbg_package(release, packages)
        work = folder / "work"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir()
        try:
            packages.apt.download([name], work)
        except AptError as e:
            raise LabError(f"debug vmlinux {release}: {e}") from None
        debs = sorted(work.glob(f"{name}_*.deb"))
        if not debs:
            raise LabError(f"debug vmlinux {release}: apt-get download left no {name} .deb in {work}")
        member = MEMBER.format(release=release)
        got = extract_vmlinux(debs[-1], member, work / "tree")
        with open(got, "rb") as fh:
            if fh.read(4) != ELF_MAGIC:
                raise LabError(f"debug vmlinux {release}: {got.name} in {debs[-1].name} is not ELF")
        final = folder / f"vmlinux-{release}"
        got.replace(final)
        (folder / ".kdnb-ok").write_text(debs[-1].name + "\n")
        shutil.rmtree(work, ignore_errors=True)
        return final
