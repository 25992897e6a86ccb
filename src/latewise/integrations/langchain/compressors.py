"""``MaxSimCompressor``: rerank any retriever's documents by exact MaxSim."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from langchain_core.callbacks import Callbacks
from langchain_core.documents import BaseDocumentCompressor, Document
from pydantic import ConfigDict

from latewise.encoders.base import Encoder
from latewise.errors import InvalidInputTypeError, check_positive
from latewise.integrations.langchain._documents import IMAGE_KEY, check_documents, image_ref
from latewise.rerank import rerank

logger = logging.getLogger(__name__)

__all__ = ["MaxSimCompressor"]


class MaxSimCompressor(BaseDocumentCompressor):
    """Rerank documents from any retriever with a ColBERT, ColPali or BERT encoder (MaxSim).

    Each kept document gets its MaxSim score in ``metadata["relevance_score"]`` (as LangChain's
    Cohere and FlashRank rerankers do; a score left there by an earlier reranker is replaced).
    Text encoders read ``page_content``; ColPali reads the page image at
    ``metadata["image_path"]`` (as :class:`~latewise.integrations.langchain.PDFPageLoader` and
    latewise's retrievers set it).

    Setup:
        ``pip install -U "latewise[langchain]"``; the encoder runs locally, no API key.

    Instantiate:
        .. code-block:: python

            from latewise import ColBERTEncoder
            from latewise.integrations.langchain import MaxSimCompressor

            compressor = MaxSimCompressor(
                encoder=ColBERTEncoder("answerdotai/answerai-colbert-small-v1"), top_n=3
            )
            # or by name: MaxSimCompressor(encoder="minilm", top_n=3)

    Rerank:
        .. code-block:: python

            docs = compressor.compress_documents(candidates, "what is late interaction?")
            docs[0].metadata["relevance_score"]

    Async:
        .. code-block:: python

            docs = await compressor.acompress_documents(candidates, "what is late interaction?")

    Use as retriever:
        In LCEL, after any retriever (here a BM25 or vector-store retriever):

        .. code-block:: python

            from langchain_core.runnables import RunnableLambda, RunnablePassthrough

            reranked = {"docs": retriever, "query": RunnablePassthrough()} | RunnableLambda(
                lambda x: compressor.compress_documents(x["docs"], x["query"])
            )
            reranked.invoke("what is late interaction?")

        Or in a ``ContextualCompressionRetriever`` (from ``langchain-classic``):

        .. code-block:: python

            from langchain_classic.retrievers import ContextualCompressionRetriever

            retriever = ContextualCompressionRetriever(
                base_compressor=compressor, base_retriever=retriever
            )

    Attributes:
        encoder: the latewise encoder that scores (a name or path is loaded with
            :func:`~latewise.load_encoder`).
        top_n: how many documents to keep (``None``: all, reordered).
        batch_size: documents encoded per forward pass (the encoder's default when ``None``).
        score_key: the metadata key that receives the MaxSim score.
        image_key: the metadata key holding a page image's path (image encoders).
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    encoder: Encoder
    top_n: int | None = 3
    batch_size: int | None = None
    score_key: str = "relevance_score"
    image_key: str = IMAGE_KEY

    def __init__(self, **data: Any) -> None:
        encoder = data.get("encoder")
        if isinstance(encoder, str):
            from latewise.encoders import load_encoder

            data["encoder"] = load_encoder(encoder)
        elif encoder is not None and not isinstance(encoder, Encoder):
            raise InvalidInputTypeError(
                f"encoder must be a latewise Encoder or a model name/path, got "
                f"{type(encoder).__name__}"
            )
        for name in ("top_n", "batch_size"):
            if data.get(name) is not None:  # None: keep every document / the default batch
                check_positive(name, data[name])
        super().__init__(**data)

    def compress_documents(
        self,
        documents: Sequence[Document],
        query: str,
        callbacks: Callbacks | None = None,
    ) -> Sequence[Document]:
        """The best ``top_n`` of ``documents`` for ``query``, best first, scored by MaxSim.

        Args:
            documents: the candidates (from any retriever).
            query: the query text.
            callbacks: unused (kept for LangChain's interface).

        Returns:
            Copies of the kept documents (same ``id``, content and metadata) with the score in
            ``metadata[score_key]``.

        Raises:
            InvalidInputError, InvalidInputTypeError: a document the encoder cannot read
                (empty text; no image path for ColPali), with its position.
        """
        docs = check_documents(documents)
        if not docs:
            return []
        candidates: list[Any]
        if self.encoder.modality == "text":
            candidates = [d.page_content for d in docs]
        else:
            candidates = [image_ref(d, i, self.image_key).image_path for i, d in enumerate(docs)]
        results = rerank(
            self.encoder, query, candidates, top_n=self.top_n, batch_size=self.batch_size
        )
        return [
            docs[r.index].model_copy(
                update={"metadata": {**docs[r.index].metadata, self.score_key: r.score}}
            )
            for r in results
        ]
