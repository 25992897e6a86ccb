"""First-stage benchmark: how much of the exact top 10 each cheap candidate generator finds.

The two-stage search scores exactly only the candidates its first stage proposes, so recall@10
is bounded by the share of the exact top 10 among them. On the synthetic 128-d set of
``bench/index.py`` this prints that share for the n best documents (n = 512 ... 4096) by:

- ``prototypes``: MaxSim over each document's 6 prototypes (what the index scans today);
- ``centroids``: centroid interaction over the whole collection (every vector replaced by its
  nearest centroid of a k-means codebook, as PLAID's second stage);
- ``probe``: PLAID's first stage, an inverted file over the codebook: each query vector probes
  its ``p`` nearest centroids, and a document scores, per query vector, the best probed
  centroid it holds (the next centroid's score when it holds none);
- the union of the prototype and probe candidates, and their reciprocal-rank fusion;

and the cost of scoring every vector exactly. It explains why synthetic recall stays below the
0.98 target: the documents of the query's family are found by prototypes, the others in the
exact top 10 only by counting shared common words (the probe) *and* scoring exactly.

    python bench/first_stage.py                   # 20k documents, 100 queries (~5 min, 8 GB)
    python bench/first_stage.py --docs 2000 --centroids 1024
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch

from bench._common import summary_line
from bench.index import synthetic
from latewise import PackedVectors, maxsim
from latewise.compression.clustering import assign, kmeans
from latewise.compression.pooling import prototypes_batch
from latewise.scoring import MaxSimScorer

SIZES = (512, 1024, 2048, 4096)


class InvertedFile:
    """Documents by centroid: for each centroid, the documents holding a vector assigned to it."""

    def __init__(self, codes: np.ndarray, counts: list[int], n_centroids: int) -> None:
        doc_of = np.repeat(np.arange(len(counts)), counts)
        order = np.lexsort((doc_of, codes))
        c, d = codes[order], doc_of[order]
        keep = np.ones(len(c), dtype=bool)
        keep[1:] = (c[1:] != c[:-1]) | (d[1:] != d[:-1])
        self.docs = d[keep]
        self.starts = np.searchsorted(c[keep], np.arange(n_centroids + 1))
        self.n_docs = len(counts)

    def probe(self, table: np.ndarray, p: int) -> np.ndarray:
        """Approximate MaxSim of every document from the ``p`` best centroids per query vector
        (``table``: ``[n_q, n_centroids]`` query-centroid similarities)."""
        approx = np.zeros(self.n_docs, dtype=np.float32)
        part = np.argpartition(-table, p, axis=1)[:, : p + 1]
        for t in range(table.shape[0]):
            best = part[t][np.argsort(-table[t, part[t]])]
            row = np.full(self.n_docs, table[t, best[p]], dtype=np.float32)
            for c in best[:p][::-1]:  # the best centroid written last wins
                row[self.docs[self.starts[c] : self.starts[c + 1]]] = table[t, c]
            approx += row
        return approx


def coverage(ranked: np.ndarray, n: int, exact: set[int]) -> float:
    return len(exact & set(ranked[:n].tolist())) / len(exact)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=20_000)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--centroids", type=int, default=8192)
    parser.add_argument("--probe", type=int, default=8, help="centroids probed per query vector")
    args = parser.parse_args()

    docs, queries = synthetic(args.docs, args.queries)
    counts = [d.shape[0] for d in docs]
    flat = torch.cat(docs)
    n_docs = len(docs)
    print(f"{n_docs} documents, {flat.shape[0]} vectors, {len(queries)} queries", flush=True)
    scores = maxsim(queries, docs)
    exact = [set(row.topk(10).indices.tolist()) for row in scores]
    # Exhaustive search, one query at a time, on a corpus prepared once (latewise's fastest).
    scorer = MaxSimScorer(PackedVectors.from_list(docs)).prepare()
    scorer.score(queries[:1])
    start = time.perf_counter()
    for q in queries[:5]:
        scorer.score([q])
    exact_s = (time.perf_counter() - start) / 5
    del scorer

    protos = prototypes_batch(docs, 6)
    table_p = torch.stack([torch.cat([p, p[-1:].expand(6 - p.shape[0], -1)]) for p in protos])
    g = torch.Generator().manual_seed(0)
    sample = flat[torch.randperm(flat.shape[0], generator=g)[: 32 * args.centroids]]
    centroids = torch.nn.functional.normalize(kmeans(sample, args.centroids), dim=-1)
    codes = assign(flat, centroids).numpy()
    ivf = InvertedFile(codes, counts, args.centroids)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])

    results: dict[str, list[float]] = {}
    union_sizes: dict[str, list[int]] = {}
    probe_s = []
    for j, q in enumerate(queries):
        proto = torch.einsum("td,npd->ntp", q, table_p).amax(-1).sum(-1).numpy()
        table = (q @ centroids.t()).numpy()
        ci = np.maximum.reduceat(table[:, codes], starts, axis=1).sum(0)
        t = time.perf_counter()
        probe = ivf.probe(table, args.probe)
        probe_s.append(time.perf_counter() - t)
        by_proto, by_ci, by_probe = np.argsort(-proto), np.argsort(-ci), np.argsort(-probe)
        rank_p = np.empty(n_docs)
        rank_p[by_proto] = np.arange(n_docs)
        rank_q = np.empty(n_docs)
        rank_q[by_probe] = np.arange(n_docs)
        by_rrf = np.argsort(-(1 / (60 + rank_p) + 1 / (60 + rank_q)))
        for n in SIZES:
            for name, ranked in (
                ("prototypes", by_proto),
                ("centroids", by_ci),
                ("probe", by_probe),
                ("rrf", by_rrf),
            ):
                results.setdefault(f"{name} {n}", []).append(coverage(ranked, n, exact[j]))
            half = n // 2
            union = set(by_proto[:half].tolist()) | set(by_probe[:half].tolist())
            results.setdefault(f"union {n}", []).append(len(exact[j] & union) / len(exact[j]))
            union_sizes.setdefault(f"union {n}", []).append(len(union))

    print("share of the exact top 10 among the n best candidates (union: n/2 of each):")
    names = ("prototypes", "centroids", "probe", "union", "rrf")
    print(f"{'n':>6} " + " ".join(f"{name:>11}" for name in names))
    for n in SIZES:
        row = " ".join(f"{statistics.mean(results[f'{name} {n}']):>11.3f}" for name in names)
        print(f"{n:>6} {row}   (union holds {statistics.mean(union_sizes[f'union {n}']):.0f})")
    print(
        f"probe ({args.probe} centroids per query vector): {1000 * statistics.median(probe_s):.1f}"
        f" ms per query; exhaustive exact MaxSim: {1000 * exact_s:.0f} ms per query"
    )
    items = {
        f"{name} @{n}": f"{statistics.mean(results[f'{name} {n}']):.3f}"
        for name in names
        for n in (1024, 4096)
    }
    items["exhaustive"] = f"{1000 * exact_s:.0f}ms/query"
    print(summary_line("bench/first_stage.py", items))


if __name__ == "__main__":
    main()
