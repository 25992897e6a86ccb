"""A process sharing an index with others (for the multi-process tests).

Usage: python multiprocess_worker.py MODE TARGET COLLECTION N PREFIX [BARRIER PARTIES]
  MODE   churn: add N documents with ids PREFIX-i in batches of 25, searching after each batch,
         then search exactly and read them all back; prints {"done": N, "len": ...}
         hold: hold the embedded folder's write lock, print "held", then sleep until killed
  TARGET a folder (embedded Chroma) or host:port (Chroma server)
  BARRIER, PARTIES: a folder where PARTIES churn processes meet before they start adding
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from latewise.store.lock import WriteLock
from tests.scripts.index_worker import QUERIES, open_index

BATCH = 25


def notes(prefix: str, start: int, stop: int) -> tuple[list[str], list[str]]:
    """Short documents ``prefix-i`` (texts and ids)."""
    texts = [
        f"{prefix} note {i} on topic {i % 7} with words w{i % 11} beta{i % 3}"
        for i in range(start, stop)
    ]
    return texts, [f"{prefix}-{i}" for i in range(start, stop)]


#: Chroma persists an HNSW index (and drops the log it was rebuilt from) every ``sync_threshold``
#: rows, 1,000 by default: a small one makes a few hundred documents behave like many thousands.
HNSW = {"sync_threshold": 4, "batch_size": 4}


def meet(barrier: Path, parties: int) -> None:
    """Wait (up to 2 minutes) until ``parties`` processes reached ``barrier``, so that they run
    at the same time rather than one after another as they happen to start."""
    barrier.mkdir(parents=True, exist_ok=True)
    (barrier / str(os.getpid())).touch()
    deadline = time.monotonic() + 120
    while len(list(barrier.iterdir())) < parties and time.monotonic() < deadline:
        time.sleep(0.01)


def churn(target: str, collection: str, n: int, prefix: str) -> None:
    index = open_index(target, collection, BATCH, hnsw=HNSW)
    if len(sys.argv) > 7:
        meet(Path(sys.argv[6]), int(sys.argv[7]))
    for start in range(0, n, BATCH):
        texts, ids = notes(prefix, start, min(n, start + BATCH))
        index.add(texts, ids=ids)
        assert index.search(QUERIES[(start // BATCH) % len(QUERIES)], k=5), "no hits"
    assert index.search(QUERIES[0], k=5, exact=True), "an exact search found nothing"
    ids = notes(prefix, 0, n)[1]
    got = index.get(ids, include_vectors=True)
    assert [r.id for r in got] == ids, "documents added are missing"
    print(json.dumps({"done": n, "len": len(index)}), flush=True)


def hold(target: str) -> None:
    with WriteLock(target)():
        print("held", flush=True)
        time.sleep(600)


def main() -> None:
    mode, target, collection, n, prefix = sys.argv[1:6]
    if mode == "churn":
        churn(target, collection, int(n), prefix)
    elif mode == "hold":
        hold(target)
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main()
