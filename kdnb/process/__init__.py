"""Userspace process cores and Linux minidumps: threads, signal, mappings, unwinding with the
binaries' call-frame information, a root cause; and "why was no core dumped" checks
(`coredump_check`)."""

from __future__ import annotations

import os

from .core import Core, Signal
from .images import Binaries
from .memory import NotInCore
from .minidump_core import Minidump
from .source import process_file_kind


def open_process(path: str | os.PathLike, binaries: Binaries = None, use_mapped_paths: bool = True,
                 journal: str | os.PathLike | None = None) -> Core:
    """A `Core` for an ELF process core (with systemd-coredump's `journal=` export when given),
    a `Minidump` for a minidump (told apart by content)."""
    if process_file_kind(os.fspath(path)) == "minidump":
        return Minidump(path, binaries=binaries, use_mapped_paths=use_mapped_paths)
    return Core(path, binaries=binaries, use_mapped_paths=use_mapped_paths, journal=journal)


__all__ = ["Core", "Minidump", "Signal", "NotInCore", "open_process"]
