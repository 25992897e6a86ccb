"""Precomputed multi-vectors of the bench's real text corpus, encoded once and cached.

The corpus is :func:`bench.index.text_corpus`: the standard library's known-item docstrings
(queries are their one-line summaries, each with one relevant document) padded with docstrings of
installed packages. It is encoded once by the bundled all-MiniLM-L6-v2 (``load_encoder("minilm")``,
384-d, one vector per token), projected to ColBERT's 128 dimensions by a fixed seeded random
orthonormal map and normalised again, rounded to float16 (what latewise stores) and cached as one
safetensors file under ``bench/.cache/`` (git-ignored), keyed by the corpus fingerprint, its size
and the encoder's fingerprint. Every system in ``bench/store.py`` is fed these same vectors.

    python bench/vectors.py --docs 8000        # encode (minutes on a laptop CPU) and cache
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

CACHE_DIR = Path(__file__).resolve().parent / ".cache"
DIM = 128

__all__ = ["CACHE_DIR", "DIM", "VectorSet", "corpus_vectors"]


@dataclass
class VectorSet:
    """Document and query multi-vectors (float16, unit rows) with the known-item labels.

    Attributes:
        docs: one ``[n_i, dim]`` float16 array per document.
        queries: one ``[m_j, dim]`` float16 array per query.
        relevant: ``relevant[j]`` is the index in ``docs`` of query ``j``'s one relevant document.
        texts: the document texts.
        description: how the vectors were made (and whether they came from the cache).
    """

    docs: list[np.ndarray]
    queries: list[np.ndarray]
    relevant: list[int]
    texts: list[str]
    description: str

    @property
    def n_vectors(self) -> int:
        return sum(d.shape[0] for d in self.docs)


def _projection(src_dim: int, dim: int, seed: int = 0) -> np.ndarray:
    """A fixed ``[src_dim, dim]`` matrix with orthonormal columns (seeded)."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((src_dim, dim)))
    return q.astype(np.float32)


def _project(vectors: list[np.ndarray], proj: np.ndarray) -> list[np.ndarray]:
    lengths = [v.shape[0] for v in vectors]
    flat = np.concatenate(vectors).astype(np.float32) @ proj
    flat /= np.linalg.norm(flat, axis=1, keepdims=True).clip(min=1e-12)
    return np.split(flat.astype(np.float16), np.cumsum(lengths)[:-1])


def corpus_vectors(
    n_docs: int = 8000,
    n_queries: int = 200,
    *,
    dim: int = DIM,
    cache_dir: Path | None = CACHE_DIR,
    log: bool = True,
) -> VectorSet:
    """The corpus's vectors: from the cache, or encoded now (and cached)."""
    from safetensors.numpy import load_file, save_file

    from bench.index import text_corpus

    texts, query_texts, relevant = text_corpus(n_docs, n_queries)
    h = hashlib.sha256()
    for t in (*texts, "\0", *query_texts):
        h.update(t.encode("utf-8"))
        h.update(b"\0")
    key = f"{h.hexdigest()[:16]}-{len(texts)}-{len(query_texts)}-d{dim}"
    path = cache_dir / f"minilm-{key}.safetensors" if cache_dir is not None else None
    if path is not None and path.exists():
        data = load_file(str(path))
        docs = np.split(data["d"], np.cumsum(data["d_len"])[:-1])
        queries = np.split(data["q"], np.cumsum(data["q_len"])[:-1])
        return VectorSet(
            docs, queries, relevant, texts, f"MiniLM -> {dim}-d, cached in {path.name}"
        )

    from latewise import load_encoder

    encoder = load_encoder("minilm")
    fp = json.dumps(getattr(encoder, "fingerprint", {}), sort_keys=True, default=str)
    t = time.perf_counter()
    q = [np.asarray(v, dtype=np.float32) for v in encoder.encode_queries(query_texts)]
    d: list[np.ndarray] = []
    step = 512
    for s in range(0, len(texts), step):
        d.extend(
            np.asarray(v, dtype=np.float32) for v in encoder.encode_documents(texts[s : s + step])
        )
        if log:
            print(f"  encoded {len(d)}/{len(texts)} documents ({time.perf_counter() - t:.0f} s)")
    seconds = time.perf_counter() - t
    proj = _projection(d[0].shape[1], dim)
    docs, queries = _project(d, proj), _project(q, proj)
    desc = (
        f"MiniLM ({encoder.dim}-d) encoded in {seconds:.0f} s, projected to {dim}-d "
        f"(encoder {hashlib.sha256(fp.encode()).hexdigest()[:12]})"
    )
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file(
            {
                "d": np.concatenate(docs),
                "d_len": np.array([x.shape[0] for x in docs], dtype=np.int64),
                "q": np.concatenate(queries),
                "q_len": np.array([x.shape[0] for x in queries], dtype=np.int64),
            },
            str(path),
            metadata={"description": desc},
        )
    return VectorSet(docs, queries, relevant, texts, desc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=8000)
    parser.add_argument("--queries", type=int, default=200)
    args = parser.parse_args()
    vs = corpus_vectors(args.docs, args.queries)
    print(
        f"{len(vs.docs)} documents, {vs.n_vectors} vectors "
        f"({vs.n_vectors / len(vs.docs):.0f}/doc), {len(vs.queries)} queries: {vs.description}"
    )


if __name__ == "__main__":
    main()
