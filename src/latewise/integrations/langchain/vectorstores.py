"""``LateInteractionVectorStore``: a LangChain ``VectorStore`` over a latewise index."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.vectorstores import VectorStore

from latewise.encoders.base import Encoder
from latewise.errors import InvalidInputError, InvalidInputTypeError
from latewise.index import LateInteractionIndex
from latewise.integrations.langchain._documents import (
    IMAGE_KEY,
    check_documents,
    index_items,
    to_document,
)
from latewise.types import Hit

if TYPE_CHECKING:
    import torch
    from chromadb.api import ClientAPI
    from typing_extensions import Self

logger = logging.getLogger(__name__)

__all__ = ["LateInteractionVectorStore"]

_SEARCH_KWARGS = frozenset({"exact"})


class LateInteractionVectorStore(VectorStore):
    """A LangChain vector store whose documents are multi-vector (ColBERT, ColPali) or
    single-vector (BERT) and are ranked by exact MaxSim, stored in Chroma.

    It scores with a latewise encoder, not a LangChain ``Embeddings``: a late-interaction model
    gives each text a matrix of vectors, so :attr:`embeddings` is ``None``.

    Setup:
        ``pip install -U "latewise[langchain]"``; the documents live in Chroma (an embedded
        folder or a server).

    Instantiate:
        .. code-block:: python

            from latewise import ColBERTEncoder, LateInteractionIndex, load_encoder
            from latewise.integrations.langchain import LateInteractionVectorStore

            vector_store = LateInteractionVectorStore(
                encoder=load_encoder("minilm"), path="./.latewise", collection="docs"
            )
            # or over an index you already have (e.g. on a Chroma server):
            # vector_store = LateInteractionVectorStore(index)

    Add:
        .. code-block:: python

            from langchain_core.documents import Document

            documents = [
                Document("ColBERT keeps one vector per token.", metadata={"year": 2020}),
                Document("Chroma stores vectors.", metadata={"year": 2023}),
            ]
            vector_store.add_documents(documents, ids=["colbert", "chroma"])
            # the same id again replaces the document (upsert)

        With a ColPali encoder, add page images: documents whose ``metadata["image_path"]`` is
        the page image, as :class:`~latewise.integrations.langchain.PDFPageLoader` makes them.

    Delete:
        .. code-block:: python

            vector_store.delete(ids=["chroma"])
            vector_store.delete(filter={"year": {"$lt": 2021}})

    Search:
        .. code-block:: python

            docs = vector_store.similarity_search("what is late interaction?", k=2)
            docs = vector_store.similarity_search("late interaction", k=2, filter={"year": 2020})
            for doc, score in vector_store.similarity_search_with_score("late interaction"):
                print(f"[MaxSim={score:.3f}] {doc.page_content} [{doc.metadata}]")

    Async:
        .. code-block:: python

            await vector_store.aadd_documents(documents, ids=["colbert", "chroma"])
            docs = await vector_store.asimilarity_search("late interaction", k=1)
            await vector_store.adelete(ids=["chroma"])

    Use as retriever:
        .. code-block:: python

            retriever = vector_store.as_retriever(search_kwargs={"k": 2, "filter": {"year": 2020}})
            retriever.invoke("late interaction")

    Scores: :meth:`similarity_search_with_score` gives the raw MaxSim score (the sum over query
    vectors of the best cosine match; higher is better). The relevance scores of
    :meth:`similarity_search_with_relevance_scores` (and ``search_type=
    "similarity_score_threshold"``) are that sum averaged over the query vectors and mapped from
    [-1, 1] to [0, 1].

    Maximal marginal relevance (:meth:`max_marginal_relevance_search`,
    ``as_retriever(search_type="mmr")``) picks among the ``fetch_k`` best by MaxSim, with
    relevance the MaxSim score averaged over the query vectors and two documents as similar as
    their vectors' best matches in each other (see
    :meth:`~latewise.LateInteractionIndex.search_mmr`); for a single-vector (BERT) encoder this
    is exactly LangChain's cosine MMR.

        .. code-block:: python

            docs = vector_store.max_marginal_relevance_search("late interaction", k=2, fetch_k=10)
            retriever = vector_store.as_retriever(
                search_type="mmr", search_kwargs={"k": 2, "fetch_k": 10, "lambda_mult": 0.5}
            )

    Args:
        index: the :class:`~latewise.LateInteractionIndex` to use; or leave it out and give the
            index arguments below.
        encoder: the latewise encoder (or a name/path for :func:`~latewise.load_encoder`);
            ``None`` opens an existing collection with the encoder stored with it.
        path: folder of an embedded Chroma.
        client: any Chroma client (e.g. ``chromadb.HttpClient``).
        collection: the collection name.
        ephemeral: keep everything in memory.
        image_key: the metadata key holding a page image's path (image encoders).
        **index_kwargs: other :class:`~latewise.LateInteractionIndex` arguments (``compression``,
            ``pool_factor``, ...).
    """

    def __init__(
        self,
        index: LateInteractionIndex | None = None,
        *,
        encoder: Encoder | str | None = None,
        path: str | Path | None = None,
        client: ClientAPI | None = None,
        collection: str | None = None,
        ephemeral: bool = False,
        image_key: str = IMAGE_KEY,
        **index_kwargs: Any,
    ) -> None:
        if index is not None:
            given = (
                [
                    name
                    for name, value in (
                        ("encoder", encoder),
                        ("path", path),
                        ("client", client),
                        ("collection", collection),
                    )
                    if value is not None
                ]
                + (["ephemeral"] if ephemeral else [])
                + sorted(index_kwargs)
            )
            if given:
                raise InvalidInputError(
                    f"pass either index= or the arguments to build one, not both (got index and "
                    f"{', '.join(given)})"
                )
            if not isinstance(index, LateInteractionIndex):
                raise InvalidInputTypeError(
                    f"index must be a LateInteractionIndex, got {type(index).__name__}"
                )
        else:
            if collection is not None:
                index_kwargs["collection"] = collection
            index = LateInteractionIndex(
                encoder, path=path, client=client, ephemeral=ephemeral, **index_kwargs
            )
        self.index = index
        self.image_key = image_key

    def __repr__(self) -> str:
        return f"LateInteractionVectorStore({self.index!r})"

    @property
    def embeddings(self) -> Embeddings | None:
        """Always ``None``: documents are scored by the index's latewise encoder
        (``self.index.encoder``), which gives a matrix of vectors per text, not one vector."""
        return None

    # -- writing ----------------------------------------------------------------------------------

    def _prepare(
        self, documents: Sequence[Document], kwargs: dict[str, Any]
    ) -> tuple[list[Any], list[str], list[dict[str, Any]], int | None]:
        ids = kwargs.pop("ids", None)
        batch_size = kwargs.pop("batch_size", None)
        if kwargs:
            raise InvalidInputError(
                f"add_documents() got unknown argument(s) {sorted(kwargs)}; it takes ids= and "
                "batch_size="
            )
        docs = check_documents(documents)
        if ids is not None:
            if isinstance(ids, str):
                raise InvalidInputTypeError("ids must be a list of strings, got a single string")
            ids = list(ids)
            if len(ids) != len(docs):
                raise InvalidInputError(f"got {len(docs)} documents but {len(ids)} ids")
        final_ids = [
            (ids[i] if ids is not None and ids[i] is not None else None)
            or doc.id
            or str(uuid.uuid4())
            for i, doc in enumerate(docs)
        ]
        items = index_items(docs, self.index.encoder.modality, self.image_key)
        return items, final_ids, [dict(d.metadata) for d in docs], batch_size

    def add_documents(self, documents: list[Document], **kwargs: Any) -> list[str]:
        """Add documents, or replace those whose id exists (upsert).

        Ids come from ``ids=``, else from ``Document.id``, else a new UUID. With an image
        encoder, each document's page image is read from ``metadata[image_key]``.

        Args:
            documents: the documents.
            **kwargs: ``ids`` (one per document; ``None`` entries fall back as above) and
                ``batch_size`` (documents encoded per batch).

        Returns:
            The ids of the documents, in order.
        """
        items, ids, metadatas, batch_size = self._prepare(documents, dict(kwargs))
        if not items:
            return []
        return self.index.upsert(items, ids=ids, metadatas=metadatas, batch_size=batch_size)

    async def aadd_documents(self, documents: list[Document], **kwargs: Any) -> list[str]:
        """Async :meth:`add_documents`."""
        items, ids, metadatas, batch_size = self._prepare(documents, dict(kwargs))
        if not items:
            return []
        return await self.index.aupsert(items, ids=ids, metadatas=metadatas, batch_size=batch_size)

    def add_texts(
        self,
        texts: Iterable[str],
        metadatas: list[dict[str, Any]] | None = None,
        *,
        ids: list[str] | None = None,
        **kwargs: Any,
    ) -> list[str]:
        """Add texts (with metadata and ids), replacing those whose id exists (upsert)."""
        return self.add_documents(_texts_to_documents(texts, metadatas), ids=ids, **kwargs)

    async def aadd_texts(
        self,
        texts: Iterable[str],
        metadatas: list[dict[str, Any]] | None = None,
        *,
        ids: list[str] | None = None,
        **kwargs: Any,
    ) -> list[str]:
        """Async :meth:`add_texts`."""
        return await self.aadd_documents(_texts_to_documents(texts, metadatas), ids=ids, **kwargs)

    def delete(
        self,
        ids: list[str] | None = None,
        *,
        filter: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> bool:
        """Delete documents by id and/or by metadata filter; missing ids are ignored.

        Args:
            ids: the ids to delete.
            filter: a Chroma ``where`` filter; with ``ids``, only those ids that match it.

        Returns:
            ``True``.

        Raises:
            InvalidInputError: neither ``ids`` nor ``filter`` is given (to delete everything,
                call ``vector_store.index.drop()``).
        """
        self._check_delete(ids, filter, kwargs)
        self.index.delete(ids, where=filter or None)
        return True

    async def adelete(
        self,
        ids: list[str] | None = None,
        *,
        filter: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> bool:
        """Async :meth:`delete`."""
        self._check_delete(ids, filter, kwargs)
        await self.index.adelete(ids, where=filter or None)
        return True

    @staticmethod
    def _check_delete(
        ids: list[str] | None, where: Mapping[str, Any] | None, kwargs: Mapping[str, Any]
    ) -> None:
        if kwargs:
            raise InvalidInputError(
                f"delete() got unknown argument(s) {sorted(kwargs)}; it takes ids and filter="
            )
        if ids is None and not where:
            raise InvalidInputError(
                "delete() needs ids or filter=; to delete the whole collection call "
                "vector_store.index.drop()"
            )

    # -- reading ----------------------------------------------------------------------------------

    def get_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        """The stored documents among ``ids``, in the order asked; missing ids are left out."""
        return [to_document(r.id, r.text, r.metadata, r.page) for r in self.index.get(list(ids))]

    async def aget_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        """Async :meth:`get_by_ids`."""
        return await asyncio.to_thread(self.get_by_ids, ids)

    def similarity_search(
        self, query: str, k: int = 4, filter: Mapping[str, Any] | None = None, **kwargs: Any
    ) -> list[Document]:
        """The ``k`` documents that best match ``query`` by MaxSim, best first.

        Args:
            query: the query text.
            k: how many documents to return.
            filter: a Chroma ``where`` metadata filter.
            **kwargs: ``exact=True`` scores every (matching) document instead of the ANN
                candidates.
        """
        return [doc for doc, _ in self.similarity_search_with_score(query, k, filter, **kwargs)]

    def similarity_search_with_score(
        self, query: str, k: int = 4, filter: Mapping[str, Any] | None = None, **kwargs: Any
    ) -> list[tuple[Document, float]]:
        """Like :meth:`similarity_search`, with each document's MaxSim score."""
        exact = _exact(kwargs)
        return _with_scores(self.index.search(query, k, where=filter or None, exact=exact))

    async def asimilarity_search(
        self, query: str, k: int = 4, filter: Mapping[str, Any] | None = None, **kwargs: Any
    ) -> list[Document]:
        """Async :meth:`similarity_search`."""
        pairs = await self.asimilarity_search_with_score(query, k, filter, **kwargs)
        return [doc for doc, _ in pairs]

    async def asimilarity_search_with_score(
        self, query: str, k: int = 4, filter: Mapping[str, Any] | None = None, **kwargs: Any
    ) -> list[tuple[Document, float]]:
        """Async :meth:`similarity_search_with_score`."""
        exact = _exact(kwargs)
        return _with_scores(await self.index.asearch(query, k, where=filter or None, exact=exact))

    def similarity_search_by_vector(
        self,
        embedding: Sequence[float] | Sequence[Sequence[float]],
        k: int = 4,
        filter: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> list[Document]:
        """Search with query vectors from the index's encoder instead of a query text.

        A late-interaction query is a matrix of vectors: pass ``[n, dim]`` (e.g.
        ``index.encoder.encode_queries([q])[0].tolist()``). A flat list of ``dim`` floats is a
        one-vector query, for which MaxSim is the best cosine match over each document's
        vectors (for a BERT encoder, plain cosine similarity).

        Raises:
            DimensionMismatchError: the vectors do not have the collection's dimension.
        """
        exact = _exact(kwargs)
        query = _query_vectors(embedding)
        hits = self.index.search_vectors([query], k, where=filter or None, exact=exact)[0]
        return [doc for doc, _ in _with_scores(hits)]

    def _similarity_search_with_relevance_scores(
        self, query: str, k: int = 4, **kwargs: Any
    ) -> list[tuple[Document, float]]:
        where = kwargs.pop("filter", None) or None
        exact = _exact(kwargs)
        hits = self.index.search(query, k, where=where, exact=exact)
        return self._relevance(query, hits)

    async def _asimilarity_search_with_relevance_scores(
        self, query: str, k: int = 4, **kwargs: Any
    ) -> list[tuple[Document, float]]:
        where = kwargs.pop("filter", None) or None
        exact = _exact(kwargs)
        hits = await self.index.asearch(query, k, where=where, exact=exact)
        return await asyncio.to_thread(self._relevance, query, hits)

    def _relevance(self, query: str, hits: list[Hit]) -> list[tuple[Document, float]]:
        """MaxSim averaged over the query vectors, mapped from [-1, 1] to [0, 1]."""
        if not hits:
            return []
        first = hits[0].matches
        n_query = (
            len(first) if first else int(self.index.encoder.encode_queries([query])[0].shape[0])
        )
        return [
            (doc, min(1.0, max(0.0, (score / n_query + 1.0) / 2.0)))
            for doc, score in _with_scores(hits)
        ]

    def max_marginal_relevance_search(
        self,
        query: str,
        k: int = 4,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        filter: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> list[Document]:
        """``k`` documents relevant to ``query`` and unlike each other, chosen by maximal
        marginal relevance among the ``fetch_k`` best by MaxSim (see the class docstring).

        Args:
            query: the query text.
            k: how many documents to return.
            fetch_k: how many of the best documents to choose from.
            lambda_mult: between 0 (diversity only) and 1 (relevance only).
            filter: a Chroma ``where`` metadata filter.
            **kwargs: ``exact=True`` scores every (matching) document.
        """
        return self._mmr(query, k, fetch_k, lambda_mult, filter, kwargs)

    def max_marginal_relevance_search_by_vector(
        self,
        embedding: Sequence[float] | Sequence[Sequence[float]],
        k: int = 4,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        filter: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> list[Document]:
        """:meth:`max_marginal_relevance_search` with query vectors (as
        :meth:`similarity_search_by_vector` takes them) instead of a query text."""
        return self._mmr(_query_vectors(embedding), k, fetch_k, lambda_mult, filter, kwargs)

    def _mmr(
        self,
        query: str | torch.Tensor,
        k: int,
        fetch_k: int,
        lambda_mult: float,
        where: Mapping[str, Any] | None,
        kwargs: Mapping[str, Any],
    ) -> list[Document]:
        exact = _exact(kwargs)
        hits = self.index.search_mmr(
            query, k, fetch_k=fetch_k, lambda_mult=lambda_mult, where=where or None, exact=exact
        )
        return [doc for doc, _ in _with_scores(hits)]

    # -- constructors -----------------------------------------------------------------------------

    @classmethod
    def _build(cls, embedding: Embeddings | Encoder | str | None, kwargs: dict[str, Any]) -> Self:
        encoder = kwargs.pop("encoder", None)
        if embedding is not None:
            if isinstance(embedding, Embeddings):
                raise InvalidInputTypeError(
                    f"LateInteractionVectorStore scores with a latewise encoder (MaxSim over "
                    f"vectors per token or patch), not a LangChain Embeddings "
                    f"({type(embedding).__name__}); pass encoder=load_encoder('minilm'), "
                    "ColBERTEncoder(...) or ColPaliEncoder(...)"
                )
            if encoder is not None:
                raise InvalidInputError("pass the encoder once: as embedding or as encoder=")
            encoder = embedding
        if all(kwargs.get(k) is None for k in ("index", "path", "client")):
            # As langchain-chroma's Chroma.from_texts: no folder or client, kept in memory.
            kwargs["ephemeral"] = True
        return cls(encoder=encoder, **kwargs)

    @classmethod
    def from_texts(
        cls,
        texts: list[str],
        embedding: Embeddings | Encoder | str | None = None,
        metadatas: list[dict[str, Any]] | None = None,
        *,
        ids: list[str] | None = None,
        **kwargs: Any,
    ) -> Self:
        """Build a store and add ``texts`` to it.

        Args:
            texts: the texts.
            embedding: the latewise encoder (same as ``encoder=``); a LangChain ``Embeddings``
                is refused.
            metadatas: one metadata dict per text.
            ids: one id per text.
            **kwargs: the constructor's arguments (``encoder``, ``index``, ``path``,
                ``client``, ``collection``, ...). Without ``index``, ``path`` or ``client`` the
                collection is kept in memory (``ephemeral=True``), as in langchain-chroma's
                ``Chroma.from_texts``; in-memory collections of one process share one
                database, so give each its own ``collection``.
        """
        store = cls._build(embedding, kwargs)
        store.add_texts(texts, metadatas, ids=ids)
        return store

    @classmethod
    def from_documents(
        cls,
        documents: list[Document],
        embedding: Embeddings | Encoder | str | None = None,
        *,
        ids: list[str] | None = None,
        **kwargs: Any,
    ) -> Self:
        """Build a store and add ``documents`` to it (in memory unless ``index``, ``path`` or
        ``client`` is given; see :meth:`from_texts`)."""
        store = cls._build(embedding, kwargs)
        store.add_documents(documents, ids=ids)
        return store


def _texts_to_documents(
    texts: Iterable[str], metadatas: list[dict[str, Any]] | None
) -> list[Document]:
    if isinstance(texts, str):
        raise InvalidInputTypeError("texts must be a list of strings, got a single string")
    texts = list(texts)
    if metadatas is not None and len(metadatas) != len(texts):
        raise InvalidInputError(f"got {len(texts)} texts but {len(metadatas)} metadatas")
    wrong = [i for i, t in enumerate(texts) if not isinstance(t, str)]
    if wrong:
        raise InvalidInputTypeError(
            f"texts must all be strings; positions {wrong[:10]} are not", wrong
        )
    metas = metadatas if metadatas is not None else [{}] * len(texts)
    return [
        Document(page_content=t, metadata=dict(m or {})) for t, m in zip(texts, metas, strict=True)
    ]


def _query_vectors(embedding: Sequence[float] | Sequence[Sequence[float]]) -> torch.Tensor:
    """Query vectors given as ``[n, dim]`` (or one ``dim`` vector) numbers, as a tensor."""
    import torch

    query = torch.as_tensor(embedding, dtype=torch.float32)
    return query.unsqueeze(0) if query.dim() == 1 else query


def _exact(kwargs: Mapping[str, Any]) -> bool:
    unknown = sorted(set(kwargs) - _SEARCH_KWARGS)
    if unknown:
        raise InvalidInputError(
            f"unknown search argument(s) {unknown}; the search methods take k, filter and exact"
        )
    return bool(kwargs.get("exact", False))


def _with_scores(hits: list[Hit]) -> list[tuple[Document, float]]:
    return [(to_document(h.id, h.text, h.metadata, h.page), h.score) for h in hits]
