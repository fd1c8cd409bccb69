"""Compilers for the crash module: the host's gcc-12 (or a private copy of bookworm's), and
for kernels built with a newer gcc a throw-away sid root (downloaded packages, ``dpkg -x``)
that is entered with chroot."""

from __future__ import annotations

import os
import shlex
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path

from .packages import LabError, PackageCache, _run, merge_trees

#: Packages of a private compiler for the crash module, used when the host has no gcc-12/make.
TOOLCHAIN_ROOTS = ("gcc-12", "binutils", "make")
#: Never unpacked into the private toolchain: the host's C library is used as is.
TOOLCHAIN_SKIP = ("libc6", "libgcc-s1", "libstdc++6", "zlib1g", "libzstd1")
#: What a sid root needs besides the kernel headers (whose dependencies bring gcc and kbuild).
SID_ROOT_TOOLS = ("make", "dash", "bash", "coreutils", "sed", "grep", "mawk", "findutils",
                  "diffutils")


@dataclass
class Toolchain:
    """How to run kbuild: an environment, extra make arguments, and (for a sid root) the
    folder to chroot into, inside which the headers sit at their Debian path."""

    env: dict[str, str]
    make_args: tuple[str, ...] = ()
    chroot: Path | None = None
    headers_dir: Path | None = None
    description: str = "host gcc-12"
    tools: tuple[str, ...] = ("make", "gcc-12")


def host_has_toolchain() -> bool:
    """Whether the host can build a Debian 12 kernel module itself (make + gcc-12)."""
    return all(shutil.which(t) for t in ("make", "gcc-12", "x86_64-linux-gnu-gcc-12", "ld", "as"))


def bookworm_toolchain(cache: PackageCache, cc: str | None = None) -> Toolchain:
    """The host's make/gcc-12, or bookworm's gcc-12, binutils and make unpacked into
    ``<cache>/bookworm/toolchain`` and used through PATH and LD_LIBRARY_PATH (gcc finds cc1
    relative to its own location). ``cc`` is passed as ``CC=`` (5.10 headers ask for gcc-10;
    gcc-12 builds the module when told so with CC=gcc)."""
    env = dict(os.environ)
    args = (f"CC={cc}",) if cc else ()
    desc = "host gcc-12" + (f" (CC={cc})" if cc else "")
    if host_has_toolchain() and not os.environ.get("KDNB_LAB_PRIVATE_GCC"):
        return Toolchain(env, args, description=desc)
    bw = cache.for_suite("bookworm")
    tree = bw.dir / "toolchain"
    if not (tree / ".kdnb-ok").exists():
        names = [n for n in bw.closure(list(TOOLCHAIN_ROOTS)) if n not in TOOLCHAIN_SKIP]
        merge_trees(bw.unpacked_all(names), tree, "fetch toolchain")
        bindir = tree / "usr" / "bin"
        for tool in ("gcc", "x86_64-linux-gnu-gcc"):  # Debian's unversioned names live in gcc
            if not (bindir / tool).exists() and (bindir / "gcc-12").exists():
                (bindir / tool).symlink_to("gcc-12")
    env["PATH"] = f"{tree / 'usr' / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}"
    libs = [str(tree / "usr" / "lib" / "x86_64-linux-gnu"), str(tree / "lib" / "x86_64-linux-gnu")]
    env["LD_LIBRARY_PATH"] = ":".join(libs + ([env["LD_LIBRARY_PATH"]] if env.get("LD_LIBRARY_PATH") else []))
    return Toolchain(env, args, description="bookworm gcc-12 (private copy)" + (f", CC={cc}" if cc else ""))


def sid_root(cache: PackageCache, release: str) -> Path:
    """A sid root holding linux-headers-<release> with everything it depends on (sid's gcc,
    linux-kbuild, libc) plus a shell and coreutils: the closure apt computes for an empty
    system, each package unpacked and merged into ``<cache>/sid/gcc-root/<release>``."""
    sc = cache.for_suite("sid")
    tree = sc.dir / "gcc-root" / release
    if not (tree / ".kdnb-ok").exists():
        names = sc.closure([f"linux-headers-{release}", *SID_ROOT_TOOLS])
        merge_trees(sc.unpacked_all(names), tree, "sid root")
    _finish_root(tree)
    return tree


