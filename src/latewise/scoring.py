"""Exact MaxSim (late-interaction) scoring, batched and memory-bounded.

``score(q, d) = sum_i max_j <q_i, d_j>`` over the rows of a query matrix ``q`` and a document
matrix ``d``. Documents are kept *packed*: one flat ``[total_tokens, dim]`` matrix plus offsets,
so no padding exists and none can be scored (the classic bug of scoring padded slots as 0 instead
of ignoring them cannot happen here). The corpus is walked in chunks of at most ``chunk_tokens``
rows through one reused similarity buffer, so memory stays bounded however large the corpus.

This module knows tensors and nothing else.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Union

import torch

from latewise.errors import (
    DimensionMismatchError,
    EmptyInputError,
    InvalidInputError,
    InvalidInputTypeError,
)

if TYPE_CHECKING:
    from typing import TypeAlias

__all__ = ["PackedVectors", "maxsim", "maxsim_matches", "top_k"]

DEFAULT_CHUNK_TOKENS = 32_768


@dataclass
class PackedVectors:
    """Variable-length multi-vectors stored flat: ``vectors[offsets[i]:offsets[i + 1]]`` is item i.

    Build one with :meth:`from_list`; keep it around to score many queries against the same
    corpus without re-packing.
    """

    vectors: torch.Tensor
    offsets: torch.Tensor
    _chunks: dict[int, list[tuple[int, int]]] = field(default_factory=dict, repr=False)

    @classmethod
    def from_list(
        cls, items: Sequence[torch.Tensor], *, dtype: torch.dtype | None = None, what: str = "documents"
    ) -> PackedVectors:
        """Pack a list of ``[n_i, dim]`` tensors (checked: 2-D, same dim, non-empty)."""
        if isinstance(items, torch.Tensor):
            items = [items] if items.dim() == 2 else list(items)
        if not isinstance(items, list | tuple):
            raise InvalidInputTypeError(
                f"{what} must be a list of [n, dim] tensors, got {type(items).__name__}"
            )
        if len(items) == 0:
            raise EmptyInputError(f"{what} is empty; pass at least one [n, dim] tensor")
        bad_type = [i for i, t in enumerate(items) if not isinstance(t, torch.Tensor)]
        if bad_type:
            raise InvalidInputTypeError(
                f"{what} must be tensors; got {type(items[bad_type[0]]).__name__} at positions "
                f"{bad_type[:10]}",
                bad_type,
            )
        bad_rank = [i for i, t in enumerate(items) if t.dim() != 2]
        if bad_rank:
            raise InvalidInputError(
                f"{what} must be 2-D [n, dim] tensors; positions {bad_rank[:10]} are not",
                bad_rank,
            )
        dim = items[0].shape[1]
        bad_dim = [i for i, t in enumerate(items) if t.shape[1] != dim]
        if bad_dim:
            raise DimensionMismatchError(
                f"{what} mix dimensions: position 0 has dim {dim}, positions {bad_dim[:10]} have "
                f"{sorted({int(items[i].shape[1]) for i in bad_dim})}"
            )
        empty = [i for i, t in enumerate(items) if t.shape[0] == 0]
        if empty:
            raise EmptyInputError(
                f"{what} at positions {empty[:10]} have no vectors; every item needs at least one",
                empty,
            )
        lengths = torch.tensor([t.shape[0] for t in items], dtype=torch.int64)
        offsets = torch.zeros(len(items) + 1, dtype=torch.int64)
        torch.cumsum(lengths, 0, out=offsets[1:])
        target = dtype or (items[0].dtype if items[0].is_floating_point() else torch.float32)
        vectors = torch.cat([t.to(target) for t in items]) if len(items) > 1 else items[0].to(target)
        return cls(vectors.contiguous(), offsets)

    def __len__(self) -> int:
        return int(self.offsets.numel() - 1)

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    @property
    def lengths(self) -> torch.Tensor:
        return self.offsets[1:] - self.offsets[:-1]

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.vectors[int(self.offsets[i]) : int(self.offsets[i + 1])]

    def to_list(self) -> list[torch.Tensor]:
        return [self[i] for i in range(len(self))]

    def to(self, dtype: torch.dtype) -> PackedVectors:
        """A copy with vectors cast to ``dtype`` (e.g. ``torch.bfloat16`` for fast scoring)."""
        return PackedVectors(self.vectors.to(dtype), self.offsets)

    def chunks(self, chunk_tokens: int) -> list[tuple[int, int]]:
        """Item ranges ``[start, end)`` whose token count is at most ``chunk_tokens``.

        An item longer than ``chunk_tokens`` gets a chunk of its own.
        """
        cached = self._chunks.get(chunk_tokens)
        if cached is not None:
            return cached
        bounds: list[tuple[int, int]] = []
        offsets = self.offsets.tolist()
        start = 0
        for i in range(1, len(offsets)):
            if offsets[i] - offsets[start] > chunk_tokens and i - 1 > start:
                bounds.append((start, i - 1))
                start = i - 1
        bounds.append((start, len(offsets) - 1))
        self._chunks[chunk_tokens] = bounds
        return bounds


VectorsLike: TypeAlias = Union[Sequence[torch.Tensor], torch.Tensor, PackedVectors]


def _as_packed(x: VectorsLike, what: str) -> PackedVectors:
    if isinstance(x, PackedVectors):
        return x
    if isinstance(x, torch.Tensor):
        if x.dim() == 2:
            return PackedVectors.from_list([x], what=what)
        if x.dim() == 3:
            return PackedVectors.from_list(list(x), what=what)
        raise InvalidInputError(f"{what} tensor must be 2-D or 3-D, got shape {tuple(x.shape)}")
    return PackedVectors.from_list(list(x) if isinstance(x, tuple) else x, what=what)  # type: ignore[arg-type]


def maxsim(
    queries: VectorsLike,
    documents: VectorsLike,
    *,
    dtype: torch.dtype | None = None,
    chunk_tokens: int = DEFAULT_CHUNK_TOKENS,
) -> torch.Tensor:
    """Exact MaxSim scores of every query against every document.

    Args:
        queries: a list of ``[n_i, dim]`` tensors, a ``[n, dim]`` tensor (one query), a 3-D tensor
            (every row of every query is used), or :class:`PackedVectors`.
        documents: the same forms; pass :class:`PackedVectors` to score many query batches
            against one corpus without re-packing it.
        dtype: the compute dtype; ``torch.bfloat16`` is ~2x faster on CPUs with bf16 matrix units
            and keeps rankings (scores within ~1e-2). Defaults to the documents' dtype.
        chunk_tokens: at most this many document rows are compared at once, which bounds memory
            to ``chunk_tokens x total_query_rows`` similarities.

    Returns:
        A float32 tensor ``[n_queries, n_documents]``.

    Raises:
        DimensionMismatchError: queries and documents have different dimensions.
        EmptyInputError, InvalidInputError, InvalidInputTypeError: malformed inputs.
    """
    q = _as_packed(queries, "queries")
    d = _as_packed(documents, "documents")
    if q.dim != d.dim:
        raise DimensionMismatchError(
            f"queries have dim {q.dim} but documents have dim {d.dim}; "
            "encode both with the same encoder"
        )
    compute = dtype or (d.vectors.dtype if d.vectors.is_floating_point() else torch.float32)
    qv = q.vectors.to(compute)
    n_q, n_tq = len(q), qv.shape[0]
    # Sums each query's rows: [n_tq] -> [n_q] as a matrix product with a 0/1 indicator.
    owner = torch.repeat_interleave(torch.arange(n_q), q.lengths)
    indicator = torch.zeros(n_tq, n_q, dtype=torch.float32)
    indicator[torch.arange(n_tq), owner] = 1.0
    out = torch.empty(n_q, len(d), dtype=torch.float32)
    chunks = d.chunks(chunk_tokens)
    offsets = d.offsets
    lengths = d.lengths
    biggest = max(int(offsets[e] - offsets[s]) for s, e in chunks)
    buf = torch.empty(biggest, n_tq, dtype=compute)
    qt = qv.t()
    for s, e in chunks:
        lo, hi = int(offsets[s]), int(offsets[e])
        sim = buf[: hi - lo]
        torch.matmul(d.vectors[lo:hi].to(compute), qt, out=sim)
        best = torch.segment_reduce(sim, "max", lengths=lengths[s:e], axis=0)
        out[:, s:e] = (best.float() @ indicator).t()
    return out


def maxsim_matches(query: torch.Tensor, document: torch.Tensor) -> tuple[float, torch.Tensor]:
    """MaxSim of one query against one document, with the matched document row per query row.

    Returns:
        ``(score, matches)`` where ``matches[i]`` is the index of the document vector that query
        vector ``i`` matched best (what explanations show).
    """
    if query.shape[-1] != document.shape[-1]:
        raise DimensionMismatchError(
            f"query has dim {query.shape[-1]} but document has dim {document.shape[-1]}"
        )
    sim = query.float() @ document.float().t()
    values, matches = sim.max(dim=1)
    return float(values.sum()), matches


def top_k(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` best documents per query from a ``[n_q, n_d]`` score matrix.

    Returns:
        ``(values, indices)``, each ``[n_q, min(k, n_d)]``, best first.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if scores.dim() == 1:
        scores = scores.unsqueeze(0)
    return torch.topk(scores, min(k, scores.shape[1]), dim=1, largest=True, sorted=True)
