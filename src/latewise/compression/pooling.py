"""Token pooling: fewer vectors per document by clustering them and keeping cluster means.

:func:`pool_vectors` reproduces colpali-engine's ``HierarchicalTokenPooler`` (0.3.18): Ward
clustering of the rows of ``1 - E @ E.T`` (used as feature vectors under the Euclidean metric,
exactly as colpali-engine, ColBERT's and PyLate's ``pool_embeddings_hierarchical`` call
``scipy.cluster.hierarchy.linkage``), cut into at most ``max(n // pool_factor, 1)`` clusters with
``fcluster(criterion="maxclust")`` (no ``+ 1``: colpali-engine's formula), each cluster replaced by
its L2-normalised mean, in cluster-id order. ``protected_tokens`` adds ColBERT's / PyLate's option
of keeping the first tokens unpooled. It gives the same vectors as colpali-engine's pooler but
computes the pairwise distances with one float64 matrix product instead of scipy's ``pdist``,
which is ~3x faster for a 1,030-patch page and ~3-6x for a short text.

:func:`prototypes` makes at most ``k`` vectors per document for a first-stage ANN row set;
:func:`prototypes_batch` does it for many documents at once with batched k-means.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

import torch

from latewise.compression._checks import check_matrix
from latewise.compression._format import at_position
from latewise.compression.clustering import batched_kmeans
from latewise.errors import (
    EmptyInputError,
    InvalidInputError,
    MissingDependencyError,
    check_positive,
)

if TYPE_CHECKING:
    import numpy as np

__all__ = [
    "hierarchical_labels",
    "pool_vectors",
    "pool_vectors_batch",
    "pooled_count",
    "prototypes",
    "prototypes_batch",
]

logger = logging.getLogger(__name__)

PrototypeMethod = Literal["segments", "kmeans", "hierarchical"]

#: Documents whose vectors are clustered together in one padded batch by :func:`prototypes_batch`.
_KMEANS_BATCH_ELEMENTS = 1 << 22


def pooled_count(n: int, pool_factor: int, protected_tokens: int = 0) -> int:
    """How many vectors :func:`pool_vectors` returns (at most) for ``n`` input vectors.

    ``protected + max((n - protected) // pool_factor, 1)`` with ``protected = min(n,
    protected_tokens)``; ``n`` itself when ``pool_factor == 1`` or fewer than two vectors are left
    to pool. colpali-engine's pooler has no protected tokens: ``max(n // pool_factor, 1)``.
    """
    protected = min(n, protected_tokens)
    rest = n - protected
    if pool_factor == 1 or rest <= 1:
        return n
    return protected + max(rest // pool_factor, 1)


def _check_doc(vectors: object, position: int | None = None) -> torch.Tensor:
    vectors = check_matrix(vectors, position)
    where, pos = at_position(position)
    if vectors.shape[0] == 0:
        raise EmptyInputError(f"document{where} has no vectors to pool", pos)
    return vectors


def _check_factor(pool_factor: object) -> int:
    return check_positive("pool_factor", pool_factor)


def _scipy_hierarchy() -> tuple[object, object]:
    try:
        from scipy.cluster.hierarchy import fcluster, linkage
    except ImportError as exc:
        raise MissingDependencyError(
            "hierarchical token pooling needs scipy, a dependency of latewise that is missing; "
            "reinstall latewise or run: pip install scipy"
        ) from exc
    return linkage, fcluster


def hierarchical_labels(vectors: torch.Tensor, n_clusters: int) -> np.ndarray:
    """Ward cluster labels (0-based) of the rows of ``vectors``, as colpali-engine computes them.

    The observations clustered are the rows of ``1 - E @ E.T`` (float32 similarities, as
    colpali-engine and ColBERT compute them); their Euclidean distances are computed here in
    float64 with a Gram matrix, which matches scipy's ``pdist`` to ~1e-13.

    Args:
        vectors: ``[n, dim]`` with ``n >= 2``.
        n_clusters: the most clusters to cut the tree into (``fcluster``'s ``maxclust``).

    Returns:
        ``[n]`` int array of labels in ``0 .. n_clusters - 1``.
    """
    import numpy as np

    linkage, fcluster = _scipy_hierarchy()
    e = vectors.detach().to("cpu", torch.float32)
    obs = (1 - torch.mm(e, e.t())).to(torch.float64)  # the rows colpali-engine clusters
    gram = torch.mm(obs, obs.t())
    sq = torch.diagonal(gram)
    d2 = (sq.unsqueeze(0) + sq.unsqueeze(1) - 2 * gram).clamp_min_(0.0)
    n = e.shape[0]
    iu = torch.triu_indices(n, n, offset=1)
    condensed = d2[iu[0], iu[1]].sqrt_().numpy()
    Z = linkage(condensed, method="ward")  # type: ignore[operator]
    labels = fcluster(Z, t=n_clusters, criterion="maxclust") - 1  # type: ignore[operator]
    return np.asarray(labels, dtype=np.int64)


def _cluster_means(vectors: torch.Tensor, labels: torch.Tensor, n_clusters: int) -> torch.Tensor:
    """L2-normalised mean of each non-empty cluster, in cluster-id order (float32)."""
    x = vectors.to(torch.float32)
    sums = torch.zeros(n_clusters, x.shape[1], dtype=torch.float32).index_add_(0, labels, x)
    counts = torch.bincount(labels, minlength=n_clusters)
    keep = counts > 0
    means = sums[keep] / counts[keep].unsqueeze(1).to(torch.float32)
    return torch.nn.functional.normalize(means, p=2, dim=-1)


def pool_vectors(
    vectors: torch.Tensor, pool_factor: int, *, protected_tokens: int = 0
) -> torch.Tensor:
    """Pool one document's vectors by hierarchical clustering (colpali-engine's pooler).

    Args:
        vectors: ``[n, dim]`` L2-normalised vectors.
        pool_factor: keep at most ``max(n // pool_factor, 1)`` vectors; ``1`` returns the input.
        protected_tokens: the first this many vectors (e.g. ``[CLS]``) are kept as they are,
            ahead of the pooled ones, and the rest are pooled (PyLate's / ColBERT's option).

    Returns:
        ``[m, dim]`` with ``m <= pooled_count(n, pool_factor, protected_tokens)`` (equal unless
        Ward merge heights tie), in the input's dtype.

    Raises:
        InvalidInputError, InvalidInputTypeError, EmptyInputError: bad input.
        MissingDependencyError: scipy is not installed.
    """
    vectors = _check_doc(vectors)
    pool_factor = _check_factor(pool_factor)
    if protected_tokens < 0:
        raise InvalidInputError(f"protected_tokens must be >= 0, got {protected_tokens}")
    n = vectors.shape[0]
    protected = min(n, protected_tokens)
    rest = vectors[protected:]
    if pool_factor == 1 or rest.shape[0] <= 1:
        return vectors
    k = max(rest.shape[0] // pool_factor, 1)
    labels = torch.from_numpy(hierarchical_labels(rest, k))
    pooled = _cluster_means(rest, labels, k).to(vectors.dtype)
    if protected:
        pooled = torch.cat([vectors[:protected], pooled])
    return pooled


def pool_vectors_batch(
    docs: Sequence[torch.Tensor], pool_factor: int, *, protected_tokens: int = 0
) -> list[torch.Tensor]:
    """:func:`pool_vectors` for many documents (inputs checked up front, positions named).

    Each document keeps at most ``pooled_count(n, pool_factor, protected_tokens)`` vectors. The
    per-document cost is one Gram matrix and one Ward linkage: ~0.6 ms for 67 vectors and ~70-85 ms
    for a 1,030-patch page on one core of this project's CPU (colpali-engine's pooler: ~2-3.5 ms
    and ~190-245 ms).
    """
    pool_factor = _check_factor(pool_factor)
    checked = [_check_doc(d, i) for i, d in enumerate(docs)]
    return [pool_vectors(d, pool_factor, protected_tokens=protected_tokens) for d in checked]


def prototypes(
    vectors: torch.Tensor, k: int, *, method: PrototypeMethod = "segments"
) -> torch.Tensor:
    """At most ``k`` L2-normalised vectors summarising a document (for first-stage ANN rows).

    Args:
        vectors: ``[n, dim]``.
        k: the most prototypes to return (a document with ``n <= k`` vectors returns them all,
            normalised).
        method: ``"segments"`` (the default: the means of ``k`` equal runs of consecutive
            vectors — neighbouring tokens, or bands of patch rows on a page), ``"kmeans"``
            (batched Lloyd, farthest-point seeding, deterministic) or ``"hierarchical"`` (Ward,
            as :func:`pool_vectors`; needs scipy). As a first stage on 20k MiniLM documents
            (zero-shot ColBERT), the 512 documents with the best MaxSim over 6 prototypes held
            98.4% of the exact top 10 with segments and 98.1% with k-means, and segments took a
            quarter of the time. On the stdlib-docstring set (2,000 documents), ranking by
            prototypes alone: recall@100 0.954 / 0.960 (k-means, k = 4 / 8) vs 0.958 / 0.966
            (hierarchical).

    Returns:
        ``[m, dim]`` float32 with ``1 <= m <= k``.
    """
    return prototypes_batch([vectors], k, method=method)[0]


def prototypes_batch(
    docs: Sequence[torch.Tensor], k: int, *, method: PrototypeMethod = "segments"
) -> list[torch.Tensor]:
    """:func:`prototypes` for many documents; k-means runs batched over padded groups."""
    check_positive("k", k)
    checked = [_check_doc(d, i) for i, d in enumerate(docs)]
    if method == "segments":
        return [_segment_means(d.to(torch.float32), k) for d in checked]
    if method == "hierarchical":
        out = []
        for d in checked:
            x = d.to(torch.float32)
            if x.shape[0] <= k:
                out.append(torch.nn.functional.normalize(x, dim=-1))
            else:
                labels = torch.from_numpy(hierarchical_labels(x, k))
                out.append(_cluster_means(x, labels, k))
        return out
    if method != "kmeans":
        raise InvalidInputError(
            f"method must be 'segments', 'kmeans' or 'hierarchical', got {method!r}"
        )
    return _kmeans_groups(checked, k)


def _segment_means(x: torch.Tensor, k: int) -> torch.Tensor:
    """Normalised means of ``k`` near-equal runs of consecutive rows (all rows when ``n <= k``)."""
    n = x.shape[0]
    if n <= k:
        return torch.nn.functional.normalize(x, dim=-1)
    bounds = torch.div(torch.arange(k + 1) * n, k, rounding_mode="floor")
    sums = torch.zeros(n + 1, x.shape[1], dtype=x.dtype)
    torch.cumsum(x, 0, out=sums[1:])
    means = (sums[bounds[1:]] - sums[bounds[:-1]]) / (bounds[1:] - bounds[:-1]).unsqueeze(1)
    return torch.nn.functional.normalize(means, dim=-1)


def _kmeans_groups(docs: Sequence[torch.Tensor], k: int) -> list[torch.Tensor]:
    """Cluster each document into at most ``k`` normalised means, batching similar lengths."""
    out: list[torch.Tensor | None] = [None] * len(docs)
    todo = []
    for i, d in enumerate(docs):
        if d.shape[0] <= k:
            out[i] = torch.nn.functional.normalize(d.to(torch.float32), dim=-1)
        else:
            todo.append(i)
    todo.sort(key=lambda i: docs[i].shape[0])  # similar lengths share a padded batch
    start = 0
    while start < len(todo):
        end = start + 1
        while end < len(todo):
            n_max, dim = docs[todo[end]].shape
            if (end - start + 1) * n_max * max(k, dim) > _KMEANS_BATCH_ELEMENTS:
                break
            end += 1
        group = todo[start:end]
        lengths = torch.tensor([docs[i].shape[0] for i in group])
        padded = torch.nn.utils.rnn.pad_sequence(
            [docs[i].to(torch.float32) for i in group], batch_first=True
        )
        centroids, counts = batched_kmeans(padded, lengths, k)
        means = torch.nn.functional.normalize(centroids, dim=-1)
        for row, i in enumerate(group):
            out[i] = means[row][counts[row] > 0]
        start = end
    return [o for o in out if o is not None]