def _finish_root(tree: Path) -> None:
    """What dpkg's maintainer scripts and base-files would have set up in an unpacked root:
    the merged-/usr links, /bin/sh and awk (update-alternatives), /tmp, /proc, /dev/null."""
    for link, target in (("bin", "usr/bin"), ("sbin", "usr/sbin"), ("lib", "usr/lib"),
                         ("lib64", "usr/lib64")):  # merged /usr: base-files' links
        if not (tree / link).exists() and not (tree / link).is_symlink() and (tree / target).is_dir():
            (tree / link).symlink_to(target)
    for name, target in (("sh", "dash"), ("awk", "mawk")):
        link = tree / "usr" / "bin" / name
        if not link.exists() and (tree / "usr" / "bin" / target).exists():
            link.unlink(missing_ok=True)
            link.symlink_to(target)
    for d in ("tmp", "dev", "build", "proc"):
        (tree / d).mkdir(exist_ok=True)
    (tree / "tmp").chmod(0o1777)
    null = tree / "dev" / "null"
    if not null.exists():
        try:
            os.mknod(null, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        except OSError as e:
            raise LabError(f"sid root: cannot create {null} ({e.strerror}); the sid compiler "
                           "needs a chroot with /dev/null (run as root)") from None
        null.chmod(0o666)


def sid_toolchain(cache: PackageCache, release: str) -> Toolchain:
    """Build with sid's gcc by chroot into `sid_root` (needs root: chroot and mknod)."""
    if os.geteuid() != 0:
        raise LabError(f"build crash module: {release} needs sid's gcc, run in a chroot, which "
                       "needs root; run as root or pick a scenario without the module")
    tree = sid_root(cache, release)
    hdir = Path("/usr/src") / f"linux-headers-{release}"
    if not (tree / hdir.relative_to("/") / "Makefile").exists():
        raise LabError(f"sid root: {hdir}/Makefile missing in {tree}")
    env = {"PATH": "/usr/bin:/usr/sbin:/bin:/sbin", "HOME": "/", "LC_ALL": "C"}
    return Toolchain(env, (), chroot=tree, headers_dir=hdir, description="sid gcc (chroot)",
                     tools=())


def toolchain_for(cache: PackageCache, compiler: str, release: str) -> Toolchain:
    """The toolchain a series asks for (kernels.Series.compiler)."""
    if compiler == "host":
        return bookworm_toolchain(cache)
    if compiler == "host-cc":
        return bookworm_toolchain(cache, cc="gcc")
    if compiler == "sid-gcc":
        return sid_toolchain(cache, release)
    raise LabError(f"unknown compiler kind {compiler!r}")


def chroot_command(tc: Toolchain, cmd: list[str]) -> list[str]:
    """``cmd`` as run by a toolchain: for a sid root, chroot in a private mount namespace
    with /proc mounted (objtool reads /proc/self); the mount vanishes with the namespace."""
    if tc.chroot is None:
        return cmd
    inner = " ".join(shlex.quote(c) for c in ["chroot", str(tc.chroot), *cmd])
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c",
            f"mount -t proc proc {shlex.quote(str(tc.chroot / 'proc'))} && exec {inner}"]


def check_tools(tc: Toolchain) -> None:
    """LabError when the toolchain's programs are not on its PATH."""
    for t in tc.tools:
        if shutil.which(t, path=tc.env.get("PATH")) is None:
            raise LabError(f"build crash module: needs {t} (host or fetched toolchain)")


def run_in(tc: Toolchain, cmd: list[str], step: str) -> str:
    """Run ``cmd`` with the toolchain's environment (inside its chroot if any)."""
    return _run(chroot_command(tc, cmd), step, env=tc.env)
