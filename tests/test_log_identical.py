"""`Dump.log`'s fast paths build exactly what the plain build of f3af2b8 built (tests/log_oracle.py):
values, dtypes, arrow types, attrs and problems (or the same error), on every bundled sample and
corpus dump, on rings of a sample corrupted a few hundred ways, with strings kept without
pyarrow, and (marked lab) on the scale dumps in $KDNB_SCALE_DUMPS."""

from __future__ import annotations

import os
import random
import struct
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

import kdnb
from kdnb.errors import KdnbError
from kdnb.views import log_records as R
from kdnb.views.log import read_log
from tests import log_oracle
from tests.conftest import CORPUS, DATA

DUMPS = [*sorted(str(p) for p in DATA.glob("*/vmcore.kdump-*")),
         *sorted(str(p) for p in CORPUS.glob("*/vmcore.kdump-*"))]
SCALE = Path(os.environ.get("KDNB_SCALE_DUMPS", "/work/scale-dumps"))
Built = tuple[pd.DataFrame, list[str]]


def _arrow_type(values: pd.api.extensions.ExtensionArray) -> pa.DataType | None:
    return values.__arrow_array__().type if isinstance(values, pd.arrays.ArrowStringArray) else None


def assert_identical(got: Built, want: Built) -> None:
    """The same frame (DataFrame.equals, dtypes, array classes, arrow types, index, attrs) and
    the same problems."""
    (frame, problems), (frame_want, problems_want) = got, want
    assert problems == problems_want
    assert list(frame.columns) == list(frame_want.columns)
    assert frame.dtypes.tolist() == frame_want.dtypes.tolist()
    assert [type(frame[c].array) for c in frame] == [type(frame_want[c].array) for c in frame_want]
    assert [_arrow_type(frame[c].array) for c in frame] == [_arrow_type(frame_want[c].array) for c in frame_want]
    assert frame.index.equals(frame_want.index) and frame.attrs == frame_want.attrs
    assert frame.equals(frame_want)


def check(read: Callable[[int, int], bytes], info: dict[str, str], path: str = "") -> Built | None:
    """read_log against the oracle on one ring; returns the build (None when both raised the
    same error)."""
    try:
        want = log_oracle.read_log(read, info, path)
    except KdnbError as exc:
        with pytest.raises(type(exc)) as got:
            read_log(read, info, path)
        assert str(got.value) == str(exc)
        return None
    got = read_log(read, info, path)
    assert_identical(got, want)
    return got


