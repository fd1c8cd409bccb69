"""`kdnb notebook`: JupyterLab on kdnb's notebooks, ready to run on a bundled sample.

It starts `jupyter lab` in a workspace (the checkout's notebooks/ folder, or a folder given on
the command line, filled with copies of the notebooks), with

- kdnb's Lab settings (kdnb/ui/jupyter/labconfig) on JUPYTER_CONFIG_PATH, so a double-clicked
  `.py` notebook opens as a notebook (jupytext's "Jupytext Notebook" viewer), not as text;
- a read-only *copy* of the packaged report notebook (04-report.py), rewritten from the package
  at each start: saving it in Lab never touches the template `kdnb report` runs;
- PYTHONPATH naming this kdnb, so the kernels import it even from an uninstalled checkout.
"""

from __future__ import annotations

import argparse
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

from ..errors import KdnbError

PACKAGE = Path(__file__).resolve().parents[1]
LAB_CONFIG = Path(__file__).resolve().parent / "jupyter"
CHECKOUT_NOTEBOOKS = PACKAGE.parent / "notebooks"
REPORT_COPY = "04-report.py"
INSTALL_HINT = "install the jupyter extra: python3 -m pip install -e '.[jupyter]'"


def missing_tools() -> list[str]:
    """The Python packages `kdnb notebook` needs that are not installed."""
    import importlib.util

    return [m for m in ("jupyterlab", "jupytext", "ipykernel") if importlib.util.find_spec(m) is None]


def write_report_copy(workspace: Path) -> Path:
    """A read-only copy of the packaged report notebook in `workspace` (replacing an older one)."""
    from .report import REPORT_NOTEBOOK

    dst = workspace / REPORT_COPY
    if dst.is_symlink() or (dst.exists() and not dst.is_file()):
        raise KdnbError(f"{dst}: not a regular file; remove it so kdnb can write the report copy")
    if dst.exists():
        dst.chmod(dst.stat().st_mode | stat.S_IWUSR)
    shutil.copyfile(REPORT_NOTEBOOK, dst)
    dst.chmod(stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
    return dst


def prepare(workspace: Path | None) -> Path:
    """The workspace folder with the notebooks and the report copy in it."""
    if workspace is None:
        if not CHECKOUT_NOTEBOOKS.is_dir():
            raise KdnbError("no notebooks/ folder next to this kdnb; name a folder: kdnb notebook DIR")
        workspace = CHECKOUT_NOTEBOOKS
    workspace = workspace.resolve()
    workspace.mkdir(parents=True, exist_ok=True)
    if workspace != CHECKOUT_NOTEBOOKS.resolve() and CHECKOUT_NOTEBOOKS.is_dir():
        for src in sorted(CHECKOUT_NOTEBOOKS.glob("0*.py")) + [CHECKOUT_NOTEBOOKS / "jupytext.toml"]:
            if src.is_file() and not src.is_symlink() and src.name != REPORT_COPY \
                    and not (workspace / src.name).exists():
                shutil.copyfile(src, workspace / src.name)
    write_report_copy(workspace)
    return workspace


def lab_environment(base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment JupyterLab starts with: kdnb's Lab settings and this kdnb importable."""
    env = dict(os.environ if base is None else base)
    for key, value in (("JUPYTER_CONFIG_PATH", str(LAB_CONFIG)), ("PYTHONPATH", str(PACKAGE.parent))):
        env[key] = value + (os.pathsep + env[key] if env.get(key) else "")
    return env


def lab_command(workspace: Path, port: int | None, browser: bool, extra: list[str]) -> list[str]:
    """The `jupyter lab` command line."""
    cmd = [sys.executable, "-m", "jupyterlab", f"--ServerApp.root_dir={workspace}"]
    if port:
        cmd.append(f"--ServerApp.port={port}")
    if not browser:
        cmd.append("--no-browser")
    return cmd + extra


def cmd_notebook(args: argparse.Namespace) -> int:
    """Start JupyterLab on the notebooks (returns its exit status)."""
    missing = missing_tools()
    if missing:
        raise KdnbError(f"kdnb notebook needs {', '.join(missing)}: {INSTALL_HINT}")
    workspace = prepare(Path(args.dir) if args.dir else None)
    from .paths import sample_paths

    samples = sample_paths()
    print(f"kdnb notebook: notebooks in {workspace}; "
          + (f"dump_path = None opens the bundled sample {samples[0]}" if samples else
             "no bundled sample: set dump_path in each notebook"), file=sys.stderr)
    cmd = lab_command(workspace, args.port, not args.no_browser, list(args.lab_option))
    try:
        return subprocess.call(cmd, env=lab_environment())
    except KeyboardInterrupt:
        return 0


def add_subparser(sub: argparse._SubParsersAction) -> None:
    """Register `kdnb notebook`."""
    p = sub.add_parser("notebook", help="JupyterLab on kdnb's notebooks, a bundled sample ready")
    p.add_argument("dir", nargs="?", help="workspace folder (default: the checkout's notebooks/)")
    p.add_argument("--port", type=int, help="port of the Jupyter server")
    p.add_argument("--no-browser", action="store_true", help="do not open a browser")
    p.add_argument("--lab-option", action="append", default=[], metavar="OPTION",
                   help="one more `jupyter lab` option, e.g. --lab-option=--ServerApp.ip=0.0.0.0 "
                        "(repeatable)")
    p.set_defaults(func=cmd_notebook)
