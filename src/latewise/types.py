"""Plain data types shared by every layer. No heavy imports."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["Hit", "PageRef", "Record"]


@dataclass(frozen=True)
class PageRef:
    """A reference to one page of a document (a PDF page or a single image).

    Attributes:
        path: the source file the page came from.
        page: the 1-based page number (1 for a single image).
        width: the page image's width in pixels, as encoded.
        height: the page image's height in pixels, as encoded.
        image_path: where the rendered page image is kept on disk (managed by the index), if any.
    """

    path: str
    page: int = 1
    width: int | None = None
    height: int | None = None
    image_path: str | None = None


@dataclass(frozen=True)
class Hit:
    """One search result.

    Attributes:
        id: the document id.
        score: the exact MaxSim score of the query against the document.
        text: the document's text (``None`` for page images).
        metadata: the metadata stored with the document.
        page: the page reference for image documents (``None`` for text).
        matches: for each query vector, the index of the document vector it matched best
            (the argmax of MaxSim), when asked for; used by explanations.
        rank: 0-based rank in the result list.
    """

    id: str
    score: float
    text: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    page: PageRef | None = None
    matches: tuple[int, ...] | None = None
    rank: int = 0


@dataclass(frozen=True)
class Record:
    """One stored document, as :meth:`LateInteractionIndex.get` returns it.

    Attributes:
        id: the document id.
        text: the document's text (``None`` for page images).
        metadata: the metadata stored with the document, exactly as given.
        page: the page reference for image documents (``None`` for text).
        n_vectors: how many vectors the index stores for the document.
        vectors: the stored ``[n_vectors, dim]`` float32 vectors, when asked for.
    """

    id: str
    text: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    page: PageRef | None = None
    n_vectors: int = 0
    vectors: Any = None
