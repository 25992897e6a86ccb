"""The public :func:`maxsim`: many queries against a corpus, through the exact kernel.

Every float32 score here is the kernel's (:mod:`latewise.scoring.exact`): the corpus is walked
in tile-aligned blocks of rows (:func:`~latewise.scoring.exact.scan_rows`; read in place, or
gathered for ``doc_indices``), each block on a single-threaded scoring worker, and every query
of the call is scored against a block while it is in that core's cache; a document cut by a
block end takes the maximum of its partial maxima. So ``maxsim(q, docs)[0, j]`` is
bit-identical to ``maxsim_flat(q, docs[j], ...)``, to the index's second stage and to
explanations.

``dtype=torch.bfloat16`` is a documented *non-exact* fast option: the GEMM runs in bfloat16 on
a cached bfloat16 copy of the corpus (2-3x the float32 rate on CPUs with bf16 units, scores
within ~1e-2); :meth:`MaxSimScorer.top_k` then re-scores the best candidates with the exact
kernel, so its values and ranking are the float32 ones.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import torch

from latewise.errors import DimensionMismatchError, InvalidInputError, InvalidInputTypeError
from latewise.scoring._workers import SCRATCH, Scratch
from latewise.scoring.exact import (
    MAX_COLUMNS,
    block_rows,
    check_k,
    query_columns,
    query_matrix,
    scan_rows,
    sum_best,
    tile_similarities,
    top_k,
)
from latewise.scoring.packed import (
    PackedVectors,
    VectorsLike,
    _as_packed,
    _check_indices,
    offsets_of,
    run_rows,
)

__all__ = ["MaxSimScorer", "maxsim"]

_CPU = torch.device("cpu")
_COMPUTE_DTYPES = (torch.float32, torch.bfloat16)
#: A block's similarities take at most about this many floats (2 MiB), so that the per-document
#: maxima read them from the cache: a batch of queries gets proportionally fewer rows per block.
_SIM_VALUES = 1 << 19


def _compute_dtype(dtype: torch.dtype | None, stored: torch.dtype) -> torch.dtype:
    """``dtype`` checked, or the default for vectors stored in ``stored`` (bfloat16 corpora
    score in bfloat16, all others with the exact float32 kernel)."""
    if dtype is None:
        return torch.bfloat16 if stored == torch.bfloat16 else torch.float32
    if dtype not in _COMPUTE_DTYPES:
        raise InvalidInputTypeError(
            f"dtype must be torch.float32 (exact) or torch.bfloat16 (fast, approximate) or "
            f"None, got {dtype!r}"
        )
    return dtype


class MaxSimScorer:
    """Scores queries against one fixed corpus: float32 through the exact kernel, or bfloat16.

    Holds a reference to the corpus (no copy; a bfloat16 copy for ``dtype=torch.bfloat16``).
    Thread-safe: every thread has its own scratch buffers.

    Args:
        documents: the corpus (a :class:`PackedVectors`, or anything :func:`maxsim` accepts).
        dtype: ``torch.float32`` (exact, the kernel) or ``torch.bfloat16`` (2-3x faster on CPUs
            with bf16 units, scores within ~1e-2). Default: bfloat16 for a bfloat16 corpus,
            float32 otherwise.
        chunk_tokens: document rows per block (a block's similarities take ``chunk_tokens x
            query rows`` floats; blocks cut documents, whose partial maxima are merged
            exactly). Default: 4 MiB of rows (8,192 at dim 128), fewer for batches of queries
            (similarities of about 2 MiB), always whole tiles of 2,048 rows; other values cost
            a zero-padded tile per block.

    Example:
        >>> corpus = PackedVectors.from_list([torch.randn(30, 16) for _ in range(100)])
        >>> scorer = MaxSimScorer(corpus, dtype=torch.bfloat16)
        >>> values, indices = scorer.top_k([torch.randn(4, 16)], k=5)   # bf16 + exact rescoring
        >>> scorer.score([torch.randn(4, 16)], doc_indices=[3, 7]).shape
        torch.Size([1, 2])
    """

    def __init__(
        self,
        documents: VectorsLike,
        *,
        dtype: torch.dtype | None = None,
        chunk_tokens: int | None = None,
    ) -> None:
        if chunk_tokens is not None and (
            isinstance(chunk_tokens, bool) or not isinstance(chunk_tokens, int) or chunk_tokens < 1
        ):
            raise InvalidInputError(f"chunk_tokens must be a positive int, got {chunk_tokens!r}")
        if dtype is not None and not isinstance(dtype, torch.dtype):
            raise InvalidInputTypeError(f"dtype must be a torch.dtype, got {type(dtype).__name__}")
        self.documents = _as_packed(documents, "documents")
        self.dtype = _compute_dtype(dtype, self.documents.vectors.dtype)
        self.chunk_tokens = chunk_tokens
        self._bf16: torch.Tensor | None = None
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.documents)

    def __repr__(self) -> str:
        return f"MaxSimScorer(n_docs={len(self)}, dim={self.documents.dim}, dtype={self.dtype})"

    @property
    def nbytes(self) -> int:
        """Bytes of the corpus copy this scorer holds (bfloat16 only; float32 reads in place)."""
        copy = self._bf16
        return 0 if copy is None else copy.numel() * copy.element_size()

    @property
    def scratch_bytes(self) -> int:
        """Bytes of scratch buffers (tiles, similarity blocks) held by all scoring threads, this
        scorer's and others': allocated on first use, reused by later calls."""
        return SCRATCH.nbytes()

    def prepare(self) -> MaxSimScorer:
        """Make the bfloat16 copy now rather than on the first scoring; returns self."""
        self._source()
        return self

    def _source(self) -> torch.Tensor:
        """The rows scored: the corpus on the CPU (any float dtype, converted tile by tile), or
        its bfloat16 copy."""
        vectors = self.documents.vectors
        if self.dtype == torch.float32:
            return vectors.to(_CPU)
        if self._bf16 is None:
            with self._lock:
                if self._bf16 is None:
                    self._bf16 = vectors.to(device=_CPU, dtype=torch.bfloat16).contiguous()
        return self._bf16

    def score(
        self,
        queries: VectorsLike,
        *,
        doc_indices: Sequence[int] | torch.Tensor | None = None,
        out: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """MaxSim of every query against every document (or the documents at ``doc_indices``).

        Args:
            queries: a list of ``[n_i, dim]`` tensors, one ``[n, dim]`` tensor (one query), a
                3-D tensor (every row of every query is used), or :class:`PackedVectors`.
            doc_indices: score only these documents (in this order; repeats allowed). Only
                their rows are gathered, a block at a time: the corpus is never copied.
            out: an optional float32 ``[n_queries, n_columns]`` CPU tensor to write into.

        Returns:
            float32 ``[n_queries, n_docs]`` on the CPU (``n_docs = len(doc_indices)`` when
            given).

        Raises:
            DimensionMismatchError: queries and documents have different dimensions.
            EmptyInputError, InvalidInputError, InvalidInputTypeError: malformed inputs.
        """
        q = _as_packed(queries, "queries")
        docs = self.documents
        if q.dim != docs.dim:
            raise DimensionMismatchError(
                f"queries have dim {q.dim} but documents have dim {docs.dim}; "
                "encode both with the same encoder"
            )
        idx = None if doc_indices is None else _check_indices(doc_indices, len(docs), _CPU)
        n_cols = len(docs) if idx is None else idx.numel()
        if out is None:
            out = torch.empty(len(q), n_cols, dtype=torch.float32)
        elif (
            not isinstance(out, torch.Tensor)
            or out.shape != (len(q), n_cols)
            or out.dtype != torch.float32
            or out.device != _CPU
        ):
            raise InvalidInputError(
                f"out must be a float32 CPU tensor of shape {(len(q), n_cols)}, got "
                f"{getattr(out, 'dtype', type(out).__name__)} {tuple(getattr(out, 'shape', ()))}"
            )
        source = self._source()
        exact = self.dtype == torch.float32
        if idx is None:
            bounds = docs.offsets.to(_CPU).numpy()

            def fetch(r0: int, r1: int, scratch: Scratch) -> torch.Tensor:
                return source[r0:r1]

        else:
            lengths = docs.lengths.cpu().index_select(0, idx)
            bounds = offsets_of(lengths).numpy()
            index = run_rows(docs.offsets[:-1].cpu().index_select(0, idx), lengths)

            def fetch(r0: int, r1: int, scratch: Scratch) -> torch.Tensor:
                rows = scratch.get("gather", (r1 - r0, docs.dim), source.dtype, _CPU)
                return torch.index_select(source, 0, index[r0:r1], out=rows)

        items = [t.to(_CPU) for t in q.to_list()]
        groups = _stacks(items)
        qts = [query_matrix(items[g0:g1]) for g0, g1 in groups]
        if not exact:
            qts = [qt.to(torch.bfloat16) for qt in qts]
        widest = max(int(qm.shape[0]) for qm in qts)
        rows = self.chunk_tokens or min(block_rows(docs.dim), block_rows(widest, _SIM_VALUES))
        similarities = tile_similarities if exact else _bf16_similarities
        maxima = scan_rows(qts, bounds, rows, fetch, similarities)
        for (g0, g1), best in zip(groups, maxima, strict=True):
            off = 0
            for i in range(g0, g1):
                n_q = items[i].shape[0]
                out[i] = sum_best(best[off : off + n_q])
                off += query_columns(n_q)
        return out

    def top_k(
        self, queries: VectorsLike, k: int, *, rescore: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``k`` best documents per query, best first.

        Scores every document in the scorer's dtype; in bfloat16, the best ``rescore``
        candidates per query (default ``max(4 * k, k + 64)``) are re-scored with the exact
        float32 kernel, so values and ranking match the float32 path unless a true top-``k``
        document fell below the candidate cut.

        Args:
            queries: as for :meth:`score`.
            k: how many documents to return per query.
            rescore: how many candidates per query to re-score in float32 (0: none, return
                the bfloat16 scores as they are).

        Returns:
            ``(values, indices)``: float32 and int64 ``[n_queries, min(k, n_docs)]``.

        Raises:
            InvalidInputError, InvalidInputTypeError: a bad ``k`` or ``rescore``.
        """
        k = check_k(k)
        if rescore is not None and (
            isinstance(rescore, bool) or not isinstance(rescore, int) or rescore < 0
        ):
            raise InvalidInputError(f"rescore must be an int >= 0 or None, got {rescore!r}")
        scores = self.score(queries)
        if self.dtype == torch.float32 or rescore == 0:
            return top_k(scores, k)
        depth = min(len(self), max(k, rescore if rescore is not None else max(4 * k, k + 64)))
        candidates = torch.topk(scores, depth, dim=1).indices
        union, inverse = torch.unique(candidates, return_inverse=True)
        exact = self.documents.scorer(torch.float32).score(queries, doc_indices=union)
        exact_cand = torch.gather(exact, 1, inverse)
        values, pos = torch.topk(exact_cand, min(k, depth), dim=1)
        return values, torch.gather(candidates, 1, pos)


