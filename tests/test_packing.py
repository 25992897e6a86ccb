"""Bytes carried as Chroma embeddings (latewise.store.packing)."""

from __future__ import annotations

import os

import numpy as np
import pytest

from latewise.store.packing import chunk_count, pack, unpack


@pytest.mark.parametrize("n", [0, 1, 10, 11, 14, 15, 16, 59, 60, 61, 4091, 4092, 4093, 27_000])
@pytest.mark.parametrize("chunk", [4, 64, 1024])
def test_round_trip_any_bytes(n: int, chunk: int) -> None:
    payload = os.urandom(n)
    packed = pack(payload, chunk)
    assert packed.dtype == np.float32
    assert packed.shape == (chunk_count(n, chunk), chunk)
    assert unpack(packed) == payload


def test_floats_are_normal_bounded_and_survive_python_and_json_floats() -> None:
    import json

    payload = bytes(range(256)) * 40 + b"\xff" * 100 + b"\x00" * 100
    packed = pack(payload, 256)
    mags = np.abs(packed)
    assert np.isfinite(packed).all()
    assert (mags >= 2.0**-63).all()  # no zero or subnormal
    assert (mags < 2.0).all()
    via_json = np.asarray(json.loads(json.dumps(packed.tolist())), dtype=np.float32)
    assert unpack(via_json) == payload


def test_dense_packing() -> None:
    n = 1_000_000
    packed = pack(os.urandom(n), 1024)
    assert packed.nbytes <= n * 32 / 30 + 1024 * 4  # 30 bits a float, one partial chunk


def test_foreign_floats_are_refused() -> None:
    with pytest.raises(ValueError, match="packed range"):
        unpack(np.ones((1, 8), dtype=np.float32) * 1e-30)
    with pytest.raises(ValueError, match="do not hold"):
        unpack(np.ones((1, 3), dtype=np.float32))
    packed = pack(b"abc", 8)
    words = packed.view(np.uint32).copy()
    words[0, 0] = np.float32(1.5).view(np.uint32)  # a plausible float with a huge length
    with pytest.raises(ValueError, match="exceeds"):
        unpack(words.view(np.float32))


def test_bad_chunk_width() -> None:
    with pytest.raises(ValueError, match="multiple of 4"):
        pack(b"x", 6)
