"""Converting between latewise's records and LangChain ``Document`` objects (private).

One convention, shared by every class of the package:

- a text document's ``page_content`` is its text;
- a page-image document's ``page_content`` is a short textual reference (``"Page 2 of
  /path/report.pdf"``) and its metadata carries the page: ``source``, ``page``, ``width``,
  ``height`` and ``image_path`` (the rendered page image on disk), which is also what an image
  encoder reads when such a document is added or reranked.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from langchain_core.documents import Document

from latewise.errors import InvalidInputError, InvalidInputTypeError, check_list
from latewise.types import PageRef

logger = logging.getLogger(__name__)

#: The metadata key that holds a page image's path.
IMAGE_KEY = "image_path"


def page_content_for(ref: PageRef) -> str:
    """The textual stand-in for a page image: ``"Page N of <source>"``."""
    return f"Page {ref.page} of {ref.path or ref.image_path}"


def page_metadata(ref: PageRef) -> dict[str, Any]:
    """The metadata that locates a page: ``source``, ``page``, ``width``, ``height``,
    ``image_path``."""
    return {
        "source": ref.path or ref.image_path,
        "page": ref.page,
        "width": ref.width,
        "height": ref.height,
        IMAGE_KEY: ref.image_path,
    }


def to_document(
    doc_id: str,
    text: str | None,
    metadata: Mapping[str, Any],
    page: PageRef | None,
) -> Document:
    """A ``Document`` for a stored latewise document (a search hit or a ``Record``).

    The stored metadata is returned exactly; page documents get the page's location keys where
    the stored metadata does not already have them.
    """
    meta = dict(metadata)
    if page is not None:
        for key, value in page_metadata(page).items():
            if value is not None:
                meta.setdefault(key, value)
    content = text if text is not None else (page_content_for(page) if page is not None else "")
    return Document(id=doc_id, page_content=content, metadata=meta)


def with_score(
    document: Document, key: str | None, score: float, *, overwrite: bool = False
) -> Document:
    """``document`` with ``score`` under ``metadata[key]`` (unchanged when ``key`` is ``None``).

    Without ``overwrite``, a metadata value the user stored under ``key`` is kept and a warning
    names the setting that avoids the collision.
    """
    if key is None:
        return document
    if key in document.metadata and not overwrite:
        logger.warning(
            "document %r already has metadata[%r] = %r; keeping it and leaving the MaxSim score "
            "out. Set score_key to another name (e.g. 'latewise_score') to get both",
            document.id,
            key,
            document.metadata[key],
        )
        return document
    document.metadata[key] = score
    return document


def image_ref(document: Document, position: int, image_key: str = IMAGE_KEY) -> PageRef:
    """The page an image encoder reads for ``document``: ``metadata[image_key]``.

    Raises:
        InvalidInputError: the document has no image path in its metadata.
        InvalidInputTypeError: the image path is not a string, or the page is not an integer.
    """
    path = document.metadata.get(image_key)
    if path is None:
        raise InvalidInputError(
            f"the document at position {position} has no metadata[{image_key!r}]: an image "
            "encoder (ColPali) reads the page image from that path. Load pages with "
            "PDFPageLoader, or set the key to the image file",
            [position],
        )
    if not isinstance(path, str):
        raise InvalidInputTypeError(
            f"metadata[{image_key!r}] of the document at position {position} must be a path "
            f"string, got {type(path).__name__}",
            [position],
        )
    page = document.metadata.get("page", 1)
    if isinstance(page, bool) or not isinstance(page, int):
        raise InvalidInputTypeError(
            f"metadata['page'] of the document at position {position} must be an integer page "
            f"number, got {page!r}",
            [position],
        )
    source = document.metadata.get("source")
    width, height = document.metadata.get("width"), document.metadata.get("height")
    return PageRef(
        path=source if isinstance(source, str) and source else path,
        page=page,
        width=width if isinstance(width, int) and not isinstance(width, bool) else None,
        height=height if isinstance(height, int) and not isinstance(height, bool) else None,
        image_path=path,
    )


def index_items(
    documents: Sequence[Document], modality: str, image_key: str = IMAGE_KEY
) -> list[Any]:
    """What the index (or an encoder) takes for each document: the text for a text encoder, the
    page (:func:`image_ref`) for an image encoder."""
    if modality == "text":
        return [d.page_content for d in documents]
    return [image_ref(d, i, image_key) for i, d in enumerate(documents)]


def check_documents(documents: object, what: str = "documents") -> list[Document]:
    """Check that ``documents`` is a list of ``Document`` objects; name the bad positions."""
    return check_list(documents, Document, what, "Document objects")
