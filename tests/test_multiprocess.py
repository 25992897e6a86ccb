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
from latewise.errors import ConcurrentWriteError
from latewise.store.lock import WriteLock
from tests.fixtures.hash_encoder import HashEncoder
from tests.scripts.index_worker import QUERIES, open_index
from tests.scripts.multiprocess_worker import notes
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


@pytest.fixture(params=["embedded", "server"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "embedded":
        return str(tmp_path / "db")
    request.applymarker(pytest.mark.server)
    host, port = request.getfixturevalue("chroma_server")
    return f"{host}:{port}"


def test_processes_adding_and_searching_at_once_lose_nothing(
    target: str, collection_name: str
) -> None:
    """Two processes (three on a server) add 100 documents each and search after every batch of
    25, at the same time; none fails, and afterwards another process finds every document, every
    first-stage row and every stored vector, and searches (first stage and exact)."""
    n_procs = 3 if ":" in target else 2
    procs = [start("churn", target, collection_name, "100", f"p{i}") for i in range(n_procs)]
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
    index = open_index(path, "shared")
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
        assert "chroma run" in message and "0.5 s" in message
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
    """A write inside a write and a read inside a write hold it once; another thread's write
    or read waits for it, and gives up with the typed error after its timeout."""
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
    with lock.read():  # and free again, from any thread
        thread = threading.Thread(target=other, args=(True,))
        thread.start()
        thread.join()
    assert len(errors) == 2
