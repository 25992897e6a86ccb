"""Exact MaxSim (late-interaction) scoring, batched, memory-bounded and fast on CPUs.

``score(q, d) = sum_i max_j <q_i, d_j>`` over the rows of a query matrix ``q`` and a document
matrix ``d``. Documents of different lengths are never padded with zeros: nothing but a
document's own vectors can win its ``max``.

How it is fast (measured on a 2-core CPU, see ``bench/maxsim.py``):

* Documents are kept *packed* (:class:`PackedVectors`: one flat ``[total_tokens, dim]`` matrix
  plus offsets), the form an index holds and reuses across queries.
* For scoring, a :class:`MaxSimScorer` builds once a *length-bucketed* copy of the corpus in the
  compute dtype: documents are grouped by length rounded up to a small step (at most 1/32 of the
  length, ~1 % extra rows), and each document is brought to its group's length by **repeating
  its own last vector**. A repeated vector cannot change a maximum, so this "padding" is exact
  by construction (no zero or ``-inf`` slot ever exists), and every group is a dense
  ``[n_docs, length, dim]`` block: one GEMM per chunk of rows, then one strided ``amax`` - no
  per-document loop and no segment reduction (``segment_reduce`` costs ~50x the ``amax``).
* The corpus is walked in chunks of at most ``chunk_tokens`` rows through buffers that are
  allocated once per scorer and thread and then reused, so a query allocates nothing that
  grows with the corpus except its ``[n_queries, n_docs]`` result (pass ``out=`` to reuse it).
* Chunks are spread over ``torch.get_num_threads()`` worker threads whose torch ops are
  single-threaded: no OpenMP fork/join per op, which on a busy machine stalls every op on its
  slowest thread (3-5x slower medians measured under load), and a worker that falls behind
  simply takes fewer chunks. The caller's and the process's torch thread settings are left
  as they were.
* ``dtype=torch.bfloat16`` runs the GEMM in bf16 (2-3x the fp32 rate on CPUs with bf16 units);
  :meth:`MaxSimScorer.top_k` then re-scores the best candidates exactly in float32, so its
  ranking matches the float32 one.

This module knows tensors and nothing else.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import weakref
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from latewise.errors import (
    DimensionMismatchError,
    EmptyInputError,
    InvalidInputError,
    InvalidInputTypeError,
)

if TYPE_CHECKING:
    from typing import TypeAlias

__all__ = [
    "DEFAULT_CHUNK_TOKENS",
    "MaxSimScorer",
    "PackedVectors",
    "document_similarity",
    "maximal_marginal_relevance",
    "maxsim",
    "maxsim_flat",
    "maxsim_matches",
    "top_k",
]

logger = logging.getLogger(__name__)

#: Document rows compared per GEMM for queries of up to 32 rows (a 2 MiB float32 block per
#: thread); more query rows get proportionally fewer document rows (at least 1,024).
DEFAULT_CHUNK_TOKENS = 16_384
_SIM_BUDGET_BYTES = 2 << 20
#: float32 chunks are scored in blocks of about this many bytes of document rows (a core's L2).
_PREFETCH_BYTES = 1 << 20
#: Queries are scored in groups of at most this many query rows (more rows are split up).
_QUERY_GROUP_ROWS = 1_024
#: Bucket step: a length ``n`` is rounded up to a multiple of ``max(1, 2**floor(log2 n) // 32)``.
_BUCKET_DIVISOR = 32
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


def _padded_lengths(lengths: torch.Tensor) -> torch.Tensor:
    """Each length rounded up to its bucket: at most 1/32 (~1 % on average) more rows."""
    lengths = lengths.clamp(min=1)
    _, exponent = torch.frexp(lengths.double())  # lengths = m * 2**exponent, 0.5 <= m < 1
    step = ((1 << (exponent.to(torch.int64) - 1)) // _BUCKET_DIVISOR).clamp(min=1)
    return (lengths + step - 1) // step * step


def _row_index(
    starts: torch.Tensor, lengths: torch.Tensor, padded: int, device: torch.device
) -> torch.Tensor:
    """Row numbers ``[len(starts) * padded]`` of documents brought to ``padded`` rows each.

    Row ``j`` of document ``i`` is ``starts[i] + min(j, lengths[i] - 1)``: a short document
    repeats its own last vector, which leaves every maximum unchanged.
    """
    steps = torch.arange(padded, device=device)
    rows = starts[:, None] + torch.minimum(steps[None, :], (lengths - 1)[:, None])
    return rows.reshape(-1)


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
    against the same corpus. The first full scoring in a given compute dtype builds a
    length-bucketed copy of the vectors (~1.01x their size in that dtype) and caches it here
    with its buffers; :meth:`clear_cache` frees it.

    Example:
        >>> docs = PackedVectors.from_list([torch.randn(5, 8), torch.randn(2, 8)])
        >>> len(docs), docs.dim, docs.lengths.tolist()
        (2, 8, [5, 2])
    """

    vectors: torch.Tensor
    offsets: torch.Tensor
    _chunks: dict[int, list[tuple[int, int]]] = field(default_factory=dict, repr=False)
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

    def scorer(
        self, dtype: torch.dtype | None = None, *, chunk_tokens: int | None = None
    ) -> MaxSimScorer:
        """The cached :class:`MaxSimScorer` of this corpus for ``dtype`` (created on first use)."""
        _check_dtype(dtype)
        key = (dtype or _default_compute_dtype(self.vectors.dtype), chunk_tokens)
        found = self._scorers.get(key)
        if found is None:
            found = MaxSimScorer(self, dtype=key[0], chunk_tokens=chunk_tokens)
            self._scorers[key] = found
        return found

    def clear_cache(self) -> None:
        """Drop the cached scorers (their bucketed copies and buffers)."""
        self._scorers.clear()
        self._chunks.clear()


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
    if bounds[-1] < 4 * DEFAULT_CHUNK_TOKENS:
        groups = [(0, len(items))]

    def run(group: tuple[int, int]) -> None:
        a, b = group
        torch.cat([t.detach().to(dtype) for t in items[a:b]], out=out[bounds[a] : bounds[b]])

    run_tasks(groups, run, device)
    return out


