"""The Chroma layout (store/chroma.py), the write log and codec state (store/state.py), filters
(store/filters.py), clients (store/client.py) and the embedded write lock (store/lock.py),
through their own interfaces."""

from __future__ import annotations

import multiprocessing
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from latewise.errors import (
    ConcurrentWriteError,
    FilterError,
    InvalidInputError,
    InvalidInputTypeError,
    StoreError,
)
from latewise.store.chroma import ChromaStore, DocRecord, list_latewise_collections
from latewise.store.client import make_client
from latewise.store.filters import check_metadata, check_where, filter_keys
from latewise.store.lock import WriteLock
from latewise.store.state import WriteLog, get_value, put_value


def _record(doc_id: str, ver: str = "v1", n_rows: int = 2, **meta: Any) -> DocRecord:
    return DocRecord(
        id=doc_id,
        ver=ver,
        text=f"text of {doc_id}",
        metadata={"exact": [1, {"nested": True}], **meta},
        page=None,
        n_vectors=3,
        n_rows=n_rows,
        blob=f"blob-{doc_id}-{ver}".encode(),
        filterable=dict(meta),
    )


def _store(client: Any, name: str) -> ChromaStore:
    store = ChromaStore(client, name, hnsw={})
    store.open(create=True)
    return store


def test_documents_rows_and_blobs_round_trip(chroma_client: Any, collection_name: str) -> None:
    store = _store(chroma_client, collection_name)
    recs = [_record("a", year=2020), _record("b", year=2024)]
    store.write(recs, np.eye(4, 8, dtype=np.float32))
    assert store.count() == 2
    got = store.get(["b", "a", "missing"], with_blob=True)
    assert sorted(got) == ["a", "b"]
    assert got["a"].metadata == {"exact": [1, {"nested": True}], "year": 2020}
    assert got["a"].blob == b"blob-a-v1"
    assert got["b"].text == "text of b"
    assert store.ids({"year": {"$gte": 2021}}) == ["b"]
    rows = {rid: v for ids, vecs in store.load_rows() for rid, v in zip(ids, vecs, strict=True)}
    assert sorted(rows) == ["a#v1#0", "a#v1#1", "b#v1#0", "b#v1#1"]
    np.testing.assert_array_equal(rows["b#v1#1"], np.eye(4, 8, dtype=np.float32)[3])
    hits = store.query_rows(np.eye(1, 8, dtype=np.float32), 1, {"year": 2020})
    assert [(h.doc_id, h.ver) for h in hits[0]] == [("a", "v1")]


def test_reads_of_every_record_come_a_page_at_a_time_and_miss_none(
    chroma_client: Any, collection_name: str
) -> None:
    """Full reads (scan, ids, first-stage rows) page through ids: every record exactly once,
    in pages of at most ``page_size``, the filter applied, in Chroma's order."""
    store = _store(chroma_client, collection_name)
    recs = [_record(f"d{i:02d}", year=2000 + i % 3) for i in range(23)]
    store.write(recs, np.arange(46 * 8, dtype=np.float32).reshape(46, 8))
    pages = list(store.scan(page_size=5))
    assert [len(p) for p in pages] == [5, 5, 5, 5, 3]
    assert sorted(r.id for p in pages for r in p) == [r.id for r in recs]
    assert [r.id for p in pages for r in p] == store.ids()
    assert pages[0][0].text.startswith("text of ")
    wanted = [r.id for r in recs if r.filterable["year"] == 2001]
    filtered = list(store.scan({"year": 2001}, page_size=3))
    assert max(len(p) for p in filtered) == 3
    assert sorted(r.id for p in filtered for r in p) == wanted
    assert sorted(store.ids({"year": 2001})) == wanted
    rows = [rid for ids, _ in store.load_rows(page_size=7) for rid in ids]
    assert sorted(rows) == sorted(rid for r in recs for rid in r.row_ids())
    assert len(store.row_ids_stored(page_size=4)) == 46


