"""A separate process that writes to or reads from an index (for crash and persistence tests).

Usage: python index_worker.py MODE TARGET COLLECTION N [BATCH]
  MODE   write | write-slow | search
  TARGET a folder (embedded Chroma) or host:port (Chroma server)
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from latewise import LateInteractionIndex
from latewise.store.chroma import ChromaStore
from tests.fixtures.hash_encoder import HashEncoder

QUERIES = ["topic 3 words", "document 17", "alpha beta", "w5 w9 w11"]


def corpus(n: int) -> list[str]:
    return [
        f"document {i} about topic {i % 13} with words w{i % 17} w{i % 5} alpha{i % 3}"
        for i in range(n)
    ]


def open_index(target: str, collection: str, batch: int = 256) -> LateInteractionIndex:
    kw: dict[str, Any] = {"collection": collection, "batch_size": batch, "n_rerank": 8}
    if ":" in target and not Path(target).exists():
        import chromadb

        host, port = target.rsplit(":", 1)
        kw["client"] = chromadb.HttpClient(host=host, port=int(port))
    else:
        kw["path"] = target
    return LateInteractionIndex(HashEncoder(), **kw)


def main() -> None:
    mode, target, collection, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    batch = int(sys.argv[5]) if len(sys.argv) > 5 else 256
    index = open_index(target, collection, batch)
    if mode in ("write", "write-slow"):
        original = ChromaStore.write
        count = {"batches": 0}

        def write(self: ChromaStore, records: Any, rows: Any) -> None:
            # Write the first-stage rows, announce it, pause, then write the documents: the
            # parent kills this process inside that window.
            self.write_rows(records, rows)
            self.write_blobs(records)
            count["batches"] += 1
            print(f"rows-written {count['batches']}", flush=True)
            if mode == "write-slow":
                time.sleep(0.5)
            self.write_docs(records)
            print(f"batch-done {count['batches']}", flush=True)

        if mode == "write-slow":
            ChromaStore.write = write  # type: ignore[method-assign]
        ids = index.add(corpus(n), ids=[f"d{i}" for i in range(n)])
        ChromaStore.write = original  # type: ignore[method-assign]
        print(json.dumps({"done": len(ids)}), flush=True)
    elif mode == "search":
        out = {q: [(h.id, round(h.score, 5)) for h in index.search(q, k=5)] for q in QUERIES}
        out["__len__"] = len(index)  # type: ignore[assignment]
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
