"""A collection's storage settings and the counters of what an index object wrote."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from latewise.errors import InvalidInputError, check_positive

__all__ = ["IndexSettings", "SearchSizes", "WriteStats"]


@dataclass(frozen=True)
class IndexSettings:
    """Storage settings, fixed when a collection is created and stored with it.

    Attributes:
        compression: ``None`` to store float16 vectors, or 1, 2 or 4 bits per dimension of
            ColBERTv2-style residual codes (centroids fitted on the first documents added: the
            first ``add`` writes at least 1,024 of them in its first batch, so add a
            representative set first — a codec fitted on a handful of documents compresses
            the rest poorly).
        pool_factor: keep about ``n / pool_factor`` vectors per document by hierarchical
            clustering of its vectors (colpali-engine's token pooling); 1 keeps all.
        prototypes: how many first-stage vectors (means of consecutive runs of the document's
            vectors) represent each document. They are stored as rows of an HNSW-indexed Chroma
            collection; searches scan them in memory with MaxSim to propose candidates, or
            query Chroma's HNSW index when they are too many to hold (``scan_bytes``).
        hnsw: Chroma HNSW settings of the first-stage collection.
    """

    compression: int | None = None
    pool_factor: int = 1
    prototypes: int = 6
    hnsw: tuple[tuple[str, Any], ...] = (
        ("ef_construction", 64),
        ("ef_search", 96),
        ("max_neighbors", 16),
    )

    def __post_init__(self) -> None:
        if self.compression not in (None, 1, 2, 4):
            raise InvalidInputError(
                f"compression must be None, 1, 2 or 4 bits, got {self.compression!r}"
            )
        for name in ("pool_factor", "prototypes"):
            check_positive(name, getattr(self, name))

    def to_json(self) -> dict[str, Any]:
        return {
            "compression": self.compression,
            "pool_factor": self.pool_factor,
            "prototypes": self.prototypes,
            "hnsw": dict(self.hnsw),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> IndexSettings:
        return cls(
            compression=data.get("compression"),
            pool_factor=int(data.get("pool_factor", 1)),
            prototypes=int(data.get("prototypes", 6)),
            hnsw=tuple(sorted(dict(data.get("hnsw", {})).items())),
        )


@dataclass(frozen=True)
class SearchSizes:
    """How many documents each search stage keeps.

    Attributes:
        n_rerank: candidates scored with exact MaxSim (``None``: 512, or 192 in a compressed
            collection, whose candidates were already narrowed by a second estimate: with
            MiniLM the best 192 of 2,048 held 0.981 (50k documents) and 0.989 (48.5k) of the
            exact top 10).
        n_candidates: in a compressed collection, documents the prototype scan proposes before
            centroid interaction keeps ``n_rerank`` (``None``: ``max(2048, 4 * n_rerank)``).
    """

    n_rerank: int | None = None
    n_candidates: int | None = None

    def __post_init__(self) -> None:
        for name in ("n_rerank", "n_candidates"):
            value = getattr(self, name)
            if value is not None:
                check_positive(name, value)

    def rerank(self, compressed: bool, k: int) -> int:
        default = 192 if compressed else 512
        return max(self.n_rerank or default, k)

    def wide(self, n: int) -> int:
        return self.n_candidates or max(2048, 4 * n)


@dataclass
class WriteStats:
    """Counts and timings of what an index object wrote: documents (re)encoded and stored, their
    vectors, first-stage rows, stored vector bytes, and where the time went. Documents skipped as
    unchanged are not counted."""

    documents: int = 0
    vectors: int = 0
    rows: int = 0
    bytes: int = 0
    #: Seconds spent running the encoder.
    encode_seconds: float = 0.0
    #: Seconds spent pooling, fitting/applying compression and computing first-stage rows.
    prepare_seconds: float = 0.0
    #: Seconds spent writing to Chroma.
    store_seconds: float = 0.0