def test_a_new_version_leaves_orphans_that_repair_finds(
    chroma_client: Any, collection_name: str
) -> None:
    store = _store(chroma_client, collection_name)
    store.write([_record("a")], np.ones((2, 4), dtype=np.float32))
    store.write([_record("a", ver="v2")], np.ones((2, 4), dtype=np.float32))
    assert store.get(["a"])["a"].ver == "v2"
    assert store.orphan_blobs() == ["a#v1"]
    assert store.remove_orphan_blobs() == 1
    assert store.orphan_blobs() == []
    assert store.get_blobs([store.get(["a"])["a"]]) == {"a#v2": b"blob-a-v2"}


def test_reset_rows_rebuilds_an_empty_first_stage(chroma_client: Any, collection_name: str) -> None:
    store = _store(chroma_client, collection_name)
    store.write([_record("a")], np.ones((2, 4), dtype=np.float32))
    chroma_client.delete_collection(collection_name + "__lw_vectors")
    store.reset_rows({})
    assert store.row_count() == 0
    store.write_rows([_record("a")], np.ones((2, 4), dtype=np.float32))
    assert store.row_count() == 2


def test_config_is_listed_and_bad_names_are_refused(
    chroma_client: Any, collection_name: str
) -> None:
    store = _store(chroma_client, collection_name)
    assert collection_name not in list_latewise_collections(chroma_client)  # no config yet
    store.write_config({"format": 1, "modality": "text"})
    listed = list_latewise_collections(chroma_client)[collection_name]
    assert listed["modality"] == "text"
    assert listed["documents"] == 0
    assert ChromaStore(chroma_client, collection_name, hnsw={}).open(create=False) == {
        "format": 1,
        "modality": "text",
    }
    for bad in ("lc", "", "a b c", None, 123, "x" * 600):
        with pytest.raises(InvalidInputError, match="collection name"):
            ChromaStore(chroma_client, bad, hnsw={})  # type: ignore[arg-type]


def test_write_log_counts_every_writer(chroma_client: Any, collection_name: str) -> None:
    """Two writers (two store objects: as two processes see it) append; each one's position
    after its own record tells whether another wrote since the position it knew."""
    a = WriteLog(_store(chroma_client, collection_name))
    b = WriteLog(ChromaStore(chroma_client, collection_name, hnsw={}))
    b.store.open(create=False)
    known = a.position()
    assert known == 0
    assert a.record() == known + 1  # nobody else wrote: a's view stays current
    known = a.position()
    b.record()  # another process writes between a's look and a's own write
    assert a.record() == known + 2  # a sees it: its view is stale
    assert b.position() == a.position() == 3


def test_values_are_chunked_and_incomplete_ones_refused(
    chroma_client: Any, collection_name: str
) -> None:
    store = _store(chroma_client, collection_name)
    assert get_value(store, "codec") is None
    data = os.urandom(3_500_000)  # more than one 4M-character base64 chunk
    put_value(store, "codec", data)
    assert get_value(store, "codec") == data
    store.meta.delete(ids=["codec:1"])
    with pytest.raises(StoreError, match=r"incomplete.*repair"):
        get_value(store, "codec")


def test_check_metadata_keeps_exact_and_filterable_parts() -> None:
    exact, filterable = check_metadata({"a": 1, "tags": ["x", "y"], "mixed": [1, "x"], "d": {}}, 0)
    assert exact == {"a": 1, "tags": ["x", "y"], "mixed": [1, "x"], "d": {}}
    assert filterable == {"a": 1, "tags": ["x", "y"]}
    with pytest.raises(InvalidInputError, match=r"position 3.*_lw_"):
        check_metadata({"_lw_x": 1}, 3)
    with pytest.raises(InvalidInputError, match="JSON"):
        check_metadata({"x": float("nan")}, 0)
    with pytest.raises(InvalidInputTypeError, match="dict or None"):
        check_metadata(["x"], 0)


def test_check_where_spells_filters_for_chroma() -> None:
    assert check_where({"a": 1, "b": {"$gt": 2}}) == {"$and": [{"a": 1}, {"b": {"$gt": 2}}]}
    assert check_where({"$or": [{"a": 1}, {"b": 2}]}) == {"$or": [{"a": 1}, {"b": 2}]}
    for bad, message in (
        ({}, "empty"),
        ({"a": {"$regex": "x"}}, "not supported"),
        ({"a": {"$in": "x"}}, "needs a list"),
        ({"_lw_ver": "x"}, "reserved"),
        ({"$not": {"a": 1}}, "logical operator"),
        ({"a": {"$gt": 1, "$lt": 3}}, "exactly one operator"),
        ("a", "must be a dict"),
    ):
        with pytest.raises(FilterError, match=message):
            check_where(bad)
    assert filter_keys({"$and": [{"t": {"$contains": "x"}}, {"u": 1}]}, "$contains") == {"t"}


