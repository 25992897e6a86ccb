"""LangChain integration: late-interaction retrieval, reranking and PDF page loading.

- :class:`LateInteractionRetriever`: a ``BaseRetriever`` over a
  :class:`~latewise.LateInteractionIndex` (``k``, ``filter``, ``search_kwargs``; score in
  metadata).
- :class:`LateInteractionVectorStore`: a ``VectorStore`` (``add_documents``, ``delete``,
  ``get_by_ids``, ``similarity_search``, ``as_retriever``, ``from_texts``...).
- :class:`MaxSimCompressor`: a ``BaseDocumentCompressor`` that reranks any retriever's documents
  by MaxSim (ColBERT, ColPali, BERT).
- :class:`PDFPageLoader`: a ``BaseLoader`` giving one ``Document`` per PDF page, with the page
  image saved on disk for ColPali.

Needs ``langchain-core``: ``pip install 'latewise[langchain]'``.
"""

from __future__ import annotations

from latewise.errors import MissingDependencyError

try:
    import langchain_core  # noqa: F401
except ImportError as exc:
    raise MissingDependencyError.for_extra(
        "langchain-core", "langchain", "latewise.integrations.langchain"
    ) from exc

from latewise.integrations.langchain.compressors import MaxSimCompressor
from latewise.integrations.langchain.document_loaders import PDFPageLoader
from latewise.integrations.langchain.retrievers import LateInteractionRetriever
from latewise.integrations.langchain.vectorstores import LateInteractionVectorStore

__all__ = [
    "LateInteractionRetriever",
    "LateInteractionVectorStore",
    "MaxSimCompressor",
    "PDFPageLoader",
]
