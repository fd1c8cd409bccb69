"""The small real sample dumps bundled in data/ (made with `kdnb lab`), and how to open them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import KdnbError

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from .api import Dump

#: data/ at the repository root (the package is installed editable, `pip install -e .`).
DATA_DIR = Path(__file__).resolve().parent.parent / "data"

#: Real process cores of data/cores/crashers.c (tools/make_process_cores.py), with gdb's view.
CORES_DIR = DATA_DIR / "cores"
MINIDUMPS_DIR = DATA_DIR / "minidumps"

#: The sample opened when no name is given.
DEFAULT_SAMPLE = "k6.1-oops"

COLUMNS = ["name", "path", "format", "kernel", "scenario", "dump_level", "size_bytes",
           "ground_truth"]


def _records(data_dir: Path | None = None) -> list[dict[str, Any]]:
    root = Path(data_dir) if data_dir is not None else DATA_DIR
    rows: list[dict[str, Any]] = []
    if not root.is_dir():
        return rows
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        gt_path = folder / "ground-truth.json"
        if not gt_path.exists():
            continue
        gt = json.loads(gt_path.read_text())
        for dump in sorted(folder.glob("vmcore.*")):
            rows.append({
                "name": folder.name if len(list(folder.glob("vmcore.*"))) == 1
                else f"{folder.name}/{dump.name}",
                "path": dump,
                "format": dump.name.split(".", 1)[1],
                "kernel": gt.get("kernel_release"),
                "scenario": gt.get("scenario"),
                "dump_level": gt.get("dump_level"),
                "size_bytes": dump.stat().st_size,
                "ground_truth": gt_path,
            })
    return rows


def samples(data_dir: Path | None = None) -> "pd.DataFrame":
    """The bundled samples, one row per dump file: name, path, format, kernel, scenario,
    dump_level, size_bytes, ground_truth (path of its ground-truth.json)."""
    import pandas as pd

    return pd.DataFrame(_records(data_dir), columns=COLUMNS)


def sample_path(name: str | None = None, data_dir: Path | None = None) -> Path:
    """Path of the dump file of sample ``name`` (default: the first 6.1 oops sample)."""
    rows = _records(data_dir)
    if not rows:
        raise KdnbError(f"no bundled samples found in {data_dir or DATA_DIR}")
    want = name or DEFAULT_SAMPLE
    for r in rows:
        if want in (r["name"], r["path"].parent.name, str(r["path"])):
            return r["path"]
    if name is None:
        return rows[0]["path"]
    raise KdnbError(f"no sample named {name!r}; known: {', '.join(r['name'] for r in rows)}")


def ground_truth(name: str | None = None, data_dir: Path | None = None) -> dict[str, Any]:
    """The ground-truth.json of a sample, as a dict."""
    return json.loads((sample_path(name, data_dir).parent / "ground-truth.json").read_text())


def open_sample(name: str | None = None) -> "Dump":
    """Open a bundled sample with `kdnb.open` (default: k6.1-oops)."""
    from .api import open as _open

    return _open(sample_path(name))


def sample_core(name: str = "threads") -> Path:
    """A bundled process core (data/cores/core.NAME.zst: null, stack, abort, assert, double-free,
    threads, sigbus, sigill, fpe, rodata, bad-call, kill, gcore); its binary is beside it."""
    path = CORES_DIR / f"core.{name}.zst"
    if not path.exists():
        known = sorted(p.name[5:-4] for p in CORES_DIR.glob("core.*.zst"))
        raise KdnbError(f"no bundled process core {name!r} in {CORES_DIR} (known: {known})")
    return path


def sample_minidump(name: str = "threads") -> Path:
    """A bundled Crashpad minidump (data/minidumps/NAME.dmp: the crashes of data/cores, apart from
    gcore); its binary, mdcrashers, is beside it."""
    path = MINIDUMPS_DIR / f"{name}.dmp"
    if not path.exists():
        known = sorted(p.stem for p in MINIDUMPS_DIR.glob("*.dmp"))
        raise KdnbError(f"no bundled minidump {name!r} in {MINIDUMPS_DIR} (known: {known})")
    return path
