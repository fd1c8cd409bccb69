"""Build the guest-side binaries at lab time: the crash module and the workload helper."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

from .packages import LabError, _run

MODULE_SRC = Path(__file__).resolve().parent / "module"


def _src_digest(*names: str) -> str:
    h = hashlib.sha256()
    for n in names:
        h.update((MODULE_SRC / n).read_bytes())
    return h.hexdigest()[:12]


def module_make_command(headers_dir: Path, build_dir: Path) -> list[str]:
    """The kbuild command line for the crash module (module BTF off: it needs pahole)."""
    return ["make", "-C", str(headers_dir), f"M={build_dir}", "CONFIG_DEBUG_INFO_BTF_MODULES=",
            "modules"]


def build_crash_module(headers_dir: Path, cache_root: Path, release: str,
                       env: dict[str, str] | None = None) -> Path:
    """Compile kdnb_crash.ko against ``headers_dir`` (``env``: see packages.fetch_toolchain);
    cached per release and source digest."""
    digest = _src_digest("kdnb_crash.c", "Kbuild")
    bdir = cache_root / "build" / f"kdnb_crash-{release}-{digest}"
    ko = bdir / "kdnb_crash.ko"
    if ko.exists():
        return ko
    if bdir.exists():
        shutil.rmtree(bdir)
    bdir.mkdir(parents=True)
    for n in ("kdnb_crash.c", "Kbuild"):
        shutil.copy(MODULE_SRC / n, bdir / n)
    path = (env or {}).get("PATH")
    if shutil.which("make", path=path) is None or shutil.which("gcc-12", path=path) is None:
        raise LabError("build crash module: needs make and gcc-12 (host or fetched toolchain)")
    _run(module_make_command(headers_dir, bdir), "build crash module", env=env)
    if not ko.exists():
        raise LabError(f"build crash module: {ko} was not produced")
    return ko


def build_static_helper(cache_root: Path, name: str = "kdnb_work") -> Path:
    """Compile a static guest helper from module/<name>.c (kdnb_work: named workload
    processes and the memory hog; kdnb_elfmove: moves an ELF vmlinux into the crash region)."""
    digest = _src_digest(f"{name}.c")
    out = cache_root / "build" / f"{name}-{digest}"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    _run(["gcc", "-static", "-O2", "-o", str(out) + ".tmp", str(MODULE_SRC / f"{name}.c")],
         f"build {name} (needs gcc and libc6-dev)")
    Path(str(out) + ".tmp").rename(out)
    return out


def build_workload_helper(cache_root: Path) -> Path:
    """The static kdnb_work helper."""
    return build_static_helper(cache_root, "kdnb_work")
