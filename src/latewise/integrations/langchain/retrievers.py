"""``LateInteractionRetriever``: a LangChain retriever over a :class:`LateInteractionIndex`."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from langchain_core.callbacks import (
    AsyncCallbackManagerForRetrieverRun,
    CallbackManagerForRetrieverRun,
)
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict, Field

from latewise.errors import InvalidInputError, InvalidInputTypeError, check_positive
from latewise.index import LateInteractionIndex
from latewise.integrations.langchain._documents import to_document, with_score
from latewise.types import Hit

logger = logging.getLogger(__name__)

__all__ = ["LateInteractionRetriever"]

#: Search arguments the retriever understands, in ``search_kwargs`` and as ``invoke`` kwargs.
SEARCH_ARGS = frozenset({"k", "filter", "exact"})
# Keyword arguments LangChain's ``invoke`` passes through that are not search arguments.
_RUN_ARGS = frozenset({"verbose"})


class LateInteractionRetriever(BaseRetriever):
    """Late-interaction (ColBERT / ColPali / BERT) retrieval from a latewise index.

    Every result is scored with exact MaxSim; the score is put in each document's metadata.

    Setup:
        ``pip install -U "latewise[langchain]"``; add ``[colpali]`` to retrieve page images.

    Instantiate:
        .. code-block:: python

            from latewise import LateInteractionIndex, load_encoder
            from latewise.integrations.langchain import LateInteractionRetriever

            index = LateInteractionIndex(
                load_encoder("minilm"), path="./.latewise", collection="docs"
            )
            retriever = LateInteractionRetriever(index=index, k=4)

    Add:
        Documents are added to the index (or through
        :class:`~latewise.integrations.langchain.LateInteractionVectorStore`):

        .. code-block:: python

            index.add(
                ["ColBERT keeps one vector per token.", "Chroma stores vectors."],
                metadatas=[{"year": 2020}, {"year": 2023}],
            )

    Search:
        .. code-block:: python

            docs = retriever.invoke("what is late interaction?")
            docs = retriever.invoke("what is late interaction?", k=2, filter={"year": 2020})
            docs[0].id, docs[0].page_content, docs[0].metadata["score"]

        .. code-block:: python

            # filters and other search arguments can also be fixed when building it
            LateInteractionRetriever(
                index=index, search_kwargs={"filter": {"year": {"$gte": 2021}}}
            )

    Async:
        .. code-block:: python

            docs = await retriever.ainvoke("what is late interaction?", k=2)

    Use as retriever:
        .. code-block:: python

            from langchain_core.output_parsers import StrOutputParser
            from langchain_core.prompts import ChatPromptTemplate
            from langchain_core.runnables import RunnablePassthrough

            prompt = ChatPromptTemplate.from_template(
                "Answer from the context.\\n\\n{context}\\n\\nQuestion: {question}"
            )

            def format_docs(docs):
                return "\\n\\n".join(doc.page_content for doc in docs)

            chain = (
                {"context": retriever | format_docs, "question": RunnablePassthrough()}
                | prompt
                | llm
                | StrOutputParser()
            )
            chain.invoke("what is late interaction?")

    Page images (ColPali) come back as documents whose ``page_content`` is a reference
    (``"Page 2 of /docs/report.pdf"``) and whose metadata holds ``source``, ``page``, ``width``,
    ``height`` and ``image_path``, the rendered page to hand to a multimodal model.

    Attributes:
        index: the latewise index to search.
        k: how many documents to return (overridden by ``search_kwargs["k"]`` and by ``k=`` at
            ``invoke`` time).
        filter: a Chroma ``where`` metadata filter (``{"year": 2024}``,
            ``{"$and": [...]}``, ``{"tag": {"$in": [...]}}``); overridden like ``k``.
        search_kwargs: default search arguments: ``k``, ``filter`` and ``exact`` (score every
            matching document instead of the ANN candidates).
        score_key: the metadata key that receives the MaxSim score (``None``: no score). A value
            the user stored under the same key is kept, with a warning.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    index: LateInteractionIndex
    k: int = 4
    filter: dict[str, Any] | None = None
    search_kwargs: dict[str, Any] = Field(default_factory=dict)
    score_key: str | None = "score"

    def __init__(self, **data: Any) -> None:
        # Checked here, not in pydantic validators, so the errors stay latewise's typed ones.
        if "k" in data:
            _check_k(data["k"])
        if isinstance(data.get("search_kwargs"), Mapping):
            _check_args(data["search_kwargs"], "search_kwargs")
            if "k" in data["search_kwargs"]:
                _check_k(data["search_kwargs"]["k"])
        super().__init__(**data)

    def _search_args(self, kwargs: Mapping[str, Any]) -> tuple[int, dict[str, Any] | None, bool]:
        """Merge the fields, ``search_kwargs`` and the call's kwargs (later ones win)."""
        call = {k: v for k, v in kwargs.items() if k not in _RUN_ARGS}
        _check_args(call, "invoke() keyword arguments")
        merged: dict[str, Any] = {"k": self.k, "filter": self.filter, "exact": False}
        merged.update(self.search_kwargs)
        merged.update(call)
        where = merged["filter"]
        if where is not None and not isinstance(where, Mapping):
            raise InvalidInputTypeError(
                f"filter must be a Chroma where-dict such as {{'year': 2024}}, got "
                f"{type(where).__name__}"
            )
        return _check_k(merged["k"]), dict(where) if where else None, bool(merged["exact"])

    def _to_documents(self, hits: list[Hit]) -> list[Document]:
        return [
            with_score(to_document(h.id, h.text, h.metadata, h.page), self.score_key, h.score)
            for h in hits
        ]

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun, **kwargs: Any
    ) -> list[Document]:
        k, where, exact = self._search_args(kwargs)
        return self._to_documents(self.index.search(query, k=k, where=where, exact=exact))

    async def _aget_relevant_documents(
        self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun, **kwargs: Any
    ) -> list[Document]:
        k, where, exact = self._search_args(kwargs)
        hits = await self.index.asearch(query, k, where=where, exact=exact)
        return self._to_documents(hits)


def _check_k(value: Any) -> int:
    return check_positive("k", value)


def _check_args(args: Mapping[str, Any], where: str) -> None:
    unknown = sorted(set(args) - SEARCH_ARGS)
    if unknown:
        raise InvalidInputError(
            f"{where} has unknown argument(s) {unknown}; LateInteractionRetriever understands "
            f"{sorted(SEARCH_ARGS)} (the metadata filter is 'filter')"
        )
