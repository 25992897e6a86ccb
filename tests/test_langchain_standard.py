"""LangChain's standard suites (``langchain-tests``) over latewise's retriever and vector store.

The vector store suite runs on an embedded Chroma and on a Chroma server. The suite's fake
``Embeddings`` (``self.get_embeddings()``) is not used: a late-interaction store scores with a
latewise encoder (a matrix of vectors per text), so the store is built with the deterministic
``HashEncoder`` instead; like the suite's ``DeterministicFakeEmbedding``, it gives every text
fixed vectors, and a text matches itself best.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("langchain_core")
pytest.importorskip("langchain_tests")

from langchain_tests.integration_tests import (
    RetrieversIntegrationTests,
    VectorStoreIntegrationTests,
)

from latewise import LateInteractionIndex
from latewise.integrations.langchain import LateInteractionRetriever, LateInteractionVectorStore
from tests.fixtures.hash_encoder import HashEncoder

CORPUS = [
    "ColBERT keeps one vector per token and scores with MaxSim.",
    "Late interaction compares every query token with every document token.",
    "Chroma stores vectors, metadata and documents in collections.",
    "ColPali embeds page images as patches for late interaction.",
    "Paris is the capital of France.",
]


class TestLateInteractionRetrieverStandard(RetrieversIntegrationTests):
    @pytest.fixture(autouse=True)
    def _index(self, tmp_path: Path) -> None:
        self.index = LateInteractionIndex(HashEncoder(), path=tmp_path / "db", collection="std")
        self.index.add(CORPUS, metadatas=[{"n": i} for i in range(len(CORPUS))])

    @property
    def retriever_constructor(self) -> type[LateInteractionRetriever]:
        return LateInteractionRetriever

    @property
    def retriever_constructor_params(self) -> dict[str, Any]:
        return {"index": self.index}

    @property
    def retriever_query_example(self) -> str:
        return "what is late interaction?"


class TestLateInteractionVectorStoreStandard(VectorStoreIntegrationTests):
    @pytest.fixture
    def vectorstore(self, chroma_client: Any, collection_name: str) -> Iterator[Any]:
        store = LateInteractionVectorStore(
            encoder=HashEncoder(), client=chroma_client, collection=collection_name
        )
        try:
            yield store
        finally:
            store.index.drop()
