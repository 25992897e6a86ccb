"""The engine's units: the writer's checks and all-or-nothing writes, the view kept in step with
Chroma, the first stage, the ranker (one kernel for every path), the vector cache, repair."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from latewise import (
    DimensionMismatchError,
    DuplicateIdError,
    EncoderMismatchError,
    InvalidInputError,
    InvalidInputTypeError,
    LateInteractionIndex,
    PartialWriteError,
    maxsim,
)
from latewise.engine import view as view_module
from latewise.engine.cache import ResidentRows, RowSnapshot, release_free_memory
from latewise.engine.inputs import prepare_inputs
from tests.fixtures.hash_encoder import HashEncoder

TEXTS = [f"w{i % 9} topic{i % 4} text {i} animal{i % 8} plant{i % 5}" for i in range(80)]


def make(client: Any, name: str, encoder: Any = None, **kw: Any) -> LateInteractionIndex:
    return LateInteractionIndex(
        encoder or HashEncoder(dim=64), client=client, collection=name, **kw
    )


# -- writer: the whole input is checked first ------------------------------------------------


def test_prepare_checks_everything_before_anything_is_written() -> None:
    ok = prepare_inputs(["a b", "c d"], None, None, modality="text", version_key=1)
    assert [p.position for p in ok] == [0, 1]
    assert ok[0].id != ok[1].id  # content ids
    with pytest.raises(DuplicateIdError, match=r"positions \[0, 2\].*nothing was written") as err:
        prepare_inputs(["p", "q", "r"], ["da", "db", "da"], None, modality="text", version_key=1)
    assert err.value.positions == [0, 2]
    with pytest.raises(InvalidInputError, match=r"position 1.*surrogate") as bad:
        prepare_inputs(["fine", "bad \ud800"], None, None, modality="text", version_key=1)
    assert bad.value.positions == [1]
    with pytest.raises(InvalidInputTypeError, match="position 2"):
        prepare_inputs(["a", "b", 3], None, None, modality="text", version_key=1)
    with pytest.raises(InvalidInputError, match="2 documents but 1 ids"):
        prepare_inputs(["a", "b"], ["x"], None, modality="text", version_key=1)
    with pytest.raises(DimensionMismatchError, match="position 1 have dim 5"):
        prepare_inputs(
            None,
            None,
            None,
            modality="text",
            version_key=1,
            vectors=[torch.ones(2, 4), torch.ones(2, 5)],
            dim=4,
        )


def test_duplicate_ids_across_batches_write_nothing(
    chroma_client: Any, collection_name: str
) -> None:
    idx = make(chroma_client, collection_name)
    idx.add(["x y z", "u v w", "k l m"])
    with pytest.raises(DuplicateIdError):
        idx.add(["p", "q", "r"], ids=["da", "db", "da"], batch_size=2)
    assert len(idx) == 3
    idx.add(["p"], ids=["da"])
    with pytest.raises(DuplicateIdError, match=r"already exist.*nothing was written"):
        idx.add(["new", "other"], ids=["fresh", "da"], batch_size=1)
    assert len(idx) == 4
    assert idx.get(["fresh"]) == []


class FailingOnce(HashEncoder):
    """Fails the first time it meets a document containing ``boom`` (a model or device error)."""

    failed = False

    def _encode_document_batch(self, documents: list[Any]) -> list[torch.Tensor]:
        if not self.failed and any("boom" in d for d in documents):
            FailingOnce.failed = True
            raise RuntimeError("the device ran out of memory")
        return super()._encode_document_batch(documents)


def test_a_failure_after_some_batches_names_them_and_a_rerun_completes(
    chroma_client: Any, collection_name: str
) -> None:
    FailingOnce.failed = False
    idx = make(chroma_client, collection_name, FailingOnce(dim=64))
    texts = ["one a", "two b", "three boom", "four d"]
    with pytest.raises(PartialWriteError, match="re-run the same call") as err:
        idx.add(texts, ids=["1", "2", "3", "4"], batch_size=2)
    assert err.value.written == ["1", "2"]
    assert isinstance(err.value.__cause__, RuntimeError)
    assert sorted(idx.ids()) == ["1", "2"]
    assert idx.add(texts, ids=["1", "2", "3", "4"], batch_size=2) == ["1", "2", "3", "4"]
    assert idx.written.documents == 4  # the re-run skipped the two stored ones
    assert [h.id for h in idx.search("three boom", k=1)] == ["3"]


def test_bad_constructor_arguments_are_typed(tmp_path: Path) -> None:
    for bad in (None, 123, "lc"):
        with pytest.raises(InvalidInputError, match="collection name"):
            LateInteractionIndex(HashEncoder(), path=tmp_path, collection=bad)  # type: ignore[arg-type]
    (tmp_path / "afile").write_text("x")
    with pytest.raises(InvalidInputError, match="is a file"):
        LateInteractionIndex(HashEncoder(), path=tmp_path / "afile")


def test_a_collection_is_bound_to_its_encoder_at_the_first_write(
    chroma_client: Any, collection_name: str
) -> None:
    make(chroma_client, collection_name, HashEncoder(dim=64, name="first"))  # nothing written
    other = make(chroma_client, collection_name, HashEncoder(dim=32, name="second"))
    other.add(["now bound"])
    with pytest.raises(EncoderMismatchError, match="differs in"):
        make(chroma_client, collection_name, HashEncoder(dim=64, name="first"))


def test_add_vectors_stores_exactly_what_add_stores(
    chroma_client: Any, collection_name: str
) -> None:
    enc = HashEncoder(dim=64)
    by_text = make(chroma_client, collection_name, enc)
    by_text.add(TEXTS[:20], ids=[str(i) for i in range(20)])
    by_vectors = make(chroma_client, collection_name + "-v", enc)
    vectors = [v.numpy() for v in enc.encode_documents(TEXTS[:20])]
    by_vectors.add_vectors(vectors, ids=[str(i) for i in range(20)], texts=TEXTS[:20])
    for query in ("topic2 w4 animal3", TEXTS[7]):
        assert by_vectors.search(query, k=5) == by_text.search(query, k=5)
    with pytest.raises(DimensionMismatchError, match="position 1 have dim 8"):
        by_vectors.add_vectors([torch.ones(2, 64), torch.ones(3, 8)])
    by_vectors.upsert_vectors([torch.ones(1, 64)], ids=["0"], texts=["replaced"])
    assert by_vectors.get(["0"])[0].text == "replaced"


# -- the view follows other writers ---------------------------------------------------------------


def test_a_write_by_another_process_is_seen_by_the_next_search(
    chroma_client: Any, collection_name: str
) -> None:
    """Two index objects on one collection see it as two processes do. ``a`` writes right after
    ``b`` did: the write log tells ``a`` that its view missed ``b``'s write, and ``a``'s next
    search reloads it."""
    a = make(chroma_client, collection_name)
    a.add(TEXTS[:10])
    a.search("topic1", k=1)  # a's view is loaded
    b = make(chroma_client, collection_name)
    b.add(["zebra stripes only here"], ids=["zebra"])
    a.add(["another text by a"], ids=["mine"])  # between a's last look and its own record
    assert a.search("zebra stripes", k=1)[0].id == "zebra"
    b.delete(["zebra"])
    assert all(h.id != "zebra" for h in a.search("zebra stripes", k=3))


# -- one kernel for every path --------------------------------------------------------------------


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("compression", [None, 2])
def test_every_path_reports_the_bit_identical_score(
    chroma_client: Any, collection_name: str, threads: int, compression: Any
) -> None:
    """Two-stage search, exhaustive search, MMR, explain and the public maxsim over the stored
    vectors give each (query, document) the same float32 bits, on 1 and 2 threads."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        idx = make(chroma_client, collection_name, compression=compression, n_rerank=6)
        idx.add(TEXTS)
        for query in ("the topic2 w4 animal3", TEXTS[17], "plant1"):
            two_stage = idx.search(query, k=5)
            exhaustive = {h.id: h for h in idx.search(query, k=len(TEXTS), exact=True)}
            q = idx.encoder.encode_queries([query])[0]
            stored = idx.get([h.id for h in two_stage], include_vectors=True)
            public = maxsim([q], [r.vectors for r in stored])[0].tolist()
            for hit, direct in zip(two_stage, public, strict=True):
                assert hit.score == exhaustive[hit.id].score
                assert hit.matches == exhaustive[hit.id].matches
                assert hit.score == direct
                assert idx.explain(query, hit.id).score == hit.score
            for hit in idx.search_mmr(query, k=3, fetch_k=10):
                assert hit.score == exhaustive[hit.id].score
    finally:
        torch.set_num_threads(before)


