"""Fetch the Debian packages the lab needs into a cache folder (`apt-get download` + `dpkg -x`).

Nothing is installed on the host: every package is downloaded as a .deb into
``<cache>/debs`` and unpacked into its own folder ``<cache>/root/<package>``.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from ..errors import KdnbError


class LabError(KdnbError):
    """A lab step failed; the message names the step (and shows the console tail if any)."""


DEFAULT_CACHE = Path(os.environ.get("KDNB_LAB_CACHE", Path.home() / ".cache" / "kdnb" / "lab"))

#: Kernel series the lab knows, with the Debian package name patterns of their cloud flavour.
KERNEL_SERIES: dict[str, str] = {
    "6.1": r"^linux-image-(6\.1\.0-\d+-cloud-amd64)$",
    "6.12": r"^linux-image-(6\.12\.\d+\+deb12-cloud-amd64)$",
}

#: Tools for the guests, besides the kernel.
TOOL_PACKAGES: tuple[str, ...] = ("busybox-static", "kexec-tools", "makedumpfile")


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


def _version_key(release: str) -> tuple[int, ...]:
    """Sort key for a kernel release such as 6.1.0-56-cloud-amd64 or 6.12.117+deb12-cloud-amd64."""
    return tuple(int(x) for x in re.findall(r"\d+", release))


def available_releases(series: str) -> list[str]:
    """Releases of a kernel series that apt knows and that have a headers package, oldest first."""
    if series not in KERNEL_SERIES:
        raise LabError(f"resolve kernel: unknown kernel series {series!r} (known: {', '.join(KERNEL_SERIES)})")
    out = _run(["apt-cache", "search", "--names-only", r"^linux-(image|headers)-6\."], "resolve kernel")
    names = {line.split(" - ")[0].strip() for line in out.splitlines()}
    rx = re.compile(KERNEL_SERIES[series])
    rels = [m.group(1) for n in names if (m := rx.match(n))]
    rels = [r for r in rels if f"linux-headers-{r}" in names]
    return sorted(rels, key=_version_key)


def resolve_release(kernel: str) -> str:
    """Turn ``6.1``/``6.12`` (newest of the series) or a full release string into a release."""
    if kernel in KERNEL_SERIES:
        rels = available_releases(kernel)
        if not rels:
            raise LabError(f"resolve kernel: apt knows no linux-image for series {kernel} (run apt-get update?)")
        return rels[-1]
    if re.match(r"^6\.\d+\.\d+.*-cloud-amd64$", kernel):
        return kernel
    raise LabError(f"resolve kernel: cannot understand kernel {kernel!r}; use 6.1, 6.12 or a full release")


def series_of(release: str) -> str:
    """``6.1`` or ``6.12`` for a release string."""
    return ".".join(release.split(".")[:2]) if not release.startswith("6.1.") else "6.1"


@dataclass
class PackageCache:
    """A folder of downloaded and unpacked .deb packages."""

    root: Path = field(default_factory=lambda: DEFAULT_CACHE)

    def __post_init__(self) -> None:
        self.root = Path(self.root).expanduser()
        (self.root / "debs").mkdir(parents=True, exist_ok=True)
        (self.root / "root").mkdir(parents=True, exist_ok=True)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold an exclusive lock on the cache (two lab runs must not unpack at once)."""
        with open(self.root / ".lock", "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def unpacked(self, package: str) -> Path:
        """Download (once) and unpack (once) ``package``; return the folder it was unpacked into."""
        dest = self.root / "root" / package
        if (dest / ".kdnb-ok").exists():
            return dest
        debs = self.root / "debs"
        found = sorted(debs.glob(f"{_deb_prefix(package)}_*.deb"))
        if not found:
            _run(["apt-get", "download", package], f"fetch {package}", cwd=debs)
            found = sorted(debs.glob(f"{_deb_prefix(package)}_*.deb"))
            if not found:
                raise LabError(f"fetch {package}: apt-get download produced no .deb in {debs}")
        if dest.exists():
            shutil.rmtree(dest)
        dest.mkdir(parents=True)
        _run(["dpkg", "-x", str(found[-1]), str(dest)], f"unpack {package}")
        (dest / ".kdnb-ok").write_text(found[-1].name + "\n")
        return dest

    def depends(self, package: str) -> list[str]:
        """Real packages ``package`` depends on (one level, alternatives: the first)."""
        out = _run(["apt-cache", "depends", "--no-recommends", "--no-suggests", "--no-conflicts",
                    "--no-breaks", "--no-replaces", "--no-enhances", package], f"depends {package}")
        deps: list[str] = []
        for line in out.splitlines():
            m = re.match(r"\s+\|?(?:Pre)?Depends:\s+(\S+)", line)
            if m and not m.group(1).startswith("<"):
                deps.append(m.group(1))
        return deps

    def library_closure(self, package: str) -> list[str]:
        """lib* packages in the recursive dependency closure of ``package``."""
        out = _run(["apt-cache", "depends", "--recurse", "--no-recommends", "--no-suggests",
                    "--no-conflicts", "--no-breaks", "--no-replaces", "--no-enhances", package],
                   f"depends {package}")
        names = {l.strip() for l in out.splitlines() if l and not l.startswith(" ")}
        return sorted(n for n in names if n.startswith("lib") and not n.startswith("<"))


def _deb_prefix(package: str) -> str:
    """The file-name prefix apt-get download uses for a package ('+' and ':' are escaped)."""
    return package.replace(":", "%3a")


@dataclass
class KernelFiles:
    """Where an unpacked kernel's pieces are."""

    release: str
    vmlinuz: Path
    modules_dir: Path
    headers_dir: Path | None


def fetch_kernel(cache: PackageCache, release: str, headers: bool = True) -> KernelFiles:
    """Fetch the kernel image (and headers + kbuild for module builds) of ``release``."""
    img = cache.unpacked(f"linux-image-{release}")
    vmlinuz = img / "boot" / f"vmlinuz-{release}"
    if not vmlinuz.exists():
        raise LabError(f"fetch kernel: {vmlinuz} missing from linux-image-{release}")
    hdir = None
    if headers:
        hdir = fetch_headers(cache, release)
    return KernelFiles(release, vmlinuz, img / "lib" / "modules" / release, hdir)


def fetch_headers(cache: PackageCache, release: str) -> Path:
    """Merge linux-headers-<release>, its -common package and linux-kbuild into one build tree.

    Debian's header packages point at each other with absolute symlinks (/usr/src/...,
    /usr/lib/linux-kbuild-*); we unpack them all into one folder and rewrite those links so
    that they stay inside it. Returns the ``usr/src/linux-headers-<release>`` folder there.
    """
    tree = cache.root / "kbuild" / release
    hdir = tree / "usr" / "src" / f"linux-headers-{release}"
    if (tree / ".kdnb-ok").exists():
        return hdir
    pkg = f"linux-headers-{release}"
    parts = [pkg] + [d for d in cache.depends(pkg)
                     if d.startswith("linux-headers-") or d.startswith("linux-kbuild-")]
    if tree.exists():
        shutil.rmtree(tree)
    tree.mkdir(parents=True)
    for p in parts:
        src = cache.unpacked(p)
        _run(["cp", "-a", "--no-preserve=ownership", f"{src}/.", str(tree)], f"merge {p}")
    (tree / ".kdnb-ok").unlink(missing_ok=True)
    for dirpath, dirnames, filenames in os.walk(tree):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            if p.is_symlink():
                target = os.readlink(p)
                if target.startswith("/"):
                    p.unlink()
                    p.symlink_to(os.path.relpath(tree / target.lstrip("/"), p.parent))
    mk = hdir / "Makefile"
    if mk.exists():  # "include /usr/src/linux-headers-X-common/Makefile" -> inside the tree
        mk.write_text(re.sub(r"(?m)^include /", f"include {tree}/", mk.read_text()))
    if not mk.exists():
        raise LabError(f"fetch headers: {hdir}/Makefile missing after unpacking {parts}")
    (tree / ".kdnb-ok").write_text(" ".join(parts) + "\n")
    return hdir


def host_has_package(package: str) -> bool:
    """Whether dpkg says ``package`` is installed on the host."""
    import subprocess as sp
    p = sp.run(["dpkg-query", "-W", "-f", "${Status}", package], capture_output=True, text=True)
    return p.returncode == 0 and "installed" in p.stdout and "not-installed" not in p.stdout


@dataclass
class ToolFiles:
    """The guest user-space: busybox, kexec, makedumpfile and the libraries they need."""

    busybox: Path
    kexec: Path
    makedumpfile: Path
    libraries: dict[str, Path]
    kexec_libraries: dict[str, Path] = field(default_factory=dict)
    makedumpfile_libraries: dict[str, Path] = field(default_factory=dict)


def fetch_tools(cache: PackageCache) -> ToolFiles:
    """Fetch busybox-static, kexec-tools and makedumpfile, plus the shared libraries that
    kexec and makedumpfile need (DT_NEEDED, transitively). Libraries come from the unpacked
    dependency packages first (the Xen libraries kexec links against are usually not on the
    host), then from the host's own /lib (same Debian release)."""
    from .libs import lib_dirs_under, resolve_libraries

    roots = {p: cache.unpacked(p) for p in TOOL_PACKAGES}
    busybox = roots["busybox-static"] / "bin" / "busybox"
    kexec = roots["kexec-tools"] / "sbin" / "kexec"
    mdf = roots["makedumpfile"] / "usr" / "bin" / "makedumpfile"
    for p in (busybox, kexec, mdf):
        if not p.exists():
            raise LabError(f"fetch tools: {p} missing after unpacking")
    libroots: list[Path] = []
    candidates: list[str] = []
    for p in ("kexec-tools", "makedumpfile"):
        candidates += [c for c in cache.library_closure(p) if c not in candidates]
    # Unpack first what the host lacks; then, if still missing, everything else.
    first = [c for c in candidates if not host_has_package(c)]
    rest = [c for c in candidates if c not in first]
    for batch in (first, rest):
        for c in batch:
            libroots.append(cache.unpacked(c))
        dirs = lib_dirs_under(libroots)
        found, missing = resolve_libraries([kexec, mdf], dirs)
        if not missing:
            return ToolFiles(busybox, kexec, mdf, found, resolve_libraries([kexec], dirs)[0],
                             resolve_libraries([mdf], dirs)[0])
    raise LabError(f"fetch tools: cannot find shared libraries {missing} for kexec/makedumpfile")


#: Packages of a private compiler for the crash module, used when the host has no gcc-12/make.
TOOLCHAIN_ROOTS = ("gcc-12", "binutils", "make")
#: Never unpacked into the private toolchain: the host's C library is used as is.
TOOLCHAIN_SKIP = ("libc6", "libgcc-s1", "libstdc++6", "zlib1g", "libzstd1")


def host_has_toolchain() -> bool:
    """Whether the host can build a Debian 12 kernel module itself (make + gcc-12)."""
    return all(shutil.which(t) for t in ("make", "gcc-12", "x86_64-linux-gnu-gcc-12", "ld", "as"))


def fetch_toolchain(cache: PackageCache) -> dict[str, str]:
    """Environment for building the crash module.

    The host's own make/gcc-12 when present; otherwise gcc-12, binutils and make (and the
    libraries they need) are fetched with apt-get download, unpacked into one folder
    (``<cache>/toolchain``) and used from there through PATH and LD_LIBRARY_PATH (gcc finds
    cc1 relative to its own location).
    """
    env = dict(os.environ)
    if host_has_toolchain() and not os.environ.get("KDNB_LAB_PRIVATE_GCC"):
        return env
    tree = cache.root / "toolchain"
    if not (tree / ".kdnb-ok").exists():
        names: list[str] = []
        for root in TOOLCHAIN_ROOTS:
            out = _run(["apt-cache", "depends", "--recurse", "--no-recommends", "--no-suggests",
                        "--no-conflicts", "--no-breaks", "--no-replaces", "--no-enhances", root],
                       "fetch toolchain")
            for line in out.splitlines():
                n = line.strip()
                if line and not line.startswith(" ") and not n.startswith("<") and n not in names:
                    names.append(n)
        names = [n for n in names if n not in TOOLCHAIN_SKIP]
        if tree.exists():
            shutil.rmtree(tree)
        tree.mkdir(parents=True)
        for n in names:
            _run(["cp", "-a", "--no-preserve=ownership", f"{cache.unpacked(n)}/.", str(tree)],
                 f"fetch toolchain ({n})")
        (tree / ".kdnb-ok").unlink(missing_ok=True)
        bindir = tree / "usr" / "bin"
        for tool in ("gcc", "x86_64-linux-gnu-gcc"):  # Debian's unversioned names live in gcc
            if not (bindir / tool).exists() and (bindir / "gcc-12").exists():
                (bindir / tool).symlink_to("gcc-12")
        for dirpath, dirnames, filenames in os.walk(tree):  # absolute links -> inside the tree
            for name in dirnames + filenames:
                p = Path(dirpath) / name
                if p.is_symlink() and os.readlink(p).startswith("/"):
                    target = tree / os.readlink(p).lstrip("/")
                    p.unlink()
                    p.symlink_to(os.path.relpath(target, p.parent))
        (tree / ".kdnb-ok").write_text(" ".join(names) + "\n")
    env["PATH"] = f"{tree / 'usr' / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}"
    libs = [str(tree / "usr" / "lib" / "x86_64-linux-gnu"), str(tree / "lib" / "x86_64-linux-gnu")]
    env["LD_LIBRARY_PATH"] = ":".join(libs + [env["LD_LIBRARY_PATH"]] if env.get("LD_LIBRARY_PATH") else libs)
    return env
