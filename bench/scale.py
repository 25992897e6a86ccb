"""Growth benchmark: how latewise's costs grow with the collection.

Collections of 10k, 50k and 200k documents (1M with ``--million``) are made from the real token
vectors of ``bench/vectors.py`` (MiniLM over the bench's docstrings, 128-d): every synthetic
document resamples one real document (so the real length distribution and topical structure),
replaces a fifth of its tokens by tokens drawn from the whole corpus and perturbs every vector
(cosine ~0.9 to its source), then is normalised and rounded to float16. The queries are the
corpus's real queries. Documents are generated a chunk at a time and fed through
``index.add_vectors``; the exact MaxSim top 10 of every query over the same float16 vectors is
kept as a running top 10 while they are generated (numpy, float32), so memory stays bounded.

For each size it prints: ingest seconds (``add_vectors`` only), disk bytes per vector, and, in a
fresh process: open, open + first query (which reads every record and prototype into the
in-memory view), resident memory after the warm queries, warm p50 / p95 and recall@10 vs exact
(in-memory prototype scan), and the HNSW first stage forced by ``scan_bytes=1`` (what
collections beyond ``scan_bytes`` use) with
its p50 and recall; then each figure's growth against the smallest size beside the growth of
the collection, and a one-line summary.

    python bench/scale.py                             # 10k, 50k, 200k (embedded folder)
    python bench/scale.py --sizes 10000,50000         # what ran on the 2-core machine
    python bench/scale.py --sizes 10000 --server 127.0.0.1:8000 --server-path DIR
                                   # a `chroma run --path DIR` server (its folder: this only)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from bench._common import cpu_model, load_average, summary_line
from bench.store import folder_bytes, percentile, recall_at_10, vectors_encoder
from bench.vectors import DIM, VectorSet, corpus_vectors

#: Documents generated (and added, and scored exactly) at a time.
CHUNK = 1000
#: Of each synthetic document's tokens, the share replaced by tokens drawn from the corpus.
SWAP = 0.2
#: Norm of the Gaussian perturbation of each (unit) token vector: cosine ~0.9 to its source.
NOISE = 0.45


# -- the synthetic collection ------------------------------------------------------------------


@dataclass
class Source:
    """The real corpus the synthetic documents are resampled from."""

    pool: np.ndarray  # every real document token, float32 [P, dim]
    starts: np.ndarray  # each real document's first token in ``pool``
    lengths: np.ndarray
    texts: list[str]

    @classmethod
    def of(cls, vs: VectorSet) -> Source:
        lengths = np.array([d.shape[0] for d in vs.docs], dtype=np.int64)
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        return cls(np.concatenate(vs.docs).astype(np.float32), starts, lengths, vs.texts)


def chunks(src: Source, n_docs: int, seed: int = 0) -> Iterator[tuple[list[np.ndarray], list[str]]]:
    """The ``n_docs`` synthetic documents, ``CHUNK`` at a time: ``(float16 vectors, texts)``.
    Chunk ``c`` depends only on ``(seed, c)``, so every size is a prefix of the larger ones."""
    for c, first in enumerate(range(0, n_docs, CHUNK)):
        rng = np.random.default_rng((seed, c))
        which = rng.integers(0, len(src.lengths), size=min(CHUNK, n_docs - first))
        lengths = src.lengths[which]
        total = int(lengths.sum())
        run_start = np.repeat(
            src.starts[which] - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths
        )
        index = run_start + np.arange(total)
        swap = rng.random(total) < SWAP
        index[swap] = rng.integers(0, len(src.pool), size=int(swap.sum()))
        flat = src.pool[index] + rng.standard_normal((total, DIM)).astype(np.float32) * (
            NOISE / np.sqrt(DIM)
        )
        flat /= np.linalg.norm(flat, axis=1, keepdims=True)
        docs = np.split(flat.astype(np.float16), np.cumsum(lengths)[:-1])
        yield docs, [src.texts[j] for j in which]


class ExactTop:
    """The running exact MaxSim top 10 of every query over the documents seen so far."""

    def __init__(self, queries: list[np.ndarray], k: int = 10) -> None:
        self.k = k
        self.q = np.concatenate(queries).astype(np.float32)
        self.q_starts = np.concatenate([[0], np.cumsum([q.shape[0] for q in queries])[:-1]])
        self.scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
        self.ids = np.full((len(queries), k), -1, dtype=np.int64)
        self.seen = 0

    def update(self, docs: list[np.ndarray], step: int = 250) -> None:
        for s in range(0, len(docs), step):
            part = docs[s : s + step]
            lengths = np.array([d.shape[0] for d in part])
            flat = np.concatenate(part).astype(np.float32)
            sims = self.q @ flat.T  # [query vectors, tokens]
            per_doc = np.maximum.reduceat(
                sims, np.concatenate([[0], np.cumsum(lengths)[:-1]]), axis=1
            )
            scores = np.add.reduceat(per_doc, self.q_starts, axis=0)  # [queries, docs]
            ids = np.broadcast_to(self.seen + np.arange(len(part)), scores.shape)
            all_scores = np.concatenate([self.scores, scores], axis=1)
            all_ids = np.concatenate([self.ids, ids], axis=1)
            # best k by score, equal scores in id order (as latewise breaks ties)
            order = np.lexsort((all_ids, -all_scores), axis=1)[:, : self.k]
            self.scores = np.take_along_axis(all_scores, order, axis=1)
            self.ids = np.take_along_axis(all_ids, order, axis=1)
            self.seen += len(part)


# -- a fresh process: open, first query, load, warm queries ------------------------------------


def probe(where: str, collection: str, query_file: Path, exact_file: Path) -> dict[str, float]:
    """Open the persisted collection in this (fresh) process and measure it."""
    import psutil
    import torch

    from latewise import LateInteractionIndex
    from latewise.store.client import make_client

    with np.load(query_file) as saved:  # one array per query, in order (no pickles)
        queries = [
            torch.from_numpy(saved[f"q{i}"].astype(np.float32)) for i in range(len(saved.files))
        ]
    exact = np.load(exact_file)

    def open_index(**kw: Any) -> Any:
        if where.startswith("server="):
            client = make_client(server=where.removeprefix("server="))
            return LateInteractionIndex.open(collection, client=client, **kw)
        return LateInteractionIndex.open(collection, path=where, **kw)

    def timed(index: Any) -> tuple[list[float], list[list[int]]]:
        for q in queries:  # candidates' vectors read from Chroma once
            index.search_vectors([q], k=10)
        lat, found = [], []
        for q in queries:
            t = time.perf_counter()
            hits = index.search_vectors([q], k=10)[0]
            lat.append(time.perf_counter() - t)
            found.append([int(h.id[1:]) for h in hits])
        return lat, found

    t0 = time.perf_counter()
    index = open_index()
    t1 = time.perf_counter()
    first = index.search_vectors([queries[0]], k=10)[0]
    t2 = time.perf_counter()
    lat, found = timed(index)
    out = {
        "open_s": t1 - t0,
        "first_s": t2 - t1,
        "first_recall": recall_at_10([[int(h.id[1:]) for h in first]], exact[:1]),
        "rss": psutil.Process().memory_info().rss,
        "resident": sum(index.view.memory().values()),
        "p50": percentile(lat, 0.5),
        "p95": percentile(lat, 0.95),
        "recall": recall_at_10(found, exact),
    }
    del index
    hnsw = open_index(scan_bytes=1)
    lat, found = timed(hnsw)
    out.update(
        hnsw_p50=percentile(lat, 0.5),
        hnsw_p95=percentile(lat, 0.95),
        hnsw_recall=recall_at_10(found, exact),
    )
    return out


def run_probe(
    where: str, collection: str, queries: list[np.ndarray], exact: np.ndarray
) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        qf, ef = Path(tmp) / "q.npz", Path(tmp) / "exact.npy"
        np.savez(qf, **{f"q{i}": q for i, q in enumerate(queries)})
        np.save(ef, exact)
        import latewise

        env = dict(os.environ)
        src = str(Path(latewise.__file__).resolve().parents[1])
        env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
        out = subprocess.run(
            [sys.executable, __file__, "--probe", where, collection, str(qf), str(ef)],
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
    if out.returncode != 0:
        raise RuntimeError(f"probe failed: {out.stderr.strip()[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# -- the benchmark -----------------------------------------------------------------------------


def build(
    src: Source, n_docs: int, queries: list[np.ndarray], where: str, collection: str
) -> dict[str, float]:
    """Generate and add ``n_docs`` documents; the ingest seconds, vectors and exact top 10."""
    from latewise import LateInteractionIndex
    from latewise.store.client import make_client

    if where.startswith("server="):
        client = make_client(server=where.removeprefix("server="))
        index = LateInteractionIndex(vectors_encoder(DIM), client=client, collection=collection)
        if len(index):  # left by an earlier run
            index.drop()
            index = LateInteractionIndex(vectors_encoder(DIM), client=client, collection=collection)
    else:
        index = LateInteractionIndex(vectors_encoder(DIM), path=where, collection=collection)
    exact = ExactTop(queries)
    ingest, n_vec, done = 0.0, 0, 0
    for docs, texts in chunks(src, n_docs):
        exact.update(docs)
        t = time.perf_counter()
        index.add_vectors(docs, ids=[f"d{done + i}" for i in range(len(docs))], texts=texts)
        ingest += time.perf_counter() - t
        done += len(docs)
        n_vec += sum(d.shape[0] for d in docs)
        if done % (10 * CHUNK) == 0 or done == n_docs:
            print(f"  {done}/{n_docs} documents added ({ingest:.0f} s ingest)", flush=True)
    return {"ingest_s": ingest, "vectors": n_vec, "exact": exact.ids}  # type: ignore[dict-item]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,50000,200000")
    parser.add_argument("--million", action="store_true", help="add 1,000,000 documents")
    parser.add_argument("--source-docs", type=int, default=2000, help="real documents resampled")
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--server", default=None, help="a Chroma server host:port")
    parser.add_argument(
        "--server-path", default=None, help="the server's --path (its disk is measured)"
    )
    parser.add_argument("--dir", default=None, help="where to build (default: a temp folder)")
    parser.add_argument("--probe", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.probe:
        where, collection, qf, ef = args.probe
        print(json.dumps(probe(where, collection, Path(qf), Path(ef))))
        return

    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    if args.million:
        sizes.append(1_000_000)
    vs = corpus_vectors(args.source_docs, args.queries)
    src = Source.of(vs)
    print(
        f"source: {len(vs.docs)} real documents, {len(src.pool)} vectors "
        f"({src.lengths.mean():.0f}/doc), {len(vs.queries)} queries; {vs.description}\n"
        f"synthetic documents: one real document resampled, {SWAP:.0%} of its tokens swapped, "
        f"noise {NOISE}; {'server ' + args.server if args.server else 'embedded folder'}; "
        f"CPU {cpu_model()}, {os.cpu_count()} cores, load {load_average()}"
    )
    root = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="lw-scale-"))
    rows: dict[int, dict[str, float]] = {}
    try:
        for n in sizes:
            collection = f"scale{n}"
            path = root / collection
            shutil.rmtree(path, ignore_errors=True)
            where = f"server={args.server}" if args.server else str(path)
            print(f"[{n} documents] generating and adding ...", flush=True)
            built = build(src, n, vs.queries, where, collection)
            row = {k: v for k, v in built.items() if k != "exact"}
            disk_path = Path(args.server_path) if args.server_path else path
            row["disk"] = (
                float("nan") if args.server and not args.server_path else folder_bytes(disk_path)
            )
            row.update(run_probe(where, collection, vs.queries, built["exact"]))  # type: ignore[arg-type]
            rows[n] = row
            print(
                f"[{n} documents] ingest {row['ingest_s']:.0f} s "
                f"({n / row['ingest_s']:.0f} docs/s), "
                f"disk {row['disk'] / row['vectors']:.0f} B/vector, open {row['open_s']:.2f} s + "
                f"first query {row['first_s']:.2f} s (recall@10 {row['first_recall']:.2f}), "
                f"RSS {row['rss'] / 2**20:.0f} MiB, p50 "
                f"{row['p50'] * 1e3:.1f} ms, recall@10 {row['recall']:.3f}; HNSW first stage p50 "
                f"{row['hnsw_p50'] * 1e3:.1f} ms, recall@10 {row['hnsw_recall']:.3f}; "
                f"load {load_average()}",
                flush=True,
            )
            if not args.dir and not args.server:
                shutil.rmtree(path, ignore_errors=True)
    finally:
        if not args.dir:
            shutil.rmtree(root, ignore_errors=True)
    report(rows)


def report(rows: dict[int, dict[str, float]]) -> None:
    print(
        f"\n{'docs':>9}{'vectors':>11}{'ingest s':>10}{'docs/s':>8}{'B/vec':>7}{'open s':>8}"
        f"{'+1st q s':>10}{'RSS MiB':>9}{'p50 ms':>8}{'p95 ms':>8}{'rec@10':>8}"
        f"{'HNSW p50':>10}{'rec@10':>8}"
    )
    for n, r in rows.items():
        print(
            f"{n:>9}{r['vectors']:>11.0f}{r['ingest_s']:>10.0f}{n / r['ingest_s']:>8.0f}"
            f"{r['disk'] / r['vectors']:>7.0f}{r['open_s']:>8.2f}"
            f"{r['open_s'] + r['first_s']:>10.2f}"
            f"{r['rss'] / 2**20:>9.0f}{r['p50'] * 1e3:>8.1f}"
            f"{r['p95'] * 1e3:>8.1f}{r['recall']:>8.3f}{r['hnsw_p50'] * 1e3:>10.1f}"
            f"{r['hnsw_recall']:>8.3f}"
        )
    items: dict[str, str] = {}
    sizes = sorted(rows)
    base = rows[sizes[0]]
    for n in sizes[1:]:
        r = rows[n]
        items[f"{n}/{sizes[0]} docs"] = (
            f"{n / sizes[0]:.1f}x: ingest {r['ingest_s'] / base['ingest_s']:.1f}x, open+1st "
            f"{(r['open_s'] + r['first_s']) / (base['open_s'] + base['first_s']):.2f}x, "
            f"RSS {r['rss'] / base['rss']:.1f}x, p50 "
            f"{r['p50'] / base['p50']:.2f}x, HNSW p50 {r['hnsw_p50'] / base['hnsw_p50']:.2f}x"
        )
    big = rows[sizes[-1]]
    rate = sizes[-1] / big["ingest_s"]
    items["1M docs at the largest size's rate"] = f"~{1_000_000 / rate / 3600:.1f} h ingest"
    print(summary_line("bench/scale.py", items))


if __name__ == "__main__":
    main()
