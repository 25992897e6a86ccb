"""Storage: the Chroma layout of a latewise collection (knows Chroma, never models)."""

from __future__ import annotations

from latewise.store.chroma import (
    ChromaStore,
    DocRecord,
    RowHit,
    list_latewise_collections,
    validate_collection_name,
)

__all__ = [
    "ChromaStore",
    "DocRecord",
    "RowHit",
    "list_latewise_collections",
    "validate_collection_name",
]
