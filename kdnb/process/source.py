"""The bytes of a process core: a plain file read with pread, or a compressed one (zstd, xz,
lz4, gzip: what systemd-coredump and people store) decompressed once into an anonymous
temporary file, so that any core can be read at random offsets."""

from __future__ import annotations

import gzip
import lzma
import os
import tempfile
import zlib
from typing import IO, Callable

from ..dump.detect import ELF_MAGIC, is_process_core, regular_file_size
from ..errors import CorruptDump, FormatError

CHUNK = 1 << 20
DECOMPRESSED_MAX = 1 << 40  # a core larger than 1 TiB is not what the file's header promised
PEEK_BYTES = 1 << 20  # decompressed bytes looked at to tell a process core from a vmcore
MDMP_MAGIC = b"MDMP"  # a Breakpad/Crashpad minidump


def _zstd_reader(f: IO[bytes]) -> IO[bytes]:
    import zstandard

    return zstandard.ZstdDecompressor().stream_reader(f, read_across_frames=True)


def _lz4_reader(f: IO[bytes]) -> IO[bytes]:
    try:
        import lz4.frame
    except ImportError:
        raise FormatError("an lz4-compressed core: install the lz4 Python package, or run "
                          "`lz4 -d` on it first") from None
    return lz4.frame.LZ4FrameFile(f)


CODECS: tuple[tuple[bytes, str, Callable[[IO[bytes]], IO[bytes]]], ...] = (
    (b"\x28\xb5\x2f\xfd", "zstd", _zstd_reader),
    (b"\xfd7zXZ\x00", "xz", lambda f: lzma.LZMAFile(f)),
    (b"\x04\x22\x4d\x18", "lz4", _lz4_reader),
    (b"\x1f\x8b", "gzip", lambda f: gzip.GzipFile(fileobj=f)),
)


def compression_of(path: str) -> str:
    """'zstd', 'xz', 'lz4', 'gzip' or 'none', from the file's first bytes."""
    with open(path, "rb") as f:
        head = f.read(8)
    return next((name for magic, name, _ in CODECS if head.startswith(magic)), "none")


def _stream(path: str, f: IO[bytes]) -> IO[bytes]:
    head = f.read(8)
    f.seek(0)
    for magic, _name, reader in CODECS:
        if head.startswith(magic):
            return reader(f)
    raise FormatError(f"{path}: not compressed")


def process_file_kind(path: str) -> str | None:
    """'core' (an ELF process core) or 'minidump' (MDMP), plain or compressed, by the file's
    contents; None for anything else."""
    regular_file_size(path)
    try:
        kind = compression_of(path)
        if kind == "none":
            fd = os.open(path, os.O_RDONLY)
            try:
                if os.pread(fd, 4, 0) == MDMP_MAGIC:
                    return "minidump"
                return "core" if is_process_core(lambda off, n: os.pread(fd, n, off)) else None
            finally:
                os.close(fd)
        with open(path, "rb") as f:
            head = _stream(path, f).read(PEEK_BYTES)
    except (OSError, EOFError, lzma.LZMAError, zlib.error, ValueError):
        return None
    except Exception as exc:  # noqa: BLE001 - a codec's own error class (zstandard.ZstdError)
        if type(exc).__module__.startswith(("zstandard", "lz4")):
            return None
        raise
    if head.startswith(MDMP_MAGIC):
        return "minidump"
    return "core" if head.startswith(ELF_MAGIC) and is_process_core(lambda off, n: head[off:off + n]) else None


def looks_like_process_core(path: str) -> bool:
    """Whether `path` (plain or compressed) holds a userspace process core or minidump."""
    return process_file_kind(path) is not None


class CoreSource:
    """Random access to a core's bytes: `pread(size, offset)`, `size`, `compression`."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.compressed_size = regular_file_size(path)
        self.compression = compression_of(path)
        if self.compression == "none":
            self._file: IO[bytes] = open(path, "rb")
        else:
            self._file = self._decompress()
        self.size = os.fstat(self._file.fileno()).st_size

    def _decompress(self) -> IO[bytes]:
        out = tempfile.TemporaryFile(prefix="kdnb-core-")
        total = 0
        try:
            with open(self.path, "rb") as f:
                stream = _stream(self.path, f)
                while chunk := stream.read(CHUNK):
                    total += len(chunk)
                    if total > DECOMPRESSED_MAX:
                        raise CorruptDump(f"{self.path}: decompresses to more than "
                                          f"{DECOMPRESSED_MAX >> 40} TiB")
                    out.write(chunk)
        except (OSError, EOFError, lzma.LZMAError) as exc:
            out.close()
            raise CorruptDump(f"{self.path}: {self.compression} data is damaged ({exc}); "
                              f"{total} bytes decompressed") from None
        except Exception as exc:
            out.close()
            if type(exc).__module__.startswith(("zstandard", "lz4")):
                raise CorruptDump(f"{self.path}: {self.compression} data is damaged ({exc}); "
                                  f"{total} bytes decompressed") from None
            raise
        out.flush()
        return out

    def pread(self, size: int, offset: int) -> bytes:
        """Up to `size` bytes at `offset` (fewer at the end of the file)."""
        if size <= 0 or offset >= self.size:
            return b""
        return os.pread(self._file.fileno(), size, offset)

    def close(self) -> None:
        """Close the file (a decompressed copy is deleted)."""
        self._file.close()


__all__ = ["CoreSource", "looks_like_process_core", "process_file_kind", "compression_of"]
