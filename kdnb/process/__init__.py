"""Userspace process cores and Linux minidumps: threads, signal, mappings, unwinding with the
binaries' call-frame information, a root cause; and "why was no core dumped" checks
(`coredump_check`).

The names below load on first use (PEP 562), so that `kdnb.open` can sniff a file with
`process.source` without importing the core reader, pandas and pyelftools for a vmcore.
"""

from __future__ import annotations

import importlib
import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from .core import Core, Signal
    from .images import Binaries
    from .memory import NotInCore
    from .minidump_core import Minidump

_LAZY = {"Core": "core", "Signal": "core", "Binaries": "images", "NotInCore": "memory",
         "Minidump": "minidump_core"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def open_process(path: str | os.PathLike, binaries: Binaries = None, use_mapped_paths: bool = True,
                 journal: str | os.PathLike | None = None) -> Core:
    """A `Core` for an ELF process core (with systemd-coredump's `journal=` export when given),
    a `Minidump` for a minidump (told apart by content)."""
    from .core import Core
    from .minidump_core import Minidump
    from .source import process_file_kind

    if process_file_kind(os.fspath(path)) == "minidump":
        return Minidump(path, binaries=binaries, use_mapped_paths=use_mapped_paths)
    return Core(path, binaries=binaries, use_mapped_paths=use_mapped_paths, journal=journal)


__all__ = ["Core", "Minidump", "Signal", "NotInCore", "open_process"]
