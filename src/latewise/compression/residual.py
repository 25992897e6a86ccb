"""ColBERTv2-style residual compression of document vectors.

Each vector ``x`` is stored as the id of its nearest centroid ``c`` (by inner product, centroids
fitted with k-means on a sample and L2-normalised) plus its residual ``r = x - c`` quantised per
dimension into ``2**nbits`` buckets. The buckets are shared by all dimensions and come from the
residual distribution of a held-out part of the sample, exactly as ColBERTv2's indexer does:

- bucket cutoffs are the quantiles ``i / B`` (``i = 1 .. B-1``, ``B = 2**nbits``) of all residual
  values, and a value falls in bucket ``i`` when ``cutoff[i-1] < r <= cutoff[i]``;
- bucket weights (the value a bucket decodes to) are the quantiles ``(i + 0.5) / B``, i.e. the
  median of each bucket's share of the distribution.

Decompression is ``normalize(c + weight[code])`` per vector, done in one batched pass through a
256-entry table that maps each packed byte straight to its ``8 / nbits`` decoded values.

Quantisation bound (what the tests check): for a residual value in an inner bucket ``i`` the error
is at most ``max(weight[i] - cutoff[i-1], cutoff[i] - weight[i])``, which is below the bucket's
width and equals half of it when the weight sits at the bucket's centre. Values beyond the
outermost weights are clipped to them (by construction about ``1 / (2B)`` of the held-out values
on each side). Since normalising does not change the angle, a unit vector whose un-normalised
reconstruction error has norm ``e < 1`` keeps a cosine of at least ``sqrt(1 - e**2)`` with the
original.

Storage at dim ``d``: 2 bytes of centroid id (at most 65,536 centroids) plus ``ceil(d * nbits / 8)``
bytes of codes, i.e. 34 bytes per vector at ``d = 128, nbits = 2`` (in memory the id is an int32:
36 bytes).
"""

from __future__ import annotations

import logging
import math
import sys
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from latewise.compression._format import (
    DOC_HEADER,
    KIND_RESIDUAL,
    DocHeader,
    frombuffer_readonly,
    read_doc_header,
    safetensors_metadata,
)
from latewise.compression.clustering import kmeans
from latewise.errors import (
    DimensionMismatchError,
    EmptyInputError,
    InvalidInputError,
    InvalidInputTypeError,
    StoreError,
)

__all__ = ["CompressedVectors", "ResidualCodec", "default_n_centroids"]

logger = logging.getLogger(__name__)

FORMAT_VERSION = "1"
MAX_CENTROIDS = 1 << 16
_VALID_NBITS = (1, 2, 4)
_CODE_BYTES = 2  # centroid ids are stored as little-endian uint16
_DECOMPRESS_CHUNK_ROWS = 16384
_QUANTILE_MAX_VALUES = 1 << 24  # torch.quantile's input limit; larger inputs are subsampled


def default_n_centroids(n_tokens: int) -> int:
    """ColBERTv2's centroid count for a collection of ``n_tokens`` vectors.

    ``2 ** floor(log2(16 * sqrt(n_tokens)))``, capped at 65,536 so an id fits in two bytes.
    """
    if n_tokens < 1:
        return 1
    return int(min(MAX_CENTROIDS, 2 ** math.floor(math.log2(16 * math.sqrt(n_tokens)))))


def _packed_bytes(dim: int, nbits: int) -> int:
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
        return len(self) * (_CODE_BYTES + int(self.residuals.shape[1]))

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
        where = "" if position is None else f" at position {position}"
        if head.kind != KIND_RESIDUAL or head.nbits not in _VALID_NBITS:
            raise StoreError(
                f"vector blob{where} is not residual-compressed (kind {head.kind}, nbits "
                f"{head.nbits}); it was written with another codec than the one reading it"
            )
        pb = _packed_bytes(head.dim, head.nbits)
        expected = DOC_HEADER.size + head.n * (_CODE_BYTES + pb)
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