def _stacks(queries: list[torch.Tensor]) -> list[tuple[int, int]]:
    """Ranges of consecutive queries whose padded columns add up to at most
    :data:`MAX_COLUMNS` (a longer query alone)."""
    groups: list[tuple[int, int]] = []
    start, width = 0, 0
    for i, t in enumerate(queries):
        cols = query_columns(t.shape[0])
        if i > start and width + cols > MAX_COLUMNS:
            groups.append((start, i))
            start, width = i, 0
        width += cols
    groups.append((start, len(queries)))
    return groups


def _bf16_similarities(qm: torch.Tensor, rows: torch.Tensor, scratch: Scratch) -> torch.Tensor:
    """``qm @ rows.T`` in bfloat16, as float32 ``[columns, len(rows)]`` (approximate)."""
    width = qm.shape[0]
    product = scratch.get("product16", (width, rows.shape[0]), torch.bfloat16, _CPU)
    torch.mm(qm, rows.t(), out=product)
    sim = scratch.get("sim", (width, rows.shape[0]), torch.float32, _CPU)
    sim.copy_(product)  # float32 reductions are vectorised; bf16 ones are ~40x slower
    return sim


def maxsim(
    queries: VectorsLike,
    documents: VectorsLike,
    *,
    dtype: torch.dtype | None = None,
    chunk_tokens: int | None = None,
    doc_indices: Sequence[int] | torch.Tensor | None = None,
) -> torch.Tensor:
    """Exact MaxSim scores of every query against every document (the kernel's float32 bits).

    Args:
        queries: a list of ``[n_i, dim]`` tensors, a ``[n, dim]`` tensor (one query), a 3-D tensor
            (every row of every query is used), or :class:`PackedVectors`.
        documents: the same forms; pass :class:`PackedVectors` to score many query batches
            against one corpus (its scorers, and a bfloat16 copy if asked for, are cached on it).
        dtype: ``torch.float32`` (exact) or ``torch.bfloat16``: 2-3x faster on CPUs with bf16
            units, scores within ~1e-2 - not exact (use :meth:`MaxSimScorer.top_k` for a
            ranking with exact values). Default: bfloat16 for bfloat16 documents, else float32.
        chunk_tokens: document rows per block, which bounds similarity memory to
            ``chunk_tokens x query rows`` values per scoring thread (blocks cut documents;
            their partial maxima are merged exactly).
        doc_indices: score only the documents at these indices (candidates), in this order,
            without copying the corpus.

    Returns:
        A float32 CPU tensor ``[n_queries, n_documents]`` (``n_documents = len(doc_indices)``
        when given).

    Raises:
        DimensionMismatchError: queries and documents have different dimensions.
        EmptyInputError, InvalidInputError, InvalidInputTypeError: malformed inputs.

    Example:
        >>> q = [torch.randn(3, 8)]
        >>> d = [torch.randn(5, 8), torch.randn(1, 8)]
        >>> maxsim(q, d).shape
        torch.Size([1, 2])
    """
    if isinstance(documents, PackedVectors):
        scorer = documents.scorer(dtype, chunk_tokens=chunk_tokens)
    else:
        scorer = MaxSimScorer(documents, dtype=dtype, chunk_tokens=chunk_tokens)
    return scorer.score(queries, doc_indices=doc_indices)
