"""Residual-compressed vectors: :class:`CompressedVectors` and their per-document blob.

A blob is the 16-byte document header, then one little-endian uint16 centroid id per vector,
then each vector's packed bucket codes (``ceil(dim * nbits / 8)`` bytes).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from latewise.compression._format import (
    DOC_HEADER,
    KIND_RESIDUAL,
    DocHeader,
    at_position,
    read_doc_header,
)
from latewise.errors import EmptyInputError, InvalidInputError, StoreError

__all__ = ["CODE_BYTES", "VALID_NBITS", "CompressedVectors", "packed_bytes"]

#: The bits per dimension a residual codec offers.
VALID_NBITS = (1, 2, 4)
#: Centroid ids are stored as little-endian uint16.
CODE_BYTES = 2


def packed_bytes(dim: int, nbits: int) -> int:
    """Bytes of packed bucket codes per vector: ``ceil(dim * nbits / 8)``."""
    return (dim * nbits + 7) // 8


@dataclass(frozen=True)
class CompressedVectors:
    """Compressed vectors: one centroid id and one row of packed bucket codes per vector.

    Attributes:
        codes: ``[n]`` int32 centroid ids.
        residuals: ``[n, ceil(dim * nbits / 8)]`` uint8 packed bucket codes; dimension ``j`` of a
            vector sits in byte ``j // (8 // nbits)`` at bit ``(j % (8 // nbits)) * nbits``.
        dim: the vector dimension.
        nbits: bits per dimension (1, 2 or 4).
        codec_id: the id of the :class:`ResidualCodec` that wrote them (decoding with another
            codec is refused).
    """

    codes: torch.Tensor
    residuals: torch.Tensor
    dim: int
    nbits: int
    codec_id: int = 0

    def __len__(self) -> int:
        return int(self.codes.shape[0])

    @property
    def nbytes(self) -> int:
        """Bytes these vectors take stored (2-byte ids plus packed codes), header excluded."""
        return len(self) * (CODE_BYTES + int(self.residuals.shape[1]))

    def to_bytes(self) -> bytes:
        """The compact per-document blob: the 16-byte header, uint16 ids, then packed codes."""
        n = len(self)
        header = DocHeader(KIND_RESIDUAL, self.nbits, n, self.dim, self.codec_id).pack()
        ids = self.codes.numpy().astype("<u2", copy=False).tobytes()
        return header + ids + self.residuals.contiguous().numpy().tobytes()

    @classmethod
    def from_bytes(cls, blob: bytes, *, position: int | None = None) -> CompressedVectors:
        """Parse a blob written by :meth:`to_bytes` (checked; no codec needed).

        Raises:
            StoreError: the blob is truncated, padded, or not a residual-code blob.
        """
        head = read_doc_header(blob, position)
        return cls._from_parsed(blob, head, position)

    @classmethod
    def _from_parsed(cls, blob: bytes, head: DocHeader, position: int | None) -> CompressedVectors:
        where, _ = at_position(position)
        if head.kind != KIND_RESIDUAL or head.nbits not in VALID_NBITS:
            raise StoreError(
                f"vector blob{where} is not residual-compressed (kind {head.kind}, nbits "
                f"{head.nbits}); it was written with another codec than the one reading it"
            )
        pb = packed_bytes(head.dim, head.nbits)
        expected = DOC_HEADER.size + head.n * (CODE_BYTES + pb)
        if len(blob) != expected:
            raise StoreError(
                f"vector blob{where} has {len(blob)} bytes but its header ({head.n} vectors, dim "
                f"{head.dim}, {head.nbits} bits) needs {expected}; the stored document is "
                "corrupt or truncated: re-add the document"
            )
        start = DOC_HEADER.size
        ids = np.frombuffer(blob, dtype="<u2", count=head.n, offset=start)
        res = np.frombuffer(blob, dtype=np.uint8, count=head.n * pb, offset=start + 2 * head.n)
        return cls(
            codes=torch.from_numpy(ids.astype(np.int32)),
            residuals=torch.from_numpy(res.reshape(head.n, pb).copy()),
            dim=head.dim,
            nbits=head.nbits,
            codec_id=head.codec_id,
        )

    @classmethod
    def cat(cls, items: Sequence[CompressedVectors]) -> CompressedVectors:
        """Concatenate compressed vectors written by one codec."""
        if not items:
            raise EmptyInputError("CompressedVectors.cat needs at least one item")
        first = items[0]
        for i, it in enumerate(items):
            if (it.dim, it.nbits, it.codec_id) != (first.dim, first.nbits, first.codec_id):
                raise InvalidInputError(
                    f"item {i} was written by another codec (dim {it.dim}, nbits {it.nbits}, "
                    f"codec {it.codec_id:#x}) than item 0 (dim {first.dim}, nbits {first.nbits}, "
                    f"codec {first.codec_id:#x})",
                    [i],
                )
        return cls(
            codes=torch.cat([it.codes for it in items]),
            residuals=torch.cat([it.residuals for it in items]),
            dim=first.dim,
            nbits=first.nbits,
            codec_id=first.codec_id,
        )
