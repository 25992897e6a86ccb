"""Storage: the Chroma layout of a latewise collection (knows Chroma, never models).

- :mod:`latewise.store.chroma`: the layout (:class:`ChromaStore`) and listing collections;
- :mod:`latewise.store.client`: :func:`make_client`, the one way latewise opens Chroma.

Names load on first use, so ``latewise.store.client`` imports without the layout module.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from latewise._lazy import lazy_exports

if TYPE_CHECKING:
    from latewise.store.chroma import (
        ChromaStore,
        DocRecord,
        RowHit,
        list_latewise_collections,
        validate_collection_name,
    )
    from latewise.store.client import make_client

__all__ = [
    "ChromaStore",
    "DocRecord",
    "RowHit",
    "list_latewise_collections",
    "make_client",
    "validate_collection_name",
]

_HOMES = {
    "ChromaStore": "latewise.store.chroma",
    "DocRecord": "latewise.store.chroma",
    "RowHit": "latewise.store.chroma",
    "list_latewise_collections": "latewise.store.chroma",
    "validate_collection_name": "latewise.store.chroma",
    "make_client": "latewise.store.client",
}

__getattr__, __dir__ = lazy_exports(__name__, _HOMES, __all__)