def test_make_client_refuses_a_file_as_folder(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(InvalidInputError, match="is a file"):
        make_client(tmp_path / "file")
    with pytest.raises(StoreError, match="cannot reach the Chroma server"):
        make_client(server="127.0.0.1:9")  # nothing listens on the discard port


def _hold(folder: str, ready: Any, release: Any) -> None:
    with WriteLock(folder)():
        ready.set()
        release.wait(30)


def test_write_lock_names_the_holder_and_the_fix(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    ready, release = ctx.Event(), ctx.Event()
    proc = ctx.Process(target=_hold, args=(str(tmp_path), ready, release))
    proc.start()
    try:
        assert ready.wait(60)
        start = time.monotonic()
        with pytest.raises(ConcurrentWriteError) as err, WriteLock(tmp_path, timeout=0.5)():
            pass
        assert time.monotonic() - start >= 0.4  # waited for the timeout
        assert str(tmp_path) in str(err.value)
        assert f"process {proc.pid}" in str(err.value)
        assert "Chroma server" in str(err.value)
    finally:
        release.set()
        proc.join(30)
    lock = WriteLock(tmp_path, timeout=5)
    with lock(), lock():  # re-entrant in one thread
        assert lock.holder() == os.getpid()


def test_blobs_are_packed_into_embeddings_of_one_width(
    chroma_client: Any, collection_name: str
) -> None:
    store = _store(chroma_client, collection_name)
    big = DocRecord(
        id="big#1",
        ver="v1",
        text=None,
        metadata={},
        page=None,
        n_vectors=1,
        n_rows=1,
        blob=os.urandom(20_000),
    )
    store.write([_record("a"), big], np.ones((3, 4), dtype=np.float32))
    blobs = chroma_client.get_collection(collection_name + "__lw_blobs")
    width = blobs.metadata["lw_blob_floats"]
    got = store.get(["a", "big#1"], with_blob=True)
    assert got["big#1"].blob == big.blob
    assert got["big#1"].n_chunks > 1
    assert got["a"].n_chunks == 1
    stored = blobs.get(ids=got["big#1"].blob_record_ids(), include=["embeddings", "metadatas"])
    assert np.asarray(stored["embeddings"]).shape == (got["big#1"].n_chunks, width)
    assert stored["metadatas"] == [None] * got["big#1"].n_chunks  # no per-record strings
    # A later write keeps the width; a replaced version's records become orphans.
    store.write([_record("a", ver="v2")], np.ones((2, 4), dtype=np.float32))
    assert chroma_client.get_collection(collection_name + "__lw_blobs").metadata == blobs.metadata
    assert store.orphan_blobs() == ["a#v1"]
    assert store.remove_orphan_blobs() == 1
    store.delete_docs(["big#1"])
    store.delete_rows([got["big#1"]])
    assert sorted(blobs.get(include=[])["ids"]) == ["a#v2#0"]


def test_collections_with_base64_blobs_are_read_and_written_as_before(
    chroma_client: Any, collection_name: str
) -> None:
    # latewise before the packed layout made the blobs collection without layout metadata.
    chroma_client.create_collection(collection_name + "__lw_blobs", embedding_function=None)
    store = _store(chroma_client, collection_name)
    store.write([_record("a")], np.ones((2, 4), dtype=np.float32))
    raw = chroma_client.get_collection(collection_name + "__lw_blobs").get(
        ids=["a#v1"], include=["metadatas"]
    )
    assert raw["metadatas"][0]["_lw_mv"] == "YmxvYi1hLXYx"  # base64 of b"blob-a-v1"
    reopened = ChromaStore(chroma_client, collection_name, hnsw={})
    reopened.open(create=False)
    got = reopened.get(["a"], with_blob=True)["a"]
    assert (got.n_chunks, got.blob) == (0, b"blob-a-v1")
    reopened.write([_record("a", ver="v2")], np.ones((2, 4), dtype=np.float32))
    assert reopened.orphan_blobs() == ["a#v1"]