def test_first_stage_narrows_compressed_candidates_by_the_sum_of_two_estimates(
    chroma_client: Any, collection_name: str
) -> None:
    """In a compressed collection the scan proposes ``n_candidates`` documents; the best
    ``n_rerank`` by prototype + centroid-interaction score go on to exact scoring."""
    from latewise.scoring import best_ids
    from latewise.scoring.codes import centroid_interaction

    idx = make(chroma_client, collection_name, compression=2, n_rerank=6, n_candidates=30)
    idx.add(TEXTS)
    idx.search(TEXTS[17], k=1)  # loads the view
    query = idx.encoder.encode_queries([TEXTS[17]])[0]
    assert idx.view.protos is not None
    wide, first = idx.view.protos.top(query, 30, None)
    snap = idx.view.snapshot(wide)
    codec = idx.codecs.current()
    ci = centroid_interaction(
        codec, query, snap.counts, lambda a, b, r0, r1: snap.rows(a, b, ["codes"])["codes"]
    )
    want = best_ids(snap.ids, first[snap.positions] + ci, 6)
    assert idx.first_stage.candidates(query, 6, n_wide=30) == want
    assert idx.search(TEXTS[17], k=1)[0].text == TEXTS[17]


# -- repair, drop ---------------------------------------------------------------------------------


