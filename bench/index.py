"""Index benchmark: indexing speed (encode vs store), query latency, recall of two-stage search.

Two corpora, each indexed into a fresh embedded Chroma:

- ``minilm``: real text — Python docstrings (the standard library's known-item set, padded with
  docstrings of installed packages) encoded by the bundled all-MiniLM-L6-v2 as a zero-shot ColBERT
  encoder (384-d, one vector per token);
- ``synthetic``: 128-d multi-vectors with the structure of text retrieval (documents of 50-300
  vectors in families of 10 sharing rare "words"; each query is 32 noisy vectors of one
  document), see :func:`synthetic`.

For each it prints documents/s with the time split into encoding and storing, query latency
p50/p95 (two-stage search, encoded queries; and end to end for text), recall@10 of the two-stage
search against exact (exhaustive) MaxSim, and ends with a one-line summary of the ratios.

    python bench/index.py                       # 20k documents each (MiniLM takes a while)
    python bench/index.py --docs 2000 --corpus synthetic
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from bench._common import summary_line
from latewise import LateInteractionIndex, load_encoder
from latewise.encoders.base import Encoder


class SyntheticEncoder(Encoder):
    """Serves pre-generated multi-vectors: document ``"syn:i"`` -> ``docs[i]``."""

    def __init__(self, docs: Sequence[torch.Tensor], dim: int) -> None:
        super().__init__("synthetic", device="cpu")
        self.docs = docs
        self._dim = dim

    @property
    def dim(self) -> int:
        return self._dim

    def document_tokens(self, documents: Sequence[Any]) -> list[list[str]]:
        return [[f"#{j}" for j in range(self.docs[int(d[4:])].shape[0])] for d in documents]

    def _encode_query_batch(self, queries: list[str]) -> list[torch.Tensor]:
        raise ValueError("synthetic queries are passed as vectors")

    def _encode_document_batch(self, documents: list[Any]) -> list[torch.Tensor]:
        return [self.docs[int(d[4:])] for d in documents]


def synthetic(
    n_docs: int, n_queries: int, dim: int = 128, seed: int = 0
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Synthetic late-interaction data with the structure of text retrieval.

    Documents come in families of 10 (a topic: near-duplicates, versions, related pages): each
    has 50-300 vectors, about 70% drawn from 4,096 shared "common word" clusters (Zipf-like) and
    30% from its family's 24 "rare word" clusters, each with a little noise. A query is 32 noisy
    vectors of one document, half of them rare words: its exact top 10 is mostly its family,
    graded by overlap, rather than near-ties among unrelated documents.
    """
    g = torch.Generator().manual_seed(seed)

    def unit(x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.normalize(x, dim=-1)

    common = unit(torch.randn(4096, dim, generator=g))
    weights = 1.0 / torch.arange(1, 4097, dtype=torch.float32) ** 0.8
    n_families = max(1, n_docs // 10)
    rare = unit(torch.randn(n_families, 24, dim, generator=g))
    docs, rare_rows = [], []
    for i in range(n_docs):
        fam = i % n_families
        n = int(torch.randint(50, 301, (1,), generator=g))
        n_rare = max(1, int(0.3 * n))
        c = common[torch.multinomial(weights, n - n_rare, replacement=True, generator=g)]
        subset = torch.randperm(24, generator=g)[: int(torch.randint(6, 25, (1,), generator=g))]
        r = rare[fam, subset[torch.randint(0, len(subset), (n_rare,), generator=g)]]
        v = torch.cat([c, r]) + 0.35 * torch.randn(n, dim, generator=g) / dim**0.5
        docs.append(unit(v))
        rare_rows.append(n - n_rare)
    queries = []
    for _ in range(n_queries):
        i = int(torch.randint(0, n_docs, (1,), generator=g))
        d, start = docs[i], rare_rows[i]
        rows = torch.cat(
            [
                torch.randint(start, d.shape[0], (16,), generator=g),
                torch.randint(0, start, (16,), generator=g),
            ]
        )
        q = d[rows] + 0.5 * torch.randn(32, dim, generator=g) / dim**0.5
        queries.append(unit(q))
    return docs, queries


def text_corpus(n_docs: int, n_queries: int) -> tuple[list[str], list[str], list[int]]:
    """Docstring documents (known-item queries from the standard library first)."""
    from bench.corpus import extra_docstrings
    from bench.known_items import stdlib_docstrings

    labelled = stdlib_docstrings()
    docs = list(labelled.documents[:n_docs])
    if len(docs) < n_docs:
        docs += extra_docstrings(n_docs - len(docs), exclude=set(docs))
    pairs = [
        (q, r) for q, r in zip(labelled.queries, labelled.relevant, strict=True) if r < len(docs)
    ]
    step = max(1, len(pairs) // n_queries)
    chosen = pairs[::step][:n_queries]
    return docs, [q for q, _ in chosen], [r for _, r in chosen]


def run(
    name: str,
    encoder: Encoder,
    items: Sequence[Any],
    query_vectors: Sequence[torch.Tensor],
    query_texts: Sequence[str] | None,
    args: argparse.Namespace,
    families: int | None = None,
) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        index = LateInteractionIndex(
            encoder,
            path=Path(tmp) / "db",
            collection=f"bench-{name}",
            compression=args.compression,
            prototypes=args.prototypes,
            batch_size=args.batch_size,
        )
        ids = [f"d{i}" for i in range(len(items))]
        start = time.perf_counter()
        index.add(items, ids=ids, show_progress_bar=args.progress)
        total = time.perf_counter() - start
        w = index.written
        encode = w.encode_seconds
        store = total - encode  # everything that is not the model: prototypes, codec, Chroma
        print(
            f"[{name}] indexed {len(items)} docs in {total:.1f}s: "
            f"{len(items) / total:.1f} docs/s; encode {encode:.1f}s "
            f"({len(items) / max(encode, 1e-9):.1f} docs/s), store {store:.1f}s "
            f"(prototypes/codec {w.prepare_seconds:.1f}s, Chroma {w.store_seconds:.1f}s; "
            f"{w.rows} first-stage rows, {w.bytes / w.vectors:.0f} bytes/vector stored)"
        )
        # First pass: each query's candidates are mostly read from Chroma (cold cache); second
        # pass: the same queries with every vector they touch cached, as in a warm process.
        index.search_vectors(query_vectors[:2], k=10)
        cold, lat = [], []
        approx = []
        for q in query_vectors:
            t = time.perf_counter()
            index.search_vectors([q], k=10)
            cold.append(time.perf_counter() - t)
        for q in query_vectors:
            t = time.perf_counter()
            approx.append(index.search_vectors([q], k=10)[0])
            lat.append(time.perf_counter() - t)
        exact = index.search_vectors(query_vectors, k=10, exact=True)
        recall = statistics.mean(
            len({h.id for h in a} & {h.id for h in e}) / max(1, len(e))
            for a, e in zip(approx, exact, strict=True)
        )
        # Both lists carry exact MaxSim scores: how much of the best achievable score the
        # two-stage top 10 reaches (a miss between near-ties costs almost nothing here).
        score_ratio = statistics.mean(
            sum(h.score for h in a) / sum(h.score for h in e)
            for a, e in zip(approx, exact, strict=True)
        )
        rank11 = [index.search_vectors([q], k=11, exact=True)[0] for q in query_vectors[:50]]
        gap = statistics.median((r[9].score - r[10].score) / r[9].score for r in rank11)
        if families:
            # Synthetic documents d{i} form families i % families; a query's family is that of
            # its exact best document (the one it was drawn from). Which part of the exact top
            # 10 does the two-stage search miss?
            same, other = [0, 0], [0, 0]
            for a, e in zip(approx, exact, strict=True):
                family = int(e[0].id[1:]) % families
                found = {h.id for h in a}
                for h in e:
                    part = same if int(h.id[1:]) % families == family else other
                    part[0] += 1
                    part[1] += h.id in found
            n = len(exact)
            print(
                f"[{name}] of the exact top 10: {same[0] / n:.2f} documents of the query's family "
                f"(found {same[1] / max(1, same[0]):.3f}), {other[0] / n:.2f} others (found "
                f"{other[1] / max(1, other[0]):.3f})"
            )
        lat_sorted = sorted(lat)
        p50 = lat_sorted[len(lat) // 2] * 1000
        p95 = lat_sorted[min(len(lat) - 1, int(len(lat) * 0.95))] * 1000
        cold_p50 = sorted(cold)[len(cold) // 2] * 1000
        print(
            f"[{name}] search (encoded query, k=10): p50 {p50:.1f} ms, p95 {p95:.1f} ms warm "
            f"(first pass, vectors read from Chroma: p50 {cold_p50:.1f} ms); "
            f"recall@10 vs exact {recall:.3f} over {len(query_vectors)} queries; score of the "
            f"top 10 vs exact {score_ratio:.4f}; median gap between exact #10 and #11 "
            f"{gap:.2%}"
        )
        out = {
            "docs_s": len(items) / total,
            "store_over_encode": store / max(encode, 1e-9),
            "p50": p50,
            "p95": p95,
            "cold_p50": cold_p50,
            "recall": recall,
            "score_ratio": score_ratio,
        }
        if query_texts:
            lat2 = []
            for q in query_texts[:50]:
                t = time.perf_counter()
                index.search(q, k=10)
                lat2.append(time.perf_counter() - t)
            lat2.sort()
            out["p50_e2e"] = lat2[len(lat2) // 2] * 1000
            print(
                f"[{name}] search end to end (text query incl. encoding): "
                f"p50 {out['p50_e2e']:.1f} ms"
            )
        return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=20_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--corpus", choices=["both", "minilm", "synthetic"], default="both")
    parser.add_argument("--compression", type=int, default=None, choices=[1, 2, 4])
    parser.add_argument("--prototypes", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--progress", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    results: dict[str, dict[str, float]] = {}
    if args.corpus in ("both", "synthetic"):
        docs, queries = synthetic(args.docs, args.queries)
        results["synthetic"] = run(
            "synthetic",
            SyntheticEncoder(docs, 128),
            [f"syn:{i}" for i in range(len(docs))],
            queries,
            None,
            args,
            families=max(1, args.docs // 10),
        )
    if args.corpus in ("both", "minilm"):
        encoder = load_encoder("minilm")
        texts, queries_text, _ = text_corpus(args.docs, args.queries)
        qv = encoder.encode_queries(queries_text)
        results["minilm"] = run("minilm", encoder, texts, qv, queries_text, args)
    items = {}
    for name, r in results.items():
        items[f"{name} recall@10"] = f"{r['recall']:.3f}"
        items[f"{name} score ratio"] = f"{r['score_ratio']:.4f}"
        items[f"{name} p50"] = f"{r['p50']:.0f}ms (first pass {r['cold_p50']:.0f}ms)"
        items[f"{name} store/encode"] = f"{r['store_over_encode']:.2f}"
    print(summary_line("bench/index.py", items))


if __name__ == "__main__":
    main()
