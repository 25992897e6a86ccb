"""How files become documents: ids, metadata keys and the page-image folder, defined once.

The index (:meth:`~latewise.LateInteractionIndex.add_files`), the command line, the LangChain
loader and the LlamaIndex reader all name documents cut from files the same way, so a file
indexed through any of them is replaced, not duplicated, when indexed again through another:

- a page (PDF page or image): id ``"<source>#page=N"`` (N from 1), metadata ``source``,
  ``file_name``, ``page``, ``width``, ``height``;
- a text chunk: id ``"<source>#chunk=N"`` (N from 0), or ``"<source>#page=N&chunk=M"`` for the
  text of a PDF page, metadata ``source``, ``file_name``, ``chunk``, ``start``, ``end`` (and
  ``page``);
- page images of a collection are saved under ``<database folder>/pages/<collection>``.

``source`` is always the file's absolute path.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from latewise.types import PageRef

__all__ = [
    "PAGE_IMAGE_FOLDER",
    "FileDocumentId",
    "chunk_id",
    "file_metadata",
    "page_id",
    "page_image_dir",
    "page_metadata",
    "parse_document_id",
]

#: The folder, inside a database folder, that holds the page images of each collection.
PAGE_IMAGE_FOLDER = "pages"

_ID = re.compile(r"^(?P<source>.+)#(?:page=(?P<page>\d+))?(?:&?chunk=(?P<chunk>\d+))?$")


def page_id(source: str, page: int) -> str:
    """The id of page ``page`` (1-based) of ``source``: ``"<source>#page=N"``."""
    return f"{source}#page={page}"


def chunk_id(source: str, chunk: int, page: int | None = None) -> str:
    """The id of text chunk ``chunk`` (0-based) of ``source``, or of its page ``page``."""
    if page is None:
        return f"{source}#chunk={chunk}"
    return f"{source}#page={page}&chunk={chunk}"


@dataclass(frozen=True)
class FileDocumentId:
    """The parts of a document id made by :func:`page_id` or :func:`chunk_id`."""

    source: str
    page: int | None
    chunk: int | None


def parse_document_id(doc_id: str) -> FileDocumentId | None:
    """Split an id made by :func:`page_id` / :func:`chunk_id`; ``None`` for any other id."""
    match = _ID.match(doc_id)
    if match is None or (match["page"] is None and match["chunk"] is None):
        return None
    page, chunk = match["page"], match["chunk"]
    return FileDocumentId(
        match["source"],
        int(page) if page is not None else None,
        int(chunk) if chunk is not None else None,
    )


def file_metadata(source: str) -> dict[str, Any]:
    """``source`` (the absolute path) and ``file_name``: the metadata every file document has."""
    return {"source": source, "file_name": os.path.basename(source)}


def page_metadata(ref: PageRef) -> dict[str, Any]:
    """The metadata of a page document: its file's, plus ``page``, ``width`` and ``height``."""
    return {
        **file_metadata(ref.path),
        "page": ref.page,
        "width": ref.width,
        "height": ref.height,
    }


def page_image_dir(root: str | Path, collection: str | None = None) -> Path:
    """Where page images are saved: ``<root>/pages/<collection>`` (``<root>/pages`` without a
    collection), ``root`` being the database folder."""
    folder = Path(root) / PAGE_IMAGE_FOLDER
    return folder / collection if collection is not None else folder
