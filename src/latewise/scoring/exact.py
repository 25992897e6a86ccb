"""THE exact MaxSim kernel, and everything that reports a score through it.

``score(q, d) = sum_i max_j <q_i, d_j>`` over the rows of a query ``q`` and a document ``d``.

Every path that reports a score (the index's second stage, ``exact=True``, explanations,
reranking, MMR, the public :func:`~latewise.scoring.maxsim`) goes through :func:`block_best`
and :func:`sum_best` here, so one (query, document) pair gets **bit-identical** scores whichever
path scored it, with whatever other documents, on any number of threads. That holds because:

* The similarities come from float32 GEMMs of **fixed-size tiles**: always exactly
  :data:`TILE_ROWS` document rows (the last tile zero-padded), 64-byte aligned, times the same
  ``[dim, n_q]`` query matrix. MKL's per-element result depends on the matrix shape (a
  product of 1, 2 or 3 rows differs in the last bit from the same rows inside a larger one) and
  on the alignment of its operands, but not on where a row sits in a fixed-shape tile, what
  else the tile holds, or how many threads run it (measured on 1 and 2 threads).
* A query is multiplied alone (never stacked with other queries: the GEMM width would change).
* Per-document maxima are ``numpy.maximum.reduceat`` over the rows of each document: a maximum
  is exact whatever the order, and only a document's own rows take part (no padding is ever
  scored; the zero rows of a padded tile belong to no document).
* The sum over query vectors runs in one fixed order (``b[0] + b[1] + ... + b[n_q - 1]``,
  elementwise over documents), independent of how many documents are scored together.

Work is split into blocks of whole documents (about :data:`BLOCK_VALUES` floats of rows, so a
block stays in a core's cache) and spread over the single-threaded scoring workers
(:mod:`latewise.scoring._workers`); tiles and similarity blocks are per-thread scratch
buffers, reused by later calls. The kernel runs on the CPU (inputs on other devices are copied).
"""

from __future__ import annotations

import logging
from bisect import bisect_right
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from latewise.errors import (
    DimensionMismatchError,
    EmptyInputError,
    InvalidInputError,
    InvalidInputTypeError,
)
from latewise.scoring._workers import SCRATCH, Scratch, run_tasks

__all__ = [
    "BLOCK_VALUES",
    "TILE_ROWS",
    "best_ids",
    "block_best",
    "block_rows",
    "check_k",
    "document_blocks",
    "maxsim_blocks",
    "maxsim_flat",
    "maxsim_flat_matches",
    "maxsim_matches",
    "query_matrix",
    "row_starts",
    "scan_blocks",
    "sum_best",
    "tile_similarities",
    "top_k",
]

logger = logging.getLogger(__name__)

#: Document rows per GEMM tile. Every tile has exactly this many rows (see the module docstring).
TILE_ROWS = 256
#: Floats of document rows per block (2 MiB of float32): a block stays in a core's L2/L3 cache,
#: and blocks are few enough that dispatching them costs little.
BLOCK_VALUES = 1 << 19
#: Operands whose address is a multiple of this are multiplied in place (torch allocates at it).
_ALIGN = 64
_CPU = torch.device("cpu")

#: ``fetch(a, b, r0, r1)``: documents ``a..b-1`` (rows ``r0..r1-1`` laid end to end).
Fetch = Callable[[int, int, int, int], torch.Tensor]


def query_matrix(query: torch.Tensor) -> torch.Tensor:
    """The query as the kernel multiplies it: a fresh, aligned float32 ``[dim, n_q]`` CPU
    tensor (``query.t()`` of a one-row query would be a view at any address)."""
    q = query.detach()
    qt = torch.empty(q.shape[1], q.shape[0], dtype=torch.float32)
    qt.copy_(q.t())
    return qt


