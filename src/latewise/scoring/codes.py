"""Scoring documents stored as residual codes (:class:`~latewise.compression.ResidualCodec`).

* :func:`centroid_interaction`: PLAID's approximate first-stage score from the centroid ids
  alone (reports no score: it picks which candidates the exact kernel scores).
* :func:`codes_maxsim`: the exact kernel's score of compressed documents, decompressed a
  cache-sized block at a time (bit-identical to the kernel on the decompressed vectors).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import torch

from latewise.errors import DimensionMismatchError
from latewise.scoring._workers import Scratch
from latewise.scoring.exact import maxsim_blocks, scan_blocks

if TYPE_CHECKING:
    from latewise.compression.residual import ResidualCodec

__all__ = ["centroid_interaction", "centroid_scores", "codes_maxsim"]

#: Rows per block of centroid similarities: gathering them is cheap, so larger blocks (4 MiB
#: of similarities for a 32-vector query) cost fewer dispatches.
_CENTROID_BLOCK_ROWS = 1 << 15


def _check_query(codec: ResidualCodec, query: torch.Tensor) -> None:
    if query.dim() != 2 or query.shape[1] != codec.dim:
        raise DimensionMismatchError(
            f"query has shape {tuple(query.shape)}; this codec's vectors are [n, {codec.dim}]"
        )


def centroid_interaction(
    codec: ResidualCodec,
    query: torch.Tensor,
    counts: Sequence[int],
    fetch_codes: Callable[[int, int, int, int], torch.Tensor],
) -> torch.Tensor:
    """PLAID's centroid interaction: MaxSim of ``query`` against documents with every vector
    replaced by its centroid, from the stored centroid ids alone.

    ``query @ centroids.T`` is computed once, so each document vector costs one column lookup
    instead of its decompression and a dot product per query vector: a cheap, close
    approximation of the exact score, used to keep the best of many first-stage candidates for
    exact scoring (never reported as a score).

    Args:
        codec: the collection's residual codec.
        query: ``[n_q, dim]``.
        counts: each document's number of vectors.
        fetch_codes: ``fetch_codes(a, b, r0, r1)`` returns the ``"codes"`` column
            (:meth:`ResidualCodec.columns`) of documents ``a..b-1`` (rows ``r0..r1-1`` of the
            documents laid end to end).

    Returns:
        float32 ``[len(counts)]`` approximate scores.

    Raises:
        DimensionMismatchError: ``query`` is not ``[n, codec.dim]``.
    """
    _check_query(codec, query)
    table = codec.centroids @ query.detach().float().t()  # [n_centroids, n_q]

    def similarities(a: int, b: int, r0: int, r1: int, scratch: Scratch) -> torch.Tensor:
        ids = codec.centroid_ids(fetch_codes(a, b, r0, r1))
        sim = scratch.get("centroid_sim", (r1 - r0, table.shape[1]), torch.float32, table.device)
        return torch.index_select(table, 0, ids, out=sim)

    return scan_blocks(table.shape[1], counts, _CENTROID_BLOCK_ROWS, similarities)


def centroid_scores(
    codec: ResidualCodec, query: torch.Tensor, blobs: Sequence[bytes]
) -> torch.Tensor:
    """:func:`centroid_interaction` of compressed documents given as blobs
    (:meth:`ResidualCodec.encode_doc`).

    Raises:
        StoreError: a blob is corrupt or foreign (its position is named).
        DimensionMismatchError: ``query`` is not ``[n, codec.dim]``.
    """
    _check_query(codec, query)
    columns, counts = codec.columns(blobs)
    codes = columns["codes"]
    return centroid_interaction(codec, query, counts, lambda a, b, r0, r1: codes[r0:r1])


def codes_maxsim(codec: ResidualCodec, query: torch.Tensor, blobs: Sequence[bytes]) -> torch.Tensor:
    """Exact float32 MaxSim of ``query`` against compressed documents (blobs from
    :meth:`ResidualCodec.encode_doc`), decompressing a cache-sized block of documents at a time.

    Bit-identical to ``maxsim_flat(query, *codec.decode_docs_flat(blobs))`` (the same kernel)
    without the full float32 copy of every document: each block is decompressed and scored on
    a scoring worker while it is still in that core's cache.

    Returns:
        float32 ``[len(blobs)]`` scores.

    Raises:
        StoreError: a blob is corrupt or foreign (its position is named).
        DimensionMismatchError: ``query`` is not ``[n, codec.dim]``.
    """
    _check_query(codec, query)
    columns, counts = codec.columns(blobs)

    def fetch(a: int, b: int, r0: int, r1: int) -> torch.Tensor:
        return codec.expand({name: col[r0:r1] for name, col in columns.items()})

    return maxsim_blocks(query, counts, fetch)
