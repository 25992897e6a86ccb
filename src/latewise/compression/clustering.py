"""Small, fast k-means in torch: one for fitting codec centroids, one batched over documents.

:func:`kmeans` is Lloyd's algorithm as faiss runs it for ColBERTv2 (random initial points,
Euclidean assignment, a few iterations, the sample capped at ``max_points_per_centroid`` points per
centroid), written with chunked matrix products so memory stays bounded. :func:`batched_kmeans`
clusters many small point sets (one per document) at once with batched matrix products; it is what
:func:`latewise.compression.prototypes` uses.
"""

from __future__ import annotations

import logging

import torch

from latewise.errors import EmptyInputError, InvalidInputError

__all__ = ["assign", "batched_kmeans", "first_argmax", "kmeans"]

logger = logging.getLogger(__name__)

#: Rows of the ``[chunk, k]`` score matrix computed at once during assignment.
_ASSIGN_CHUNK_ELEMENTS = 1 << 20


def first_argmax(scores: torch.Tensor, out: torch.Tensor) -> None:
    """``out[i]``: the column of row ``i``'s largest score (the first on ties, as
    ``torch.argmax``): numpy's row argmax, ~4x faster than torch's on CPU for these shapes."""
    import numpy as np

    out.numpy()[:] = np.argmax(scores.numpy(), axis=1)


