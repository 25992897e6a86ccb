"""Scale benchmark: a 50k-document compressed index — time by stage, bytes, latency, recall.

Part 1 (storage and latency) indexes 50k synthetic 128-d multi-vector documents (50-300 vectors
each, topical structure; see ``bench/index.py``) with 2-bit residual compression, and prints:
indexing time split by stage (vector generation standing in for the encoder, pooling/prototypes/
codec, Chroma writes), bytes per vector on disk (the Chroma folder) and in memory (the cached
compressed vectors and the int8 first-stage prototypes; and the process's resident-memory growth),
query latency p50/p95 and recall@10 against exact search.

Part 2 (recall on real vectors) encodes docstrings with the bundled MiniLM as a zero-shot ColBERT
encoder, indexes them with the same settings and prints recall@10 of the default search against
exact MaxSim over the same (compressed) vectors, and against exact MaxSim over uncompressed ones.

The MiniLM index is fed through the normal streaming ``add``; the exact uncompressed reference is
kept as a running top 10 while the documents are encoded, so memory stays bounded at 50k docs.

    python bench/scale_compressed.py         # 50k synthetic + 50k MiniLM docs (~50 min, 2 cores)
    python bench/scale_compressed.py --minilm-docs 5000  # quicker: recall on 5k MiniLM docs
    python bench/scale_compressed.py --docs 5000 --minilm-docs 1000 --skip-synthetic
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psutil
import torch

from bench._common import summary_line
from bench.index import SyntheticEncoder, synthetic, text_corpus
from latewise import LateInteractionIndex, load_encoder
from latewise.encoders.base import Encoder


def disk_bytes(path: Path) -> int:
    return sum(f.stat().st_blocks * 512 for f in path.rglob("*") if f.is_file())


def latency_and_recall(
    index: LateInteractionIndex, queries: list[torch.Tensor], n_exact: int
) -> tuple[float, float, float, float]:
    """Warm p50, p95, recall@10 and the first pass's p50 (vectors read from Chroma)."""
    index.search_vectors(queries[:2], k=10)
    cold = []
    for q in queries:
        t = time.perf_counter()
        index.search_vectors([q], k=10)
        cold.append(time.perf_counter() - t)
    lat, approx = [], []
    for q in queries:
        t = time.perf_counter()
        approx.append(index.search_vectors([q], k=10)[0])
        lat.append(time.perf_counter() - t)
    exact = index.search_vectors(queries[:n_exact], k=10, exact=True)
    recall = statistics.mean(
        len({h.id for h in a} & {h.id for h in e}) / max(1, len(e))
        for a, e in zip(approx, exact, strict=False)
    )
    lat.sort()
    cold.sort()
    p50, p95 = lat[len(lat) // 2] * 1e3, lat[int(len(lat) * 0.95)] * 1e3
    return p50, p95, recall, cold[len(cold) // 2] * 1e3


def part1(args: argparse.Namespace) -> dict[str, Any]:
    proc = psutil.Process()
    docs, queries = synthetic(args.docs, args.queries)
    n_vectors = sum(d.shape[0] for d in docs)
    print(
        f"[synthetic] {args.docs} docs, {n_vectors} vectors x 128 ({n_vectors / args.docs:.0f}/doc)"
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "db"
        index = LateInteractionIndex(
            SyntheticEncoder(docs, 128),
            path=path,
            collection="scale",
            compression=args.compression,
            batch_size=args.batch_size,
        )
        start = time.perf_counter()
        index.add(
            [f"syn:{i}" for i in range(len(docs))],
            ids=[f"d{i}" for i in range(len(docs))],
            show_progress_bar=args.progress,
        )
        total = time.perf_counter() - start
        w = index.written
        print(
            f"[synthetic] indexed in {total:.0f}s ({args.docs / total:.0f} docs/s): vectors "
            f"{w.encode_seconds:.0f}s, prototypes/pooling/codec {w.prepare_seconds:.0f}s, "
            f"Chroma writes {w.store_seconds:.0f}s; {w.rows} first-stage rows"
        )
        on_disk = disk_bytes(path)
        del docs
        # A fresh index object, as another process would open it: everything read from Chroma.
        reopened = LateInteractionIndex(SyntheticEncoder([], 128), path=path, collection="scale")
        rss0 = proc.memory_info().rss
        p50, p95, recall, cold = latency_and_recall(reopened, queries, args.exact_queries)
        mem = reopened.view.memory()
        rss1 = proc.memory_info().rss
        print(
            f"[synthetic] on disk {on_disk / n_vectors:.1f} bytes/vector (Chroma folder, "
            f"{on_disk / 2**20:.0f} MiB); in memory: full vectors "
            f"{mem['vector_bytes'] / n_vectors:.1f} bytes/vector, first-stage prototypes "
            f"{mem['prototype_bytes'] / n_vectors:.1f} bytes/vector, together "
            f"{(mem['vector_bytes'] + mem['prototype_bytes']) / n_vectors:.1f}; process RSS grew "
            f"{(rss1 - rss0) / n_vectors:.1f} bytes/vector while loading and searching"
        )
        print(
            f"[synthetic] search p50 {p50:.1f} ms, p95 {p95:.1f} ms warm (first pass, vectors "
            f"read from Chroma: p50 {cold:.1f} ms); recall@10 vs exact "
            f"{recall:.3f} ({args.exact_queries} queries)"
        )
        return {
            "cold": cold,
            "p50": p50,
            "p95": p95,
            "recall": recall,
            "mem": (mem["vector_bytes"] + mem["prototype_bytes"]) / n_vectors,
            "vec_mem": mem["vector_bytes"] / n_vectors,
            "disk": on_disk / n_vectors,
            "docs_s": args.docs / total,
        }


class _ReferenceTap(Encoder):
    """Encodes ``"syn:i"`` as ``texts[i]`` with MiniLM while the index asks for it, and keeps the
    exact uncompressed MaxSim top 10 of every query over the documents encoded so far.

    The index streams documents through its encoder a batch at a time, so the benchmark never
    holds the corpus's float32 vectors (8 GB at 50k docstrings) to compute its reference.
    """

    def __init__(self, inner: Encoder, texts: list[str], queries: list[torch.Tensor]) -> None:
        super().__init__("minilm-tap", device="cpu", batch_size=256)
        self.inner, self.texts, self.queries = inner, texts, queries
        self.top_scores = torch.full((len(queries), 10), float("-inf"))
        self.top_ids = torch.full((len(queries), 10), -1, dtype=torch.long)
        self.encode_seconds = self.reference_seconds = 0.0

    @property
    def dim(self) -> int:
        return int(self.inner.dim)

    def document_tokens(self, documents: Sequence[Any]) -> list[list[str]]:
        return self.inner.document_tokens([self.texts[int(d[4:])] for d in documents])

    def _encode_query_batch(self, queries: list[str]) -> list[torch.Tensor]:
        return self.inner.encode_queries(queries)

    def _encode_document_batch(self, documents: list[Any]) -> list[torch.Tensor]:
        from latewise.scoring import maxsim

        rows = [int(d[4:]) for d in documents]
        t = time.perf_counter()
        vectors = self.inner.encode_documents([self.texts[i] for i in rows])
        t2 = time.perf_counter()
        self.encode_seconds += t2 - t
        scores = torch.cat([self.top_scores, maxsim(self.queries, vectors)], dim=1)
        ids = torch.cat([self.top_ids, torch.tensor(rows).expand(len(self.queries), -1)], dim=1)
        self.top_scores, order = scores.topk(10, dim=1)
        self.top_ids = ids.gather(1, order)
        self.reference_seconds += time.perf_counter() - t2
        return vectors


def part2(args: argparse.Namespace) -> dict[str, Any]:
    encoder = load_encoder("minilm")
    texts, qtexts, _ = text_corpus(args.minilm_docs, args.minilm_queries)
    queries = encoder.encode_queries(qtexts)
    tap = _ReferenceTap(encoder, texts, queries)
    with tempfile.TemporaryDirectory() as tmp:
        index = LateInteractionIndex(
            tap, path=Path(tmp) / "db", collection="minilm", compression=args.compression
        )
        t = time.perf_counter()
        index.add(
            [f"syn:{i}" for i in range(len(texts))],
            ids=[f"d{i}" for i in range(len(texts))],
            show_progress_bar=args.progress,
        )
        total = time.perf_counter() - t
        store = total - tap.encode_seconds - tap.reference_seconds
        print(
            f"[minilm] indexed {len(texts)} docs in {total:.0f}s: MiniLM encoding "
            f"{tap.encode_seconds:.0f}s, store {store:.0f}s "
            f"(and {tap.reference_seconds:.0f}s for the benchmark's exact reference)"
        )
        p50, p95, recall, cold = latency_and_recall(index, queries, len(queries))
        approx = index.search_vectors(queries, k=10)
        recall_raw = statistics.mean(
            len({h.id for h in a} & {f"d{i}" for i in u.tolist()}) / 10
            for a, u in zip(approx, tap.top_ids, strict=True)
        )
    print(
        f"[minilm] {len(texts)} docs, {args.compression}-bit: search p50 {p50:.1f} ms, p95 "
        f"{p95:.1f} ms warm (first pass {cold:.1f} ms); recall@10 vs exact search of the same "
        f"index {recall:.3f}, vs exact uncompressed MaxSim {recall_raw:.3f}"
    )
    return {"recall": recall, "recall_raw": recall_raw, "p50": p50}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=50_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--exact-queries", type=int, default=50)
    parser.add_argument("--minilm-docs", type=int, default=50_000)
    parser.add_argument("--minilm-queries", type=int, default=200)
    parser.add_argument("--compression", type=int, default=2, choices=[1, 2, 4])
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--skip-minilm", action="store_true")
    parser.add_argument("--skip-synthetic", action="store_true")
    parser.add_argument("--progress", action="store_true")
    args = parser.parse_args()
    print(f"torch threads {torch.get_num_threads()}, cpus {os.cpu_count()}")
    items: dict[str, str] = {}
    if not args.skip_synthetic:
        r1 = part1(args)
        items |= {
            "docs": str(args.docs),
            "p50": f"{r1['p50']:.0f}ms (first pass {r1['cold']:.0f}ms)",
            "p95": f"{r1['p95']:.0f}ms",
            "recall@10 (synthetic)": f"{r1['recall']:.3f}",
            "memory/vector": f"{r1['mem']:.1f}B (vectors {r1['vec_mem']:.1f}B)",
            "disk/vector": f"{r1['disk']:.0f}B",
        }
    if not args.skip_minilm:
        r2 = part2(args)
        items["MiniLM docs"] = str(args.minilm_docs)
        items["MiniLM p50"] = f"{r2['p50']:.0f}ms"
        items["recall@10 (MiniLM)"] = f"{r2['recall']:.3f}"
        items["vs uncompressed"] = f"{r2['recall_raw']:.3f}"
    print(summary_line("bench/scale_compressed.py", items))


if __name__ == "__main__":
    main()