VectorsLike: TypeAlias = Sequence[torch.Tensor] | torch.Tensor | PackedVectors


def _default_compute_dtype(dtype: torch.dtype) -> torch.dtype:
    # float16 GEMMs are ~10x slower than float32 on CPUs; bfloat16 and float64 are kept.
    return dtype if dtype in (torch.bfloat16, torch.float32, torch.float64) else torch.float32


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


@dataclass
class _Layout:
    """The corpus in length buckets: bucket ``b`` is ``vectors[row0:row0 + n * length]``."""

    vectors: torch.Tensor  # [rows, dim] in the compute dtype
    buckets: list[tuple[int, int, int, int]]  # (length, row0, first layout position, n_docs)
    order: torch.Tensor  # int64 [n_docs]: original document index of each layout position
    starts: torch.Tensor  # int64 [n_docs]: first layout row of each *original* document
    _tasks: dict[int, list[tuple[int, int, int, int]]] = field(default_factory=dict)

    def tasks(self, chunk: int) -> list[tuple[int, int, int, int]]:
        """``(length, first row, first position, n_docs)`` per chunk of at most ``chunk`` rows."""
        found = self._tasks.get(chunk)
        if found is None:
            found = []
            for length, row0, pos0, n in self.buckets:
                for _, _, pos, m in _bucket_tasks([length], [n], chunk):
                    found.append((length, row0 + pos * length, pos0 + pos, m))
            self._tasks[chunk] = found
        return found


