"""A document's stored vectors <-> the rows of the blobs collection ``NAME__lw_blobs``.

The full multi-vector of a document (float16 or residual codes, see ``latewise.compression``)
is written once, never changed, and read for exact scoring. It is packed 30 bits to a float
(:mod:`latewise.store.packing`) into the embeddings of records ``{doc}#{key}#{j}``,
``j < _lw_bc`` of the document record, all of one width chosen at the collection's first write
(the collection's metadata ``lw_blob_floats``) and kept out of the way by a minimal HNSW graph.
Embeddings are Chroma's one store that keeps bytes once: a metadata string is stored twice (its
row and SQLite's index of string values), and as base64 a third larger.

Collections written by latewise 0.x before this layout (no ``lw_blobs`` key in that metadata)
keep one record ``{doc}#{ver}`` per document with the blob as base64 metadata ``_lw_mv``, and
are read and written that way.

This module knows Chroma and bytes, never models or tensors.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from latewise.errors import StoreError
from latewise.store.packing import pack, unpack

if TYPE_CHECKING:
    import numpy as np

    from latewise.store.chroma import ChromaStore
    from latewise.store.records import DocRecord

__all__ = ["BLOBS_HNSW", "NEW_LAYOUT", "BlobRows", "batches", "blob_floats"]

#: The blobs collection's metadata: its layout, and the width of its packed records.
LAYOUT_KEY = "lw_blobs"
FLOATS_KEY = "lw_blob_floats"
_PACKED = "packed-30"
#: The metadata a new blobs collection is created with.
NEW_LAYOUT: dict[str, Any] = {LAYOUT_KEY: _PACKED}
#: The blobs' HNSW graph is never searched, so it is as small as Chroma allows (and Chroma's
#: write log, kept until ``sync_threshold`` records are indexed, stays small).
BLOBS_HNSW: dict[str, Any] = {
    "space": "ip",
    "max_neighbors": 2,
    "ef_construction": 2,
    "ef_search": 2,
    "sync_threshold": 1000,
    "batch_size": 1000,
}
#: Chroma's per-record cost (ids, SQLite rows and index entries, HNSW links), in bytes: the blob
#: record width balances it against the padding of each document's last record.
_RECORD_BYTES = 250
#: Records that are only looked up by id get a constant one-dimensional embedding.
_ONE: list[float] = [1.0]


def blob_floats(blob_bytes: float) -> int:
    """The packed record width (floats, a multiple of 64) for blobs of about ``blob_bytes``:
    ``sqrt(2 * record cost * size)`` bytes balances the padding of a document's last record
    (half a record on average) against the cost of each record."""
    width = math.sqrt(2 * _RECORD_BYTES * max(1.0, blob_bytes)) * 8 / 30
    return int(min(8192, max(64, math.ceil(width / 64) * 64)))


def batches(items: list[str], size: int) -> Iterator[list[str]]:
    """``items`` in consecutive batches of at most ``size``."""
    for s in range(0, len(items), size):
        yield items[s : s + size]


class BlobRows:
    """Reads and writes the documents' stored vectors in one collection's blobs collection.

    Args:
        store: the collection (its ``blobs`` collection, Chroma calls and batch size).
    """

    def __init__(self, store: ChromaStore) -> None:
        self.store = store
        #: Packed record width: 0 before the first write, ``None`` for the old base64 layout.
        self.floats: int | None = 0

    def read_layout(self, metadata: Mapping[str, Any] | None) -> None:
        """Take the layout from the blobs collection's metadata."""
        layout = metadata or {}
        if layout.get(LAYOUT_KEY) != _PACKED:
            self.floats = None  # written before the packed layout: base64 records
        else:
            self.floats = int(layout.get(FLOATS_KEY, 0))

    def key_of(self, record_id: str) -> str:
        """The blob key (``{doc}#{ver}``) a blobs record belongs to: packed records are
        ``{doc}#{ver}#{j}``, base64 ones ``{doc}#{ver}`` (versions hold no ``#``)."""
        return record_id.rpartition("#")[0] if self.floats is not None else record_id

    # -- reading ----------------------------------------------------------------------------

    def get(self, records: Sequence[DocRecord]) -> dict[str, bytes]:
        """The blobs of ``records`` by their keys (``{doc}#{ver}``); missing ones are absent."""
        packed = [r for r in records if r.n_chunks]
        out = self._get_packed(packed) if packed else {}
        legacy = [r.blob_id for r in records if not r.n_chunks]
        if legacy:
            out.update(self._get_base64(legacy))
        return out

    def _get_packed(self, records: Sequence[DocRecord]) -> dict[str, bytes]:
        import numpy as np

        store = self.store
        chunks: dict[str, np.ndarray] = {}
        ids = list(dict.fromkeys(rid for r in records for rid in r.blob_record_ids()))
        for part in batches(ids, max(1, min(store.max_batch, 1000))):
            got = store.call(lambda p=part: store.blobs.get(ids=p, include=["embeddings"]))  # type: ignore[misc, list-item]
            embs = got["embeddings"]
            if embs is None or len(embs) != len(got["ids"]):
                continue
            chunks.update(zip(got["ids"], np.asarray(embs, dtype=np.float32), strict=True))
        out: dict[str, bytes] = {}
        for rec in records:
            parts = [chunks.get(rid) for rid in rec.blob_record_ids()]
            if any(p is None for p in parts):
                continue  # reported by the caller as missing
            try:
                out[rec.blob_id] = unpack(np.stack(parts))  # type: ignore[arg-type]
            except ValueError as exc:
                raise StoreError(
                    f"the stored vectors of document {rec.id!r} in collection {store.name!r} "
                    f"are damaged ({exc}); re-add the document with upsert()"
                ) from exc
        return out

    def _get_base64(self, keys: Sequence[str]) -> dict[str, bytes]:
        store = self.store
        out: dict[str, bytes] = {}
        for part in batches(list(dict.fromkeys(keys)), max(1, min(store.max_batch, 500))):
            got = store.call(lambda p=part: store.blobs.get(ids=p, include=["metadatas"]))  # type: ignore[misc, list-item]
            for key, meta in zip(got["ids"], got["metadatas"] or [], strict=True):
                try:
                    out[key] = base64.b64decode(str((meta or {})["_lw_mv"]), validate=True)
                except (KeyError, ValueError) as exc:
                    raise StoreError(
                        f"the stored vectors {key!r} in collection {store.name!r} are damaged; "
                        "re-add the document with upsert()"
                    ) from exc
        return out

    # -- writing ----------------------------------------------------------------------------

    def write(self, records: Sequence[DocRecord]) -> None:
        """Store the blobs of ``records``; sets each record's ``n_chunks``."""
        if self.floats is None:
            self._write_base64(records)
            return
        import numpy as np

        store = self.store
        if not self.floats:  # the collection's first blobs fix its record width
            sizes = sorted(len(r.blob or b"") for r in records)
            width = blob_floats(sizes[len(sizes) // 2] if sizes else 0)
            meta = {**(store.blobs.metadata or {}), FLOATS_KEY: width}
            store.call(lambda: store.blobs.modify(metadata=meta), write=True)
            self.floats = width
        width = self.floats
        ids: list[str] = []
        packed: list[np.ndarray] = []
        for rec in records:
            chunks = pack(rec.blob or b"", width)
            rec.n_chunks = chunks.shape[0]
            ids.extend(rec.blob_record_ids())
            packed.append(chunks)
        if not ids:
            return
        step = max(1, min(store.max_batch, max(64, (8 << 20) // (4 * width))))
        store.upsert(store.blobs, ids, step, embeddings=np.concatenate(packed))

    def _write_base64(self, records: Sequence[DocRecord]) -> None:
        self.store.upsert(
            self.store.blobs,
            [r.blob_id for r in records],
            max(1, min(self.store.max_batch, 256)),
            embeddings=[_ONE] * len(records),
            metadatas=[
                {"_lw_doc": r.id, "_lw_mv": base64.b64encode(r.blob or b"").decode("ascii")}
                for r in records
            ],
        )
