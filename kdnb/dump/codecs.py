"""Page decompression for kdump-compressed dumps: zlib, lzo, snappy and zstd."""

from __future__ import annotations

from typing import Callable

import deflate  # libdeflate: whole-buffer inflate, ~2x ISA-L and ~2.7x zlib on 4 KiB dump pages
import lzokay
import snappy
import zstandard

# disk_dump_header.status / page_desc.flags bits
DUMP_DH_COMPRESSED_ZLIB = 0x1
DUMP_DH_COMPRESSED_LZO = 0x2
DUMP_DH_COMPRESSED_SNAPPY = 0x4
DUMP_DH_COMPRESSED_INCOMPLETE = 0x8
DUMP_DH_EXCLUDED_VMEMMAP = 0x10
DUMP_DH_COMPRESSED_ZSTD = 0x20

CODEC_NAMES = {
    DUMP_DH_COMPRESSED_ZLIB: "zlib",
    DUMP_DH_COMPRESSED_LZO: "lzo",
    DUMP_DH_COMPRESSED_SNAPPY: "snappy",
    DUMP_DH_COMPRESSED_ZSTD: "zstd",
}

_zstd = zstandard.ZstdDecompressor()


def _zlib(data: bytes, size: int) -> bytes:
    return deflate.zlib_decompress(data, size)  # at most `size` bytes (the adler32 is checked)


def _lzo(data: bytes, size: int) -> bytes:
    return lzokay.decompress(data, size)


def _snappy(data: bytes, size: int) -> bytes:
    return snappy.uncompress(data)


def _zstd_page(data: bytes, size: int) -> bytes:
    return _zstd.decompress(data, max_output_size=size)


DECOMPRESSORS: dict[int, Callable[[bytes, int], bytes]] = {
    DUMP_DH_COMPRESSED_ZLIB: _zlib,
    DUMP_DH_COMPRESSED_LZO: _lzo,
    DUMP_DH_COMPRESSED_SNAPPY: _snappy,
    DUMP_DH_COMPRESSED_ZSTD: _zstd_page,
}


def compression_names(status: int) -> list[str]:
    """Names of the codecs whose bits are set in a header status word."""
    return [name for bit, name in CODEC_NAMES.items() if status & bit]
