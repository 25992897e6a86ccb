"""Variable-length multi-vectors stored flat (:class:`PackedVectors`) and the helpers that
lay items end to end (:func:`offsets_of`, :func:`run_rows`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from latewise.errors import (
    DimensionMismatchError,
    EmptyInputError,
    InvalidInputError,
    InvalidInputTypeError,
)
from latewise.scoring._workers import run_tasks

if TYPE_CHECKING:
    from typing import TypeAlias

    from latewise.scoring.scorer import MaxSimScorer

__all__ = ["PackedVectors", "VectorsLike", "offsets_of", "run_rows"]

#: Items concatenated on the calling thread below this many rows (workers above).
_CONCAT_INLINE_ROWS = 1 << 16
_FLOAT_DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.float64)


def offsets_of(counts: Sequence[int] | torch.Tensor) -> torch.Tensor:
    """``[0, c0, c0 + c1, ...]``: int64 offsets (``len(counts) + 1``) of items laid end to end."""
    lengths = torch.as_tensor(counts, dtype=torch.int64)
    offsets = torch.zeros(lengths.numel() + 1, dtype=torch.int64, device=lengths.device)
    torch.cumsum(lengths, 0, out=offsets[1:])
    return offsets


def run_rows(starts: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """The row numbers of runs ``starts[i] .. starts[i] + lengths[i] - 1``, concatenated
    (int64, on ``starts``' device): what gathers a set of items stored as runs of rows."""
    if starts.device.type == "cpu":  # numpy's repeat is ~2x torch's repeat_interleave here
        import numpy as np

        s, n = starts.to(torch.int64).numpy(), lengths.to(torch.int64).numpy()
        if n.size == 0:
            return torch.empty(0, dtype=torch.int64)
        ends = np.cumsum(n)
        rows = np.repeat(s - (ends - n), n)
        rows += np.arange(int(ends[-1]), dtype=np.int64)
        return torch.from_numpy(rows)
    return _run_rows_torch(starts, lengths)


def _run_rows_torch(starts: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """:func:`run_rows` with torch ops only (for tensors on an accelerator)."""
    offsets = offsets_of(lengths)
    owner = torch.repeat_interleave(torch.arange(lengths.numel(), device=starts.device), lengths)
    index = starts.index_select(0, owner) + torch.arange(int(offsets[-1]), device=starts.device)
    return index - offsets[:-1].index_select(0, owner)


def _check_dtype(dtype: torch.dtype | None) -> None:
    if dtype is not None and dtype not in _FLOAT_DTYPES:
        raise InvalidInputTypeError(
            f"dtype must be one of {[str(d) for d in _FLOAT_DTYPES]} or None, got {dtype!r}; "
            "use torch.float32 (exact) or torch.bfloat16 (fast)"
        )


@dataclass(eq=False)
class PackedVectors:
    """Variable-length multi-vectors stored flat: ``vectors[offsets[i]:offsets[i + 1]]`` is item i.

    Build one with :meth:`from_list` (or directly from a flat matrix and ``int64`` offsets that
    start at 0, never decrease and end at ``len(vectors)``); keep it around to score many queries
    against the same corpus. Scoring in ``torch.bfloat16`` caches a bfloat16 copy of the
    vectors here (half their float32 size); :meth:`clear_cache` frees it.

    Example:
        >>> docs = PackedVectors.from_list([torch.randn(5, 8), torch.randn(2, 8)])
        >>> len(docs), docs.dim, docs.lengths.tolist()
        (2, 8, [5, 2])
    """

    vectors: torch.Tensor
    offsets: torch.Tensor
    _scorers: dict[tuple[torch.dtype, int | None], MaxSimScorer] = field(
        default_factory=dict, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        if not isinstance(self.vectors, torch.Tensor) or not isinstance(self.offsets, torch.Tensor):
            raise InvalidInputTypeError(
                "PackedVectors needs a [total, dim] tensor and an int64 offsets tensor, got "
                f"{type(self.vectors).__name__} and {type(self.offsets).__name__}"
            )
        self.vectors = self.vectors.detach()  # scoring is inference: no autograd graph
        if self.vectors.dim() != 2:
            raise InvalidInputError(
                "PackedVectors.vectors must be 2-D [total, dim], got shape "
                f"{tuple(self.vectors.shape)}"
            )
        if self.offsets.dim() != 1 or self.offsets.numel() < 2:
            raise EmptyInputError(
                "PackedVectors.offsets must be 1-D with at least 2 entries (one item), got shape "
                f"{tuple(self.offsets.shape)}"
            )
        if self.offsets.dtype != torch.int64:
            if self.offsets.is_floating_point():
                raise InvalidInputTypeError(
                    f"PackedVectors.offsets must be integers, got {self.offsets.dtype}"
                )
            self.offsets = self.offsets.to(torch.int64)
        offsets_cpu = self.offsets.cpu()
        if int(offsets_cpu[0]) != 0 or int(offsets_cpu[-1]) != self.vectors.shape[0]:
            raise InvalidInputError(
                f"PackedVectors.offsets must start at 0 and end at len(vectors) = "
                f"{self.vectors.shape[0]}, got {int(offsets_cpu[0])} .. {int(offsets_cpu[-1])}"
            )
        empty = torch.nonzero(offsets_cpu[1:] <= offsets_cpu[:-1]).flatten().tolist()
        if empty:
            raise EmptyInputError(
                f"items at positions {empty[:10]} have no vectors (offsets must increase); "
                "every item needs at least one vector",
                empty,
            )

    @classmethod
    def from_list(
        cls,
        items: Sequence[torch.Tensor],
        *,
        dtype: torch.dtype | None = None,
        what: str = "documents",
    ) -> PackedVectors:
        """Pack a list of ``[n_i, dim]`` tensors (checked: 2-D, same dim, non-empty).

        Args:
            items: the multi-vectors, one ``[n_i, dim]`` tensor per item.
            dtype: store the vectors in this dtype (default: the first item's floating dtype,
                float32 for integer input).
            what: how error messages name the items ("documents", "queries").

        Raises:
            InvalidInputTypeError: ``items`` is not a list of tensors.
            EmptyInputError: ``items`` is empty, or an item has no rows.
            InvalidInputError: an item is not 2-D.
            DimensionMismatchError: items have different dimensions.
        """
        _check_dtype(dtype)
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
        if dim == 0:
            raise EmptyInputError(f"{what} have dimension 0; vectors need at least one component")
        offsets = offsets_of([t.shape[0] for t in items])
        target = dtype or (items[0].dtype if items[0].is_floating_point() else torch.float32)
        vectors = _concat(items, offsets.tolist(), target)
        return cls(vectors.contiguous(), offsets.to(vectors.device))

    def __len__(self) -> int:
        return int(self.offsets.numel() - 1)

    @property
    def dim(self) -> int:
        """The vector dimension."""
        return int(self.vectors.shape[1])

    @property
    def lengths(self) -> torch.Tensor:
        """``int64 [n_items]``: the number of vectors of each item."""
        return self.offsets[1:] - self.offsets[:-1]

    def __getitem__(self, i: int) -> torch.Tensor:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"item {i} out of range for {n} items")
        i %= n
        return self.vectors[int(self.offsets[i]) : int(self.offsets[i + 1])]

    def to_list(self) -> list[torch.Tensor]:
        """The items as a list of ``[n_i, dim]`` views."""
        bounds = self.offsets.tolist()
        return [self.vectors[bounds[i] : bounds[i + 1]] for i in range(len(self))]

    def to(self, dtype: torch.dtype) -> PackedVectors:
        """A copy with vectors cast to ``dtype`` (e.g. ``torch.bfloat16`` to halve memory)."""
        _check_dtype(dtype)
        return PackedVectors(self.vectors.to(dtype), self.offsets)

    def select(self, indices: Sequence[int] | torch.Tensor) -> PackedVectors:
        """A new :class:`PackedVectors` holding only the items at ``indices``, in that order.

        Copies the selected items' vectors only. To *score* a subset, prefer
        ``maxsim(queries, packed, doc_indices=...)``, which copies nothing but the rows it
        needs, chunk by chunk.

        Raises:
            InvalidInputError: an index is out of range.
        """
        idx = _check_indices(indices, len(self), self.offsets.device)
        starts = self.offsets[:-1].index_select(0, idx)
        lengths = self.lengths.index_select(0, idx)
        rows = run_rows(starts, lengths)
        return PackedVectors(self.vectors.index_select(0, rows), offsets_of(lengths))

    def scorer(
        self, dtype: torch.dtype | None = None, *, chunk_tokens: int | None = None
    ) -> MaxSimScorer:
        """The cached :class:`~latewise.scoring.MaxSimScorer` of this corpus for ``dtype``
        (created on first use)."""
        from latewise.scoring.scorer import MaxSimScorer, _compute_dtype

        key = (_compute_dtype(dtype, self.vectors.dtype), chunk_tokens)
        found = self._scorers.get(key)
        if found is None:
            found = MaxSimScorer(self, dtype=key[0], chunk_tokens=chunk_tokens)
            self._scorers[key] = found
        return found

    def clear_cache(self) -> None:
        """Drop the cached scorers (and their bfloat16 copies)."""
        self._scorers.clear()


def _concat(items: Sequence[torch.Tensor], bounds: list[int], dtype: torch.dtype) -> torch.Tensor:
    """``torch.cat`` of many small tensors, on the scoring workers when it is large.

    One ``torch.cat`` of thousands of items runs one OpenMP region per item; on a busy machine
    that took 30 s for 10k documents (1.7M rows) against 0.8 s single-threaded. Each worker
    concatenates a contiguous group of items into its slice of the output instead.
    """
    device = items[0].device
    if len(items) == 1:
        return items[0].detach().to(dtype).contiguous()
    out = torch.empty(bounds[-1], items[0].shape[1], dtype=dtype, device=device)
    step = max(1, len(items) // (4 * max(1, torch.get_num_threads())))
    groups = [(a, min(a + step, len(items))) for a in range(0, len(items), step)]
    if bounds[-1] < _CONCAT_INLINE_ROWS:
        groups = [(0, len(items))]

    def run(group: tuple[int, int]) -> None:
        a, b = group
        torch.cat([t.detach().to(dtype) for t in items[a:b]], out=out[bounds[a] : bounds[b]])

    run_tasks(groups, run, device)
    return out


VectorsLike: TypeAlias = Sequence[torch.Tensor] | torch.Tensor | PackedVectors


def _check_indices(
    indices: Sequence[int] | torch.Tensor, n: int, device: torch.device
) -> torch.Tensor:
    if not isinstance(indices, torch.Tensor) and hasattr(indices, "__array__"):
        indices = torch.as_tensor(indices)  # a NumPy array
    if isinstance(indices, torch.Tensor):
        if indices.is_floating_point() or indices.dtype == torch.bool or indices.dim() > 1:
            raise InvalidInputTypeError(
                "doc_indices must be a 1-D integer tensor or a sequence of ints, got a "
                f"{indices.dtype} tensor of shape {tuple(indices.shape)}"
            )
        idx = indices.reshape(-1).to(device=device, dtype=torch.int64)
    else:
        if isinstance(indices, str | bytes) or not isinstance(indices, Sequence | range):
            raise InvalidInputTypeError(
                f"doc_indices must be a sequence of ints or a tensor, got {type(indices).__name__}"
            )
        bad = [p for p, v in enumerate(indices) if isinstance(v, bool) or not isinstance(v, int)]
        if bad:
            raise InvalidInputTypeError(
                f"doc_indices must be ints; positions {bad[:10]} are not", bad
            )
        idx = torch.tensor(list(indices), dtype=torch.int64, device=device)
    if idx.numel() == 0:
        raise EmptyInputError("doc_indices is empty; pass at least one document index")
    out_of_range = torch.nonzero((idx < 0) | (idx >= n)).flatten().tolist()
    if out_of_range:
        raise InvalidInputError(
            f"doc_indices at positions {out_of_range[:10]} are out of range for {n} documents "
            f"(values {idx[out_of_range[:10]].tolist()}); use 0 .. {n - 1}",
            out_of_range,
        )
    return idx


def _as_packed(x: VectorsLike, what: str) -> PackedVectors:
    if isinstance(x, PackedVectors):
        return x
    if isinstance(x, torch.Tensor):
        if x.dim() == 2:
            return PackedVectors.from_list([x], what=what)
        if x.dim() == 3:
            return PackedVectors.from_list(list(x), what=what)
        raise InvalidInputError(
            f"{what} tensor must be 2-D [n, dim] (one item) or 3-D [items, n, dim], got shape "
            f"{tuple(x.shape)}"
        )
    if isinstance(x, str | bytes) or not isinstance(x, Sequence):
        raise InvalidInputTypeError(
            f"{what} must be a list of [n, dim] tensors, a tensor or PackedVectors, got "
            f"{type(x).__name__}"
        )
    return PackedVectors.from_list(list(x), what=what)
