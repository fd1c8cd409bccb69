"""kdnb: a Jupyter-oriented post-mortem kit for Linux kernel crash dumps."""

from .analysis.readiness import readiness
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

__version__ = "0.1.0"

__all__ = [
    "Dump", "open", "KdnbError", "FormatError", "CorruptDump", "TruncatedDump",
    "PageNotInDump", "FaultError", "SymbolNotFound", "TypeNotFound", "CorruptStructure",
    "MissingDebugInfo", "VmlinuxMismatch", "readiness", "__version__",
]
