"""THE exact MaxSim kernel, and everything that reports a score through it.

``score(q, d) = sum_i max_j <q_i, d_j>`` over the rows of a query ``q`` and a document ``d``.

Every path that reports a score (the index's second stage, ``exact=True``, explanations,
reranking, MMR, the public :func:`~latewise.scoring.maxsim`) goes through :func:`block_best`
and :func:`sum_best` here, so one (query, document) pair gets **bit-identical** scores whichever
path scored it, with whatever other documents, on any number of threads. That holds because:

* The similarities come from float32 GEMMs of **fixed-size tiles**: the same ``[columns, dim]``
  query matrix times always exactly :data:`TILE_ROWS` (2,048) document rows (``query @
  tile.T``; the last tile zero-padded), the tile 64-byte aligned, written straight into its
  columns of the block's similarities. MKL's per-element result depends on the shape (a
  product of 1, 2, 3 or 7 rows differs in the last bit from the same rows inside a larger one)
  but not on where a row sits in a fixed-shape tile, what else the tile holds, the result's row
  stride or offset, or how many threads run it (measured on 1 and 2 threads, dims 7-320, 16-512
  columns, every kind of placement; numpy's OpenBLAS ``matmul`` is *not* placement-invariant,
  so it is not used).
* A query's columns are padded with zero columns to a multiple of :data:`QUERY_COLUMNS`; so
  padded, its similarities are the same bits alone or stacked with other queries (measured),
  and a batch of queries shares each tile's GEMM.
* Per-document maxima are ``numpy.maximum.reduceat`` over the rows of each document: a maximum
  is exact whatever the order, and only a document's own rows take part (no padding is ever
  scored; the zero rows of a padded tile belong to no document). A document cut by a block
  end (:func:`scan_rows`) gets one partial maximum per block, and the maximum of those: the
  same bits as the maximum of all its rows at once.
* The sum over query vectors runs in one fixed order (``b[0] + b[1] + ... + b[n_q - 1]``,
  elementwise over documents), independent of how many documents are scored together.

Documents stored flat (:func:`maxsim_flat`, the public :func:`~latewise.scoring.maxsim`) are
walked in blocks of :func:`block_rows` rows (about :data:`BLOCK_VALUES` floats, whole tiles, so
a block stays in a core's cache) that start at multiples of the block size and cut documents
wherever they fall: every tile but the corpus's last is full and multiplied in place, with no
padding. Documents materialised a block at a time (:func:`maxsim_blocks`: float16, residual
codes) are walked in blocks of whole documents ending where their last tile is fullest. Blocks
are spread over the single-threaded scoring workers (:mod:`latewise.scoring._workers`); tiles
and similarity blocks are per-thread scratch buffers, reused by later calls. The kernel runs on
the CPU (inputs on other devices are copied).
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
    "MAX_COLUMNS",
    "QUERY_COLUMNS",
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
    "query_columns",
    "query_matrix",
    "row_starts",
    "scan_blocks",
    "scan_rows",
    "sum_best",
    "tile_similarities",
    "top_k",
]

logger = logging.getLogger(__name__)

#: Document rows per GEMM tile. Every tile has exactly this many rows (see the module docstring).
TILE_ROWS = 2_048
#: A query's columns in the GEMM are padded to a multiple of this (zero columns). A query's
#: similarities are then the same bits alone or stacked with other queries (measured on 1 and 2
#: threads, stacks of up to 2,240 columns, dims 7-320), so a batch shares each tile's GEMM.
QUERY_COLUMNS = 16
#: A batch of queries is stacked into GEMMs of at most about this many columns.
MAX_COLUMNS = 1_024
#: Floats of document rows per block (4 MiB of float32, 8,192 rows at dim 128): a block stays in
#: a core's L3 cache, and blocks are few enough that dispatching them costs little (measured:
#: 8,192 rows ~3% faster than 4,096, ~20% faster than 1,024 for one query).
BLOCK_VALUES = 1 << 20
#: Operands whose address is a multiple of this are multiplied in place (torch allocates at it).
_ALIGN = 64
_ALIGN_FLOATS = _ALIGN // 4
_CPU = torch.device("cpu")

#: ``fetch(a, b, r0, r1)``: documents ``a..b-1`` (rows ``r0..r1-1`` laid end to end).
Fetch = Callable[[int, int, int, int], torch.Tensor]


def query_columns(n_q: int) -> int:
    """Columns a query of ``n_q`` vectors takes in the kernel's GEMM: ``n_q`` rounded up to a
    multiple of :data:`QUERY_COLUMNS`."""
    return -(-n_q // QUERY_COLUMNS) * QUERY_COLUMNS


def query_matrix(queries: Sequence[torch.Tensor]) -> torch.Tensor:
    """Queries as the kernel multiplies them: a fresh, aligned float32 ``[columns, dim]`` CPU
    tensor, query ``i`` in rows ``off_i .. off_i + n_i - 1`` where ``off_i`` is the sum of
    :func:`query_columns` of the queries before it; the other rows are zero."""
    width = sum(query_columns(q.shape[0]) for q in queries)
    qm = torch.zeros(width, queries[0].shape[1], dtype=torch.float32)
    off = 0
    for q in queries:
        qm[off : off + q.shape[0]].copy_(q.detach())
        off += query_columns(q.shape[0])
    return qm


def tile_similarities(
    qm: torch.Tensor, rows: torch.Tensor, scratch: Scratch, name: str = "sim"
) -> torch.Tensor:
    """``qm @ rows.T``: float32 ``[columns, len(rows)]`` (a view of ``scratch``), computed one
    fixed-size tile of :data:`TILE_ROWS` rows at a time (``qm`` from :func:`query_matrix`).

    Full tiles of float32, contiguous, aligned rows are multiplied in place, straight into
    their columns of the result (a view whose rows start 64-byte aligned); anything else (the
    last partial tile, other dtypes, unaligned views) is first copied into a zero-padded aligned
    tile. Either way the GEMM has the same shape, so every row's similarities are the same bits
    wherever the row sits (measured: whatever the row's position in the tile, the tile's other
    rows, the result's row stride and offset, on 1 and 2 threads).
    """
    n_rows, dim = rows.shape
    width = qm.shape[0]
    stride = -(-n_rows // _ALIGN_FLOATS) * _ALIGN_FLOATS  # every result row 64-byte aligned
    sim = scratch.get(name, (width, stride), torch.float32, _CPU)[:, :n_rows]
    done = 0
    if (
        n_rows >= TILE_ROWS
        and rows.dtype == torch.float32
        and rows.is_contiguous()
        and rows.data_ptr() % _ALIGN == 0
    ):
        # Every full tile of aligned rows is aligned too (a tile is TILE_ROWS * dim * 4 bytes,
        # a multiple of 64): multiply them in place.
        done = n_rows // TILE_ROWS * TILE_ROWS
        for t in range(0, done, TILE_ROWS):
            torch.mm(qm, rows[t : t + TILE_ROWS].t(), out=sim[:, t : t + TILE_ROWS])
    if done < n_rows:
        tile = scratch.get("tile", (TILE_ROWS, dim), torch.float32, _CPU)
        product = scratch.get("product", (width, TILE_ROWS), torch.float32, _CPU)
        for t in range(done, n_rows, TILE_ROWS):
            m = min(TILE_ROWS, n_rows - t)
            tile[:m].copy_(rows[t : t + m])
            if m < TILE_ROWS:
                tile[m:].zero_()
                torch.mm(qm, tile.t(), out=product)
                sim[:, t : t + m].copy_(product[:, :m])
            else:
                torch.mm(qm, tile.t(), out=sim[:, t : t + TILE_ROWS])
    return sim


def block_best(sim: torch.Tensor, starts: np.ndarray) -> np.ndarray:
    """``out[j, k]``: the maximum of row ``j`` of ``sim`` (``[columns, rows]``, each row
    contiguous) over document ``k``'s columns (``starts[k]`` up to the next start, or the end),
    as ``[columns, n_docs]``: exact, whatever the order (``numpy.maximum.reduceat``)."""
    return np.maximum.reduceat(sim.numpy(), starts, axis=1)


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


def document_blocks(starts: list[int], rows: int, tile: int = 1) -> list[tuple[int, int]]:
    """Ranges ``(a, b)`` of whole documents of at most about ``rows`` rows each (a longer
    document gets a block of its own).

    With ``tile > 1`` a block ends, among the document boundaries between half and all of
    ``rows``, where its last ``tile``-row tile is fullest (the least zero padding).
    """
    blocks: list[tuple[int, int]] = []
    a, n = 0, len(starts) - 1
    while a < n:
        b = min(n, max(a + 1, bisect_right(starts, starts[a] + rows) - 1))
        if tile > 1 and b < n:
            lo = max(a + 1, bisect_right(starts, starts[a] + rows // 2) - 1)
            b = min(range(lo, b + 1), key=lambda e: ((starts[a] - starts[e]) % tile, -e))
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
    *,
    tile: int = 1,
) -> torch.Tensor:
    """Sum over query vectors of each document's best similarity, a block of whole documents
    at a time (for documents that are materialised a block at a time).

    Args:
        n_q: query vectors.
        counts: each document's number of rows (all ``>= 1``).
        rows: about this many rows per block (whole documents).
        similarities: ``similarities(a, b, r0, r1, scratch)``: float32 ``[>= n_q, r1 - r0]``
            similarities of the query vectors (its first ``n_q`` rows) to the rows of documents
            ``a..b-1``, each row contiguous (may live in ``scratch``, the running thread's
            buffers).
        tile: end blocks where their last tile of this many rows is fullest
            (:func:`document_blocks`).

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
        best[:, a:b] = block_best(sim[:n_q], first[a:b] - r0)

    run_tasks(document_blocks(starts, rows, tile), run, _CPU)
    return sum_best(best)


#: ``rows(r0, r1, scratch)``: rows ``r0..r1-1`` of the documents laid end to end.
Rows = Callable[[int, int, Scratch], torch.Tensor]
#: ``similarities(qm, rows, scratch)``: float32 ``[len(qm), len(rows)]``, each row contiguous.
Similarities = Callable[[torch.Tensor, torch.Tensor, Scratch], torch.Tensor]


def scan_rows(
    qms: Sequence[torch.Tensor],
    bounds: np.ndarray,
    rows: int,
    fetch: Rows,
    similarities: Similarities = tile_similarities,
) -> list[np.ndarray]:
    """Each document's best similarity to every column of each query matrix, over blocks of
    ``rows`` rows that cut documents wherever a block ends.

    Block ``k`` holds rows ``k * rows`` up to ``(k + 1) * rows`` of the documents laid end to
    end (with ``rows`` a multiple of :data:`TILE_ROWS` every tile but the very last is full and
    multiplied in place). A document cut by block ends gets one partial maximum per block it
    overlaps, and its maximum is the maximum of those: exact, so the same bits as the maximum
    over all its rows at once, as long as every row's similarities are the same bits wherever
    the row sits (:func:`tile_similarities`).

    Args:
        qms: query matrices (:func:`query_matrix`), all scored against each block while it is
            in the core's cache.
        bounds: int64 ``[n_docs + 1]``: document ``d`` is rows ``bounds[d]..bounds[d+1]-1``
            (increasing: every document has a row).
        rows: rows per block.
        fetch: ``fetch(r0, r1, scratch)``: the rows ``r0..r1-1`` (any float dtype).
        similarities: the kernel's :func:`tile_similarities` (or the non-exact bfloat16 one).

    Returns:
        One float32 ``[len(qm), n_docs]`` array per query matrix.
    """
    n_docs = len(bounds) - 1
    total = int(bounds[-1])
    best = [np.empty((qm.shape[0], n_docs), dtype=np.float32) for qm in qms]
    spans = [(r0, min(total, r0 + rows)) for r0 in range(0, total, rows)]
    # carried[k]: (document, partial maxima per query matrix) of the document that block k
    # continues (it started in an earlier block); merged once every block is done.
    carried: list[tuple[int, list[np.ndarray]] | None] = [None] * len(spans)

    def run(k: int) -> None:
        r0, r1 = spans[k]
        d0 = int(np.searchsorted(bounds, r0, side="right")) - 1  # the document holding r0
        d1 = int(np.searchsorted(bounds, r1, side="left"))  # documents d0..d1-1 overlap
        local = bounds[d0:d1] - r0
        cut = bool(local[0] < 0)
        local[0] = 0
        scratch = SCRATCH.here()
        block = fetch(r0, r1, scratch)
        heads = []
        for qm, into in zip(qms, best, strict=True):
            maxima = block_best(similarities(qm, block, scratch), local)
            if cut:
                heads.append(maxima[:, 0].copy())
                into[:, d0 + 1 : d1] = maxima[:, 1:]
            else:
                into[:, d0:d1] = maxima
        if cut:
            carried[k] = (d0, heads)

    run_tasks(range(len(spans)), run, _CPU)
    for item in carried:
        if item is not None:
            d, heads = item
            for into, head in zip(best, heads, strict=True):
                np.maximum(into[:, d], head, out=into[:, d])
    return best


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
        block_values: floats per block (default 4 MiB worth).

    Returns:
        float32 ``[len(counts)]`` scores.
    """
    _check_query(query)
    n_q = query.shape[0]
    qt = query_matrix([query])

    def similarities(a: int, b: int, r0: int, r1: int, scratch: Scratch) -> torch.Tensor:
        rows = fetch(a, b, r0, r1)
        if rows.dim() != 2 or rows.shape != (r1 - r0, qt.shape[1]):
            raise DimensionMismatchError(
                f"fetch({a}, {b}, {r0}, {r1}) returned shape {tuple(rows.shape)}; expected "
                f"{(r1 - r0, qt.shape[1])}"
            )
        return tile_similarities(qt, rows.to(_CPU), scratch)

    rows = block_rows(qt.shape[1], block_values)
    return scan_blocks(n_q, counts, rows, similarities, tile=TILE_ROWS)


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
    _check_flat(query, vectors, offsets)
    qt = query_matrix([query])
    bounds = offsets.detach().to(device=_CPU, dtype=torch.int64).numpy()
    best = scan_rows(
        [qt], bounds, block_rows(qt.shape[1]), lambda r0, r1, _: vectors[r0:r1].to(_CPU)
    )
    return sum_best(best[0][: query.shape[0]])


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
    n_q = query.shape[0]
    qt = query_matrix([query])
    matches = np.zeros((len(counts), n_q), dtype=np.int64)
    starts = row_starts(counts)

    def similarities(a: int, b: int, r0: int, r1: int, scratch: Scratch) -> torch.Tensor:
        sim = tile_similarities(qt, vectors[r0:r1].to(_CPU), scratch)
        values = sim.numpy()
        for k in range(a, b):
            s, e = starts[k] - r0, starts[k + 1] - r0
            matches[k] = values[:n_q, s:e].argmax(axis=1)
        return sim

    scores = scan_blocks(n_q, counts, block_rows(qt.shape[1]), similarities, tile=TILE_ROWS)
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
