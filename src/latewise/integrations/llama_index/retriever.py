"""``LateInteractionRetriever``: a LlamaIndex retriever over a latewise index."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.callbacks.base import CallbackManager
from llama_index.core.constants import DEFAULT_SIMILARITY_TOP_K
from llama_index.core.schema import (
    BaseNode,
    Document,
    IndexNode,
    MetadataMode,
    NodeWithScore,
    QueryBundle,
    TransformComponent,
)
from llama_index.core.vector_stores.types import MetadataFilters, VectorStoreQueryMode

from latewise.errors import InvalidInputError, InvalidInputTypeError
from latewise.integrations.llama_index._filters import metadata_filters_to_where
from latewise.integrations.llama_index._nodes import (
    hit_to_node,
    nodes_to_documents,
    ref_doc_where,
    stored_ref_doc_id,
)
from latewise.integrations.llama_index._parsing import check_documents, parse_documents
from latewise.integrations.llama_index._persist import (
    PERSIST_FILENAME,
    open_persisted,
    write_persisted,
)
from latewise.integrations.llama_index._query_modes import check_mode, check_top_k, mmr_args

if TYPE_CHECKING:
    from chromadb.api import ClientAPI
    from typing_extensions import Unpack

    from latewise.encoders import Encoder
    from latewise.index import LateInteractionIndex
    from latewise.types import Hit

logger = logging.getLogger(__name__)

__all__ = ["PERSIST_FILENAME", "LateInteractionRetriever", "RetrieverSettings"]


class RetrieverSettings(TypedDict, total=False):
    """The settings :meth:`LateInteractionRetriever.from_defaults` passes on to the retriever
    (see :class:`LateInteractionRetriever` for each)."""

    similarity_top_k: int
    filters: MetadataFilters | None
    exact: bool
    vector_store_query_mode: VectorStoreQueryMode | str
    vector_store_kwargs: dict[str, Any] | None
    metadata_mode: MetadataMode
    callback_manager: CallbackManager | None
    verbose: bool


class LateInteractionRetriever(BaseRetriever):
    """Retrieve LlamaIndex nodes from a latewise index by exact late-interaction (MaxSim) scores.

    Works with every latewise encoder: BERT and ColBERT over text nodes, ColPali over page images
    (results are ``ImageNode``\\ s a multimodal LLM can read). Nodes come back exactly as they
    were inserted (id, text, metadata, relationships, excluded metadata keys, templates), with
    the MaxSim score. The index lives in Chroma, so the retriever can be reopened by another
    process (:meth:`persist` / :meth:`from_persist_dir`) and kept in step with the documents
    (:meth:`insert`, :meth:`insert_nodes`, :meth:`refresh_ref_docs`, :meth:`delete_ref_doc`,
    :meth:`delete_nodes`). Nodes are stored in LlamaIndex's own vector-store layout.

    Setup:
        ``pip install 'latewise[llama-index]'`` (add ``[colpali]`` for page images).

    Instantiate:
        .. code-block:: python

            from latewise import load_encoder
            from latewise.integrations.llama_index import LateInteractionRetriever

            retriever = LateInteractionRetriever.from_defaults(
                documents=documents, encoder=load_encoder("minilm"), path="./.latewise",
                collection="docs", similarity_top_k=5,
            )
            # or over an existing index:
            retriever = LateInteractionRetriever(index=index, similarity_top_k=5)

    Retrieve:
        .. code-block:: python

            nodes = retriever.retrieve("what is late interaction?")
            nodes[0].node.text, nodes[0].score, nodes[0].node.ref_doc_id

    Filter:
        .. code-block:: python

            from llama_index.core.vector_stores import MetadataFilter, MetadataFilters

            retriever.filters = MetadataFilters(
                filters=[MetadataFilter(key="year", value=2020, operator=">=")]
            )

    Diversify (maximal marginal relevance, as LlamaIndex's vector index retrievers take it):
        .. code-block:: python

            retriever = LateInteractionRetriever(
                index=index, similarity_top_k=5, vector_store_query_mode="mmr",
                vector_store_kwargs={"mmr_threshold": 0.5},  # 1: relevance only, 0: diversity
            )

    Keep in step:
        .. code-block:: python

            retriever.insert(Document(text="...", metadata={"year": 2025}))
            retriever.delete_ref_doc(document.doc_id)
            # a folder that changes: new files inserted, changed ones replaced, gone ones deleted
            documents = SimpleDirectoryReader("docs/", filename_as_id=True).load_data()
            retriever.refresh_ref_docs(documents)  # [True, False, ...]: which were refreshed
            for gone in set(retriever.ref_doc_ids()) - {d.doc_id for d in documents}:
                retriever.delete_ref_doc(gone)
            retriever.persist("./storage")
            retriever = LateInteractionRetriever.from_persist_dir("./storage")

    Use in a query engine:
        .. code-block:: python

            from llama_index.core.query_engine import RetrieverQueryEngine

            engine = RetrieverQueryEngine.from_args(retriever, node_postprocessors=[...])

    Async:
        ``await retriever.aretrieve(...)``, ``ainsert``, ``ainsert_nodes``,
        ``arefresh_ref_docs``, ``adelete_ref_doc``, ``adelete_nodes``.

    Args:
        index: the :class:`~latewise.LateInteractionIndex` to search.
        similarity_top_k: how many nodes to return.
        filters: LlamaIndex ``MetadataFilters`` applied to every query (translated to Chroma
            filters; an operator Chroma cannot express raises
            :class:`~latewise.errors.FilterError` when the retriever is made or queried).
        exact: score every (matching) node instead of the ANN candidates.
        vector_store_query_mode: ``"default"`` (rank by MaxSim) or ``"mmr"``: choose
            ``similarity_top_k`` nodes relevant to the query and unlike each other among the
            best ``mmr_prefetch_k`` (default ``mmr_prefetch_factor`` = 4 times
            ``similarity_top_k``), with :meth:`~latewise.LateInteractionIndex.search_mmr` (each
            next node is penalised by its similarity to the closest node already chosen; scores
            stay MaxSim scores).
        vector_store_kwargs: for ``"mmr"``: ``mmr_threshold`` (``lambda``, default 0.5),
            ``mmr_prefetch_factor`` or ``mmr_prefetch_k``.
        metadata_mode: which metadata is encoded with a node's text (``EMBED``, as LlamaIndex's
            vector indexes do).
        transformations: how :meth:`insert` turns documents into nodes (default: a
            :class:`LateInteractionNodeParser` for text encoders; for ColPali, each image
            document becomes one ``ImageNode``).
        callback_manager, object_map, objects, verbose: as in LlamaIndex's ``BaseRetriever``.
    """

    def __init__(
        self,
        index: LateInteractionIndex,
        similarity_top_k: int = DEFAULT_SIMILARITY_TOP_K,
        filters: MetadataFilters | None = None,
        *,
        exact: bool = False,
        vector_store_query_mode: VectorStoreQueryMode | str = VectorStoreQueryMode.DEFAULT,
        vector_store_kwargs: dict[str, Any] | None = None,
        metadata_mode: MetadataMode = MetadataMode.EMBED,
        transformations: Sequence[TransformComponent] | None = None,
        callback_manager: CallbackManager | None = None,
        object_map: dict[str, Any] | None = None,
        objects: list[IndexNode] | None = None,
        verbose: bool = False,
    ) -> None:
        from latewise.index import LateInteractionIndex

        if not isinstance(index, LateInteractionIndex):
            raise InvalidInputTypeError(
                f"index must be a latewise LateInteractionIndex, got {type(index).__name__}; "
                "build one with LateInteractionRetriever.from_defaults(...)"
            )
        check_top_k(similarity_top_k)
        self.index = index
        self.similarity_top_k = similarity_top_k
        self.filters = filters
        metadata_filters_to_where(filters)  # a filter Chroma cannot express fails now
        self.exact = exact
        self.vector_store_query_mode = check_mode(vector_store_query_mode)
        self.vector_store_kwargs = dict(vector_store_kwargs or {})
        mmr_args(self.vector_store_kwargs, similarity_top_k)  # bad values fail now
        self.metadata_mode = MetadataMode(metadata_mode)
        self._transformations = list(transformations) if transformations is not None else None
        super().__init__(
            callback_manager=callback_manager,
            object_map=object_map,
            objects=objects,
            verbose=verbose,
        )

    @classmethod
    def from_defaults(
        cls,
        *,
        index: LateInteractionIndex | None = None,
        nodes: Sequence[BaseNode] | None = None,
        documents: Sequence[Document] | None = None,
        encoder: Encoder | str | None = None,
        path: str | Path | None = None,
        client: ClientAPI | None = None,
        collection: str | None = None,
        ephemeral: bool = False,
        transformations: Sequence[TransformComponent] | None = None,
        node_parser: TransformComponent | None = None,
        show_progress: bool = False,
        index_kwargs: dict[str, Any] | None = None,
        **settings: Unpack[RetrieverSettings],
    ) -> LateInteractionRetriever:
        """Build (or open) the index and the retriever, and add ``nodes`` or ``documents``.

        Args:
            index: an existing index (then ``encoder``, ``path``, ``client``, ``collection``
                and ``index_kwargs`` must not be given).
            nodes: nodes to add as they are.
            documents: documents to split into nodes (see ``transformations``) and add.
            encoder: a latewise encoder, or a name / path for
                :func:`~latewise.load_encoder`; ``None`` reopens an existing collection with
                the encoder stored with it.
            path: folder of an embedded Chroma (default ``./.latewise``).
            client: a Chroma client (e.g. ``chromadb.HttpClient`` for a server).
            collection: the collection name (default ``"latewise"``).
            ephemeral: keep the index in memory only.
            transformations: turn ``documents`` into nodes (default: see the class).
            node_parser: shorthand for ``transformations=[node_parser]``.
            show_progress: show progress bars while parsing and indexing.
            index_kwargs: more arguments for :class:`~latewise.LateInteractionIndex`
                (``compression``, ``prototypes``, ``batch_size``, ``image_dir``...).
            **settings: the retriever's settings, as the class takes them
                (:class:`RetrieverSettings`: ``similarity_top_k``, ``filters``, ``exact``,
                ``vector_store_query_mode``, ``vector_store_kwargs``, ``metadata_mode``,
                ``callback_manager``, ``verbose``).

        Raises:
            InvalidInputError: both ``nodes`` and ``documents``, ``index`` with index
                arguments, or ``node_parser`` with ``transformations``.
        """
        if nodes is not None and documents is not None:
            raise InvalidInputError("pass nodes= or documents=, not both")
        if node_parser is not None:
            if transformations is not None:
                raise InvalidInputError("pass transformations= or node_parser=, not both")
            transformations = [node_parser]
        if index is None:
            from latewise.index import DEFAULT_COLLECTION, LateInteractionIndex

            index = LateInteractionIndex(
                encoder,
                path=path,
                client=client,
                collection=collection or DEFAULT_COLLECTION,
                ephemeral=ephemeral,
                **(index_kwargs or {}),
            )
        elif (
            any(v is not None for v in (encoder, path, client, collection, index_kwargs))
            or ephemeral
        ):
            raise InvalidInputError(
                "index= was given together with arguments that build an index (encoder, path, "
                "client, collection, ephemeral, index_kwargs); pass one or the other"
            )
        retriever = cls(index=index, transformations=transformations, **settings)
        if documents is not None:
            retriever.insert_documents(documents, show_progress=show_progress)
        elif nodes is not None:
            retriever.insert_nodes(nodes, show_progress=show_progress)
        return retriever

    # -- retrieval ------------------------------------------------------------------------------

    def _where(self) -> dict[str, Any] | None:
        return metadata_filters_to_where(self.filters)

    def _to_nodes(self, hits: list[Hit]) -> list[NodeWithScore]:
        return [NodeWithScore(node=hit_to_node(h), score=h.score) for h in hits]

    def _search(self, query: str) -> list[Hit]:
        check_top_k(self.similarity_top_k)
        k, where = self.similarity_top_k, self._where()
        if check_mode(self.vector_store_query_mode) == VectorStoreQueryMode.MMR:
            fetch_k, lambda_mult = mmr_args(self.vector_store_kwargs, k)
            return self.index.search_mmr(
                query, k, fetch_k=fetch_k, lambda_mult=lambda_mult, where=where, exact=self.exact
            )
        return self.index.search(query, k=k, where=where, exact=self.exact)

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return self._to_nodes(self._search(query_bundle.query_str))

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return self._to_nodes(await asyncio.to_thread(self._search, query_bundle.query_str))

    # -- keeping the index in step --------------------------------------------------------------

    @property
    def transformations(self) -> list[TransformComponent]:
        """How documents become nodes (built on first use for the index's encoder)."""
        if self._transformations is None:
            if self.index.encoder.modality == "image":
                self._transformations = []
            else:
                from latewise.integrations.llama_index.node_parser import (
                    LateInteractionNodeParser,
                )

                self._transformations = [
                    LateInteractionNodeParser(
                        self.index.encoder,
                        metadata_mode=self.metadata_mode,
                        callback_manager=self.callback_manager,
                    )
                ]
        return self._transformations

    def parse_documents(
        self, documents: Sequence[Document], *, show_progress: bool = False
    ) -> list[BaseNode]:
        """Turn documents into the nodes :meth:`insert` would add."""
        return parse_documents(
            documents,
            self.index.encoder,
            lambda: self.transformations,
            show_progress=show_progress,
        )

    def insert_nodes(self, nodes: Sequence[BaseNode], *, show_progress: bool = False) -> list[str]:
        """Add nodes (replacing nodes with the same id); returns their ids."""
        if isinstance(nodes, Sequence) and not isinstance(nodes, BaseNode) and len(nodes) == 0:
            return []
        items, ids, metadatas = nodes_to_documents(nodes, self.index, self.metadata_mode)
        return self.index.upsert(
            items, ids=ids, metadatas=metadatas, show_progress_bar=show_progress or None
        )

    async def ainsert_nodes(
        self, nodes: Sequence[BaseNode], *, show_progress: bool = False
    ) -> list[str]:
        """Async :meth:`insert_nodes`."""
        return await asyncio.to_thread(self.insert_nodes, nodes, show_progress=show_progress)

    def insert_documents(
        self, documents: Sequence[Document], *, show_progress: bool = False
    ) -> list[str]:
        """Split documents into nodes and add them; returns the node ids."""
        nodes = self.parse_documents(documents, show_progress=show_progress)
        return self.insert_nodes(nodes, show_progress=show_progress)

    def insert(self, document: Document, *, show_progress: bool = False) -> list[str]:
        """Split one document into nodes and add them; returns the node ids."""
        if not isinstance(document, Document):
            raise InvalidInputTypeError(
                f"insert() takes one LlamaIndex Document, got {type(document).__name__}; "
                "use insert_nodes() for nodes"
            )
        return self.insert_documents([document], show_progress=show_progress)

    async def ainsert(self, document: Document, *, show_progress: bool = False) -> list[str]:
        """Async :meth:`insert`."""
        return await asyncio.to_thread(self.insert, document, show_progress=show_progress)

    def delete_ref_doc(self, ref_doc_id: str) -> int:
        """Delete every node of the source document ``ref_doc_id``; returns how many."""
        if not isinstance(ref_doc_id, str) or not ref_doc_id:
            raise InvalidInputTypeError(
                f"ref_doc_id must be a non-empty string, got {ref_doc_id!r}"
            )
        return self.index.delete(where=ref_doc_where(ref_doc_id))

    def refresh_ref_docs(
        self, documents: Sequence[Document], *, show_progress: bool = False
    ) -> list[bool]:
        """Bring the index in step with ``documents``, as LlamaIndex's ``refresh_ref_docs``.

        A document whose id is not in the index is inserted; one whose content changed (its
        ``hash`` differs from the one its stored nodes recorded) has its nodes replaced; an
        unchanged one is left alone. Documents gone from the source are not touched: compare
        :meth:`ref_doc_ids` with your documents and call :meth:`delete_ref_doc` for the rest.
        Give documents stable ids (e.g. ``SimpleDirectoryReader(..., filename_as_id=True)``),
        or every run inserts them again.

        Returns:
            One flag per document: ``True`` when it was inserted or updated.
        """
        check_documents(documents)
        changed: list[Document] = []
        old_ids: list[str] = []
        flags: list[bool] = []
        for pos, doc in enumerate(documents):
            if not isinstance(doc, Document):
                raise InvalidInputTypeError(
                    f"documents must be LlamaIndex Documents; got {type(doc).__name__} at "
                    f"position {pos}",
                    [pos],
                )
            stored = self.index.ids(where=ref_doc_where(doc.doc_id))
            if stored and self._stored_hash(stored[0]) == doc.hash:
                flags.append(False)
                continue
            changed.append(doc)
            old_ids.extend(stored)
            flags.append(True)
        if changed:
            new_ids = set(self.insert_documents(changed, show_progress=show_progress))
            stale = [i for i in old_ids if i not in new_ids]
            if stale:  # nodes of the old version the new one no longer has
                self.index.delete(stale)
        return flags

    async def arefresh_ref_docs(
        self, documents: Sequence[Document], *, show_progress: bool = False
    ) -> list[bool]:
        """Async :meth:`refresh_ref_docs`."""
        return await asyncio.to_thread(
            self.refresh_ref_docs, documents, show_progress=show_progress
        )

    def _stored_hash(self, node_id: str) -> str | None:
        """The source-document hash a stored node recorded (``None`` if it recorded none)."""
        records = self.index.get([node_id])
        if not records:
            return None
        source = hit_to_node(records[0]).source_node
        return source.hash if source is not None else None

    def ref_doc_ids(self) -> list[str]:
        """The ids of the source documents the index holds nodes of, sorted."""
        found = {stored_ref_doc_id(r.metadata) for r in self.index.get(self.index.ids())}
        return sorted(d for d in found if d is not None)

    async def adelete_ref_doc(self, ref_doc_id: str) -> int:
        """Async :meth:`delete_ref_doc`."""
        return await asyncio.to_thread(self.delete_ref_doc, ref_doc_id)

    def delete_nodes(self, node_ids: Sequence[str]) -> int:
        """Delete nodes by id (unknown ids are ignored); returns how many were deleted."""
        if isinstance(node_ids, str):
            raise InvalidInputTypeError("node_ids must be a list of ids, got a single string")
        if not node_ids:
            return 0
        return self.index.delete(list(node_ids))

    async def adelete_nodes(self, node_ids: Sequence[str]) -> int:
        """Async :meth:`delete_nodes`."""
        return await asyncio.to_thread(self.delete_nodes, node_ids)

    # -- persistence ------------------------------------------------------------------------------

    def persist(self, persist_dir: str | Path) -> None:
        """Write what reopens this retriever to ``persist_dir/latewise_retriever.json``.

        The nodes themselves already live in Chroma; the file records the collection, where
        Chroma is (the embedded folder, or a server's host and port; never credentials) and the
        retriever's settings (``similarity_top_k``, ``filters``, ``exact``, the query mode and
        its arguments, ``metadata_mode``).

        Raises:
            InvalidInputError: the index is in memory only (nothing to reopen).
        """
        write_persisted(self, persist_dir)

    @classmethod
    def from_persist_dir(
        cls,
        persist_dir: str | Path,
        encoder: Encoder | str | None = None,
        *,
        client: ClientAPI | None = None,
        **kwargs: Any,
    ) -> LateInteractionRetriever:
        """Reopen a retriever saved with :meth:`persist`.

        Args:
            persist_dir: the folder given to :meth:`persist`.
            encoder: the encoder (``None`` loads the one stored with the collection).
            client: a Chroma client to use instead of the recorded location (e.g. a server
                that needs credentials).
            **kwargs: override retriever settings (``similarity_top_k``, ``filters``...).

        Raises:
            InvalidInputError: the folder holds no saved retriever.
        """
        index, settings = open_persisted(persist_dir, encoder, client)
        settings.update(kwargs)
        return cls(index=index, **settings)