def assign(points: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """The index of the nearest centroid (Euclidean) for every point.

    Args:
        points: ``[n, dim]`` float tensor.
        centroids: ``[k, dim]`` float tensor.

    Returns:
        ``[n]`` int64 tensor of centroid indices.
    """
    half_sq = 0.5 * (centroids * centroids).sum(dim=1)
    chunk = max(1, _ASSIGN_CHUNK_ELEMENTS // max(1, centroids.shape[0]))
    out = torch.empty(points.shape[0], dtype=torch.int64)
    buf = torch.empty(min(chunk, points.shape[0]), centroids.shape[0], dtype=points.dtype)
    ct = centroids.t()
    for start in range(0, points.shape[0], chunk):
        block = points[start : start + chunk]
        scores = buf[: block.shape[0]]
        # argmin ||x - c||^2 = argmax (x.c - ||c||^2 / 2)
        torch.addmm(half_sq, block, ct, beta=-1.0, out=scores)
        first_argmax(scores, out[start : start + block.shape[0]])
    return out


def kmeans(
    points: torch.Tensor,
    k: int,
    *,
    n_iters: int = 8,
    seed: int = 0,
    max_points_per_centroid: int = 256,
) -> torch.Tensor:
    """Fit ``k`` centroids to ``points`` with Lloyd's algorithm.

    Initial centroids are ``k`` distinct points drawn at random (seeded); an emptied cluster is
    re-seeded with a point drawn from the largest cluster, nudged apart, as faiss does. When there
    are more than ``k * max_points_per_centroid`` points, that many are sampled first (faiss's
    default too), which keeps each iteration's cost bounded without hurting the centroids.

    Args:
        points: ``[n, dim]`` float tensor, ``n >= k``.
        k: the number of centroids.
        n_iters: Lloyd iterations (ColBERTv2 uses 4 with faiss; 8 is a little better here).
        seed: seeds sampling and initialisation; the result is deterministic for a given seed.
        max_points_per_centroid: sample cap, see above.

    Returns:
        ``[k, dim]`` float32 centroids (not normalised).

    Raises:
        EmptyInputError: no points.
        InvalidInputError: ``k < 1``, ``k > n`` or a non-2-D input.
    """
    if points.dim() != 2:
        raise InvalidInputError(
            f"k-means needs a 2-D [n, dim] tensor, got shape {tuple(points.shape)}"
        )
    n = points.shape[0]
    if n == 0:
        raise EmptyInputError("k-means got no points; pass at least k vectors")
    if k < 1 or k > n:
        raise InvalidInputError(f"k-means needs 1 <= k <= n points, got k={k} for n={n}")
    if n_iters < 0:
        raise InvalidInputError(f"n_iters must be >= 0, got {n_iters}")
    gen = torch.Generator().manual_seed(seed)
    x = points.detach().to("cpu", torch.float32)
    cap = k * max_points_per_centroid
    if n > cap:
        x = x[torch.randperm(n, generator=gen)[:cap]]
        n = cap
    x = x.contiguous()
    centroids = x[torch.randperm(n, generator=gen)[:k]].clone()
    for it in range(n_iters):
        labels = assign(x, centroids)
        counts = torch.bincount(labels, minlength=k)
        sums = torch.zeros_like(centroids).index_add_(0, labels, x)
        nonempty = counts > 0
        centroids[nonempty] = sums[nonempty] / counts[nonempty].unsqueeze(1).to(x.dtype)
        empty = (~nonempty).nonzero().flatten()
        if empty.numel():
            _split_largest(x, labels, counts, centroids, empty, gen)
            logger.debug("k-means iteration %d: re-seeded %d empty clusters", it, empty.numel())
    return centroids


def _split_largest(
    x: torch.Tensor,
    labels: torch.Tensor,
    counts: torch.Tensor,
    centroids: torch.Tensor,
    empty: torch.Tensor,
    gen: torch.Generator,
) -> None:
    """Re-seed each empty cluster by splitting a large one in two (faiss's strategy)."""
    counts = counts.clone()
    eps = 1e-4 * float(x.abs().mean().clamp_min(1e-12))
    for e in empty.tolist():
        big = int(torch.argmax(counts))
        members = (labels == big).nonzero().flatten()
        if members.numel() < 2:
            centroids[e] = x[int(torch.randint(x.shape[0], (1,), generator=gen))]
            continue
        noise = torch.randn(centroids.shape[1], generator=gen) * eps
        base = centroids[big].clone()
        centroids[e] = base + noise
        centroids[big] = base - noise
        counts[big] = counts[big] // 2
        counts[e] = counts[big]


def batched_kmeans(
    points: torch.Tensor,
    lengths: torch.Tensor,
    k: int,
    *,
    n_iters: int = 6,
) -> tuple[torch.Tensor, torch.Tensor]:
    """k-means on many small point sets at once (one set per row of a padded batch).

    Initialisation is deterministic farthest-point seeding (the first point, then repeatedly the
    point farthest from the chosen ones), which needs no random draws and spreads centroids over
    the set; Lloyd iterations then run as batched matrix products. Padded rows never take part.

    Args:
        points: ``[B, n_max, dim]`` float tensor; row ``b`` holds ``lengths[b]`` real points
            followed by padding.
        lengths: ``[B]`` int tensor, each ``>= 1``.
        k: centroids per set (sets with fewer than ``k`` points get one centroid per point).
        n_iters: Lloyd iterations.

    Returns:
        ``(centroids, counts)``: ``[B, k, dim]`` float32 centroid means (not normalised) and
        ``[B, k]`` int64 member counts; a centroid with count 0 is unused and must be dropped.
    """
    B, n_max, _ = points.shape
    x = points.to(torch.float32)
    idx = torch.arange(n_max)
    valid = idx.unsqueeze(0) < lengths.unsqueeze(1)  # [B, n]
    neg_inf = torch.tensor(float("-inf"))
    sq = (x * x).sum(-1)  # [B, n]
    # Farthest-point seeding: squared distance to the nearest chosen point so far.
    chosen = torch.zeros(B, k, dtype=torch.int64)
    nearest = torch.full((B, n_max), float("inf"))
    arange_b = torch.arange(B)
    current = torch.zeros(B, dtype=torch.int64)
    for j in range(k):
        chosen[:, j] = current
        c = x[arange_b, current]  # [B, dim]
        d = sq + (c * c).sum(-1, keepdim=True) - 2 * torch.einsum("bnd,bd->bn", x, c)
        nearest = torch.minimum(nearest, d)
        score = torch.where(valid, nearest, neg_inf)
        current = score.argmax(dim=1)
    centroids = x[arange_b.unsqueeze(1), chosen]  # [B, k, dim]
    # A set with fewer than k points repeats points when seeding: keep only distinct slots.
    slot_ok = torch.arange(k).unsqueeze(0) < lengths.unsqueeze(1)
    big = torch.tensor(float("inf"))
    counts = torch.zeros(B, k, dtype=torch.int64)
    for _ in range(max(1, n_iters)):
        c_sq = (centroids * centroids).sum(-1)  # [B, k]
        dist = c_sq.unsqueeze(1) - 2 * torch.bmm(x, centroids.transpose(1, 2))  # [B, n, k]
        dist = torch.where(slot_ok.unsqueeze(1), dist, big)
        labels = dist.argmin(dim=2)  # [B, n]
        onehot = torch.nn.functional.one_hot(labels, k).to(torch.float32)
        onehot = onehot * valid.unsqueeze(2)
        sums = torch.bmm(onehot.transpose(1, 2), x)  # [B, k, dim]
        cnt = onehot.sum(1)  # [B, k]
        has = cnt > 0
        centroids = torch.where(has.unsqueeze(2), sums / cnt.clamp_min(1).unsqueeze(2), centroids)
        counts = cnt.to(torch.int64)
    return centroids, counts