def tile_similarities(
    qt: torch.Tensor, rows: torch.Tensor, scratch: Scratch, name: str = "sim"
) -> torch.Tensor:
    """``rows @ qt``: float32 ``[len(rows), n_q]`` (a view of ``scratch``), computed one
    fixed-size tile of :data:`TILE_ROWS` rows at a time.

    A full tile that is float32, contiguous and aligned is multiplied in place; anything else
    (the last partial tile, other dtypes, unaligned views) is first copied into a zero-padded
    aligned tile. Either way the GEMM has the same shape and alignment (its output goes to an
    aligned scratch buffer, ``TILE_ROWS * n_q`` floats further per tile), so every row's
    similarities are the same bits wherever the row sits.
    """
    n_rows, dim = rows.shape
    n_q = qt.shape[1]
    width = -(-n_rows // TILE_ROWS) * TILE_ROWS
    sim = scratch.get(name, (width, n_q), torch.float32, _CPU)
    tile: torch.Tensor | None = None
    for t in range(0, n_rows, TILE_ROWS):
        m = min(TILE_ROWS, n_rows - t)
        src = rows[t : t + m]
        if (
            m == TILE_ROWS
            and src.dtype == torch.float32
            and src.is_contiguous()
            and src.data_ptr() % _ALIGN == 0
        ):
            torch.mm(src, qt, out=sim[t : t + TILE_ROWS])
        else:
            if tile is None:
                tile = scratch.get("tile", (TILE_ROWS, dim), torch.float32, _CPU)
            tile[:m].copy_(src)
            if m < TILE_ROWS:
                tile[m:].zero_()
            torch.mm(tile, qt, out=sim[t : t + TILE_ROWS])
    return sim[:n_rows]


def block_best(sim: torch.Tensor, starts: np.ndarray, out: np.ndarray) -> None:
    """``out[i, k] = max`` of column ``i`` of ``sim`` (``[rows, n_q]``) over document ``k``'s
    rows (``starts[k]`` up to the next start, or the end): exact, whatever the order
    (``numpy.maximum.reduceat``). ``out`` is ``[n_q, n_docs]`` (a view is fine)."""
    np.maximum.reduceat(sim.numpy(), starts, axis=0, out=out.T)


def sum_best(best: np.ndarray) -> torch.Tensor:
    """``best[0] + best[1] + ... + best[n_q - 1]`` (float32 ``[n_docs]``) in that order, for
    every document alike: its score does not depend on how many documents are summed."""
    total = best[0].copy()
    for i in range(1, best.shape[0]):
        total += best[i]
    return torch.from_numpy(total)


def row_starts(counts: Sequence[int]) -> list[int]:
    starts = [0]
    for c in counts:
        starts.append(starts[-1] + int(c))
    return starts


def document_blocks(starts: list[int], rows: int) -> list[tuple[int, int]]:
    """Ranges ``(a, b)`` of whole documents of about ``rows`` rows each (a longer document
    gets a block of its own)."""
    blocks: list[tuple[int, int]] = []
    a, n = 0, len(starts) - 1
    while a < n:
        b = min(n, max(a + 1, bisect_right(starts, starts[a] + rows) - 1))
        blocks.append((a, b))
        a = b
    return blocks


def block_rows(dim: int, block_values: int = BLOCK_VALUES) -> int:
    """Rows per block for vectors of ``dim``: ``block_values`` floats, whole tiles."""
    return max(TILE_ROWS, block_values // max(1, dim) // TILE_ROWS * TILE_ROWS)


def scan_blocks(
    n_q: int,
    counts: Sequence[int],
    rows: int,
    similarities: Callable[[int, int, int, int, Scratch], torch.Tensor],
) -> torch.Tensor:
    """Sum over query vectors of each document's best similarity, a block at a time.

    Args:
        n_q: query vectors.
        counts: each document's number of rows (all ``>= 1``).
        rows: about this many rows per block (whole documents).
        similarities: ``similarities(a, b, r0, r1, scratch)``: float32 ``[r1 - r0, n_q]``
            similarities of the rows of documents ``a..b-1`` to the query, contiguous (may
            live in ``scratch``, the running thread's buffers).

    Returns:
        float32 ``[len(counts)]``.
    """
    if not counts:
        return torch.zeros(0, dtype=torch.float32)
    starts = row_starts(counts)
    first = np.asarray(starts[:-1], dtype=np.int64)
    best = np.empty((n_q, len(counts)), dtype=np.float32)

    def run(block: tuple[int, int]) -> None:
        a, b = block
        r0, r1 = starts[a], starts[b]
        sim = similarities(a, b, r0, r1, SCRATCH.here())
        block_best(sim, first[a:b] - r0, best[:, a:b])

    run_tasks(document_blocks(starts, rows), run, _CPU)
    return sum_best(best)


def _check_query(query: Any, dim: int | None = None) -> None:
    if not isinstance(query, torch.Tensor):
        raise InvalidInputTypeError(f"query must be a [n, dim] tensor, got {type(query).__name__}")
    if query.dim() != 2 or query.shape[0] == 0 or query.shape[1] == 0:
        raise InvalidInputError(
            f"query must be a non-empty [n, dim] tensor, got shape {tuple(query.shape)}"
        )
    if dim is not None and query.shape[1] != dim:
        raise DimensionMismatchError(
            f"query has dim {query.shape[1]} but the documents have dim {dim}; encode both "
            "with the same encoder"
        )


def _check_flat(query: torch.Tensor, vectors: torch.Tensor, offsets: torch.Tensor) -> list[int]:
    """Checks the flat layout; returns each document's row count."""
    if not isinstance(vectors, torch.Tensor) or vectors.dim() != 2:
        raise InvalidInputError("vectors must be a [total_rows, dim] tensor")
    _check_query(query, int(vectors.shape[1]))
    bounds = offsets.tolist()
    if not bounds or bounds[0] != 0 or bounds[-1] != vectors.shape[0]:
        raise InvalidInputError(
            f"offsets must start at 0 and end at len(vectors) = {vectors.shape[0]}"
        )
    counts = [bounds[i + 1] - bounds[i] for i in range(len(bounds) - 1)]
    if any(c <= 0 for c in counts):
        raise EmptyInputError("every document needs at least one vector (offsets must increase)")
    return counts


def maxsim_blocks(
    query: torch.Tensor,
    counts: Sequence[int],
    fetch: Fetch,
    *,
    block_values: int = BLOCK_VALUES,
) -> torch.Tensor:
    """Exact float32 MaxSim of one query against documents materialised a block at a time.

    For documents stored in another form (float16, residual codes): each block of whole
    documents (about ``block_values`` floats) is materialised by ``fetch`` and scored by the
    kernel on a scoring worker while it is still in that core's cache, so no float32 copy of
    all documents is ever made. Scores are bit-identical to :func:`maxsim_flat` of the same
    rows, whatever ``block_values``.

    Args:
        query: ``[n_q, dim]``.
        counts: the number of vectors of each document (all ``>= 1``).
        fetch: ``fetch(a, b, r0, r1)`` returns documents ``a..b-1`` (rows ``r0..r1-1`` of the
            documents laid end to end) as a ``[r1 - r0, dim]`` tensor (float32 or any float
            dtype, converted tile by tile).
        block_values: floats per block (default 2 MiB worth).

    Returns:
        float32 ``[len(counts)]`` scores.
    """
    _check_query(query)
    qt = query_matrix(query)

    def similarities(a: int, b: int, r0: int, r1: int, scratch: Scratch) -> torch.Tensor:
        rows = fetch(a, b, r0, r1)
        if rows.dim() != 2 or rows.shape != (r1 - r0, qt.shape[0]):
            raise DimensionMismatchError(
                f"fetch({a}, {b}, {r0}, {r1}) returned shape {tuple(rows.shape)}; expected "
                f"{(r1 - r0, qt.shape[0])}"
            )
        return tile_similarities(qt, rows.to(_CPU), scratch)

    return scan_blocks(qt.shape[1], counts, block_rows(qt.shape[0], block_values), similarities)


def maxsim_flat(query: torch.Tensor, vectors: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """THE exact MaxSim kernel: one query against documents stored flat.

    Args:
        query: ``[n_q, dim]``.
        vectors: ``[total_rows, dim]``, document ``i`` being ``vectors[offsets[i]:offsets[i+1]]``.
        offsets: ``[n_docs + 1]`` int64, starting at 0, increasing, ending at ``total_rows``.

    Returns:
        float32 ``[n_docs]``: each document's score, the same bits whichever other documents
        are scored with it and on any number of threads.

    Raises:
        InvalidInputError, InvalidInputTypeError, EmptyInputError, DimensionMismatchError:
            malformed inputs.
    """
    counts = _check_flat(query, vectors, offsets)
    return maxsim_blocks(query, counts, lambda a, b, r0, r1: vectors[r0:r1])


def maxsim_flat_matches(
    query: torch.Tensor, vectors: torch.Tensor, offsets: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`maxsim_flat` (the same scores, bit for bit) plus, per document and query vector,
    the row it matched: what explanations show.

    Returns:
        ``(scores, matches)``: float32 ``[n_docs]`` and int64 ``[n_docs, n_q]``, ``matches[k, i]``
        being the row of document ``k`` (counted from its first row) with the highest
        similarity to query vector ``i`` (ties: the first such row).
    """
    counts = _check_flat(query, vectors, offsets)
    qt = query_matrix(query)
    n_q = qt.shape[1]
    matches = np.zeros((len(counts), n_q), dtype=np.int64)
    starts = row_starts(counts)

    def similarities(a: int, b: int, r0: int, r1: int, scratch: Scratch) -> torch.Tensor:
        sim = tile_similarities(qt, vectors[r0:r1].to(_CPU), scratch)
        values = sim.numpy()
        for k in range(a, b):
            s, e = starts[k] - r0, starts[k + 1] - r0
            matches[k] = values[s:e].argmax(axis=0)
        return sim

    scores = scan_blocks(n_q, counts, block_rows(qt.shape[0]), similarities)
    return scores, torch.from_numpy(matches)


def maxsim_matches(query: torch.Tensor, document: torch.Tensor) -> tuple[float, torch.Tensor]:
    """MaxSim of one query against one document, with the matched document row per query row.

    Args:
        query: ``[n_q, dim]``.
        document: ``[n_d, dim]``.

    Returns:
        ``(score, matches)``: the kernel's score (as a Python float) and int64 ``[n_q]``, the
        document row that each query vector matched best (ties: the first).

    Raises:
        InvalidInputTypeError: an argument is not a tensor.
        InvalidInputError: an argument is not 2-D.
        EmptyInputError: an argument has no rows.
        DimensionMismatchError: the dimensions differ.
    """
    for name, t in (("query", query), ("document", document)):
        if not isinstance(t, torch.Tensor):
            raise InvalidInputTypeError(f"{name} must be a [n, dim] tensor, got {type(t).__name__}")
        if t.dim() != 2:
            raise InvalidInputError(f"{name} must be 2-D [n, dim], got shape {tuple(t.shape)}")
        if t.shape[0] == 0:
            raise EmptyInputError(f"{name} has no vectors; it needs at least one row")
    if query.shape[-1] != document.shape[-1]:
        raise DimensionMismatchError(
            f"query has dim {query.shape[-1]} but document has dim {document.shape[-1]}"
        )
    offsets = torch.tensor([0, document.shape[0]], dtype=torch.int64)
    scores, matches = maxsim_flat_matches(query, document.detach(), offsets)
    return float(scores[0]), matches[0]


def check_k(k: Any) -> int:
    """``k`` if it is an int >= 1 (else a typed error)."""
    if isinstance(k, bool) or not isinstance(k, int):
        raise InvalidInputTypeError(f"k must be an int, got {type(k).__name__}")
    if k < 1:
        raise InvalidInputError(f"k must be at least 1, got {k}")
    return k


def top_k(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` best documents per query from a ``[n_q, n_d]`` score matrix.

    Args:
        scores: ``[n_q, n_d]`` (or ``[n_d]`` for one query).
        k: how many to keep; more than ``n_d`` keeps all.

    Returns:
        ``(values, indices)``, each ``[n_q, min(k, n_d)]``, best first (ties: lower index first
        is not guaranteed; use :func:`best_ids` for a stable order).

    Raises:
        InvalidInputTypeError: ``scores`` is not a tensor or ``k`` is not an int.
        InvalidInputError: ``k < 1`` or ``scores`` is not 1-D / 2-D.
    """
    k = check_k(k)
    if not isinstance(scores, torch.Tensor):
        raise InvalidInputTypeError(f"scores must be a tensor, got {type(scores).__name__}")
    if scores.dim() == 1:
        scores = scores.unsqueeze(0)
    if scores.dim() != 2:
        raise InvalidInputError(f"scores must be [n_q, n_d], got shape {tuple(scores.shape)}")
    values, indices = torch.topk(scores, min(k, scores.shape[1]), dim=1, largest=True, sorted=True)
    return values, indices


def best_ids(ids: Sequence[str], scores: torch.Tensor, n: int) -> list[str]:
    """The ``n`` best of ``ids`` by ``scores`` (``[len(ids)]``), best first; equal scores in
    id order."""
    if len(ids) > n:
        # Every document scoring at least the n-th best score (ties at the cut included).
        cut = scores.topk(n).values[-1]
        chosen = (scores >= cut).nonzero().flatten().tolist()
    else:
        chosen = list(range(len(ids)))
    values = scores.tolist()
    order = sorted(chosen, key=lambda j: (-values[j], ids[j]))[:n]
    return [ids[j] for j in order]