def _bucket_tasks(
    lengths: Sequence[int], counts: Sequence[int], chunk: int
) -> list[tuple[int, int, int, int]]:
    """``(length, 0, first position, n_docs)`` chunks of consecutive buckets of equal lengths."""
    tasks: list[tuple[int, int, int, int]] = []
    pos = 0
    for length, n in zip(lengths, counts, strict=True):
        per = max(1, chunk // length)
        tasks.extend((length, 0, pos + a, min(per, n - a)) for a in range(0, n, per))
        pos += n
    return tasks


def _build_layout(docs: PackedVectors, dtype: torch.dtype) -> _Layout:
    device = docs.vectors.device
    lengths = docs.lengths
    padded = _padded_lengths(lengths)
    order = torch.sort(padded, stable=True).indices
    padded_sorted = padded.index_select(0, order)
    values, counts = torch.unique_consecutive(padded_sorted, return_counts=True)
    total = int((values * counts).sum())
    out = torch.empty(total, docs.dim, dtype=dtype, device=device)
    starts = docs.offsets[:-1].index_select(0, order)
    lens_sorted = lengths.index_select(0, order)
    buckets: list[tuple[int, int, int, int]] = []
    row = pos = 0
    # Gather in slices of ~64k rows so the temporary index and cast stay small.
    for length, n in zip(values.tolist(), counts.tolist(), strict=True):
        per = max(1, (1 << 16) // length)
        for a in range(0, n, per):
            m = min(per, n - a)
            rows = _row_index(
                starts[pos + a : pos + a + m], lens_sorted[pos + a : pos + a + m], length, device
            )
            target = out[row + a * length : row + (a + m) * length]
            if docs.vectors.dtype == dtype:
                torch.index_select(docs.vectors, 0, rows, out=target)
            else:
                target.copy_(docs.vectors.index_select(0, rows))
        buckets.append((length, row, pos, n))
        row += n * length
        pos += n
    starts_by_doc = torch.empty(len(docs), dtype=torch.int64, device=device)
    for length, row0, pos0, n in buckets:
        starts_by_doc[order[pos0 : pos0 + n]] = row0 + length * torch.arange(n, device=device)
    logger.debug(
        "bucketed %d documents (%d rows, %d with repeats) into %d length buckets in %s",
        len(docs),
        docs.vectors.shape[0],
        total,
        len(buckets),
        dtype,
    )
    return _Layout(out, buckets, order, starts_by_doc)


class _Scratch:
    """Reusable scratch tensors of one thread, grown on demand and never shrunk."""

    __slots__ = ("__weakref__", "store")

    def __init__(self) -> None:
        self.store: dict[tuple[str, torch.dtype], torch.Tensor] = {}

    def get(
        self, name: str, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device
    ) -> torch.Tensor:
        numel = 1
        for s in shape:
            numel *= s
        key = (name, dtype)
        buf = self.store.get(key)
        if buf is None or buf.numel() < numel or buf.device != device:
            buf = torch.empty(max(numel, 1), dtype=dtype, device=device)
            self.store[key] = buf
        return buf[:numel].view(shape)


class _ScratchPerThread:
    """One :class:`_Scratch` per thread (freed with the thread), with a total for accounting."""

    def __init__(self) -> None:
        self._local = threading.local()
        self._all: weakref.WeakSet[_Scratch] = weakref.WeakSet()
        self._lock = threading.Lock()

    def here(self) -> _Scratch:
        scratch: _Scratch | None = getattr(self._local, "scratch", None)
        if scratch is None:
            scratch = _Scratch()
            self._local.scratch = scratch
            with self._lock:
                self._all.add(scratch)
        return scratch

    def nbytes(self) -> int:
        with self._lock:
            stores = [list(s.store.values()) for s in self._all]
        return sum(t.numel() * t.element_size() for store in stores for t in store)


# -- the worker pool ----------------------------------------------------------------------------
#
# With torch's OpenMP backend every op forks and joins its threads; on a busy machine a
# preempted thread stalls the whole op at that join (measured here: 3-5x slower medians under
# load). Instead, the chunks of a scoring call are spread over torch.get_num_threads() Python
# worker threads whose own torch ops are single-threaded: no joins between chunks, and a worker
# that falls behind simply takes fewer chunks.

_WORKER_PREFIX = "latewise-maxsim"
# Floats per block in :func:`maxsim_blocks` (2 MiB of float32): a block stays in a core's L2/L3
# cache, and blocks are few enough that dispatching them costs little (on a loaded 2-core
# machine, scoring 192 compressed candidates took 16.4 ms in 1 MiB blocks, 13.0 in 2 MiB).
_BLOCK_VALUES = 1 << 19
_POOL_LOCK = threading.Lock()
_POOL: tuple[int, int, ThreadPoolExecutor] | None = None  # (pid, size, executor)


@functools.lru_cache(maxsize=1)
def _openmp_backend() -> bool:
    # Per-thread thread counts exist only with OpenMP (torch's default CPU backend).
    return "parallel backend: OpenMP" in torch.__config__.parallel_info()


def _init_worker() -> None:
    torch.get_num_threads()  # this thread's lazy torch init first, or it would undo the next line
    torch.set_num_threads(1)


def _start_pool(size: int) -> ThreadPoolExecutor | None:
    ready = threading.Barrier(size + 1)
    executor = ThreadPoolExecutor(size, thread_name_prefix=_WORKER_PREFIX, initializer=_init_worker)
    for _ in range(size):  # each task blocks until all have started: one per worker thread
        executor.submit(ready.wait, 30.0)
    try:
        ready.wait(30.0)
    except threading.BrokenBarrierError:
        logger.warning("could not start %d scoring threads; scoring on the calling thread", size)
        executor.shutdown(wait=False)
        return None
    finally:
        # The workers' set_num_threads(1) also set torch's process-wide default: put it back.
        torch.set_num_threads(size)
    logger.debug("started %d single-threaded MaxSim workers", size)
    return executor


def _worker_pool() -> ThreadPoolExecutor | None:
    """The shared pool of ``torch.get_num_threads()`` workers, or None to run inline."""
    global _POOL
    size = torch.get_num_threads()
    if (
        size <= 1
        or not _openmp_backend()
        or threading.current_thread().name.startswith(_WORKER_PREFIX)
    ):
        return None
    with _POOL_LOCK:
        pool = _POOL
        if pool is not None and pool[0] == os.getpid() and pool[1] == size:
            return pool[2]
        if pool is not None and pool[0] == os.getpid():
            pool[2].shutdown(wait=False)  # the thread count changed
        executor = _start_pool(size)
        _POOL = None if executor is None else (os.getpid(), size, executor)
        return executor


def run_tasks(tasks: Sequence[Any], fn: Callable[[Any], None], device: torch.device) -> None:
    """Run ``fn`` on every task: on the single-threaded scoring workers when the device is the
    CPU and there are several tasks (each task should be cache-sized work), else inline."""
    pool = _worker_pool() if len(tasks) > 1 and device.type == "cpu" else None
    if pool is None:
        for task in tasks:
            fn(task)
    else:
        # Grad and inference mode are thread-local: a caller inside ``torch.inference_mode()``
        # hands the workers inference tensors that only inference mode may write into.
        inference = torch.is_inference_mode_enabled()

        def run(task: Any) -> None:
            with torch.inference_mode(inference):
                fn(task)

        futures = [pool.submit(run, task) for task in tasks]
        # Wait for all (not just until the first error): a task still running later would
        # write into buffers the next call reuses.
        wait(futures)
        for future in futures:
            future.result()


class _QueryGroup:
    """A group of queries scored together: their rows stacked, transposed, in the compute dtype."""

    def __init__(
        self, q: PackedVectors, first: int, last: int, dtype: torch.dtype, device: torch.device
    ) -> None:
        lo, hi = int(q.offsets[first]), int(q.offsets[last])
        self.first, self.n = first, last - first
        self.rows = hi - lo
        self.qt = q.vectors[lo:hi].to(device=device, dtype=dtype).t()
        lengths = q.lengths[first:last].tolist()
        self.same_length = min(lengths) == max(lengths)
        self.length = lengths[0]
        self.indicator: torch.Tensor | None = None
        if not self.same_length:
            owner = torch.repeat_interleave(torch.arange(self.n), torch.tensor(lengths))
            indicator = torch.zeros(self.rows, self.n, dtype=torch.float32)
            indicator[torch.arange(self.rows), owner] = 1.0
            self.indicator = indicator.to(device)


def _query_groups(q: PackedVectors, dtype: torch.dtype, device: torch.device) -> list[_QueryGroup]:
    groups: list[_QueryGroup] = []
    bounds = q.offsets.tolist()
    first = 0
    for i in range(1, len(bounds)):
        if bounds[i] - bounds[first] > _QUERY_GROUP_ROWS and i - 1 > first:
            groups.append(_QueryGroup(q, first, i - 1, dtype, device))
            first = i - 1
    groups.append(_QueryGroup(q, first, len(bounds) - 1, dtype, device))
    return groups


class MaxSimScorer:
    """Scores queries against one fixed corpus, fast and with bounded memory.

    The scorer keeps a reference to the corpus (no copy) and, on the first full scoring, a
    length-bucketed copy in the compute dtype (see the module docstring); scratch buffers are
    allocated once per thread and reused, so repeated queries allocate only their result.
    Thread-safe: concurrent calls use separate buffers.

    Args:
        documents: the corpus (a :class:`PackedVectors`, or anything :func:`maxsim` accepts).
        dtype: the compute dtype: ``torch.float32`` (exact) or ``torch.bfloat16`` (2-3x faster
            on CPUs with bf16 units, scores within ~1e-2). Default: the corpus dtype (float32
            for float16 corpora).
        chunk_tokens: at most this many document rows are compared per GEMM; memory for
            similarities is ``chunk_tokens x query rows`` (query rows at most 1,024 at once).
            Default: :data:`DEFAULT_CHUNK_TOKENS`, lowered for large query batches.

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
        _check_dtype(dtype)
        if chunk_tokens is not None and (
            isinstance(chunk_tokens, bool) or not isinstance(chunk_tokens, int) or chunk_tokens < 1
        ):
            raise InvalidInputError(f"chunk_tokens must be a positive int, got {chunk_tokens!r}")
        self.documents = _as_packed(documents, "documents")
        self.dtype = dtype or _default_compute_dtype(self.documents.vectors.dtype)
        self.chunk_tokens = chunk_tokens
        self._layout: _Layout | None = None
        self._layout_lock = threading.Lock()
        self._scratch = _ScratchPerThread()

    def __len__(self) -> int:
        return len(self.documents)

    def __repr__(self) -> str:
        return (
            f"MaxSimScorer(n_docs={len(self)}, dim={self.documents.dim}, dtype={self.dtype}, "
            f"bucketed={self._layout is not None})"
        )

    @property
    def nbytes(self) -> int:
        """Bytes held by the bucketed copy (0 until the first full scoring)."""
        layout = self._layout
        return 0 if layout is None else layout.vectors.numel() * layout.vectors.element_size()

    @property
    def scratch_bytes(self) -> int:
        """Bytes of scratch buffers held for scoring by all threads (reused by later calls)."""
        return self._scratch.nbytes()

    def prepare(self) -> MaxSimScorer:
        """Build the bucketed copy now rather than on the first full scoring; returns self."""
        self._get_layout()
        return self

    def _get_layout(self) -> _Layout:
        if self._layout is None:
            with self._layout_lock:
                if self._layout is None:
                    self._layout = _build_layout(self.documents, self.dtype)
        return self._layout

    def _chunk_rows(self, query_rows: int) -> int:
        if self.chunk_tokens is not None:
            return self.chunk_tokens
        by_budget = _SIM_BUDGET_BYTES // (4 * max(query_rows, 1))
        return max(1_024, min(DEFAULT_CHUNK_TOKENS, by_budget))

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
                their rows are gathered, chunk by chunk, into reused buffers: the corpus is
                never copied. This is the second stage of a search.
            out: an optional float32 ``[n_queries, n_columns]`` tensor to write into.

        Returns:
            float32 ``[n_queries, n_docs]`` (``n_docs = len(doc_indices)`` when given), on the
            corpus device.

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
        device = docs.vectors.device
        idx = None if doc_indices is None else _check_indices(doc_indices, len(docs), device)
        n_cols = len(docs) if idx is None else idx.numel()
        if out is None:
            out = torch.empty(len(q), n_cols, dtype=torch.float32, device=device)
        elif (
            not isinstance(out, torch.Tensor)
            or out.shape != (len(q), n_cols)
            or out.dtype != torch.float32
        ):
            raise InvalidInputError(
                f"out must be a float32 tensor of shape {(len(q), n_cols)}, got "
                f"{out.dtype} {tuple(out.shape)}"
            )
        for group in _query_groups(q, self.dtype, device):
            if idx is None:
                self._score_all(group, out)
            else:
                self._score_subset(group, idx, out)
        return out

    # -- the two scoring walks ---------------------------------------------------------------

    def _score_all(self, g: _QueryGroup, out: torch.Tensor) -> None:
        layout = self._get_layout()
        vectors = layout.vectors
        chunk = self._chunk_rows(g.rows)
        result = self._scratch.here().get("result", (len(self), g.n), torch.float32, vectors.device)

        def run(task: tuple[int, int, int, int]) -> None:
            length, start, pos, m = task
            rows = vectors[start : start + m * length]
            self._score_block(g, rows, m, length, chunk, result[pos : pos + m])

        run_tasks(layout.tasks(chunk), run, vectors.device)
        out[g.first : g.first + g.n].index_copy_(1, layout.order, result.t())

    def _score_subset(self, g: _QueryGroup, idx: torch.Tensor, out: torch.Tensor) -> None:
        docs = self.documents
        device = docs.vectors.device
        chunk = self._chunk_rows(g.rows)
        layout = self._layout
        lengths = docs.lengths.index_select(0, idx)
        padded = _padded_lengths(lengths)
        order = torch.sort(padded, stable=True).indices
        padded_sorted = padded.index_select(0, order)
        sel_sorted = idx.index_select(0, order)
        if layout is not None:  # gather from the bucketed copy: already padded, right dtype
            source = layout.vectors
            starts = layout.starts.index_select(0, sel_sorted)
            true_lengths = padded_sorted
        else:
            source = docs.vectors
            starts = docs.offsets[:-1].index_select(0, sel_sorted)
            true_lengths = lengths.index_select(0, order)
        result = self._scratch.here().get("subset", (idx.numel(), g.n), torch.float32, device)
        values, counts = torch.unique_consecutive(padded_sorted, return_counts=True)

        def run(task: tuple[int, int, int, int]) -> None:
            length, _, pos, m = task
            if m * length > chunk:  # one document longer than a chunk: read it in place
                s0 = int(starts[pos])
                rows = source[s0 : s0 + int(true_lengths[pos])]
                rows = rows if rows.dtype == self.dtype else rows.to(self.dtype)
            else:
                index = _row_index(
                    starts[pos : pos + m], true_lengths[pos : pos + m], length, device
                )
                scratch = self._scratch.here()
                rows = scratch.get("gather", (index.numel(), docs.dim), self.dtype, device)
                if source.dtype == self.dtype:
                    torch.index_select(source, 0, index, out=rows)
                else:
                    staged = scratch.get("stage", (index.numel(), docs.dim), source.dtype, device)
                    rows.copy_(torch.index_select(source, 0, index, out=staged))
            self._score_block(g, rows, m, length, chunk, result[pos : pos + m])

        tasks = _bucket_tasks(values.tolist(), counts.tolist(), chunk)
        run_tasks(tasks, run, device)
        out[g.first : g.first + g.n].index_copy_(1, order, result.t())

    def _score_block(
        self,
        g: _QueryGroup,
        rows: torch.Tensor,
        m: int,
        length: int,
        chunk: int,
        dest: torch.Tensor,
    ) -> None:
        """Scores ``m`` documents of ``length`` rows each (``rows``) into ``dest`` ``[m, g.n]``.

        A single document longer than ``chunk`` may pass all its rows, however many.
        """
        scratch = self._scratch.here()
        best = scratch.get("best", (m, g.rows), torch.float32, rows.device)
        if m * length <= chunk:
            self._max_rows(g, rows, m, length, best, scratch)
        else:  # one document longer than the chunk: running max over row slices
            partial = scratch.get("partial", (1, g.rows), torch.float32, rows.device)
            for lo in range(0, rows.shape[0], chunk):
                hi = min(rows.shape[0], lo + chunk)
                self._max_rows(g, rows[lo:hi], 1, hi - lo, best if lo == 0 else partial, scratch)
                if lo:
                    torch.maximum(best, partial, out=best)
        if g.same_length:
            torch.sum(best.view(m, g.n, g.length), 2, out=dest)
        else:
            assert g.indicator is not None
            torch.mm(best, g.indicator, out=dest)

    def _max_rows(
        self,
        g: _QueryGroup,
        x: torch.Tensor,
        m: int,
        length: int,
        best: torch.Tensor,
        scratch: _Scratch,
    ) -> None:
        """``best[i] = max over the length rows of document i of x @ q^T`` (float32)."""
        row_bytes = x.shape[1] * x.element_size()
        if (
            self.dtype == torch.float32
            and x.device.type == "cpu"
            and m > 1
            and m * length * row_bytes > _PREFETCH_BYTES
        ):
            # float32 GEMMs of this shape run ~10% faster on rows already in the core's cache:
            # walk the chunk in cache-sized blocks, each read once by a cheap pass first.
            # (Measured; no gain for bf16, whose GEMM prefers the larger block.)
            per = max(1, _PREFETCH_BYTES // (length * row_bytes))
            touch = scratch.get("touch", (x.shape[1],), x.dtype, x.device)
            for a in range(0, m, per):
                k = min(per, m - a)
                block = x[a * length : (a + k) * length]
                torch.amax(block, 0, out=touch)
                self._max_rows_once(g, block, k, length, best[a : a + k], scratch)
        else:
            self._max_rows_once(g, x, m, length, best, scratch)

    def _max_rows_once(
        self,
        g: _QueryGroup,
        x: torch.Tensor,
        m: int,
        length: int,
        best: torch.Tensor,
        scratch: _Scratch,
    ) -> None:
        sim = scratch.get("sim", (m * length, g.rows), self.dtype, x.device)
        torch.mm(x, g.qt, out=sim)
        if self.dtype != torch.float32:
            # float32 reductions are vectorised; bf16 ones are ~40x slower on CPU.
            sim32 = scratch.get("sim32", (m * length, g.rows), torch.float32, x.device)
            sim = sim32.copy_(sim)
        if length == 1:
            best.copy_(sim)
        else:
            torch.amax(sim.view(m, length, g.rows), 1, out=best)

    # -- top-k with exact rescoring ----------------------------------------------------------

    def top_k(
        self, queries: VectorsLike, k: int, *, rescore: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``k`` best documents per query, best first.

        Scores every document in the scorer's dtype; when that is not float32, the best
        ``rescore`` candidates per query (default ``max(4 * k, k + 64)``) are re-scored exactly
        in float32 from the original vectors, so values and ranking match the float32 path
        unless a true top-``k`` document fell below the candidate cut.

        Args:
            queries: as for :meth:`score`.
            k: how many documents to return per query.
            rescore: how many candidates per query to re-score in float32 (0: none, return
                the scorer-dtype scores as they are).

        Returns:
            ``(values, indices)``: float32 and int64 ``[n_queries, min(k, n_docs)]``.

        Raises:
            InvalidInputError, InvalidInputTypeError: a bad ``k`` or ``rescore``.
        """
        k = _check_k(k)
        if rescore is not None and (
            isinstance(rescore, bool) or not isinstance(rescore, int) or rescore < 0
        ):
            raise InvalidInputError(f"rescore must be an int >= 0 or None, got {rescore!r}")
        scores = self.score(queries)
        if self.dtype == torch.float32 or self.dtype == torch.float64 or rescore == 0:
            return top_k(scores, k)
        depth = min(len(self), max(k, rescore if rescore is not None else max(4 * k, k + 64)))
        candidates = torch.topk(scores, depth, dim=1).indices
        union, inverse = torch.unique(candidates, return_inverse=True)
        exact = self.documents.scorer(torch.float32).score(queries, doc_indices=union)
        exact_cand = torch.gather(exact, 1, inverse)
        values, pos = torch.topk(exact_cand, min(k, depth), dim=1)
        return values, torch.gather(candidates, 1, pos)


def maxsim(
    queries: VectorsLike,
    documents: VectorsLike,
    *,
    dtype: torch.dtype | None = None,
    chunk_tokens: int | None = None,
    doc_indices: Sequence[int] | torch.Tensor | None = None,
) -> torch.Tensor:
    """Exact MaxSim scores of every query against every document.

    Args:
        queries: a list of ``[n_i, dim]`` tensors, a ``[n, dim]`` tensor (one query), a 3-D tensor
            (every row of every query is used), or :class:`PackedVectors`.
        documents: the same forms; pass :class:`PackedVectors` to score many query batches
            against one corpus: its bucketed copy and buffers are built once and cached on it.
        dtype: the compute dtype; ``torch.bfloat16`` is 2-3x faster on CPUs with bf16 units
            and keeps scores within ~1e-2 (use :meth:`MaxSimScorer.top_k` for a ranking that
            matches float32). Defaults to the documents' dtype (float32 for float16).
        chunk_tokens: at most this many document rows are compared at once, which bounds
            similarity memory to ``chunk_tokens x min(query rows, 1024)`` values.
        doc_indices: score only the documents at these indices (candidates), in this order,
            without copying the corpus.

    Returns:
        A float32 tensor ``[n_queries, n_documents]`` (``n_documents = len(doc_indices)`` when
        given).

    Raises:
        DimensionMismatchError: queries and documents have different dimensions.
        EmptyInputError, InvalidInputError, InvalidInputTypeError: malformed inputs.

    Example:
        >>> q = [torch.randn(3, 8)]
        >>> d = [torch.randn(5, 8), torch.randn(1, 8)]
        >>> maxsim(q, d).shape
        torch.Size([1, 2])
    """
    _check_dtype(dtype)
    if isinstance(documents, PackedVectors):
        scorer = documents.scorer(dtype, chunk_tokens=chunk_tokens)
    else:
        scorer = MaxSimScorer(documents, dtype=dtype, chunk_tokens=chunk_tokens)
    return scorer.score(queries, doc_indices=doc_indices)


def maxsim_flat(
    query: torch.Tensor,
    vectors: torch.Tensor,
    offsets: torch.Tensor,
    *,
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact MaxSim of one query against a small, ad-hoc set of documents stored flat.

    Made for scoring a query's candidates once (the index's second stage): one matrix product
    over all candidate rows, then a per-document maximum over each run of rows (only real rows
    exist, so nothing is padded). For a corpus scored by many queries, use
    :class:`MaxSimScorer`, which prepares the corpus once.

    Args:
        query: ``[n_q, dim]``.
        vectors: ``[total_rows, dim]``, document ``i`` being ``vectors[offsets[i]:offsets[i+1]]``.
        offsets: ``[n_docs + 1]`` int64, ascending, starting at 0; every document non-empty.
        dtype: the compute dtype (``torch.bfloat16`` is 2-4x faster on CPUs with bf16 units and
            keeps scores within ~1e-2: re-score the best documents in float32 for exact values).

    Returns:
        ``(scores, similarities)``: float32 ``[n_docs]`` scores and the ``[total_rows, n_q]``
        similarity matrix (for matches of the few documents kept).
    """
    if query.dim() != 2 or vectors.dim() != 2 or query.shape[1] != vectors.shape[1]:
        raise DimensionMismatchError(
            f"query {tuple(query.shape)} and documents {tuple(vectors.shape)} must be [n, dim] "
            "with the same dim"
        )
    lengths = offsets[1:] - offsets[:-1]
    if bool((lengths <= 0).any()):
        raise EmptyInputError("every document needs at least one vector")
    # Rows times query (not the transpose): a document's similarities then do not depend on
    # which other documents share the product, so equal scores stay equal across batches.
    sim = (vectors.to(dtype) @ query.to(dtype).t()).float()
    return _segment_maxsim(sim.t(), offsets[:-1]), sim


def _segment_maxsim(sim_t: torch.Tensor, starts: torch.Tensor) -> torch.Tensor:
    """Per document (consecutive column runs of ``sim_t``, ``[n_q, rows]``, starting at
    ``starts``): the sum over query vectors of the best column.

    ``numpy.maximum.reduceat`` along contiguous rows: ~6x faster than a ``scatter_reduce``
    over ``[rows, n_q]`` (2,048 documents of 50-300 vectors: 2.2 vs 14 ms on one core).
    """
    import numpy as np

    if starts.numel() == 0:
        return torch.zeros(0, dtype=torch.float32)
    sim = sim_t.detach().contiguous().numpy()
    best = np.maximum.reduceat(sim, starts.numpy(), axis=1)  # [n_q, n_docs]
    return torch.from_numpy(best).sum(0)


def maxsim_blocks(
    query: torch.Tensor,
    counts: Sequence[int],
    fetch: Callable[[int, int, int, int], torch.Tensor],
    *,
    block_values: int = _BLOCK_VALUES,
    similarities: bool = False,
) -> torch.Tensor:
    """Exact float32 MaxSim of one query against documents materialised a block at a time.

    For candidates stored in another form (float16, residual codes): each block of whole
    documents (about ``block_values`` floats) is materialised by ``fetch`` and scored on a scoring
    worker thread while it is still in that core's cache, so no float32 copy of all candidates
    is ever made and the conversion costs little more than reading the stored form.

    Args:
        query: ``[n_q, dim]``.
        counts: the number of vectors of each document (all ``>= 1``).
        fetch: ``fetch(a, b, r0, r1)`` returns documents ``a..b-1`` (rows ``r0..r1-1`` of the
            documents laid end to end) as a float32 ``[r1 - r0, dim]`` tensor.
        block_values: floats per block (default 2 MiB worth).
        similarities: ``fetch`` returns the ``[n_q, r1 - r0]`` similarities of the query to
            those rows instead of the vectors (for approximate scores computed another way,
            e.g. centroid interaction).

    Returns:
        float32 ``[len(counts)]`` scores.
    """
    from bisect import bisect_right

    scores = torch.empty(len(counts), dtype=torch.float32)
    if not counts:
        return scores
    q = query.detach().to(torch.float32).contiguous()
    starts = [0]
    for c in counts:
        starts.append(starts[-1] + int(c))
    offsets = torch.tensor(starts, dtype=torch.int64)
    rows = max(1, block_values // max(1, int(q.shape[0 if similarities else 1])))
    blocks, a = [], 0
    while a < len(counts):  # whole documents, about ``rows`` vectors per block
        b = min(len(counts), max(a + 1, bisect_right(starts, starts[a] + rows) - 1))
        blocks.append((a, b))
        a = b

    def score(block: tuple[int, int]) -> None:
        a, b = block
        r0, r1 = starts[a], starts[b]
        local = offsets[a : b + 1] - r0
        if similarities:
            scores[a:b] = _segment_maxsim(fetch(a, b, r0, r1), local[:-1])
        else:
            scores[a:b] = maxsim_flat(q, fetch(a, b, r0, r1), local)[0]

    run_tasks(blocks, score, torch.device("cpu"))
    return scores


def maxsim_matches(query: torch.Tensor, document: torch.Tensor) -> tuple[float, torch.Tensor]:
    """MaxSim of one query against one document, with the matched document row per query row.

    Args:
        query: ``[n_q, dim]``.
        document: ``[n_d, dim]``.

    Returns:
        ``(score, matches)`` where ``matches[i]`` (int64) is the index of the document vector
        that query vector ``i`` matched best (what explanations show); ties go to the first.

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
    sim = query.float() @ document.to(query.device).float().t()
    values, matches = sim.max(dim=1)
    return float(values.sum()), matches


def _check_k(k: Any) -> int:
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
        is not guaranteed; use distinct scores for a stable order).

    Raises:
        InvalidInputTypeError: ``scores`` is not a tensor or ``k`` is not an int.
        InvalidInputError: ``k < 1`` or ``scores`` is not 1-D / 2-D.
    """
    k = _check_k(k)
    if not isinstance(scores, torch.Tensor):
        raise InvalidInputTypeError(f"scores must be a tensor, got {type(scores).__name__}")
    if scores.dim() == 1:
        scores = scores.unsqueeze(0)
    if scores.dim() != 2:
        raise InvalidInputError(f"scores must be [n_q, n_d], got shape {tuple(scores.shape)}")
    values, indices = torch.topk(scores, min(k, scores.shape[1]), dim=1, largest=True, sorted=True)
    return values, indices


def document_similarity(vectors: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """Similarity of every pair of a few multi-vector documents, for diversifying results.

    Late interaction defines no single vector per document, so two documents are compared the
    way MaxSim compares a query with a document, made symmetric and scaled to ``[-1, 1]``:
    ``sim(a, b) = (MaxSim(a, b) / |a| + MaxSim(b, a) / |b|) / 2`` - the mean over each
    document's vectors of its best match in the other (the symmetric Chamfer similarity). For
    one vector per document (BERT) it is their cosine; a document is 1 with itself (unit
    vectors).

    Args:
        vectors: ``[total_rows, dim]``, document ``i`` being ``vectors[offsets[i]:offsets[i+1]]``.
        offsets: ``[n_docs + 1]`` int64, ascending, starting at 0; every document non-empty.

    Returns:
        float32 ``[n_docs, n_docs]``, symmetric.
    """
    n = offsets.numel() - 1
    directed = torch.empty(n, n, dtype=torch.float32)
    bounds = offsets.tolist()
    for a in range(n):
        rows = vectors[bounds[a] : bounds[a + 1]]
        directed[a] = maxsim_flat(rows, vectors, offsets)[0] / rows.shape[0]
    return (directed + directed.t()) / 2


def maximal_marginal_relevance(
    relevance: torch.Tensor, similarity: torch.Tensor, k: int, lambda_mult: float
) -> list[int]:
    """Greedy maximal marginal relevance (Carbonell & Goldstein, 1998), as LangChain's.

    Picks the most relevant item first, then repeatedly the item maximising
    ``lambda_mult * relevance[i] - (1 - lambda_mult) * max(similarity[i, j] for j picked)``;
    equal values go to the earlier item.

    Args:
        relevance: ``[n]`` query-item similarities, on the scale of ``similarity``.
        similarity: ``[n, n]`` item-item similarities.
        k: how many items to pick (at most ``n``).
        lambda_mult: 1 ranks by relevance alone, 0 by diversity alone.

    Returns:
        The picked positions, in the order picked.
    """
    n = relevance.numel()
    if n == 0 or k < 1:
        return []
    picked = [int(relevance.argmax())]
    closest = similarity[picked[0]].clone()  # each item's highest similarity to a picked one
    taken = torch.zeros(n, dtype=torch.bool)
    taken[picked[0]] = True
    while len(picked) < min(k, n):
        value = lambda_mult * relevance - (1.0 - lambda_mult) * closest
        value[taken] = -torch.inf
        j = int(value.argmax())
        picked.append(j)
        taken[j] = True
        closest = torch.maximum(closest, similarity[j])
    return picked
