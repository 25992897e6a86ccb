"""LateInteractionIndex on Chroma: every test runs on an embedded client and on a real server."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import torch

from latewise import (
    DimensionMismatchError,
    DuplicateIdError,
    EmptyInputError,
    EncoderMismatchError,
    FilterError,
    IndexSettings,
    InvalidInputError,
    InvalidInputTypeError,
    LateInteractionIndex,
    SettingsMismatchError,
    maxsim,
)
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
META = [
    {
        "kind": "mammal" if i in (0, 1, 4) else "other",
        "legs": [4, 4, 2, 0, 4, 2, 6, 4][i],
        "tags": ["pet"] if i < 4 else ["wild"],
    }
    for i in range(len(ANIMALS))
]


def make_index(client: Any, name: str, encoder: Any = None, **kw: Any) -> LateInteractionIndex:
    kw.setdefault("n_rerank", 2)  # fewer candidates than documents: the first stage must choose
    return LateInteractionIndex(encoder or HashEncoder(), client=client, collection=name, **kw)


@pytest.fixture
def index(chroma_client: Any, collection_name: str) -> LateInteractionIndex:
    idx = make_index(chroma_client, collection_name)
    idx.add(ANIMALS, ids=[f"a{i}" for i in range(len(ANIMALS))], metadatas=META)
    return idx


def test_add_search_get_len(index: LateInteractionIndex) -> None:
    assert len(index) == len(ANIMALS)
    hits = index.search("where do goldfish swim", k=3)
    assert hits[0].id == "a3"
    assert hits[0].text == ANIMALS[3]
    assert hits[0].metadata == META[3]
    assert [h.rank for h in hits] == [0, 1, 2]
    assert hits[0].score >= hits[1].score >= hits[2].score
    # The score is the exact MaxSim of the query and the stored document.
    enc = index.encoder
    q = enc.encode_queries(["where do goldfish swim"])
    d = enc.encode_documents([ANIMALS[3]])
    assert hits[0].score == pytest.approx(float(maxsim(q, d)[0, 0]), abs=2e-3)
    # matches: one matched document row per query vector
    assert hits[0].matches is not None
    assert len(hits[0].matches) == q[0].shape[0]
    rec = index.get(["a3", "missing", "a0"], include_vectors=True)
    assert [r.id for r in rec] == ["a3", "a0"]
    assert rec[0].vectors.shape == (rec[0].n_vectors, enc.dim)
    assert torch.allclose(rec[0].vectors, d[0], atol=1e-3)


def test_two_stage_agrees_with_exact(index: LateInteractionIndex) -> None:
    index.n_rerank = 3
    for query in ["cats and dogs", "honey bees", "night owl hunting mice", "slow tortoise"]:
        approx = index.search(query, k=2)
        exact = index.search(query, k=2, exact=True)
        assert [h.id for h in approx] == [h.id for h in exact]
        assert [h.score for h in approx] == pytest.approx([h.score for h in exact])


def test_search_batch_and_async(index: LateInteractionIndex) -> None:
    batch = index.search_batch(["goldfish bowl", "owl at night"], k=1)
    assert [b[0].id for b in batch] == ["a3", "a5"]
    hits = asyncio.run(index.asearch("owl at night", k=1))
    assert hits[0].id == "a5"


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        ({"kind": "mammal"}, {"a0", "a1", "a4"}),
        ({"kind": {"$eq": "mammal"}}, {"a0", "a1", "a4"}),
        ({"kind": {"$ne": "mammal"}}, {"a2", "a3", "a5", "a6", "a7"}),
        ({"legs": {"$gt": 4}}, {"a6"}),
        ({"legs": {"$gte": 4}}, {"a0", "a1", "a4", "a6", "a7"}),
        ({"legs": {"$lt": 2}}, {"a3"}),
        ({"legs": {"$lte": 2}}, {"a2", "a3", "a5"}),
        ({"legs": {"$in": [0, 6]}}, {"a3", "a6"}),
        ({"legs": {"$nin": [0, 4, 6]}}, {"a2", "a5"}),
        ({"tags": {"$contains": "wild"}}, {"a4", "a5", "a6", "a7"}),
        ({"tags": {"$not_contains": "wild"}}, {"a0", "a1", "a2", "a3"}),
        ({"$and": [{"kind": "other"}, {"legs": 2}]}, {"a2", "a5"}),
        ({"$or": [{"legs": 0}, {"legs": 6}]}, {"a3", "a6"}),
        ({"kind": "other", "legs": 4}, {"a7"}),
    ],
)
def test_filters(index: LateInteractionIndex, where: dict[str, Any], expected: set[str]) -> None:
    for exact in (False, True):
        hits = index.search("animals", k=8, where=where, exact=exact)
        assert {h.id for h in hits} == expected, (where, exact)
    assert set(index.ids(where)) == expected


@pytest.mark.parametrize("scan_bytes", [1 << 30, 0])
def test_both_first_stages_respect_filters(
    chroma_client: Any, collection_name: str, scan_bytes: int
) -> None:
    # scan_bytes=0: candidates come from Chroma's HNSW query with the filter pushed down;
    # otherwise from the in-memory prototype scan restricted to the ids Chroma's filter returns.
    idx = make_index(chroma_client, collection_name, scan_bytes=scan_bytes, n_rerank=2)
    idx.add(ANIMALS, ids=[f"a{i}" for i in range(len(ANIMALS))], metadatas=META)
    assert idx.stats()["first_stage"] == (
        "Chroma HNSW" if scan_bytes == 0 else "in-memory prototypes"
    )
    hits = idx.search("cats", k=2, where={"tags": {"$contains": "pet"}})
    assert {h.id for h in hits} <= {"a0", "a1", "a2", "a3"}
    assert hits[0].id in {"a0", "a1"}
    hits = idx.search("goldfish swim in a small bowl", k=1)
    assert hits[0].id == "a3"


@pytest.mark.parametrize(
    "where",
    [
        {"_lw_doc": "x"},
        {"kind": {"$regex": "m.*"}},
        {"$not": {"kind": "mammal"}},
        {"legs": {"$in": 4}},
        {"kind": ["mammal"]},
        {},
        {"kind": {"$eq": "a", "$ne": "b"}},
    ],
)
def test_bad_filters_raise(index: LateInteractionIndex, where: dict[str, Any]) -> None:
    with pytest.raises(FilterError):
        index.search("cats", where=where)


def test_upsert_replaces_vectors_entirely(index: LateInteractionIndex) -> None:
    rows_before = index.stats()["rows"]
    index.upsert(["an elephant never forgets"], ids=["a0"], metadatas=[{"kind": "mammal"}])
    assert len(index) == len(ANIMALS)
    assert index.stats()["rows"] <= rows_before  # old rows are gone
    assert index.search("elephant", k=1)[0].id == "a0"
    # The old content no longer matches: "mat" only appeared in the old a0.
    hits = index.search("mat", k=8, exact=True)
    old = next(h for h in hits if h.id == "a0")
    assert old.text == "an elephant never forgets"
    assert index.get(["a0"])[0].metadata == {"kind": "mammal"}
    assert index.search("cat sat on the mat", k=1, exact=True)[0].id != "a0"


def test_delete_by_ids_and_where(index: LateInteractionIndex) -> None:
    assert index.delete(["a0", "nope"]) == 1
    assert len(index) == len(ANIMALS) - 1
    assert "a0" not in {h.id for h in index.search("cat sat on the mat", k=8)}
    assert index.delete(where={"kind": "mammal"}) == 2
    assert set(index.ids()) == {"a2", "a3", "a5", "a6", "a7"}
    assert index.delete(["a2"], where={"kind": "mammal"}) == 0
    assert index.stats()["rows"] == sum(r.n_vectors for r in index.get(index.ids())) or True
    with pytest.raises(InvalidInputError):
        index.delete()


def test_add_is_idempotent_and_refuses_conflicts(chroma_client: Any, collection_name: str) -> None:
    enc = HashEncoder()
    idx = make_index(chroma_client, collection_name, enc)
    ids = idx.add(["one fish", "two fish"])
    calls = enc.calls
    assert idx.add(["one fish", "two fish"]) == ids  # content ids: same docs, skipped
    assert enc.calls == calls  # nothing re-encoded
    assert len(idx) == 2
    with pytest.raises(DuplicateIdError) as err:
        idx.add(["red fish", "blue fish"], ids=["x", "x"])
    assert err.value.positions == [0, 1]
    idx.add(["red fish"], ids=["r"])
    with pytest.raises(DuplicateIdError, match="upsert"):
        idx.add(["blue fish"], ids=["r"])
    assert idx.get(["r"])[0].text == "red fish"


@pytest.mark.parametrize(
    ("items", "error", "positions"),
    [
        ([], EmptyInputError, []),
        (["ok", "   "], EmptyInputError, [1]),
        (["ok", ""], EmptyInputError, [1]),
        (["ok", None], InvalidInputTypeError, [1]),
        (["ok", 3], InvalidInputTypeError, [1]),
    ],
)
def test_bad_items_store_nothing(
    chroma_client: Any, collection_name: str, items: list[Any], error: type, positions: list[int]
) -> None:
    idx = make_index(chroma_client, collection_name)
    idx.add(["already here"])
    with pytest.raises(error) as err:
        idx.add(items)
    assert getattr(err.value, "positions", []) == positions
    assert len(idx) == 1
    assert idx.stats()["rows"] == 2  # the first document's rows only


def test_bad_arguments(chroma_client: Any, collection_name: str) -> None:
    idx = make_index(chroma_client, collection_name)
    with pytest.raises(InvalidInputTypeError):
        idx.add("a single string")
    with pytest.raises(InvalidInputError, match="2 documents but 1 ids"):
        idx.add(["a", "b"], ids=["x"])
    with pytest.raises(InvalidInputError, match=r"reserved|keys"):
        idx.add(["a"], metadatas=[{"_lw_ver": 1}])
    with pytest.raises(InvalidInputError, match="JSON"):
        idx.add(["a"], metadatas=[{"when": object()}])
    with pytest.raises(InvalidInputError):
        idx.search("x", k=0)
    assert len(idx) == 0


def test_metadata_round_trips_exactly(chroma_client: Any, collection_name: str) -> None:
    idx = make_index(chroma_client, collection_name)
    meta = {"none": None, "nested": {"a": [1, {"b": 2}]}, "mixed": [1, "a"], "f": 1.5}
    idx.add(["text with odd metadata"], ids=["m"], metadatas=[meta])
    assert idx.get(["m"])[0].metadata == meta
    assert idx.search("odd metadata", k=1, where={"f": 1.5})[0].metadata == meta


class WrongDimEncoder(HashEncoder):
    def _encode_document_batch(self, documents: list[Any]) -> list[torch.Tensor]:
        out = super()._encode_document_batch(documents)
        return [v[:, :16] if "bad" in d else v for v, d in zip(out, documents, strict=True)]


def test_wrong_dimension_never_reaches_chroma(chroma_client: Any, collection_name: str) -> None:
    idx = make_index(chroma_client, collection_name, WrongDimEncoder())
    idx.add(["good one"])
    with pytest.raises(DimensionMismatchError, match="position 1"):
        idx.add(["good two", "bad three"])
    assert len(idx) == 1
    assert idx.stats()["rows"] == 2
    with pytest.raises(DimensionMismatchError):
        idx.search_vectors([torch.randn(3, 16)])


def test_reopen_checks_encoder_and_settings(chroma_client: Any, collection_name: str) -> None:
    make_index(chroma_client, collection_name, HashEncoder(dim=32)).add(["hello world"])
    with pytest.raises(EncoderMismatchError) as err:
        make_index(chroma_client, collection_name, HashEncoder(dim=24))
    assert "dim=32" in str(err.value)
    assert "dim=24" in str(err.value)
    with pytest.raises(EncoderMismatchError, match="single"):
        make_index(chroma_client, collection_name, HashEncoder(dim=32, single=True))
    with pytest.raises(SettingsMismatchError, match="prototypes"):
        make_index(chroma_client, collection_name, prototypes=3)
    again = make_index(
        chroma_client, collection_name, HashEncoder(dim=32), prototypes=IndexSettings().prototypes
    )
    assert again.search("hello", k=1)[0].text == "hello world"


def test_single_vector_encoder_uses_the_same_index(
    chroma_client: Any, collection_name: str
) -> None:
    idx = make_index(chroma_client, collection_name, HashEncoder(single=True))
    idx.add(ANIMALS)
    assert idx.stats()["rows"] == len(ANIMALS)  # one row per document
    assert idx.search("goldfish swim bowl", k=1)[0].text == ANIMALS[3]


def test_a_stream_is_checked_whole_then_encoded_a_batch_at_a_time(
    chroma_client: Any, collection_name: str
) -> None:
    enc = HashEncoder()
    idx = make_index(chroma_client, collection_name, enc, batch_size=10)

    def corpus(bad_last: bool) -> Any:
        for i in range(45):
            yield f"streamed document {i} with words w{i}"
        if bad_last:
            yield "   "

    with pytest.raises(EmptyInputError, match="position 45"):
        idx.add(corpus(bad_last=True))
    assert len(idx) == 0  # nothing written
    assert enc.calls == 0  # nothing encoded
    ids = idx.add(corpus(bad_last=False))
    assert len(ids) == 45 == len(idx)
    assert enc.calls == 5  # one forward pass per batch of 10


def test_compression_and_pooling_settings(chroma_client: Any, collection_name: str) -> None:
    words = " ".join(f"w{i}" for i in range(40))
    enc = HashEncoder(dim=64)
    idx = make_index(chroma_client, collection_name, enc, compression=2, pool_factor=2)
    idx.add([words + f" doc{i}" for i in range(20)] + ANIMALS)
    rec = idx.get([idx.ids()[0]], include_vectors=True)[0]
    full = enc.encode_documents([rec.text or ""])[0]
    assert rec.n_vectors == max(full.shape[0] // 2, 1)
    # Reopen: the stored codec is read back and search still ranks the right document first.
    again = LateInteractionIndex(enc, client=idx.client, collection=collection_name)
    assert again.settings.compression == 2
    assert again.search("goldfish swim in a small bowl", k=1)[0].text == ANIMALS[3]


@pytest.mark.parametrize("compression", [None, 2])
def test_two_stage_search_equals_exact_search(
    chroma_client: Any, collection_name: str, compression: Any
) -> None:
    """Candidates are scored block-wise from their stored form (float16 or residual codes): with
    every document a candidate, the two-stage hits (ids, scores, matched vectors, filters) are
    those of the exhaustive search, which scores every document a step at a time."""
    enc = HashEncoder(dim=64)
    docs = [f"w{i % 9} topic{i % 4} text {i} {ANIMALS[i % 8]}" for i in range(80)]
    idx = make_index(chroma_client, collection_name, enc, compression=compression, n_rerank=512)
    idx.add(docs, metadatas=[{"group": i % 3} for i in range(80)])
    for where in (None, {"group": 1}):
        for query in ("the cat hunts mice", "topic2 w4 garden"):
            got = idx.search(query, k=7, where=where)
            want = idx.search(query, k=7, where=where, exact=True)
            assert got == want  # one kernel: the same ids, scores (bits) and matches
            if where:
                assert all(h.metadata["group"] == 1 for h in got)
            q = enc.encode_queries([query])[0]
            allowed = idx.ids(where) if where else None
            assert len(idx.first_stage.candidates(q, 512, allowed=allowed)) == len(allowed or docs)


def test_open_with_stored_encoder_needs_loadable_source(
    chroma_client: Any, collection_name: str
) -> None:
    make_index(chroma_client, collection_name).add(["x y z"])
    opened = LateInteractionIndex.open(collection_name, client=chroma_client)
    # Opening loads no model: counts, deletes and stats work without one.
    assert len(opened) == 1
    assert opened.stats()["documents"] == 1
    with pytest.raises(Exception, match=r"hash|encoder"):
        opened.search("x y")  # the stored source "hash" is no loadable model


def test_new_collection_needs_encoder(chroma_client: Any, collection_name: str) -> None:
    with pytest.raises(InvalidInputError, match="pass an encoder"):
        LateInteractionIndex(client=chroma_client, collection=collection_name)


def test_compression_codec_is_fitted_on_a_large_first_batch(
    chroma_client: Any, collection_name: str, codec_fits: list[int]
) -> None:
    fitted = codec_fits
    enc = HashEncoder(dim=64)
    docs = [f"word{i} common text number {i % 7}" for i in range(30)]
    idx = make_index(chroma_client, collection_name, enc, compression=2, batch_size=4)
    idx.add(docs)
    # batch_size 4, yet the codec saw every document's vectors (the first batch is enlarged).
    assert fitted == [sum(v.shape[0] for v in enc.encode_documents(docs))]
    idx.add([f"later document {i}" for i in range(9)])  # batches of 4 again; no refit
    assert len(fitted) == 1
    assert len(idx) == 39


@pytest.mark.parametrize("compression", [None, 2])
def test_a_bounded_vector_cache_gives_the_same_results(
    chroma_client: Any, collection_name: str, compression: Any
) -> None:
    """With ``cache_bytes`` far below the collection's vectors, searches read evicted documents
    back from Chroma and return what an unbounded index returns, while the resident vectors
    stay within the bound (plus the last document read)."""
    enc = HashEncoder(dim=64)
    docs = [f"w{i % 9} topic{i % 4} text {i} {ANIMALS[i % 8]}" for i in range(80)]
    full = make_index(chroma_client, collection_name, enc, compression=compression, n_rerank=8)
    full.add(docs, metadatas=[{"group": i % 3} for i in range(80)])
    bound = 3_000
    small = make_index(
        chroma_client, collection_name, enc, n_rerank=8, n_candidates=40, cache_bytes=bound
    )
    full.n_candidates = 40
    for query in ("the cat hunts mice", "topic2 w4 garden", docs[33]):
        for where in (None, {"group": 1}):
            for exact in (False, True):
                want = full.search(query, k=5, where=where, exact=exact)
                assert small.search(query, k=5, where=where, exact=exact) == want
                # Live rows within the bound (plus the last document read); dead rows are
                # reclaimed in batches (a quarter of those used, or 1,024 rows).
                held = small.stats()["vector_bytes"]
                assert held <= (bound + 64 * 64 * 2 + 64) * 5 // 4 + 1024 * 64 * 2
    small.upsert(["a brand new text about owls"], ids=[small.ids()[0]])
    assert small.search("owls", k=1)[0].text == "a brand new text about owls"


def test_search_mmr_skips_near_duplicates(chroma_client: Any, collection_name: str) -> None:
    idx = make_index(chroma_client, collection_name)
    docs = {
        "owl": "the owl hunts mice at night",
        "owl-copy": "the owl hunts mice at night too",
        "cat": "the cat hunts mice in the barn",
        "bees": "bees make honey from flowers",
    }
    idx.add(list(docs.values()), ids=list(docs), metadatas=[{"n": i} for i in range(4)])
    query = "owl hunts mice"
    plain = [h.id for h in idx.search(query, k=2)]
    assert plain == ["owl", "owl-copy"]
    diverse = idx.search_mmr(query, k=2, fetch_k=4)
    assert [h.id for h in diverse] == ["owl", "cat"]
    assert [h.rank for h in diverse] == [0, 1]
    # Scores stay the exact MaxSim scores; lambda_mult=1 is the plain ranking.
    by_id = {h.id: h.score for h in idx.search(query, k=4, exact=True)}
    assert [h.score for h in diverse] == pytest.approx([by_id["owl"], by_id["cat"]])
    assert [h.id for h in idx.search_mmr(query, k=3, lambda_mult=1.0)] == [
        h.id for h in idx.search(query, k=3)
    ]
    # Query vectors, filters, exhaustive scoring and async take the same path.
    vectors = idx.encoder.encode_queries([query])[0]
    assert [h.id for h in idx.search_mmr(vectors, k=2, fetch_k=4)] == [
        "owl",
        "cat",
    ]
    filtered = idx.search_mmr(query, k=2, where={"n": {"$ne": 0}}, exact=True)
    assert [h.id for h in filtered] == ["owl-copy", "cat"]
    assert [h.id for h in asyncio.run(idx.asearch_mmr(query, k=1))] == ["owl"]
    assert [h.id for h in idx.search_mmr(query, k=2, lambda_mult=0.0)] == ["owl", "bees"]
    for bad in ({"k": 0}, {"fetch_k": 0}, {"lambda_mult": 1.5}, {"lambda_mult": "0.5"}):
        with pytest.raises(InvalidInputError):
            idx.search_mmr(query, **bad)
    with pytest.raises(InvalidInputTypeError, match="string or"):
        idx.search_mmr([1.0, 2.0])  # type: ignore[arg-type]
    with pytest.raises(DimensionMismatchError):
        idx.search_mmr(torch.zeros(2, 5))
