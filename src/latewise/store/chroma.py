"""The Chroma layout of a latewise collection.

Chroma keeps one vector per record, so one latewise collection ``NAME`` is four Chroma
collections:

``NAME`` (the documents)
    One small record per document, the source of truth: its id is the document id, its Chroma
    ``document`` the text, its metadata the user's filterable metadata plus latewise's own keys
    (all starting with ``_lw_``): the version ``_lw_ver``, the vector and row counts, the exact
    user metadata as JSON ``_lw_meta`` and the page reference ``_lw_page``. ``where`` filters run
    here and on the first-stage rows.
``NAME__lw_vectors`` (the first stage)
    A few "prototype" vectors per document, each a record ``{doc}#{key}#{j}`` (the id names the
    document and the write, see :mod:`latewise.store.records`) carrying a copy of its filterable
    metadata, indexed by Chroma's HNSW.
``NAME__lw_blobs``
    The document's full multi-vector (float16 or residual codes), written once, never changed,
    read for exact scoring: packed into the embeddings of a few records per document, or in
    collections written by latewise 0.x one base64 record per document (see
    :mod:`latewise.store.blobs`).
``NAME__lw_meta``
    Binary state too large for collection metadata (the compression codec, chunked).
``NAME__lw_log``
    One record per write: the collection's write position, which tells other processes that
    their in-memory views are stale (see :mod:`latewise.store.state`).

Writes go rows and blobs first, the document record last, so a document exists exactly when its
record in ``NAME`` exists: a crash in between leaves rows and blobs that no document claims (their
version matches no document), which searches ignore and a later write of the same content
overwrites.

This module knows Chroma and bytes, never models or tensors.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from latewise.errors import FilterError, InvalidInputError, StoreError
from latewise.store.blobs import BLOBS_HNSW, NEW_LAYOUT, BlobRows, batches
from latewise.store.filters import RESERVED_PREFIX
from latewise.store.records import (
    DocRecord,
    RowHit,
    decode_record,
    encode_record,
    split_row_id,
)

if TYPE_CHECKING:
    import numpy as np
    from chromadb.api import ClientAPI
    from chromadb.api.models.Collection import Collection

logger = logging.getLogger(__name__)

__all__ = [
    "RESERVED_PREFIX",
    "ChromaStore",
    "DocRecord",
    "RowHit",
    "list_latewise_collections",
    "read_pages",
    "validate_collection_name",
]

VECTORS_SUFFIX = "__lw_vectors"
BLOBS_SUFFIX = "__lw_blobs"
META_SUFFIX = "__lw_meta"
LOG_SUFFIX = "__lw_log"
_SUFFIXES = (VECTORS_SUFFIX, BLOBS_SUFFIX, META_SUFFIX, LOG_SUFFIX)
CONFIG_KEY = "latewise"
_NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9._-]{1,510}[a-zA-Z0-9]$")
_MAX_NAME = 512 - max(len(s) for s in _SUFFIXES)
#: Records that are only looked up by id get a constant one-dimensional embedding.
_ONE: list[float] = [1.0]
#: Chroma settings of collections that are only read by id: Chroma keeps every write in its log
#: (``embeddings_queue``) until ``sync_threshold`` records are indexed, so a low threshold keeps
#: that copy small.
_BY_ID = {"space": "ip", "sync_threshold": 100, "batch_size": 100}


def validate_collection_name(name: str) -> str:
    """Check a latewise collection name (Chroma's rules, leaving room for the suffixes)."""
    if (
        not isinstance(name, str)
        or not _NAME_RE.match(name)
        or len(name) > _MAX_NAME
        or ".." in name
        or name.endswith(_SUFFIXES)
    ):
        raise InvalidInputError(
            f"invalid collection name {name!r}: use 3-{_MAX_NAME} characters from letters, "
            "digits, '.', '_' and '-', starting and ending with a letter or digit"
        )
    return name


def _chroma_errors() -> tuple[type[BaseException], ...]:
    from chromadb.errors import ChromaError

    return (ChromaError, ValueError, TypeError)


class ChromaStore:
    """Reads and writes one latewise collection in a Chroma client (embedded or server).

    Args:
        client: any Chroma client (``PersistentClient``, ``EphemeralClient``, ``HttpClient``).
        name: the latewise collection name.
        hnsw: HNSW settings for the first-stage collection (Chroma's ``configuration["hnsw"]``).
    """

    def __init__(self, client: ClientAPI, name: str, *, hnsw: Mapping[str, Any]) -> None:
        self.client = client
        self.name = validate_collection_name(name)
        self._hnsw = dict(hnsw)
        self._cols: dict[str, Collection] = {}
        self._max_batch: int | None = None
        #: The documents' stored vectors (see :mod:`latewise.store.blobs`).
        self.blob_rows = BlobRows(self)

    # -- collections ----------------------------------------------------------------------

    def exists(self) -> bool:
        """Whether the documents collection exists in the client."""
        names = {c if isinstance(c, str) else c.name for c in self.client.list_collections()}
        return self.name in names

    def open(self, *, create: bool) -> dict[str, Any] | None:
        """Open (or create) the collections; return the stored config, if any."""
        # The documents collection comes last: once it exists (``exists()``), so do the others,
        # so a process opening a collection another one is creating finds all of it.
        configs: dict[str, Any] = {
            VECTORS_SUFFIX: {"hnsw": {"space": "ip", **self._hnsw}},
            BLOBS_SUFFIX: {"hnsw": dict(BLOBS_HNSW)},
            META_SUFFIX: {"hnsw": dict(_BY_ID)},
            LOG_SUFFIX: {"hnsw": dict(_BY_ID)},
            "": {"hnsw": dict(_BY_ID)},
        }
        try:
            for suffix, configuration in configs.items():
                name = self.name + suffix
                # Derived collections are made when missing: the first stage is rebuilt by
                # repair(), and collections of format 1 had no log.
                if create or suffix in (VECTORS_SUFFIX, LOG_SUFFIX):
                    col = self.client.get_or_create_collection(
                        name,
                        embedding_function=None,
                        configuration=configuration,
                        metadata=dict(NEW_LAYOUT) if suffix == BLOBS_SUFFIX else None,
                    )
                else:
                    col = self.client.get_collection(name, embedding_function=None)
                self._cols[suffix] = col
            self.blob_rows.read_layout(self.blobs.metadata)
        except _chroma_errors() as exc:
            raise StoreError(
                f"cannot open collection {self.name!r} in Chroma ({exc}); it may have been "
                "written by another version of latewise, or only partly deleted"
            ) from exc
        raw = (self.docs.metadata or {}).get(CONFIG_KEY)
        if raw is None:
            return None
        try:
            config = json.loads(raw)
        except (TypeError, json.JSONDecodeError) as exc:
            raise StoreError(
                f"collection {self.name!r} holds unreadable latewise settings"
            ) from exc
        if not isinstance(config, dict):
            raise StoreError(f"collection {self.name!r} holds unreadable latewise settings")
        return config

    def write_config(self, config: Mapping[str, Any]) -> None:
        """Store the index config (fingerprint, settings) in the documents collection's metadata."""
        meta = {k: v for k, v in (self.docs.metadata or {}).items() if not k.startswith("hnsw:")}
        meta[CONFIG_KEY] = json.dumps(dict(config), sort_keys=True)
        try:
            self.docs.modify(metadata=meta)
        except _chroma_errors() as exc:
            raise StoreError(f"cannot write settings of collection {self.name!r}: {exc}") from exc

    def drop(self) -> None:
        """Delete the Chroma collections."""
        for suffix in ("", *_SUFFIXES):
            try:
                self.client.delete_collection(self.name + suffix)
            except _chroma_errors():
                logger.debug("collection %s%s did not exist", self.name, suffix)
        self._cols.clear()

    def _col(self, suffix: str) -> Collection:
        col = self._cols.get(suffix)
        if col is None:
            raise StoreError(f"collection {self.name!r} is not open")
        return col

    @property
    def docs(self) -> Collection:
        return self._col("")

    @property
    def vectors(self) -> Collection:
        return self._col(VECTORS_SUFFIX)

    @property
    def blobs(self) -> Collection:
        return self._col(BLOBS_SUFFIX)

    @property
    def meta(self) -> Collection:
        return self._col(META_SUFFIX)

    @property
    def log(self) -> Collection:
        return self._col(LOG_SUFFIX)

    @property
    def max_batch(self) -> int:
        if self._max_batch is None:
            try:
                self._max_batch = int(self.client.get_max_batch_size())
            except (AttributeError, *_chroma_errors()):  # type: ignore[misc]
                self._max_batch = 1000
        return self._max_batch

    # -- documents --------------------------------------------------------------------------

    def count(self) -> int:
        """How many documents the collection holds."""
        return int(self.docs.count())

    def get(self, ids: Sequence[str], *, with_blob: bool = False) -> dict[str, DocRecord]:
        """The stored documents among ``ids`` (missing ones are absent from the result)."""
        out: dict[str, DocRecord] = {}
        for part in batches(list(dict.fromkeys(ids)), self.max_batch):
            got = self.call(
                lambda p=part: self.docs.get(ids=p, include=["metadatas", "documents"])  # type: ignore[misc, list-item]
            )
            out.update(self._records(got))
        if with_blob:
            self.attach_blobs(list(out.values()))
        return out

    def ids(self, where: Mapping[str, Any] | None = None) -> list[str]:
        """Ids of every document, or of those matching ``where``."""
        out: list[str] = []
        for page in self._pages(where=where, include=[]):
            out.extend(page["ids"])
        return out

    def scan(
        self, where: Mapping[str, Any] | None = None, *, page_size: int = 2000
    ) -> Iterator[list[DocRecord]]:
        """Every document (or those matching ``where``), a page at a time, without blobs."""
        for page in self._pages(
            where=where, include=["metadatas", "documents"], page_size=page_size
        ):
            yield list(self._records(page).values())

    def attach_blobs(self, records: Sequence[DocRecord]) -> None:
        """Read the blobs of ``records`` into their ``blob`` field."""
        blobs = self.get_blobs(records)
        for rec in records:
            blob = blobs.get(rec.blob_id)
            if blob is None:
                raise StoreError(
                    f"document {rec.id!r} in collection {self.name!r} has no stored vectors "
                    f"(blob {rec.blob_id!r} is missing); re-add it with upsert()"
                )
            rec.blob = blob

    def get_blobs(self, records: Sequence[DocRecord]) -> dict[str, bytes]:
        """The blobs of ``records`` by their keys (``{doc}#{ver}``); missing ones are absent."""
        return self.blob_rows.get(records)

    def call(self, fn: Any, *, write: bool = False) -> Any:
        """Run a Chroma call; its errors become :class:`StoreError`."""
        try:
            return fn()
        except _chroma_errors() as exc:
            raise self._refused(exc, write=write) from exc

    def _refused(self, exc: BaseException, *, write: bool) -> StoreError:
        what = "write to" if write else "read of"
        return StoreError(
            f"Chroma refused a {what} collection {self.name!r}: {exc}. If the collection is "
            "damaged, `index.repair()` (or `latewise repair`) rebuilds what can be derived"
        )

    def _read_error(self, exc: BaseException, where: Mapping[str, Any] | None) -> Exception:
        if where:
            return FilterError(f"Chroma rejected the filter {dict(where)!r}: {exc}")
        return self._refused(exc, write=False)

    def _pages(
        self,
        col: Collection | None = None,
        *,
        include: list[str],
        where: Mapping[str, Any] | None = None,
        page_size: int = 5000,
    ) -> Iterator[Any]:
        """Chroma ``get`` results of a collection (the documents by default), a page at a time
        (:func:`read_pages`); Chroma's errors become latewise's."""
        try:
            yield from read_pages(self.docs if col is None else col, include, where, page_size)
        except _chroma_errors() as exc:
            raise self._read_error(exc, where) from exc

    def _records(self, got: Any) -> dict[str, DocRecord]:
        out: dict[str, DocRecord] = {}
        metas = got.get("metadatas") or [None] * len(got["ids"])
        texts = got.get("documents") or [None] * len(got["ids"])
        for doc_id, meta, text in zip(got["ids"], metas, texts, strict=True):
            out[doc_id] = decode_record(self.name, doc_id, meta or {}, text)
        return out

    # -- writing ----------------------------------------------------------------------------

    def write(self, records: Sequence[DocRecord], rows: Any) -> None:
        """Store documents: their first-stage rows and blobs first, then the document records.

        Args:
            records: the documents, each with ``blob`` set.
            rows: a float32 array ``[sum(n_rows), dim]`` of first-stage vectors, the documents'
                rows in order.
        """
        self.write_rows(records, rows)
        self.write_blobs(records)
        self.write_docs(records)

    def write_rows(self, records: Sequence[DocRecord], rows: Any) -> None:
        """Store the first-stage rows of ``records`` (their ids name the document and version;
        each carries the document's filterable metadata), ``rows`` being their vectors in order."""
        import numpy as np

        ids: list[str] = []
        metas: list[dict[str, Any] | None] = []
        for rec in records:
            ids.extend(rec.row_ids())
            metas.extend([dict(rec.filterable) or None] * rec.n_rows)
        rows = np.ascontiguousarray(rows, dtype=np.float32)
        if rows.shape[0] != len(ids):
            raise StoreError(f"{rows.shape[0]} first-stage vectors for {len(ids)} rows")
        self.upsert(self.vectors, ids, self.max_batch, embeddings=rows, metadatas=metas)

    def write_blobs(self, records: Sequence[DocRecord]) -> None:
        """Store the full multi-vectors of ``records`` (invisible until their records exist);
        sets each record's ``n_chunks``."""
        self.blob_rows.write(records)

    def write_docs(self, records: Sequence[DocRecord]) -> None:
        """Store document records; each document becomes visible as its record lands."""
        self.upsert(
            self.docs,
            [r.id for r in records],
            max(1, min(self.max_batch, 1000)),
            embeddings=[_ONE] * len(records),
            documents=[r.text if r.text is not None else "" for r in records],
            metadatas=[encode_record(r) for r in records],
        )

    def upsert(self, col: Collection, ids: list[str], step: int, **columns: Any) -> None:
        """Upsert records ``ids`` into ``col``, ``step`` at a time; each column (a list or an
        array, one entry per id) is sliced alike, and left out of a batch where all its entries
        are ``None``."""
        for s in range(0, len(ids), step):
            part = {k: v[s : s + step] for k, v in columns.items()}
            part = {
                k: v
                for k, v in part.items()
                if not isinstance(v, list) or any(x is not None for x in v)
            }
            self.call(lambda s=s, part=part: col.upsert(ids=ids[s : s + step], **part), write=True)

    def delete_docs(self, ids: Sequence[str]) -> None:
        """Remove document records (they stop existing at once)."""
        for part in batches(list(ids), self.max_batch):
            self.docs.delete(ids=part)

    def delete_rows(self, records: Sequence[DocRecord]) -> None:
        """Remove the first-stage rows and blobs of (old versions of) documents."""
        for part in batches([rid for r in records for rid in r.row_ids()], self.max_batch):
            self.vectors.delete(ids=part)
        for part in batches([i for r in records for i in r.blob_record_ids()], self.max_batch):
            self.blobs.delete(ids=part)

    def row_ids_stored(self, page_size: int = 5000) -> set[str]:
        """Every first-stage row id (raises :class:`StoreError` if the collection is damaged)."""
        pages = self._pages(self.vectors, include=[], page_size=page_size)
        return {rid for got in pages for rid in got["ids"]}

    def check_rows(self) -> None:
        """Read every first-stage vector and query the index once (raises :class:`StoreError`
        when the collection is damaged)."""
        first = None
        for _, vectors in self.load_rows():
            if first is None and len(vectors):
                first = vectors[:1]
        if first is not None:
            self.call(lambda: self.vectors.query(query_embeddings=first, n_results=1))

    def delete_rows_by_id(self, ids: Sequence[str]) -> None:
        """Remove first-stage rows by their record ids."""
        for part in batches(list(ids), self.max_batch):
            self.call(lambda p=part: self.vectors.delete(ids=p), write=True)

    def remove_orphan_blobs(self) -> int:
        """Delete stored vectors no document claims (left by a crash); returns how many
        documents' vectors were removed."""
        orphans = self._orphans()
        ids = [rid for rids in orphans.values() for rid in rids]
        for part in batches(ids, self.max_batch):
            self.call(lambda p=part: self.blobs.delete(ids=p), write=True)
        return len(orphans)

    def orphan_blobs(self) -> list[str]:
        """Keys (``{doc}#{ver}``) of stored vectors whose document is missing or has another
        version."""
        return list(self._orphans())

    def _orphans(self) -> dict[str, list[str]]:
        """Orphaned blob keys -> the ids of the records holding them."""
        current = {rec.id: rec.stored_as for page in self.scan() for rec in page}
        found: dict[str, list[str]] = {}
        for got in self._pages(self.blobs, include=[]):
            for rid in got["ids"]:
                key = self.blob_rows.key_of(rid)
                doc, _, ver = key.rpartition("#")
                if current.get(doc) != ver:
                    found.setdefault(key, []).append(rid)
        return found

    def reset_rows(self, hnsw: Mapping[str, Any]) -> None:
        """Delete the first-stage collection (damaged or not) and create it empty."""
        name = self.name + VECTORS_SUFFIX
        try:
            self.client.delete_collection(name)
        except _chroma_errors():
            logger.info("first-stage collection %s was missing; creating it", name)
        self._cols[VECTORS_SUFFIX] = self.call(
            lambda: self.client.create_collection(
                name,
                embedding_function=None,
                configuration={"hnsw": {"space": "ip", **self._hnsw, **hnsw}},  # type: ignore[arg-type]
            )
        )

    def row_count(self) -> int:
        """How many first-stage rows the collection holds."""
        return int(self.vectors.count())

    # -- first stage ------------------------------------------------------------------------

    def load_rows(
        self, ids: Sequence[str] | None = None, *, page_size: int = 5000
    ) -> Iterator[tuple[list[str], np.ndarray]]:
        """First-stage rows with their vectors: every row, or the rows ``ids``, a page at a time,
        as ``(row ids, float32 [n, dim])``."""
        import numpy as np

        if ids is not None:
            for part in batches(list(ids), self.max_batch):
                got = self.call(lambda p=part: self.vectors.get(ids=p, include=["embeddings"]))  # type: ignore[misc, list-item]
                if got["ids"]:
                    yield list(got["ids"]), np.asarray(got["embeddings"], dtype=np.float32)
            return
        for got in self._pages(self.vectors, include=["embeddings"], page_size=page_size):
            yield list(got["ids"]), np.asarray(got["embeddings"], dtype=np.float32)

    def query_rows(
        self, embeddings: np.ndarray, n_results: int, where: Mapping[str, Any] | None
    ) -> list[list[RowHit]]:
        """For each query vector, the nearest first-stage rows (inner product)."""
        try:
            got = self.vectors.query(
                query_embeddings=embeddings,
                n_results=n_results,
                where=_where(where),
                include=["distances"],  # type: ignore[list-item]
            )
        except _chroma_errors() as exc:
            raise self._read_error(exc, where) from exc
        out: list[list[RowHit]] = []
        for ids, dists in zip(got["ids"], got["distances"] or [], strict=True):
            out.append(
                [
                    RowHit(*split_row_id(rid), 1.0 - float(d))
                    for rid, d in zip(ids, dists, strict=True)
                ]
            )
        return out


def list_latewise_collections(client: ClientAPI) -> dict[str, dict[str, Any]]:
    """The latewise collections in a Chroma client: name -> stored config (and a count)."""
    out: dict[str, dict[str, Any]] = {}
    for c in client.list_collections():
        name = c if isinstance(c, str) else c.name
        if name.endswith(_SUFFIXES):
            continue
        col = client.get_collection(name, embedding_function=None)
        raw = (col.metadata or {}).get(CONFIG_KEY)
        if raw is None:
            continue
        try:
            config = json.loads(raw)
        except (TypeError, json.JSONDecodeError):
            continue
        config["documents"] = int(col.count())
        out[name] = config
    return dict(sorted(out.items()))


def read_pages(
    col: Collection,
    include: list[str],
    where: Mapping[str, Any] | None = None,
    page_size: int = 5000,
) -> Iterator[Any]:
    """Chroma ``get`` results of the records of ``col`` that match ``where``, a page at a time.

    Every matching id is listed by one ``get`` without contents, then read by id a page at a
    time: Chroma's ``offset`` walks the rows it skips, so offset pages cost more the further
    they go (at 300,000 rows: 39 ms for the first page of 5,000, 190 ms for the last) and a
    full read grew with the square of the collection. One unbounded ``get`` of many rows
    overflows SQLite's variable limit.
    """
    ids = col.get(where=_where(where), include=[])["ids"]  # type: ignore[arg-type]
    for part in batches(ids, page_size):
        got = (
            col.get(ids=part, where=_where(where), include=include)  # type: ignore[arg-type]
            if include
            else {"ids": part}
        )
        if got["ids"]:
            yield got


def _where(where: Mapping[str, Any] | None) -> dict[str, Any] | None:
    return dict(where) if where else None
