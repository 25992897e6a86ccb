"""Bytes carried as Chroma embeddings: 30 bits in every float32, no NaN, infinity or subnormal.

Chroma stores an embedding as raw float32 in its vector segment (one copy, no index over the
values), while every metadata string is kept twice (the row and SQLite's index over string
values) and base64 adds a third. So latewise stores a document's encoded multi-vector as the
embeddings of a few fixed-size records ("chunks") of a collection whose HNSW graph is kept
minimal.

Each float carries 30 payload bits: the sign bit, 6 bits in the exponent (biased into 64..127,
so every value is a normal float of magnitude in [2**-63, 2)) and the 23 mantissa bits. Such
floats survive every path Chroma takes (numpy, Python floats, JSON to a server and back)
bit-exactly, and inner products over them never overflow. 15 bytes fill 4 floats; the first
4 bytes of a document's payload hold its length, the last chunk is padded with zeros.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

__all__ = ["chunk_count", "pack", "unpack"]

_HEADER = 4  # bytes: the payload length, little-endian uint32
_GROUP_BYTES = 15  # 120 bits = 4 floats of 30 bits
_GROUP_FLOATS = 4
_M30 = (1 << 30) - 1


def chunk_count(n_bytes: int, chunk_floats: int) -> int:
    """How many chunks of ``chunk_floats`` floats hold a payload of ``n_bytes``."""
    groups = -(-(n_bytes + _HEADER) // _GROUP_BYTES)
    per_chunk = chunk_floats // _GROUP_FLOATS
    return max(1, -(-groups // per_chunk))


def pack(payload: bytes, chunk_floats: int) -> np.ndarray:
    """``payload`` as a float32 array ``[chunk_count(len(payload)), chunk_floats]``.

    Args:
        payload: any bytes (at most 4 GiB).
        chunk_floats: the chunk width, a positive multiple of 4.
    """
    import numpy as np

    if chunk_floats <= 0 or chunk_floats % _GROUP_FLOATS:
        raise ValueError(f"chunk_floats must be a positive multiple of 4, got {chunk_floats}")
    n_chunks = chunk_count(len(payload), chunk_floats)
    total = n_chunks * chunk_floats // _GROUP_FLOATS * _GROUP_BYTES
    buf = np.zeros(total + 1, dtype=np.uint8)  # +1: the last group reads 8 bytes from 7
    buf[:_HEADER] = np.frombuffer(len(payload).to_bytes(_HEADER, "little"), dtype=np.uint8)
    buf[_HEADER : _HEADER + len(payload)] = np.frombuffer(payload, dtype=np.uint8)
    groups = buf[:total].reshape(-1, _GROUP_BYTES)
    lo = np.ascontiguousarray(groups[:, :8]).view("<u8")[:, 0]
    hi8 = np.zeros((groups.shape[0], 8), dtype=np.uint8)
    hi8[:, :7] = groups[:, 8:]
    hi = hi8.view("<u8")[:, 0]
    bits = np.empty((groups.shape[0], _GROUP_FLOATS), dtype=np.uint64)
    bits[:, 0] = lo & _M30
    bits[:, 1] = (lo >> np.uint64(30)) & _M30
    bits[:, 2] = (lo >> np.uint64(60)) | ((hi & ((1 << 26) - 1)) << np.uint64(4))
    bits[:, 3] = (hi >> np.uint64(26)) & _M30
    x = bits.astype(np.uint32).ravel()
    words = ((x >> 29) << 31) | ((((x >> 23) & 63) + 64) << 23) | (x & ((1 << 23) - 1))
    return words.view(np.float32).reshape(n_chunks, chunk_floats)


def unpack(chunks: np.ndarray) -> bytes:
    """The payload packed into ``chunks`` (``[n, chunk_floats]`` float32, in order).

    Raises:
        ValueError: the floats were not written by :func:`pack` (damaged or foreign data).
    """
    import numpy as np

    words = np.ascontiguousarray(chunks, dtype=np.float32).view(np.uint32).ravel()
    if words.size == 0 or words.size % _GROUP_FLOATS:
        raise ValueError(f"{words.size} floats do not hold packed bytes")
    exp = (words >> 23) & 255
    if bool(((exp < 64) | (exp > 127)).any()):
        raise ValueError("floats outside the packed range: not bytes packed by latewise")
    x = (((words >> 31) << 29) | ((exp - 64) << 23) | (words & ((1 << 23) - 1))).astype(np.uint64)
    x = x.reshape(-1, _GROUP_FLOATS)
    lo = x[:, 0] | (x[:, 1] << np.uint64(30)) | (x[:, 2] << np.uint64(60))
    hi = (x[:, 2] >> np.uint64(4)) | (x[:, 3] << np.uint64(26))
    out = np.empty((x.shape[0], 16), dtype=np.uint8)
    out[:, :8] = lo.view(np.uint8).reshape(-1, 8)
    out[:, 8:] = hi.view(np.uint8).reshape(-1, 8)
    flat = out[:, :_GROUP_BYTES].ravel()
    n = int.from_bytes(flat[:_HEADER].tobytes(), "little")
    if n > flat.size - _HEADER:
        raise ValueError(f"packed length {n} exceeds the {flat.size - _HEADER} bytes present")
    return flat[_HEADER : _HEADER + n].tobytes()
