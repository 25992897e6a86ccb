"""LlamaIndex integration: late-interaction retrieval, MaxSim reranking, page readers, parsing.

- :class:`LateInteractionRetriever`: a ``BaseRetriever`` over a
  :class:`~latewise.LateInteractionIndex` (BERT, ColBERT or ColPali), with LlamaIndex
  ``MetadataFilters``, insert / delete by source document, and persist / reload.
- :class:`MaxSimRerank`: a node postprocessor that reranks any retriever's nodes by MaxSim.
- :class:`PDFPageReader`: PDF pages (and images) as ``ImageDocument``\\ s for ColPali.
- :class:`LateInteractionNodeParser`: splits text into nodes the encoder reads whole.
- :func:`metadata_filters_to_where`: LlamaIndex ``MetadataFilters`` as a Chroma ``where``.

Needs ``pip install 'latewise[llama-index]'``.

Example:
    ::

        from latewise import load_encoder
        from latewise.integrations.llama_index import LateInteractionRetriever, MaxSimRerank
        from llama_index.core.query_engine import RetrieverQueryEngine

        retriever = LateInteractionRetriever.from_defaults(
            documents=documents, encoder=load_encoder("minilm"), path="./.latewise"
        )
        engine = RetrieverQueryEngine.from_args(retriever)
"""

from __future__ import annotations

from latewise.errors import MissingDependencyError

try:
    import llama_index.core  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise MissingDependencyError.for_extra(
        "llama-index-core", "llama-index", "latewise.integrations.llama_index"
    ) from exc

from latewise.integrations.llama_index._filters import metadata_filters_to_where
from latewise.integrations.llama_index.node_parser import LateInteractionNodeParser
from latewise.integrations.llama_index.postprocessor import MaxSimRerank
from latewise.integrations.llama_index.readers import PDFPageReader
from latewise.integrations.llama_index.retriever import (
    PERSIST_FILENAME,
    LateInteractionRetriever,
)

__all__ = [
    "PERSIST_FILENAME",
    "LateInteractionNodeParser",
    "LateInteractionRetriever",
    "MaxSimRerank",
    "PDFPageReader",
    "metadata_filters_to_where",
]
