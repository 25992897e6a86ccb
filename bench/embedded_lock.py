"""What the embedded folder's lock costs: latewise's locked client against a plain Chroma client.

Two folders with the same first-stage-like collection (``--rows`` 128-d rows): one reached by a
plain ``chromadb.PersistentClient``, one by latewise's ``EmbeddedClient`` (every call holds
``latewise.lock``, shared to read, exclusive to write). Both are timed in this process,
interleaved: a ``count``, a 10-nearest ``query`` and a one-row ``upsert``, each as a batch of
``--calls`` calls. Then the cost of catching up after another process wrote: reopening the
client and the first query after it (which loads the HNSW index from disk and replays the writes
Chroma has not yet folded into it: after this benchmark's hundreds of one-row upserts that
replay dominates; right after a bulk write it is tens of milliseconds).

    python bench/embedded_lock.py [--rows 20000] [--calls 100]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import fmt_ms, load_average, measure, summary_line

DIM = 128


def fill(collection: Any, rows: int) -> None:
    rng = np.random.default_rng(0)
    for start in range(0, rows, 5000):
        stop = min(rows, start + 5000)
        vectors = rng.standard_normal((stop - start, DIM)).astype(np.float32)
        collection.add(ids=[str(i) for i in range(start, stop)], embeddings=vectors)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--calls", type=int, default=100)
    args = parser.parse_args()

    import chromadb
    from chromadb.config import Settings

    from latewise.store.client import EmbeddedClient

    root = Path(tempfile.mkdtemp(prefix="latewise-lock-bench-"))
    plain_client = chromadb.PersistentClient(
        path=str(root / "plain"), settings=Settings(anonymized_telemetry=False)
    )
    locked_client = EmbeddedClient(root / "locked")
    config: Any = {"hnsw": {"space": "ip"}}
    plain = plain_client.get_or_create_collection("rows", configuration=config)
    locked = locked_client.get_or_create_collection("rows", configuration=config)
    fill(plain, args.rows)
    fill(locked, args.rows)
    query = np.random.default_rng(1).standard_normal((1, DIM)).astype(np.float32)
    one = query.copy()

    def batch(fn: Any) -> Any:
        return lambda: [fn() for _ in range(args.calls)]

    contenders = {
        "count plain": batch(plain.count),
        "count locked": batch(locked.count),
        "query plain": batch(lambda: plain.query(query_embeddings=query, n_results=10)),
        "query locked": batch(lambda: locked.query(query_embeddings=query, n_results=10)),
        "upsert plain": batch(lambda: plain.upsert(ids=["x"], embeddings=one)),
        "upsert locked": batch(lambda: locked.upsert(ids=["x"], embeddings=one)),
    }
    timings = measure(contenders, repeats=5)
    print(f"{args.rows} rows of {DIM} dims, {args.calls} calls per batch, load {load_average()}")
    items: dict[str, str] = {}
    for op in ("count", "query", "upsert"):
        a, b = timings[f"{op} plain"], timings[f"{op} locked"]
        per_a, per_b, ratio = a.median / args.calls, b.median / args.calls, b.median / a.median
        print(f"{op:7s} plain {fmt_ms(per_a)}  locked {fmt_ms(per_b)}  ratio {ratio:.2f}")
        items[f"{op} locked/plain"] = f"{b.median / a.median:.2f}x"

    # Catching up after another process wrote (simulated: a token that is not this process's):
    # the next call reopens the client; the first query after it loads the HNSW index.
    token = root / "locked" / "latewise.lock.token"
    reopen, first = [], []
    for i in range(5):
        token.write_text(f"another process {i}a")
        t0 = time.perf_counter()
        locked_client.heartbeat()
        reopen.append(time.perf_counter() - t0)
        token.write_text(f"another process {i}b")
        t0 = time.perf_counter()
        locked.query(query_embeddings=query, n_results=10)
        first.append(time.perf_counter() - t0)
    steady = timings["query locked"].median / args.calls
    print(
        f"reopen {fmt_ms(float(np.median(reopen)))}  reopen + first query "
        f"{fmt_ms(float(np.median(first)))} ({np.median(first) / steady:.0f}x a warm query)"
    )
    items["reopen"] = f"{np.median(reopen) * 1e3:.0f} ms"
    items["reopen + first query"] = f"{np.median(first) * 1e3:.0f} ms"
    print(summary_line("bench/embedded_lock.py", items))


if __name__ == "__main__":
    main()
