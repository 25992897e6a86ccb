"""Storage: the Chroma layout of a latewise collection (knows Chroma, never models).

- :mod:`latewise.store.chroma`: the layout (:class:`ChromaStore`) and listing collections;
- :mod:`latewise.store.client`: :func:`make_client`, the one way latewise opens Chroma.

Names load on first use, so ``latewise.store.client`` imports without the layout module.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

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


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
