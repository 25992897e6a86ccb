"""Fitting a residual codec: centroids by k-means and buckets from held-out residuals.

As ColBERTv2's indexer: shuffle the sample, hold out 5% (at most 50,000 vectors), run k-means on
the rest, L2-normalise the centroids, then take bucket cutoffs and weights from the quantiles of
the held-out residuals (all dimensions pooled). :meth:`ResidualCodec.fit
<latewise.compression.ResidualCodec.fit>` documents the arguments.
"""

from __future__ import annotations

import logging
import math

import torch

from latewise.compression.clustering import first_argmax, kmeans
from latewise.compression.compressed import VALID_NBITS
from latewise.errors import DimensionMismatchError, InvalidInputError, InvalidInputTypeError

logger = logging.getLogger(__name__)

__all__ = ["MAX_CENTROIDS", "default_n_centroids", "fit_parameters", "nearest", "quantiles"]

#: At most this many centroids, so an id fits in two bytes.
MAX_CENTROIDS = 1 << 16
#: torch.quantile's input limit; larger inputs are subsampled.
QUANTILE_MAX_VALUES = 1 << 24


def default_n_centroids(n_tokens: int) -> int:
    """ColBERTv2's centroid count for a collection of ``n_tokens`` vectors.

    ``2 ** floor(log2(16 * sqrt(n_tokens)))``, capped at 65,536 so an id fits in two bytes.
    """
    if n_tokens < 1:
        return 1
    return int(min(MAX_CENTROIDS, 2 ** math.floor(math.log2(16 * math.sqrt(n_tokens)))))


def fit_parameters(
    sample: torch.Tensor,
    nbits: int,
    n_centroids: int | None,
    n_tokens: int | None,
    kmeans_iters: int,
    heldout_fraction: float,
    seed: int,
    centroids: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """``(centroids, bucket_cutoffs, bucket_weights, avg_residual)`` fitted on ``sample``.

    Raises:
        InvalidInputTypeError: ``sample`` is not a tensor.
        InvalidInputError: not 2-D, non-finite values, fewer than 2 vectors, bad ``nbits``.
        DimensionMismatchError: ``centroids`` of another dimension than the sample.
    """
    if nbits not in VALID_NBITS:
        raise InvalidInputError(f"nbits must be one of {VALID_NBITS}, got {nbits!r}")
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

    residuals = heldout - centroids[nearest(heldout, centroids)]
    avg_residual = float(residuals.abs().mean())
    n_buckets = 1 << nbits
    qs = torch.arange(n_buckets, dtype=torch.float64) / n_buckets
    values = residuals.flatten()
    cutoffs = quantiles(values, qs[1:], gen)
    weights = quantiles(values, qs + 0.5 / n_buckets, gen)
    logger.debug("ResidualCodec.fit: cutoffs %s weights %s", cutoffs.tolist(), weights.tolist())
    return centroids, cutoffs, weights, avg_residual


def nearest(x: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
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
        first_argmax(scores, out[start : start + block.shape[0]])
    return out


def quantiles(values: torch.Tensor, qs: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """``torch.quantile`` (linear interpolation) that also takes more than 2**24 values."""
    if values.numel() > QUANTILE_MAX_VALUES:
        pick = torch.randint(values.numel(), (QUANTILE_MAX_VALUES,), generator=gen)
        values = values[pick]
    return torch.quantile(values.to(torch.float64), qs).to(torch.float32)
