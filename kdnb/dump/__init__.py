"""The bytes layer: dump formats, notes and physical memory. Knows no kernel structures."""

from __future__ import annotations

import os
from typing import Sequence

from ..errors import FormatError
from .base import DumpReader
from .detect import sniff
from .elf import ElfDump
from .kdump import KdumpDump
from .segtable import Segment, SegmentTable
from .source import FlattenedSource, PlainSource
from .split import SplitDump


def open_dump(paths: "str | os.PathLike | Sequence[str | os.PathLike]") -> DumpReader:
    """Open one dump file, or the files of a split kdump set, detecting the format by content."""
    if isinstance(paths, (str, os.PathLike)):
        return _open_one(os.fspath(paths))
    names = [os.fspath(p) for p in paths]
    if not names:
        raise FormatError("no dump file given")
    if len(names) == 1:
        return _open_one(names[0])
    parts = []
    try:
        for name in names:
            part = _open_one(name)
            parts.append(part)
            if not isinstance(part, KdumpDump) or not part.header.get("split"):
                raise FormatError(f"{name}: not a part of a split kdump set "
                                  "(only `makedumpfile --split` files can be opened together)")
        return SplitDump(parts)
    except BaseException:
        for part in parts:
            part.close()
        raise


def _open_one(path: str) -> DumpReader:
    kind = sniff(path)
    if kind == "elf":
        return ElfDump(path)
    if kind == "kdump":
        return KdumpDump(PlainSource(path), "kdump")
    return KdumpDump(FlattenedSource(path), "kdump-flattened")


__all__ = ["open_dump", "DumpReader", "Segment", "SegmentTable"]
