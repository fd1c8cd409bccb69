"""Userspace process cores: threads, signal, mappings, unwinding with the binaries' call-frame
information, a root cause; and "why was no core dumped" checks (`coredump_check`)."""

from __future__ import annotations

from .core import Core, Signal
from .memory import NotInCore

__all__ = ["Core", "Signal", "NotInCore"]
