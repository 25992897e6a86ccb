"""One document as latewise stores it in Chroma: its record, and the ids of its rows and blob.

The document record's Chroma metadata holds the user's filterable metadata plus latewise's own
keys (all starting with ``_lw_``): the version ``_lw_ver`` (a digest of content, metadata,
encoder and settings), ``_lw_key`` (what names this write's rows and blob), the vector and row
counts, the exact user metadata as JSON ``_lw_meta`` and the page reference ``_lw_page``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from latewise.errors import StoreError
from latewise.store.filters import RESERVED_PREFIX

__all__ = [
    "DocRecord",
    "RowHit",
    "blob_id",
    "decode_record",
    "encode_record",
    "row_ids",
    "split_row_id",
]


@dataclass
class DocRecord:
    """One document as stored.

    Attributes:
        id: the document id.
        ver: a digest of the content, metadata and encoder; names the document's rows and blob.
        text: the text (``None`` for page images).
        metadata: the user's metadata, exactly as given (JSON round trip).
        page: the page reference as a plain dict, for page documents.
        n_vectors: how many vectors the blob holds.
        n_rows: how many first-stage rows the document has.
        blob: the encoded multi-vector (see ``latewise.compression``), when read or written.
        filterable: the metadata values Chroma can filter on.
        key: names this write's rows and blob (see :attr:`stored_as`).
        n_chunks: how many packed records hold its blob (0: one base64 record, the old layout).
    """

    id: str
    ver: str
    text: str | None
    metadata: dict[str, Any]
    page: dict[str, Any] | None
    n_vectors: int
    n_rows: int
    blob: bytes | None = None
    filterable: dict[str, Any] = field(default_factory=dict)
    key: str = ""
    n_chunks: int = 0

    @property
    def stored_as(self) -> str:
        """What names this write of the document's rows and blob: unique per write, so deleting
        an old write never removes the rows of a newer write of the same content (collections
        of format 1 used the version)."""
        return self.key or self.ver

    def row_ids(self) -> list[str]:
        """The ids of this document's first-stage rows."""
        return row_ids(self.id, self.stored_as, self.n_rows)

    @property
    def blob_id(self) -> str:
        """The key of this document's blob (``{doc}#{key}``; the record id in the base64
        layout)."""
        return blob_id(self.id, self.stored_as)

    def blob_record_ids(self) -> list[str]:
        """The ids of the records holding this document's blob."""
        if self.n_chunks == 0:
            return [self.blob_id]
        return row_ids(self.id, self.stored_as, self.n_chunks)


@dataclass(frozen=True)
class RowHit:
    """A first-stage row found by the ANN search."""

    doc_id: str
    ver: str
    similarity: float


def row_ids(doc_id: str, ver: str, n_rows: int) -> list[str]:
    return [f"{doc_id}#{ver}#{j}" for j in range(n_rows)]


def blob_id(doc_id: str, ver: str) -> str:
    return f"{doc_id}#{ver}"


def split_row_id(rid: str) -> tuple[str, str]:
    """``(doc id, key)`` of a record ``{doc}#{key}#{j}`` (keys hold no ``#``)."""
    head, _, _ = rid.rpartition("#")
    doc, _, key = head.rpartition("#")
    return doc, key


def encode_record(rec: DocRecord) -> dict[str, Any]:
    meta: dict[str, Any] = dict(rec.filterable)
    meta["_lw_ver"] = rec.ver
    if rec.key:
        meta["_lw_key"] = rec.key
    if rec.n_chunks:
        meta["_lw_bc"] = rec.n_chunks
    meta["_lw_n"] = rec.n_vectors
    meta["_lw_rows"] = rec.n_rows
    meta["_lw_meta"] = json.dumps(rec.metadata, sort_keys=True)
    meta["_lw_text"] = rec.text is not None
    if rec.page is not None:
        meta["_lw_page"] = json.dumps(rec.page, sort_keys=True)
    return meta


def decode_record(name: str, doc_id: str, meta: Mapping[str, Any], text: str | None) -> DocRecord:
    try:
        page = json.loads(str(meta["_lw_page"])) if "_lw_page" in meta else None
        user = json.loads(str(meta.get("_lw_meta", "{}")))
        return DocRecord(
            id=doc_id,
            ver=str(meta["_lw_ver"]),
            text=text if meta.get("_lw_text", True) else None,
            metadata=user,
            page=page,
            n_vectors=int(meta["_lw_n"]),
            n_rows=int(meta["_lw_rows"]),
            filterable={k: v for k, v in meta.items() if not k.startswith(RESERVED_PREFIX)},
            key=str(meta.get("_lw_key", "")),
            n_chunks=int(meta.get("_lw_bc", 0)),
        )
    except (KeyError, ValueError, TypeError) as exc:
        raise StoreError(
            f"document {doc_id!r} in collection {name!r} was not written by latewise or is "
            f"damaged ({exc.__class__.__name__}: {exc}); delete it or rebuild the collection"
        ) from exc