@pytest.mark.parametrize("damage", ["delete", "corrupt"])
def test_repair_rebuilds_a_damaged_first_stage(
    chroma_client: Any, collection_name: str, damage: str
) -> None:
    idx = make(chroma_client, collection_name, n_rerank=4)
    idx.add(TEXTS)
    queries = ("topic2 w4 animal3", TEXTS[3], "plant4 w1")
    before = [idx.search(q, k=5) for q in queries]
    rows = collection_name + "__lw_vectors"
    if damage == "delete":
        chroma_client.delete_collection(rows)
    else:
        col = chroma_client.get_collection(rows)
        some = col.get(limit=50)["ids"]
        col.delete(ids=some)
    fresh = make(chroma_client, collection_name, n_rerank=4)
    with pytest.raises(Exception, match="repair"):
        fresh.search(queries[0], k=5)
    report = fresh.repair()
    assert report["documents"] == len(TEXTS)
    assert report["rebuilt"] == 1
    assert [fresh.search(q, k=5) for q in queries] == before
    assert [
        make(chroma_client, collection_name, n_rerank=4).search(q, k=5) for q in queries
    ] == before


def test_drop_removes_the_collection(chroma_client: Any, collection_name: str) -> None:
    from latewise.store.chroma import list_latewise_collections

    idx = make(chroma_client, collection_name)
    idx.add(["x y"])
    assert collection_name in list_latewise_collections(chroma_client)
    idx.drop()
    assert collection_name not in list_latewise_collections(chroma_client)
    with pytest.raises(InvalidInputError, match="no documents yet"):
        LateInteractionIndex.open(collection_name, client=chroma_client)


# -- the vector cache -----------------------------------------------------------------------------


def _cols(n: int, value: int) -> dict[str, torch.Tensor]:
    return {
        "codes": torch.full((n,), value, dtype=torch.int16),
        "residuals": torch.full((n, 3), value, dtype=torch.uint8),
    }


def test_resident_rows_keep_every_document_through_replacement_eviction_and_compaction() -> None:
    """Documents' rows stay theirs when others are replaced, evicted or compacted away, and a
    snapshot taken before any of it still reads the rows it was taken on."""
    arena = ResidentRows()
    lengths = {f"d{i}": 10 * (1 + (7 * i) % 13) for i in range(200)}
    for i, (d, n) in enumerate(lengths.items()):
        arena.put(d, "v1", _cols(n, i % 250))
    assert arena.row_bytes == 2 + 3
    assert arena.nbytes == sum(lengths.values()) * 5 + ResidentRows.DOC_OVERHEAD * 200

    def snap(ids: list[str]) -> RowSnapshot:
        entries = [arena.docs[d] for d in ids]
        return RowSnapshot(
            ids,
            list(range(len(ids))),
            [n for _, _, n in entries],
            arena.columns,
            torch.tensor([s for _, s, _ in entries], dtype=torch.int64),
        )

    before = snap(["d3", "d150"])
    for i in range(0, 200, 2):  # half deleted: dead rows pass a quarter, so compaction copies
        arena.remove(f"d{i}")
    arena.put("d1", "v2", _cols(4, 251))  # replaced
    used = arena.used
    arena.compact()
    assert arena.used < used
    assert arena.used == arena.live
    limit = 4000 * 5 + 40 * ResidentRows.DOC_OVERHEAD
    arena.evict(limit)  # least recently used leave
    assert 0 < arena.live * 5 + len(arena.docs) * ResidentRows.DOC_OVERHEAD <= limit
    assert "d199" in arena.docs
    assert "d1" in arena.docs
    assert "d3" not in arena.docs
    for d, (ver, _, n) in arena.docs.items():
        i = int(d[1:])
        want = 251 if d == "d1" else i % 250
        rows = snap([d]).rows(0, 1)
        assert ver == ("v2" if d == "d1" else "v1")
        assert rows["codes"].tolist() == [want] * n
        assert rows["residuals"].tolist() == [[want] * 3] * n
    old = before.rows(0, 2)  # taken before deletion and compaction: still the old rows
    assert old["codes"].tolist() == [3] * lengths["d3"] + [150] * lengths["d150"]
    assert before.offsets.tolist() == [0, lengths["d3"], lengths["d3"] + lengths["d150"]]