class ResidualCodec:
    """Centroid + b-bit residual codec (ColBERTv2's scheme) for L2-normalised vectors.

    Build one with :meth:`fit` on a sample of the collection's vectors; store it with
    :meth:`to_bytes` and restore it with :meth:`from_bytes` (or :func:`codec_from_bytes`).

    Example:
        >>> codec = ResidualCodec.fit(sample, nbits=2)           # sample: [n, 128] float32
        >>> blob = codec.encode_doc(doc_vectors)                   # bytes, ~34 per vector
        >>> restored = codec.decode_doc(blob)                      # [n, 128] float32, unit rows

    Args:
        centroids: ``[k, dim]`` centroids (normalised rows; kept as float16-exact float32).
        bucket_cutoffs: ``[2**nbits - 1]`` ascending cutoffs.
        bucket_weights: ``[2**nbits]`` decoded values per bucket.
        nbits: 1, 2 or 4.
        avg_residual: mean absolute residual on the held-out sample (informational).
    """

    kind: ClassVar[str] = "residual"

    def __init__(
        self,
        centroids: torch.Tensor,
        bucket_cutoffs: torch.Tensor,
        bucket_weights: torch.Tensor,
        nbits: int,
        avg_residual: float = 0.0,
    ) -> None:
        if nbits not in _VALID_NBITS:
            raise InvalidInputError(f"nbits must be one of {_VALID_NBITS}, got {nbits!r}")
        if centroids.dim() != 2 or centroids.shape[0] < 1 or centroids.shape[1] < 1:
            raise InvalidInputError(
                f"centroids must be a non-empty [k, dim] tensor, got shape {tuple(centroids.shape)}"
            )
        if centroids.shape[0] > MAX_CENTROIDS:
            raise InvalidInputError(
                f"at most {MAX_CENTROIDS} centroids fit a 2-byte id, got {centroids.shape[0]}"
            )
        n_buckets = 1 << nbits
        if tuple(bucket_cutoffs.shape) != (n_buckets - 1,) or tuple(bucket_weights.shape) != (
            n_buckets,
        ):
            raise InvalidInputError(
                f"nbits={nbits} needs {n_buckets - 1} cutoffs and {n_buckets} weights, got "
                f"shapes {tuple(bucket_cutoffs.shape)} and {tuple(bucket_weights.shape)}"
            )
        self.centroids = centroids.detach().to("cpu", torch.float32).contiguous()
        self.bucket_cutoffs = bucket_cutoffs.detach().to("cpu", torch.float32).contiguous()
        self.bucket_weights = bucket_weights.detach().to("cpu", torch.float32).contiguous()
        if not (
            torch.isfinite(self.centroids).all()
            and torch.isfinite(self.bucket_cutoffs).all()
            and torch.isfinite(self.bucket_weights).all()
        ):
            raise InvalidInputError("codec parameters hold NaN or infinite values")
        self.nbits = nbits
        self.avg_residual = float(avg_residual)
        self._per_byte = 8 // nbits
        self._shifts = torch.arange(self._per_byte, dtype=torch.uint8) * nbits
        # byte value -> the per_byte bucket weights it encodes (LSB first).
        byte_values = torch.arange(256, dtype=torch.int64).unsqueeze(1)
        bucket_of = (byte_values >> self._shifts.to(torch.int64)) & (n_buckets - 1)
        self._table = self.bucket_weights[bucket_of].contiguous()  # [256, per_byte]
        self._codec_id = self._compute_id()

    # -- properties -----------------------------------------------------------------------------

    @property
    def dim(self) -> int:
        """The dimension of the vectors this codec compresses."""
        return int(self.centroids.shape[1])

    @property
    def n_centroids(self) -> int:
        return int(self.centroids.shape[0])

    @property
    def codec_id(self) -> int:
        """A CRC32 of the codec's parameters, written into every blob it encodes."""
        return self._codec_id

    @property
    def bytes_per_vector(self) -> int:
        """Stored bytes per vector: a 2-byte centroid id plus the packed codes."""
        return _CODE_BYTES + _packed_bytes(self.dim, self.nbits)

    @property
    def settings(self) -> dict[str, int | str]:
        """What identifies this codec, for an index's collection metadata."""
        return {
            "kind": self.kind,
            "dim": self.dim,
            "nbits": self.nbits,
            "n_centroids": self.n_centroids,
            "codec_id": self.codec_id,
        }

    def _compute_id(self) -> int:
        crc = zlib.crc32(f"{self.kind}:{self.nbits}:{self.dim}".encode())
        for t in (self.centroids, self.bucket_cutoffs, self.bucket_weights):
            crc = zlib.crc32(t.numpy().tobytes(), crc)
        return crc & 0xFFFFFFFF

    def __repr__(self) -> str:
        return (
            f"ResidualCodec(dim={self.dim}, nbits={self.nbits}, n_centroids={self.n_centroids}, "
            f"codec_id={self.codec_id:#010x})"
        )

    # -- fitting --------------------------------------------------------------------------------

    @classmethod
    def fit(
        cls,
        sample: torch.Tensor,
        *,
        nbits: int = 2,
        n_centroids: int | None = None,
        n_tokens: int | None = None,
        kmeans_iters: int = 4,
        heldout_fraction: float = 0.05,
        seed: int = 0,
        centroids: torch.Tensor | None = None,
    ) -> ResidualCodec:
        """Fit centroids and buckets on a sample of the collection's vectors.

        As ColBERTv2's indexer: shuffle the sample, hold out 5% (at most 50,000 vectors), run
        k-means on the rest, L2-normalise the centroids, then take bucket cutoffs and weights
        from the quantiles of the held-out residuals (all dimensions pooled).

        Args:
            sample: ``[n, dim]`` L2-normalised vectors (a few tens of thousands is plenty).
            nbits: bits per dimension: 1, 2 or 4.
            n_centroids: how many centroids; default ``2**floor(log2(16 * sqrt(n_tokens)))``,
                clamped to ``[1, min(65536, training-sample size)]``.
            n_tokens: the collection's (expected) vector count for the default above; defaults
                to the sample size.
            kmeans_iters: k-means iterations (ColBERTv2's default, 4).
            heldout_fraction: the share of the sample kept out of k-means for the buckets.
            seed: seeds shuffling and k-means; the codec is deterministic for a given seed.
            centroids: reuse these ``[k, dim]`` centroids (e.g. ``other.centroids``, to get
                another ``nbits`` without re-running k-means); only the buckets are fitted, on
                the same held-out split (same sample and seed give the same split).

        Raises:
            InvalidInputTypeError: ``sample`` is not a tensor.
            InvalidInputError: not 2-D, non-finite values, fewer than 2 vectors, bad ``nbits``.
        """
        if nbits not in _VALID_NBITS:
            raise InvalidInputError(f"nbits must be one of {_VALID_NBITS}, got {nbits!r}")
        if not isinstance(sample, torch.Tensor):
            raise InvalidInputTypeError(
                f"sample must be a [n, dim] tensor, got {type(sample).__name__}"
            )
        if sample.dim() != 2 or sample.shape[1] < 1:
            raise InvalidInputError(f"sample must be [n, dim], got shape {tuple(sample.shape)}")
        n = int(sample.shape[0])
        if n < 2:
            raise InvalidInputError(
                f"fitting a codec needs at least 2 sample vectors, got {n}; add more documents "
                "before enabling compression"
            )
        if not 0.0 < heldout_fraction < 1.0:
            raise InvalidInputError(f"heldout_fraction must be in (0, 1), got {heldout_fraction}")
        x = sample.detach().to("cpu", torch.float32)
        if not torch.isfinite(x).all():
            raise InvalidInputError("sample holds NaN or infinite values")
        gen = torch.Generator().manual_seed(seed)
        x = x[torch.randperm(n, generator=gen)]
        n_heldout = max(1, int(min(heldout_fraction * n, 50_000)))
        train, heldout = x[: n - n_heldout], x[n - n_heldout :]
        if centroids is not None:
            if centroids.dim() != 2 or centroids.shape[1] != x.shape[1]:
                raise DimensionMismatchError(
                    f"centroids of shape {tuple(centroids.shape)} do not fit a sample of dim "
                    f"{x.shape[1]}"
                )
            centroids = centroids.detach().to("cpu", torch.float32)
        else:
            wanted = n_centroids if n_centroids is not None else default_n_centroids(n_tokens or n)
            if wanted < 1:
                raise InvalidInputError(f"n_centroids must be >= 1, got {wanted}")
            k = max(1, min(wanted, MAX_CENTROIDS, train.shape[0]))
            if k != wanted:
                logger.info(
                    "ResidualCodec.fit: %d centroids asked, %d used (sample of %d)", wanted, k, n
                )
            centroids = kmeans(train, k, n_iters=kmeans_iters, seed=seed)
        centroids = torch.nn.functional.normalize(centroids, dim=-1)
        # Stored as float16: round now so a codec read back from bytes is bit-identical.
        centroids = centroids.to(torch.float16).to(torch.float32)

        residuals = heldout - centroids[_nearest(heldout, centroids)]
        avg_residual = float(residuals.abs().mean())
        n_buckets = 1 << nbits
        qs = torch.arange(n_buckets, dtype=torch.float64) / n_buckets
        values = residuals.flatten()
        cutoffs = _quantiles(values, qs[1:], gen)
        weights = _quantiles(values, qs + 0.5 / n_buckets, gen)
        logger.debug("ResidualCodec.fit: cutoffs %s weights %s", cutoffs.tolist(), weights.tolist())
        return cls(centroids, cutoffs, weights, nbits, avg_residual)

    # -- compress / decompress ------------------------------------------------------------------

    def compress(self, vectors: torch.Tensor) -> CompressedVectors:
        """Compress ``[n, dim]`` vectors (``n`` may be 0).

        Raises:
            InvalidInputTypeError, InvalidInputError: not a 2-D float tensor, or non-finite.
            DimensionMismatchError: ``dim`` differs from the codec's.
        """
        x = self._check_vectors(vectors)
        codes = _nearest(x, self.centroids)
        residuals = x - self.centroids[codes]
        return CompressedVectors(
            codes=codes.to(torch.int32),
            residuals=self._binarize(residuals),
            dim=self.dim,
            nbits=self.nbits,
            codec_id=self.codec_id,
        )

    def _binarize(self, residuals: torch.Tensor) -> torch.Tensor:
        buckets = torch.bucketize(residuals, self.bucket_cutoffs).to(torch.uint8)
        n, dim = buckets.shape
        padded = _packed_bytes(dim, self.nbits) * self._per_byte
        if padded != dim:
            buckets = torch.nn.functional.pad(buckets, (0, padded - dim))
        grouped = buckets.view(n, -1, self._per_byte) << self._shifts
        return grouped.sum(dim=2, dtype=torch.uint8)

    def bucket_codes(self, compressed: CompressedVectors) -> torch.Tensor:
        """The ``[n, dim]`` bucket index (0 .. 2**nbits - 1) of every value (for inspection)."""
        mask = (1 << self.nbits) - 1
        per = (compressed.residuals.unsqueeze(-1) >> self._shifts) & mask
        return per.reshape(len(compressed), -1)[:, : self.dim].to(torch.int64)

    def decompress(
        self,
        compressed: CompressedVectors,
        *,
        normalize: bool = True,
        out: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Rebuild float32 vectors: ``normalize(centroid + bucket_weight[code])``.

        Args:
            compressed: vectors from :meth:`compress` (of this codec).
            normalize: L2-normalise the rows, as ColBERT does (``False`` gives the raw
                reconstruction, used to check the quantisation bound).
            out: an optional ``[n, dim]`` float32 buffer to write into (reuse it across calls to
                avoid a fresh allocation per query).

        Raises:
            StoreError: the vectors were written by another codec.
        """
        self._check_compressed(compressed)
        n = len(compressed)
        if out is None:
            out = torch.empty(n, self.dim, dtype=torch.float32)
        elif out.shape != (n, self.dim) or out.dtype != torch.float32:
            raise InvalidInputError(
                f"out must be a float32 [{n}, {self.dim}] tensor, got {out.dtype} "
                f"{tuple(out.shape)}"
            )
        if n == 0:
            return out
        # Chunks of rows bound the scratch memory; every step writes into preallocated buffers.
        # Few, large chunks: each op is a parallel region, and on a busy CPU every region can wait
        # a scheduler slice for its threads, so many small ones are slow.
        n_bytes = int(compressed.residuals.shape[1])
        per_byte = self._per_byte
        rows = min(n, _DECOMPRESS_CHUNK_ROWS)
        idx = torch.empty(rows * n_bytes, dtype=torch.int32)
        res = torch.empty(rows * n_bytes, per_byte, dtype=torch.float32)
        norms = torch.empty(rows, 1, dtype=torch.float32)
        codes = compressed.codes
        packed = compressed.residuals
        for start in range(0, n, rows):
            end = min(n, start + rows)
            m = end - start
            block = out[start:end]
            torch.index_select(self.centroids, 0, codes[start:end], out=block)
            flat_idx = idx[: m * n_bytes]
            flat_idx.view(m, n_bytes).copy_(packed[start:end])
            decoded = res[: m * n_bytes]
            torch.index_select(self._table, 0, flat_idx, out=decoded)
            decoded_rows = decoded.view(m, n_bytes * per_byte)
            block.add_(
                decoded_rows if n_bytes * per_byte == self.dim else decoded_rows[:, : self.dim]
            )
            if normalize:
                nrm = norms[:m]
                torch.linalg.vector_norm(block, dim=1, keepdim=True, out=nrm)
                block.div_(nrm.clamp_min_(1e-12))
        return out

    def _check_compressed(self, compressed: CompressedVectors) -> None:
        if (compressed.dim, compressed.nbits) != (self.dim, self.nbits) or (
            compressed.codec_id not in (0, self.codec_id)
        ):
            raise StoreError(
                f"compressed vectors (dim {compressed.dim}, nbits {compressed.nbits}, codec "
                f"{compressed.codec_id:#010x}) were not written by this codec (dim {self.dim}, "
                f"nbits {self.nbits}, codec {self.codec_id:#010x}); decode them with the codec "
                "stored alongside them"
            )
        if compressed.codes.numel() and int(compressed.codes.max()) >= self.n_centroids:
            raise StoreError(
                f"compressed vectors name centroid {int(compressed.codes.max())} but the codec "
                f"has {self.n_centroids}; the stored data is corrupt"
            )

    def _check_vectors(self, vectors: object, position: int | None = None) -> torch.Tensor:
        where = "" if position is None else f" at position {position}"
        pos = [] if position is None else [position]
        if not isinstance(vectors, torch.Tensor):
            raise InvalidInputTypeError(
                f"vectors{where} must be a [n, dim] tensor, got {type(vectors).__name__}", pos
            )
        if vectors.dim() != 2 or not (vectors.is_floating_point() or vectors.shape[0] == 0):
            raise InvalidInputError(
                f"vectors{where} must be a 2-D float tensor, got {vectors.dtype} "
                f"{tuple(vectors.shape)}",
                pos,
            )
        if vectors.shape[1] != self.dim:
            raise DimensionMismatchError(
                f"vectors{where} have dim {vectors.shape[1]} but the codec was fitted on dim "
                f"{self.dim}; use the encoder the index was built with"
            )
        x = vectors.detach().to("cpu", torch.float32)
        if not torch.isfinite(x).all():
            raise InvalidInputError(f"vectors{where} hold NaN or infinite values", pos)
        return x

    # -- the per-document blob interface (VectorCodec) -----------------------------------------

    def encode_doc(self, vectors: torch.Tensor) -> bytes:
        """One document's ``[n, dim]`` vectors as a compact blob (16-byte header + 34 B/vector
        at dim 128, 2 bits).

        Raises:
            EmptyInputError: ``n == 0``.
        """
        x = self._check_vectors(vectors)
        if x.shape[0] == 0:
            raise EmptyInputError("a document needs at least one vector to be stored")
        return self.compress(x).to_bytes()

    def encode_docs(self, docs: Sequence[torch.Tensor]) -> list[bytes]:
        """Encode many documents in one compression pass (faster than one call per document)."""
        checked = [self._check_vectors(d, i) for i, d in enumerate(docs)]
        empty = [i for i, d in enumerate(checked) if d.shape[0] == 0]
        if empty:
            raise EmptyInputError(
                f"documents at positions {empty[:10]} have no vectors; each needs at least one",
                empty,
            )
        if not checked:
            return []
        cv = self.compress(torch.cat(checked))
        out: list[bytes] = []
        start = 0
        for d in checked:
            end = start + d.shape[0]
            part = CompressedVectors(
                cv.codes[start:end], cv.residuals[start:end], self.dim, self.nbits, self.codec_id
            )
            out.append(part.to_bytes())
            start = end
        return out

    def _parse(
        self, blobs: Sequence[bytes], positions: bool = True
    ) -> tuple[dict[str, torch.Tensor], list[int]]:
        """Check every blob's header and length, then gather all ids and codes with one copy.

        Returns:
            :meth:`columns`' columns and the vector count of each blob.
        """
        pb = _packed_bytes(self.dim, self.nbits)
        hs = DOC_HEADER.size
        counts: list[int] = []
        id_parts: list[memoryview] = []
        code_parts: list[memoryview] = []
        # Every blob of this codec has the same header but for its vector count: check that
        # with two slice comparisons, and take the slow path (which names the fault) otherwise.
        mine = DocHeader(KIND_RESIDUAL, self.nbits, 0, self.dim, self.codec_id).pack()
        lead, tail = mine[:4], mine[8:hs]
        row_bytes = _CODE_BYTES + pb
        for i, blob in enumerate(blobs):
            if type(blob) is bytes and blob[:4] == lead and blob[8:hs] == tail:
                n = int.from_bytes(blob[4:8], "little")
                if len(blob) == hs + n * row_bytes:
                    view = memoryview(blob)
                    id_parts.append(view[hs : hs + _CODE_BYTES * n])
                    code_parts.append(view[hs + _CODE_BYTES * n :])
                    counts.append(n)
                    continue
            pos = i if positions else None
            head = read_doc_header(blob, pos)
            where = "" if pos is None else f" at position {pos}"
            if head.kind != KIND_RESIDUAL:
                raise StoreError(
                    f"vector blob{where} holds uncompressed vectors but this codec reads "
                    "residual codes; the collection mixes codecs: re-add the document"
                )
            if (head.codec_id, head.dim, head.nbits) != (self.codec_id, self.dim, self.nbits):
                raise StoreError(
                    f"vector blob{where} was written by codec {head.codec_id:#010x} (dim "
                    f"{head.dim}, {head.nbits} bits), not by this codec {self.codec_id:#010x} "
                    f"(dim {self.dim}, {self.nbits} bits); decode it with the codec stored with "
                    "the collection"
                )
            expected = hs + head.n * (_CODE_BYTES + pb)
            if len(blob) != expected:
                raise StoreError(
                    f"vector blob{where} has {len(blob)} bytes but its header ({head.n} vectors, "
                    f"dim {head.dim}, {head.nbits} bits) needs {expected}; the stored document "
                    "is corrupt or truncated: re-add the document"
                )
            view = memoryview(blob)
            split = hs + _CODE_BYTES * head.n
            id_parts.append(view[hs:split])
            code_parts.append(view[split:])
            counts.append(head.n)
        total = sum(counts)
        if total == 0:
            empty = {
                "codes": torch.empty(0, dtype=torch.int16),
                "residuals": torch.empty(0, pb, dtype=torch.uint8),
            }
            return empty, counts
        ids = frombuffer_readonly(b"".join(id_parts), torch.int16)  # uint16 bits
        if sys.byteorder != "little":  # pragma: no cover - blobs are little-endian
            ids = torch.from_numpy(ids.numpy().byteswap())
        packed = frombuffer_readonly(b"".join(code_parts), torch.uint8).view(total, pb)
        columns = {"codes": ids, "residuals": packed}
        codes = self.centroid_ids(ids)
        if int(codes.max()) >= self.n_centroids:
            bad_row = int(torch.nonzero(codes >= self.n_centroids)[0])
            bad = int(np.searchsorted(np.cumsum(counts), bad_row, side="right"))
            where = f" at position {bad}" if positions else ""
            raise StoreError(
                f"vector blob{where} names centroid {int(codes.max())} but the codec has "
                f"{self.n_centroids}; the stored document is corrupt: re-add it"
            )
        return columns, counts

    @staticmethod
    def centroid_ids(codes: torch.Tensor) -> torch.Tensor:
        """int32 centroid ids from stored ``codes`` (int16 holding uint16 bits)."""
        return codes.to(torch.int32) & 0xFFFF

    def _compressed(self, columns: Mapping[str, torch.Tensor]) -> CompressedVectors:
        return CompressedVectors(
            self.centroid_ids(columns["codes"]),
            columns["residuals"],
            self.dim,
            self.nbits,
            self.codec_id,
        )

    def columns(self, blobs: Sequence[bytes]) -> tuple[dict[str, torch.Tensor], list[int]]:
        """Many blobs, checked, in the form an index keeps in memory: ``{"codes": [total]
        int16 (uint16 centroid ids), "residuals": [total, packed bytes] uint8}`` (the blobs'
        vectors end to end), and each blob's vector count.

        Raises:
            StoreError: a blob is corrupt or foreign (its position is named).
        """
        return self._parse(blobs)

    def expand(
        self, columns: Mapping[str, torch.Tensor], *, out: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Decompress rows of :meth:`columns` to ``[n, dim]`` float32 unit vectors."""
        return self.decompress(self._compressed(columns), out=out)

    def decode_doc(self, blob: bytes) -> torch.Tensor:
        """The ``[n, dim]`` float32 unit vectors of one blob from :meth:`encode_doc`.

        Raises:
            StoreError: a corrupt blob, or one written by another codec.
        """
        return self.expand(self._parse([blob], positions=False)[0])

    def decode_docs_flat(self, blobs: Sequence[bytes]) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode many blobs in one batched pass.

        Returns:
            ``(vectors, offsets)``: ``[total, dim]`` float32 and ``[len(blobs) + 1]`` int64, so
            document ``i`` is ``vectors[offsets[i]:offsets[i + 1]]`` (the layout of
            :class:`latewise.scoring.PackedVectors`).

        Raises:
            StoreError: any blob is corrupt or foreign (its position is named).
        """
        from latewise.scoring import offsets_of

        columns, counts = self._parse(blobs)
        return self.expand(columns), offsets_of(counts)

    def decode_docs(self, blobs: Sequence[bytes]) -> list[torch.Tensor]:
        """Decode many blobs (one batched pass) into one ``[n_i, dim]`` tensor per blob."""
        flat, offsets = self.decode_docs_flat(blobs)
        return list(torch.split(flat, (offsets[1:] - offsets[:-1]).tolist()))

    # -- serialisation --------------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """The codec as safetensors bytes (centroids as float16); no pickle involved."""
        from safetensors.torch import save

        tensors = {
            "centroids": self.centroids.to(torch.float16),
            "bucket_cutoffs": self.bucket_cutoffs,
            "bucket_weights": self.bucket_weights,
        }
        meta = {
            "kind": self.kind,
            "format": FORMAT_VERSION,
            "nbits": str(self.nbits),
            "dim": str(self.dim),
            "avg_residual": repr(self.avg_residual),
            "codec_id": str(self.codec_id),
        }
        return bytes(save(tensors, metadata=meta))

    @classmethod
    def from_bytes(cls, data: bytes) -> ResidualCodec:
        """Restore a codec from :meth:`to_bytes` output (checked, bit-identical).

        Raises:
            StoreError: the bytes are corrupt, of another kind, or fail the integrity check.
        """
        meta = safetensors_metadata(data)
        if meta.get("kind") != cls.kind:
            raise StoreError(f"codec bytes hold a {meta.get('kind')!r} codec, not 'residual'")
        if meta.get("format") != FORMAT_VERSION:
            raise StoreError(
                f"codec bytes use format {meta.get('format')!r}; this latewise reads format "
                f"{FORMAT_VERSION}: upgrade latewise or rebuild the index"
            )
        from safetensors import SafetensorError
        from safetensors.torch import load

        try:
            tensors = load(bytes(data))
            nbits = int(meta["nbits"])
            codec = cls(
                tensors["centroids"].to(torch.float32),
                tensors["bucket_cutoffs"],
                tensors["bucket_weights"],
                nbits,
                float(meta.get("avg_residual", "0")),
            )
        except (SafetensorError, KeyError, ValueError, InvalidInputError, RuntimeError) as exc:
            raise StoreError(
                f"codec bytes are corrupt ({type(exc).__name__}: {exc}); rebuild the index's codec"
            ) from exc
        if str(codec.codec_id) != meta.get("codec_id"):
            raise StoreError(
                f"codec bytes fail their integrity check (id {codec.codec_id} computed, "
                f"{meta.get('codec_id')} stored); the stored codec is corrupt"
            )
        return codec


def _nearest(x: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """The centroid with the largest inner product for every row (ColBERT's assignment)."""
    out = torch.empty(x.shape[0], dtype=torch.int64)
    if x.shape[0] == 0:
        return out
    chunk = max(1, (1 << 20) // centroids.shape[0])
    ct = centroids.t()
    buf = torch.empty(min(chunk, x.shape[0]), centroids.shape[0])
    for start in range(0, x.shape[0], chunk):
        block = x[start : start + chunk]
        scores = buf[: block.shape[0]]
        torch.matmul(block, ct, out=scores)
        torch.argmax(scores, dim=1, out=out[start : start + block.shape[0]])
    return out


def _quantiles(values: torch.Tensor, qs: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """``torch.quantile`` (linear interpolation) that also takes more than 2**24 values."""
    if values.numel() > _QUANTILE_MAX_VALUES:
        pick = torch.randint(values.numel(), (_QUANTILE_MAX_VALUES,), generator=gen)
        values = values[pick]
    return torch.quantile(values.to(torch.float64), qs).to(torch.float32)
