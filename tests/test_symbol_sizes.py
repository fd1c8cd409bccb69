"""`sizes_to_next` (each symbol's distance to the next larger address) equals the definition on
random, unsorted and duplicated addresses, and on the symbols of every data/ sample."""

from __future__ import annotations

import numpy as np
import pytest

import kdnb
from kdnb.kernel.symbols import sizes_to_next
from tests.conftest import DATA


def _by_definition(addresses: np.ndarray) -> np.ndarray:
    values = sorted(set(addresses.tolist()))
    out = []
    for a in addresses.tolist():
        larger = [v for v in values if v > a]
        out.append(larger[0] - a if larger else -1)
    return np.array(out, dtype=np.int64)


@pytest.mark.parametrize("seed", range(6))
def test_random_addresses(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(0, 300))
    addresses = rng.integers(0, 50 if seed % 2 else 2**63, n, dtype=np.uint64)
    if seed == 4:
        addresses.sort()
    assert sizes_to_next(addresses).tolist() == _by_definition(addresses).tolist()


@pytest.mark.parametrize("sample", sorted(p.name for p in DATA.glob("k*") if p.is_dir()))
def test_sample_symbols(sample: str) -> None:
    dump = next(p for p in sorted((DATA / sample).glob("vmcore*")))
    with kdnb.open(dump) as d:
        addresses = d.kernel._table.addresses[:3000]
    uniq = np.unique(addresses)
    nxt = np.searchsorted(uniq, addresses, side="right")
    want = np.where(nxt < len(uniq), uniq[np.minimum(nxt, len(uniq) - 1)].astype(np.int64) - addresses.astype(np.int64), -1)
    assert sizes_to_next(addresses).tolist() == want.tolist()
