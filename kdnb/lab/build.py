"""Build the guest-side binaries at lab time: the crash module and the workload helper."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

from .packages import LabError, _run
from .toolchain import Toolchain, check_tools, run_in

MODULE_SRC = Path(__file__).resolve().parent / "module"


def _src_digest(*names: str) -> str:
    h = hashlib.sha256()
    for n in names:
        h.update((MODULE_SRC / n).read_bytes())
    return h.hexdigest()[:12]


def module_make_command(headers_dir: Path, build_dir: Path, extra: tuple[str, ...] = ()) -> list[str]:
    """The kbuild command line for the crash module (module BTF off: it needs pahole)."""
    return ["make", "-C", str(headers_dir), f"M={build_dir}", "CONFIG_DEBUG_INFO_BTF_MODULES=",
            *extra, "modules"]


def build_crash_module(headers_dir: Path | None, cache_root: Path, release: str,
                       toolchain: Toolchain) -> Path:
    """Compile kdnb_crash.ko against ``headers_dir`` with ``toolchain`` (see toolchain.py;
    a chroot toolchain brings its own headers); cached per release and source digest."""
    digest = _src_digest("kdnb_crash.c", "Kbuild")
    name = f"kdnb_crash-{release}-{digest}"
    if toolchain.chroot is not None:
        bdir, mdir = toolchain.chroot / "build" / name, Path("/build") / name
        headers_dir = toolchain.headers_dir
    else:
        bdir = mdir = cache_root / "build" / name
    ko = bdir / "kdnb_crash.ko"
    if ko.exists():
        return ko
    if headers_dir is None:
        raise LabError(f"build crash module: no headers for {release}")
    if bdir.exists():
        shutil.rmtree(bdir)
    bdir.mkdir(parents=True)
    for n in ("kdnb_crash.c", "Kbuild"):
        shutil.copy(MODULE_SRC / n, bdir / n)
    check_tools(toolchain)
    run_in(toolchain, module_make_command(headers_dir, mdir, toolchain.make_args),
           f"build crash module ({toolchain.description})")
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
