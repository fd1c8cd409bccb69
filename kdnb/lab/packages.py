"""Fetch the Debian packages the lab needs into a cache folder (`apt-get download` + `dpkg -x`).

Nothing is installed on the host: every package is downloaded, through the lab's own apt
configuration for its suite (see apt.py), as a .deb into ``<cache>/<suite>/debs`` and
unpacked into its own folder ``<cache>/<suite>/root/<package>``.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import KdnbError
from .apt import AptConfig, AptError
from .kernels import Series


class LabError(KdnbError):
    """A lab step failed; the message names the step (and shows the console tail if any)."""


DEFAULT_CACHE = Path(os.environ.get("KDNB_LAB_CACHE", Path.home() / ".cache" / "kdnb" / "lab"))

#: Guest tools that always come from bookworm (bookworm's kexec loads every kernel here).
BOOKWORM_TOOLS: tuple[str, ...] = ("busybox-static", "kexec-tools")


def _run(cmd: list[str], step: str, cwd: Path | None = None, env: dict | None = None) -> str:
    """Run a host command; raise LabError naming ``step`` with its stderr when it fails."""
    try:
        p = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    except FileNotFoundError as e:
        raise LabError(f"{step}: {cmd[0]} is not installed ({e})") from None
    if p.returncode != 0:
        tail = (p.stderr or p.stdout).strip().splitlines()[-15:]
        raise LabError(f"{step}: `{' '.join(cmd)}` failed (rc={p.returncode}):\n" + "\n".join(tail))
    return p.stdout


@dataclass
class PackageCache:
    """Downloaded and unpacked .deb packages of one Debian suite, under ``root/<suite>``.

    One lock (``root/.lock``) covers all suites: take it once with `locked()`, then use
    `for_suite()` for the other suites' caches.
    """

    root: Path = field(default_factory=lambda: DEFAULT_CACHE)
    suite: str = "bookworm"

    def __post_init__(self) -> None:
        self.root = Path(self.root).expanduser()
        self.dir = self.root / self.suite
        (self.dir / "debs").mkdir(parents=True, exist_ok=True)
        (self.dir / "root").mkdir(parents=True, exist_ok=True)
        self.apt = AptConfig(self.suite, self.root / "apt" / self.suite)

    def for_suite(self, suite: str) -> PackageCache:
        """The cache of another suite, sharing this root (and its lock)."""
        return self if suite == self.suite else PackageCache(self.root, suite)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold an exclusive lock on the cache (two lab runs must not unpack at once)."""
        with open(self.root / ".lock", "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _debs(self, package: str) -> list[Path]:
        return sorted((self.dir / "debs").glob(f"{package.replace(':', '%3a')}_*.deb"))

    def unpacked_all(self, packages: list[str]) -> dict[str, Path]:
        """`unpacked` for many packages, downloading the missing ones with one apt-get call."""
        todo = [p for p in packages if not (self.dir / "root" / p / ".kdnb-ok").exists()
                and not self._debs(p)]
        if todo:
            try:
                self.apt.download(todo, self.dir / "debs")
            except AptError as e:
                raise LabError(f"fetch {', '.join(todo)} from {self.suite}: {e}") from None
        return {p: self.unpacked(p) for p in packages}

    def unpacked(self, package: str) -> Path:
        """Download (once) and unpack (once) ``package``; return the folder it was unpacked into."""
        dest = self.dir / "root" / package
        if (dest / ".kdnb-ok").exists():
            return dest
        if not self._debs(package):
            try:
                self.apt.download([package], self.dir / "debs")
            except AptError as e:
                raise LabError(f"fetch {package} from {self.suite}: {e}") from None
        found = self._debs(package)
        if not found:
            raise LabError(f"fetch {package}: apt-get download produced no .deb in {self.dir / 'debs'}")
        if dest.exists():
            shutil.rmtree(dest)
        dest.mkdir(parents=True)
        _run(["dpkg", "-x", str(found[-1]), str(dest)], f"unpack {package}")
        (dest / ".kdnb-ok").write_text(found[-1].name + "\n")
        return dest

    def depends(self, package: str) -> list[str]:
        """Real packages ``package`` depends on (one level, alternatives: the first)."""
        try:
            return self.apt.depends(package)
        except AptError as e:
            raise LabError(f"depends {package}: {e}") from None

    def closure(self, packages: list[str]) -> list[str]:
        """Everything an install of ``packages`` onto an empty system would bring."""
        try:
            return self.apt.closure(packages)
        except AptError as e:
            raise LabError(f"depends {' '.join(packages)} ({self.suite}): {e}") from None

    def library_closure(self, package: str) -> list[str]:
        """The packages ``package`` needs, itself and perl's excluded (only scripts need perl)."""
        return [n for n in self.closure([package]) if n != package and "perl" not in n]


def merge_trees(parts: dict[str, Path], tree: Path, step: str) -> None:
    """Copy unpacked package roots into one folder; absolute symlinks are rewritten so that
    they point inside it. Marks the result complete with ``.kdnb-ok``."""
    if tree.exists():
        shutil.rmtree(tree)
    tree.mkdir(parents=True)
    for name, src in parts.items():
        _run(["cp", "-a", "--no-preserve=ownership", f"{src}/.", str(tree)], f"{step} ({name})")
    (tree / ".kdnb-ok").unlink(missing_ok=True)
    for dirpath, dirnames, filenames in os.walk(tree):
        for n in dirnames + filenames:
            p = Path(dirpath) / n
            if p.is_symlink() and os.readlink(p).startswith("/"):
                target = tree / os.readlink(p).lstrip("/")
                p.unlink()
                p.symlink_to(os.path.relpath(target, p.parent))
    (tree / ".kdnb-ok").write_text(" ".join(parts) + "\n")


@dataclass
class KernelFiles:
    """Where an unpacked kernel's pieces are."""

    release: str
    vmlinuz: Path
    modules_dir: Path
    headers_dir: Path | None


def kernel_parts(image: str, depends: list[str], release: str) -> list[str]:
    """The packages holding one kernel: the image package and those of its dependencies named
    after the release (sid: linux-binary-*, linux-modules-*, linux-base-*)."""
    return [image] + [d for d in depends if release in d and d != image]


def fetch_kernel(cache: PackageCache, release: str, series: Series, headers: bool = True) -> KernelFiles:
    """Fetch the kernel image, its modules (and headers + kbuild for module builds)."""
    kc = cache.for_suite(series.suite)
    image = f"linux-image-{release}"
    parts = kernel_parts(image, kc.depends(image), release)
    roots = kc.unpacked_all(parts)
    if len(parts) == 1:
        tree = roots[image]
    else:
        tree = kc.dir / "kernel" / release
        if not (tree / ".kdnb-ok").exists():
            merge_trees(roots, tree, "merge kernel")
    vmlinuz = next((p for p in (tree / "boot" / f"vmlinuz-{release}",
                                tree / "usr" / "lib" / "modules" / release / "vmlinuz",
                                tree / "lib" / "modules" / release / "vmlinuz") if p.exists()), None)
    if vmlinuz is None:
        raise LabError(f"fetch kernel: no vmlinuz in {', '.join(parts)}")
    mods = next((p for p in (tree / "lib" / "modules" / release,
                             tree / "usr" / "lib" / "modules" / release) if (p / "kernel").is_dir()), None)
    if mods is None:
        raise LabError(f"fetch kernel: no modules folder for {release} in {', '.join(parts)}")
    hdir = fetch_headers(kc, release) if headers else None
    return KernelFiles(release, vmlinuz, mods, hdir)


def fetch_headers(cache: PackageCache, release: str) -> Path:
    """Merge linux-headers-<release>, its -common package and linux-kbuild into one build tree.

    Debian's header packages point at each other with absolute symlinks (/usr/src/...,
    /usr/lib/linux-kbuild-*); we unpack them all into one folder and rewrite those links so
    that they stay inside it. Returns the ``usr/src/linux-headers-<release>`` folder there.
    """
    tree = cache.dir / "kbuild" / release
    hdir = tree / "usr" / "src" / f"linux-headers-{release}"
    if (tree / ".kdnb-ok").exists():
        return hdir
    pkg = f"linux-headers-{release}"
    parts = [pkg] + [d for d in cache.depends(pkg)
                     if d.startswith(("linux-headers-", "linux-kbuild-"))]
    merge_trees(cache.unpacked_all(parts), tree, "merge headers")
    mk = hdir / "Makefile"
    if not mk.exists():
        (tree / ".kdnb-ok").unlink()
        raise LabError(f"fetch headers: {hdir}/Makefile missing after unpacking {parts}")
    # "include /usr/src/linux-headers-X-common/Makefile" -> inside the tree
    mk.write_text(re.sub(r"(?m)^include /", f"include {tree}/", mk.read_text()))
    return hdir


def host_has_package(package: str) -> bool:
    """Whether dpkg says ``package`` is installed on the host."""
    p = subprocess.run(["dpkg-query", "-W", "-f", "${Status}", package], capture_output=True, text=True, check=False)
    return p.returncode == 0 and "installed" in p.stdout and "not-installed" not in p.stdout


@dataclass
class ToolFiles:
    """The guest user-space: busybox, kexec, makedumpfile and the libraries they need."""

    busybox: Path
    kexec: Path
    makedumpfile: Path
    kexec_libraries: dict[str, Path]
    makedumpfile_libraries: dict[str, Path]
    makedumpfile_suite: str = "bookworm"


def _libraries(cache: PackageCache, program: Path, package: str, host: bool) -> dict[str, Path]:
    """Shared libraries ``program`` (from ``package``) needs, DT_NEEDED transitively.

    With ``host`` (a bookworm program on this bookworm host), packages the host lacks are
    unpacked first and the host's /lib fills the rest; otherwise only the suite's own
    packages are searched (a sid program must run with sid's libc)."""
    from .libs import lib_dirs_under, resolve_libraries

    candidates = cache.library_closure(package)
    batches = ([[c for c in candidates if not host_has_package(c)],
                [c for c in candidates if host_has_package(c)]] if host else [candidates])
    roots: list[Path] = []
    missing: list[str] = []
    for batch in batches:
        roots += cache.unpacked_all(batch).values()
        found, missing = resolve_libraries([program], lib_dirs_under(roots), host=host)
        if not missing:
            return found
    raise LabError(f"fetch tools: cannot find shared libraries {missing} for {program.name} "
                   f"({cache.suite})")


def fetch_tools(cache: PackageCache, series: Series) -> ToolFiles:
    """busybox-static and kexec-tools from bookworm, makedumpfile from the series' tools
    suite, each with the shared libraries it needs."""
    bw = cache.for_suite("bookworm")
    roots = bw.unpacked_all(list(BOOKWORM_TOOLS))
    busybox = roots["busybox-static"] / "bin" / "busybox"
    kexec = roots["kexec-tools"] / "sbin" / "kexec"
    mc = cache.for_suite(series.tools_suite)
    mdf = mc.unpacked("makedumpfile") / "usr" / "bin" / "makedumpfile"
    for p in (busybox, kexec, mdf):
        if not p.exists():
            raise LabError(f"fetch tools: {p} missing after unpacking")
    return ToolFiles(busybox, kexec, mdf, _libraries(bw, kexec, "kexec-tools", host=True),
                     _libraries(mc, mdf, "makedumpfile", host=mc.suite == "bookworm"), mc.suite)