@pytest.mark.parametrize("path", DUMPS, ids=lambda p: "/".join(p.split("/")[-2:]))
def test_log_identical_on_dumps(path: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with kdnb.open(path) as d:
            want = log_oracle.read_log(d.kernel.read, d.kernel.log_vmcoreinfo(), d.path)
            assert len(want[0]) > 300
            check(d.kernel.read, d.kernel.log_vmcoreinfo(), d.path)
            log = d.log  # Dump.log: the same frame, problems in its attrs
            assert log.attrs["kdnb"].get("problems", []) == want[1]
            assert log.equals(want[0]) and log.dtypes.tolist() == want[0].dtypes.tolist()


def test_log_identical_with_python_strings() -> None:
    with kdnb.open(DUMPS[0]) as d, pd.option_context("mode.string_storage", "python"):
        got = check(d.kernel.read, d.kernel.log_vmcoreinfo(), d.path)
        assert got is not None and type(got[0]["caller"].array) is pd.arrays.StringArray


class _Ring:
    """Where a dump's printk ring lies: the structures' addresses and the live records' slots."""

    def __init__(self, d: kdnb.Dump) -> None:
        self.read, self.info = d.kernel.read, d.kernel.log_vmcoreinfo()
        off = self.off = R._Layout(self.info)
        (self.prb,) = struct.unpack("<Q", self.read(off.prb, 8))
        ring = self.read(self.prb, off.rb_size)
        u64 = lambda o: struct.unpack_from("<Q", ring, o)[0]
        self.count = 1 << struct.unpack_from("<I", ring, off.count_bits)[0]
        self.size = 1 << struct.unpack_from("<I", ring, off.size_bits)[0]
        self.descs, self.infos, self.data = u64(off.descs), u64(off.infos), u64(off.data)
        ids = R._live_ids(u64(off.head_id), u64(off.tail_id), self.count)
        self.slots = (ids & np.uint64(self.count - 1)).astype(np.int64).tolist()

    def desc(self, slot: int, field: int) -> int:
        return self.descs + slot * self.off.desc_size + field

    def info_at(self, slot: int, field: int) -> int:
        return self.infos + slot * self.off.info_size + field

    def lpos(self, slot: int) -> tuple[int, int]:
        (begin,) = struct.unpack("<Q", self.read(self.desc(slot, self.off.lpos_begin), 8))
        (nxt,) = struct.unpack("<Q", self.read(self.desc(slot, self.off.lpos_next), 8))
        return begin, nxt


def _overlay(read: Callable[[int, int], bytes], patches: dict[int, bytes]) -> Callable[[int, int], bytes]:
    """`read` with the patched bytes written over what it returns."""
    def patched(addr: int, size: int) -> bytes:
        data = bytearray(read(addr, size))
        for at, value in patches.items():
            lo, hi = max(at, addr), min(at + len(value), addr + len(data))
            if lo < hi:
                data[lo - addr:hi - addr] = value[lo - at:hi - at]
        return bytes(data)
    return patched


def _corrupt(ring: _Ring, rng: random.Random) -> dict[int, bytes]:
    """A few random defects of the kinds a damaged or hostile ring holds."""
    off, patches = ring.off, {}
    slot = lambda: rng.choice(ring.slots)
    q = lambda v: struct.pack("<Q", v & (1 << 64) - 1)
    for _ in range(rng.randint(1, 6)):
        kind = rng.randrange(14)
        s = slot()
        if kind == 0:  # a descriptor's state or id
            patches[ring.desc(s, off.state_var)] = q(rng.choice([0, 3 << 62, 1 << 62, rng.getrandbits(64)]))
        elif kind == 1:  # seqs out of order, or past 2^63
            patches[ring.info_at(s, off.seq)] = q(rng.choice([0, 1 << 63, rng.getrandbits(64), 5]))
        elif kind == 2:  # ts past Int64, facility past Int8, any level/flags
            patches[ring.info_at(s, off.ts)] = q(rng.choice([1 << 63, (1 << 64) - 1, 12345]))
            patches[ring.info_at(s, off.text_len + 2)] = bytes([rng.randrange(256), rng.randrange(256)])
        elif kind == 3:  # text_len past the block
            patches[ring.info_at(s, off.text_len)] = struct.pack("<H", rng.choice([0, 1, 0xffff]))
        elif kind == 4:  # invalid or data-less lpos
            patches[ring.desc(s, off.lpos_begin)] = q(rng.choice([1, rng.getrandbits(40), 3 * ring.size]))
            patches[ring.desc(s, off.lpos_next)] = q(rng.choice([1, 0, rng.getrandbits(40)]))
        elif kind in (5, 6):  # two records share a block (overlap), or swap blocks (blob order not seq order)
            t = slot()
            (b1, n1), (b2, n2) = ring.lpos(s), ring.lpos(t)
            patches[ring.desc(t, off.lpos_begin)], patches[ring.desc(t, off.lpos_next)] = q(b1), q(n1)
            if kind == 6:
                patches[ring.desc(s, off.lpos_begin)], patches[ring.desc(s, off.lpos_next)] = q(b2), q(n2)
        elif kind in (7, 8, 9):  # a text of NULs, of bytes that are not UTF-8, of random bytes
            begin, nxt = ring.lpos(s)
            start = (begin % ring.size) + 8
            (text_len,) = struct.unpack("<H", ring.read(ring.info_at(s, off.text_len), 2))
            fill = {7: b"\0" * text_len, 8: b"\xff\xfe", 9: rng.randbytes(8)}[kind]
            if not (begin | nxt) & 1 and start + len(fill) <= ring.size:
                patches[ring.data + start] = fill
        elif kind == 10:  # dev_info subsystem and device, embedded NUL and bad UTF-8 included
            patches[ring.info_at(s, off.subsystem)] = rng.choice([b"pci", b"usb\0x", b"\xc3("])
            patches[ring.info_at(s, off.device)] = rng.choice([b"+pci:0000:00:01.0", b"\0z", rng.randbytes(6)])
        elif kind == 11:  # caller ids, task and CPU
            patches[ring.info_at(s, off.caller)] = struct.pack("<I", rng.getrandbits(32))
        elif kind == 12:  # the ring's head and tail ids
            field = rng.choice([off.head_id, off.tail_id])
            patches[ring.prb + field] = q(rng.choice([0, rng.getrandbits(64), 1 << 61]))
        else:  # the ring's sizes and array pointers
            field = rng.choice([off.count_bits, off.size_bits, off.descs, off.infos, off.data])
            patches[ring.prb + field] = q(rng.choice([40, 0, rng.getrandbits(64)]))[:4 if field in
                                                                                 (off.count_bits, off.size_bits) else 8]
    return patches


@pytest.mark.parametrize("name", ["k6.1-oops", "k7.2-oops"])
def test_log_identical_on_corrupt_rings(name: str) -> None:
    """200 rings of a sample, each with a few random defects: the same frame and problems, or
    the same error; the defects reach every path (seq sort, dropped records, NA values, invalid
    blocks, the per-record text fallback, blob order not seq order, NUL-only texts)."""
    path = next(p for p in DUMPS if f"/{name}/" in p)
    met: list[str] = []
    with kdnb.open(path) as d:
        ring = _Ring(d)
        for case in range(200):
            built = check(_overlay(ring.read, _corrupt(ring, random.Random(case))), ring.info, d.path)
            met.extend(built[1] if built else ["error"])
    for kind in ("seq past 2^63 dropped", "is invalid", "too large for its column", "NUL bytes only", "error"):
        assert any(kind in p for p in met), kind


@pytest.mark.parametrize("edit", ["problem", "storage", "dtype", "value"])
def test_comparison_sees_each_difference(edit: str) -> None:
    """assert_identical fails on a build that differs in one problem, one column's dtype (its
    string storage included) or one value."""
    with kdnb.open(DUMPS[0]) as d:
        frame, problems = read_log(d.kernel.read, d.kernel.log_vmcoreinfo(), d.path)
    other, other_problems = frame.copy(), list(problems)
    if edit == "problem":
        other_problems.append("x")
    elif edit == "storage":
        other["caller"] = pd.array(frame["caller"].tolist(), dtype=pd.StringDtype("python"))
    elif edit == "dtype":
        other["level"] = other["level"].astype("Int16")
    else:
        other.loc[len(other) // 2, "text"] = "changed"
    assert_identical((frame.copy(), list(problems)), (frame, problems))
    with pytest.raises(AssertionError):
        assert_identical((other, other_problems), (frame, problems))


@pytest.mark.lab
@pytest.mark.parametrize("folder", sorted(p.parent.name for p in SCALE.glob("*/vmcore.kdump-zlib")) or ["none"])
def test_log_identical_on_scale_dumps(folder: str) -> None:
    path = SCALE / folder / "vmcore.kdump-zlib"
    if not path.is_file():
        pytest.skip(f"no scale dumps in {SCALE}")
    with kdnb.open(path) as d:
        got = check(d.kernel.read, d.kernel.log_vmcoreinfo(), d.path)
    assert got is not None and len(got[0]) > 5000
