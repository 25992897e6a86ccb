"""Compression of stored multi-vectors: ColBERTv2 residual codes and token pooling.

Pure tensor code: no storage, no models. The index uses

- a :class:`VectorCodec` (:class:`Float16Codec` or :class:`ResidualCodec`) to turn each document's
  ``[n, dim]`` vectors into one blob and back, and :func:`codec_from_bytes` to restore the codec
  stored with a collection;
- :func:`pool_vectors` (colpali-engine's hierarchical pooler) for its ``pool_factor`` setting, and
  :func:`prototypes` / :func:`prototypes_batch` for a few first-stage vectors per document.

Importing this package imports torch; ``import latewise`` does not import it.
"""

from __future__ import annotations

from latewise.compression.clustering import batched_kmeans, kmeans
from latewise.compression.codec import Float16Codec, VectorCodec, codec_from_bytes
from latewise.compression.pooling import (
    hierarchical_labels,
    pool_vectors,
    pool_vectors_batch,
    pooled_count,
    prototypes,
    prototypes_batch,
)
from latewise.compression.residual import CompressedVectors, ResidualCodec, default_n_centroids

__all__ = [
    "CompressedVectors",
    "Float16Codec",
    "ResidualCodec",
    "VectorCodec",
    "batched_kmeans",
    "codec_from_bytes",
    "default_n_centroids",
    "hierarchical_labels",
    "kmeans",
    "pool_vectors",
    "pool_vectors_batch",
    "pooled_count",
    "prototypes",
    "prototypes_batch",
]
