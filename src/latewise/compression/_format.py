"""Binary layouts shared by the codecs: the per-document blob header and codec serialisation.

A document blob is a fixed 16-byte little-endian header followed by the codec's payload::

    offset  size  field
    0       2     magic  b"LW"
    2       1     kind   1 = float16, 2 = residual
    3       1     nbits  0 for float16; 1, 2 or 4 for residual codes
    4       4     n      number of vectors (uint32)
    8       4     dim    vector dimension (uint32)
    12      4     codec  id of the codec that wrote it (CRC32 of its parameters; 0 for float16)

A codec is serialised as safetensors bytes (no pickle) whose string metadata carries ``kind``
and ``format``. Nothing here imports torch.
"""

from __future__ import annotations

import json
import struct
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from latewise.errors import StoreError

if TYPE_CHECKING:
    import torch

__all__ = [
    "DOC_HEADER",
    "KIND_FLOAT16",
    "KIND_RESIDUAL",
    "MAGIC",
    "DocHeader",
    "frombuffer_readonly",
    "read_doc_header",
    "safetensors_metadata",
]

MAGIC: Final = b"LW"
KIND_FLOAT16: Final = 1
KIND_RESIDUAL: Final = 2
KIND_NAMES: Final = {KIND_FLOAT16: "float16", KIND_RESIDUAL: "residual"}
DOC_HEADER: Final = struct.Struct("<2sBBIII")


@dataclass(frozen=True)
class DocHeader:
    """The decoded header of one document blob."""

    kind: int
    nbits: int
    n: int
    dim: int
    codec_id: int

    def pack(self) -> bytes:
        return DOC_HEADER.pack(MAGIC, self.kind, self.nbits, self.n, self.dim, self.codec_id)


def at_position(position: int | None) -> tuple[str, list[int]]:
    """``(" at position i", [i])`` for messages and error positions; empty for ``None``."""
    if position is None:
        return "", []
    return f" at position {position}", [position]


def read_doc_header_of_kind(
    blob: object, position: int | None, kind: int, wrong_kind: str
) -> tuple[DocHeader, str]:
    """:func:`read_doc_header`, refusing a blob of another kind than ``kind``.

    Returns:
        The header, and ``" at position i"`` (or ``""``) for the caller's further messages.

    Raises:
        StoreError: as :func:`read_doc_header`, or ``"vector blob <wrong_kind>"`` for a blob of
            another kind.
    """
    head = read_doc_header(blob, position)
    where, _ = at_position(position)
    if head.kind != kind:
        raise StoreError(f"vector blob{where} {wrong_kind}")
    return head, where


def read_doc_header(blob: object, position: int | None = None) -> DocHeader:
    """Parse and check the header of a document blob.

    Args:
        blob: the stored bytes.
        position: the blob's position in the caller's batch, named in errors.

    Raises:
        StoreError: not bytes, too short, or not a latewise vector blob.
    """
    where, _ = at_position(position)
    if not isinstance(blob, bytes | bytearray | memoryview):
        raise StoreError(
            f"vector blob{where} must be bytes, got {type(blob).__name__}; "
            "the stored document payload is corrupt or was written by something else"
        )
    if len(blob) < DOC_HEADER.size:
        raise StoreError(
            f"vector blob{where} has {len(blob)} bytes, fewer than the {DOC_HEADER.size}-byte "
            "header; the stored document is truncated: re-add the document"
        )
    magic, kind, nbits, n, dim, codec_id = DOC_HEADER.unpack_from(blob, 0)
    if magic != MAGIC or kind not in KIND_NAMES:
        raise StoreError(
            f"vector blob{where} is not a latewise vector blob (magic {bytes(magic)!r}, kind "
            f"{kind}); the stored document is corrupt: re-add the document"
        )
    return DocHeader(kind=kind, nbits=nbits, n=n, dim=dim, codec_id=codec_id)


def safetensors_metadata(data: bytes) -> dict[str, str]:
    """The ``__metadata__`` of safetensors bytes, read from the JSON header without torch.

    Raises:
        StoreError: the bytes are not safetensors.
    """
    if not isinstance(data, bytes | bytearray | memoryview) or len(data) < 8:
        raise StoreError(
            "codec bytes are too short to be a serialised latewise codec; the stored codec is "
            "corrupt: rebuild the index's codec"
        )
    (header_len,) = struct.unpack_from("<Q", data, 0)
    if header_len > len(data) - 8 or header_len > 100_000_000:
        raise StoreError(
            f"codec bytes declare a {header_len}-byte header but hold {len(data)} bytes; "
            "the stored codec is corrupt or truncated: rebuild the index's codec"
        )
    try:
        header = json.loads(bytes(data[8 : 8 + header_len]).decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise StoreError(
            f"codec bytes have an unreadable header ({exc}); the stored codec is corrupt"
        ) from exc
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    if not isinstance(meta, dict) or "kind" not in meta:
        raise StoreError(
            "codec bytes carry no latewise 'kind' metadata; they were not written by "
            "latewise's VectorCodec.to_bytes()"
        )
    return {str(k): str(v) for k, v in meta.items()}


def frombuffer_readonly(data: bytes, dtype: torch.dtype) -> torch.Tensor:
    """A 1-D tensor over immutable ``bytes`` without copying them.

    The caller must only read it (torch warns that the buffer is not writable; the warning is
    silenced here because every caller copies or gathers from it before anything is written).
    """
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.frombuffer(data, dtype=dtype)