def test_large_loads_hand_freed_memory_back(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import platform

    if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        assert release_free_memory() is True
    calls: list[str] = []
    monkeypatch.setattr(view_module, "release_free_memory", lambda: calls.append("x") or True)
    texts = [f"document number {i} about topic {i % 3}" for i in range(6)]
    LateInteractionIndex(HashEncoder(), path=tmp_path, collection="mem").add(texts)
    reopened = LateInteractionIndex(HashEncoder(), path=tmp_path, collection="mem")
    reopened.view.release_after_docs = 3
    reopened.view.release_after_bytes = 1
    reopened.view.refresh()  # loads six documents' records and prototypes: released
    assert len(calls) == 1
    reopened.search("topic 1", k=2)  # reads stored vectors past the byte threshold: released
    assert len(calls) == 2
    reopened.search("topic 1", k=2)  # everything needed is resident: nothing read
    assert len(calls) == 2


# -- races between writers (issue: nothing lost, nothing corrupted) --------------------------------


def test_a_delete_interleaved_with_a_re_add_leaves_a_whole_document(
    chroma_client: Any, collection_name: str
) -> None:
    """A delete removes the document record, then its rows and vectors. If the same content is
    added again between the two steps (another process; on a Chroma server nothing serialises
    them), the second step must not remove the new write's rows: each write names its rows."""
    a = make(chroma_client, collection_name)
    a.add(["the owl hunts mice at night", "bees make honey"], ids=["owl", "bees"])
    read_by_delete = a.store.get(["owl"])
    a.store.delete_docs(["owl"])  # the delete's first step ...
    b = make(chroma_client, collection_name)
    b.add(["the owl hunts mice at night"], ids=["owl"])  # ... the re-add in the pause ...
    a.store.delete_rows(list(read_by_delete.values()))  # ... and the delete's second step
    fresh = make(chroma_client, collection_name)
    hit = fresh.search("owl hunts mice", k=1)[0]
    assert (hit.id, hit.text) == ("owl", "the owl hunts mice at night")
    assert fresh.search("owl hunts mice", k=1, exact=True) == [hit]
    assert fresh.repair()["rebuilt"] == 0


def test_two_writers_creating_one_compressed_collection_share_one_codec(
    chroma_client: Any, collection_name: str
) -> None:
    """Two writers fit a codec for the same new compressed collection at once: the first claim
    wins, the other writer uses the winner's codec, and every document decodes with it."""
    import threading

    from latewise.compression._format import read_doc_header

    writers = [make(chroma_client, collection_name, compression=2) for _ in range(2)]
    errors: list[BaseException] = []

    def write(i: int) -> None:
        try:
            writers[i].add(TEXTS[i * 40 : (i + 1) * 40])
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert errors == []
    fresh = make(chroma_client, collection_name)
    assert len(fresh) == 80
    records = fresh.store.get(fresh.ids(), with_blob=True)
    assert len({read_doc_header(r.blob).codec_id for r in records.values()}) == 1
    assert writers[0].codecs.current().codec_id == writers[1].codecs.current().codec_id
    for text in (TEXTS[3], TEXTS[57]):
        assert fresh.search(text, k=1)[0].text == text


def test_contains_on_a_string_field_says_what_to_use(
    chroma_client: Any, collection_name: str
) -> None:
    """``$contains`` tests membership of list-valued metadata; on a string field Chroma matches
    nothing (``$not_contains`` everything) without a word, so latewise refuses it."""
    from latewise import FilterError

    idx = make(chroma_client, collection_name)
    idx.add(
        ["owls hunt at night", "bees make honey"],
        ids=["owl", "bee"],
        metadatas=[{"title": "night birds", "tags": ["bird", "night"]}, {"title": "insects"}],
    )
    assert [h.id for h in idx.search("hunt", k=2, where={"tags": {"$contains": "bird"}})] == ["owl"]
    for op in ("$contains", "$not_contains"):
        with pytest.raises(FilterError, match=r"'title' is a string.*\$eq"):
            idx.search("hunt", k=2, where={"title": {op: "night"}})
        with pytest.raises(FilterError, match="'title' is a string"):
            idx.delete(where={"title": {op: "night"}})
        with pytest.raises(FilterError, match="'title' is a string"):
            idx.ids(where={"$or": [{"title": {op: "night"}}, {"tags": {"$contains": "x"}}]})
    assert len(idx) == 2
