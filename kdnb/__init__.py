"""kdnb: a Jupyter-oriented post-mortem kit for Linux kernel crash dumps."""

from .api import Dump, open
from .errors import (
    CorruptDump,
    CorruptStructure,
    FaultError,
    FormatError,
    KdnbError,
    MissingDebugInfo,
    PageNotInDump,
    SymbolNotFound,
    TruncatedDump,
    TypeNotFound,
    VmlinuxMismatch,
)
from .samples import open_sample, samples

__version__ = "0.1.0"


def __getattr__(name: str):
    """`kdnb.triage` and `kdnb.buckets` (fleet triage) import dask only when first used;
    `kdnb.readiness` and `kdnb.coredump_check` (and pandas) load on first use too."""
    if name in ("triage", "buckets"):
        from . import fleet

        return getattr(fleet, name)
    if name == "readiness":
        from .analysis.readiness import readiness

        return readiness
    if name == "coredump_check":
        from .analysis.coredump_check import coredump_check

        return coredump_check
    raise AttributeError(f"module 'kdnb' has no attribute {name!r}")


__all__ = [
    "Dump", "open", "KdnbError", "FormatError", "CorruptDump", "TruncatedDump",
    "PageNotInDump", "FaultError", "SymbolNotFound", "TypeNotFound", "CorruptStructure",
    "MissingDebugInfo", "VmlinuxMismatch", "readiness", "coredump_check", "samples", "open_sample", "__version__",
    "triage", "buckets",
]
