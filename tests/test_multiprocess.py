"""Several processes on one collection: an embedded folder (locked) and a Chroma server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from latewise import LateInteractionIndex
from latewise.errors import ConcurrentWriteError, StoreError
from latewise.store.lock import WriteLock
from tests.fixtures.hash_encoder import HashEncoder
from tests.scripts.index_worker import QUERIES, open_index
from tests.scripts.multiprocess_worker import HNSW, notes
from tests.test_durability import assert_no_partial_documents

WORKER = Path(__file__).parent / "scripts" / "multiprocess_worker.py"


def start(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(WORKER), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"},
    )


def finish(proc: subprocess.Popen[str]) -> dict[str, int]:
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err
    result: dict[str, int] = json.loads(out.strip().splitlines()[-1])
    return result


def test_processes_adding_and_searching_at_once_lose_nothing(
    target: str, collection_name: str, tmp_path: Path
) -> None:
    """Two processes (three on a server) add 100 documents each and search after every batch of
    25, at the same time; none fails, and afterwards another process finds every document, every
    first-stage row and every stored vector, and searches (first stage and exact)."""
    n_procs = 3 if ":" in target else 2
    meet = [str(tmp_path / "barrier"), str(n_procs)]
    procs = [start("churn", target, collection_name, "100", f"p{i}", *meet) for i in range(n_procs)]
    results = [finish(p) for p in procs]
    assert all(r["done"] == 100 for r in results)
    assert max(r["len"] for r in results) == 100 * n_procs  # the last one to finish saw them all

    index = open_index(target, collection_name)
    assert len(index) == 100 * n_procs
    want = {i for p in range(n_procs) for i in notes(f"p{p}", 0, 100)[1]}
    assert set(index.ids()) == want
    assert_no_partial_documents(index)  # every row and blob there; searches answer
    for q in QUERIES:
        assert [h.id for h in index.search(q, k=10, exact=True)] == [
            h.id for h in index.search(q, k=10, exact=True)
        ]
        assert len(index.search(q, k=10)) == 10
    assert index.repair()["orphans"] == 0


def test_a_process_sees_and_keeps_what_another_wrote_meanwhile(tmp_path: Path) -> None:
    """The case that lost rows for good with Chroma alone: this process opens and searches (its
    Chroma indexes now in memory), another process adds documents, then this one reads and adds
    again; nothing of either is lost, here or in a third process."""
    path = str(tmp_path / "db")
    index = open_index(path, "shared", hnsw=HNSW)
    texts, ids = notes("mine", 0, 30)
    index.add(texts, ids=ids)
    assert index.search(QUERIES[0], k=5)

    assert finish(start("churn", path, "shared", "40", "other")) == {"done": 40, "len": 70}

    assert len(index) == 70
    theirs = notes("other", 0, 40)[1]
    assert [r.id for r in index.get(theirs, include_vectors=True)] == theirs
    assert any(h.id.startswith("other-") for h in index.search("other note", k=10))
    texts, ids = notes("mine", 30, 60)
    index.add(texts, ids=ids)
    assert_no_partial_documents(index)

    again = open_index(path, "shared")
    assert len(again) == 100
    assert_no_partial_documents(again)


def test_access_blocked_past_the_timeout_gets_the_typed_error(tmp_path: Path) -> None:
    """While another process holds the write lock, a write and a read here wait ``lock_timeout``
    and then raise :class:`ConcurrentWriteError` naming the folder, the holder's process id and
    the fix; once it lets go, both work."""
    path = tmp_path / "db"
    index = LateInteractionIndex(HashEncoder(), path=path, lock_timeout=0.5)
    index.add(["first document", "second document"], ids=["a", "b"])
    holder = start("hold", str(path), "unused", "0", "x")
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(ConcurrentWriteError) as info:
            index.add(["third document"], ids=["c"])
        message = str(info.value)
        assert str(path.resolve()) in message
        assert f"process {holder.pid}" in message
        assert "chroma run" in message
        assert "0.5 s" in message
        with pytest.raises(ConcurrentWriteError, match=f"process {holder.pid}"):
            index.search("first", k=1)
        with pytest.raises(ConcurrentWriteError):
            LateInteractionIndex.open(path=path, lock_timeout=0.2)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(30)
    index.add(["third document"], ids=["c"])
    assert [h.id for h in index.search("third document", k=1)] == ["c"]


def test_lock_in_one_process_is_reentrant_and_excludes_other_threads(tmp_path: Path) -> None:
    """A write inside a write and a read inside a write or a read hold it once; another thread's
    write or read waits for a write and gives up with the typed error after its timeout; a write
    inside a read of the same thread is refused at once."""
    lock = WriteLock(tmp_path / "db", timeout=0.2)
    errors: list[BaseException] = []

    def other(read: bool) -> None:
        try:
            with lock.read() if read else lock():
                pass
        except ConcurrentWriteError as exc:
            errors.append(exc)

    with lock(), lock(), lock.read():
        assert lock.holder() == os.getpid()
        for read in (False, True):
            thread = threading.Thread(target=other, args=(read,))
            thread.start()
            thread.join()
    assert len(errors) == 2
    assert lock.holder() is None  # no writer now
    with lock.read(), lock.read():  # free again; reads share, also nested and across threads
        thread = threading.Thread(target=other, args=(True,))
        thread.start()
        thread.join()
        with pytest.raises(StoreError, match="inside a read"), lock():
            pass
    assert len(errors) == 2


STALE_RAW_WRITER = """
import sys, chromadb
from chromadb.config import Settings
client = chromadb.PersistentClient(path=sys.argv[1], settings=Settings(anonymized_telemetry=False))
rows = client.get_collection(sys.argv[2])
one = [[1.0] * int(sys.argv[3])]
meta = [{"_lw_doc": "x", "_lw_ver": "v"}]
rows.add(ids=["x#v#0"], embeddings=one, metadatas=meta)  # its index now in memory
print("ready", flush=True)
sys.stdin.readline()
rows.add(ids=["x#v#1"], embeddings=one, metadatas=meta)
"""


def test_a_folder_damaged_by_an_unlocked_writer_says_so_and_repair_mends_it(
    tmp_path: Path,
) -> None:
    """A plain chromadb client in another process (no latewise lock) writes the first stage
    from a stale in-memory index, which drops rows latewise wrote meanwhile. A fresh process
    then gets latewise's ``StoreError`` naming the fix, not Chroma's internal error, and
    ``repair()`` makes the collection search again."""
    path = tmp_path / "db"
    # Chroma persists an HNSW index (and drops the log it was built from) every
    # ``sync_threshold`` rows: 1,000 by default, 2 here, so 40 documents show what 1,000 would.
    hnsw = {"sync_threshold": 2, "batch_size": 2}
    index = LateInteractionIndex(HashEncoder(), path=path, collection="damaged", hnsw=hnsw)
    index.add(*notes("a", 0, 20))
    stale = subprocess.Popen(
        [sys.executable, "-c", STALE_RAW_WRITER, str(path), "damaged__lw_vectors", str(index.dim)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert stale.stdout is not None
    assert stale.stdin is not None
    assert stale.stdout.readline().strip() == "ready", stale.stderr.read() if stale.stderr else ""
    index.add(*notes("b", 0, 20))  # rows the stale writer's index does not have
    _, err = stale.communicate("go\n", timeout=120)
    assert stale.returncode == 0, err

    search = search_in_another_process(path, "damaged")
    assert search.returncode != 0
    last = search.stderr.strip().splitlines()[-1]
    assert last.startswith("latewise.errors.StoreError"), search.stderr[-2000:]
    assert "vector indexes do not match its records" in last
    assert "repair()" in last

    assert index.repair()["documents"] == 40
    search = search_in_another_process(path, "damaged")
    assert search.returncode == 0, search.stderr[-2000:]
    assert json.loads(search.stdout)["__len__"] == 40
    assert_no_partial_documents(index)


def search_in_another_process(path: Path, collection: str) -> subprocess.CompletedProcess[str]:
    worker = Path(__file__).parent / "scripts" / "index_worker.py"
    return subprocess.run(
        [sys.executable, str(worker), "search", str(path), collection, "0"],
        capture_output=True,
        text=True,
        timeout=240,
    )
