"""Encoding benchmark: documents/s, single-query latency and MRR@10 per backend on this CPU.

MiniLM (all-MiniLM-L6-v2, bundled by ``latewise[minilm]``) as a zero-shot ColBERT encoder,
``load_encoder("minilm", ...)``, run as:

- ``torch``: float32 (the reference every ratio is against, in this same process);
- ``torch-bf16``: ``compute_dtype="bfloat16"`` (autocast);
- ``onnx`` / ``openvino``: the backbone exported once (ONNX Runtime, OpenVINO), float32;
- ``onnx-int8`` / ``openvino-int8``: their int8 forms (dynamic quantisation; weight compression).

Documents/s: the same documents encoded by every contender, round after round interleaved
(``bench/_common.py``), median round; ``cpu x`` is the ratio of process CPU time (steadier than
wall-clock time on a shared machine). Query latency: one query per call, median over the queries.
MRR@10: exact MaxSim over the standard library's known-item set (``bench/known_items.py``), every
contender scoring the same queries against the same documents.

    python bench/encode.py                          # 1,000 documents, 300 of them timed
    python bench/encode.py --docs 300 --only torch onnx
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from bench._common import cpu_model, load_average, measure, summary_line
from bench.compression import mrr_at, ranks_of_relevant
from bench.known_items import stdlib_docstrings
from latewise import load_encoder, maxsim

CONTENDERS: dict[str, dict[str, Any]] = {
    "torch": {},
    "torch-bf16": {"compute_dtype": "bfloat16"},
    "onnx": {"backend": "onnx"},
    "openvino": {"backend": "openvino"},
    "onnx-int8": {"backend": "onnx", "quantize": "int8"},
    "openvino-int8": {"backend": "openvino", "quantize": "int8"},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=1000, help="documents scored for MRR@10")
    parser.add_argument("--timed", type=int, default=300, help="documents timed a round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--queries", type=int, default=50, help="queries timed one at a time")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--only", nargs="*", choices=sorted(CONTENDERS), default=None)
    args = parser.parse_args()
    names = [n for n in CONTENDERS if args.only is None or n in args.only]
    if "torch" not in names:
        names.insert(0, "torch")

    data = stdlib_docstrings(max_docs=args.docs)
    print(
        f"{cpu_model()}, {torch.get_num_threads()} torch threads, load {load_average()}; "
        f"{len(data.documents)} documents, {len(data.queries)} queries (MiniLM zero-shot ColBERT)"
    )
    encoders = {}
    for name in names:
        t0 = time.perf_counter()
        encoders[name] = load_encoder("minilm", batch_size=args.batch_size, **CONTENDERS[name])
        print(f"  loaded {name:<14} in {time.perf_counter() - t0:6.2f} s (export included once)")

    timed_docs = data.documents[: args.timed]
    rounds = measure(
        {n: (lambda e=e: e.encode_documents(timed_docs)) for n, e in encoders.items()},
        repeats=args.rounds,
        warmup=0,
    )
    queries = data.queries[: args.queries]
    latency: dict[str, float] = {}
    for name, enc in encoders.items():
        enc.encode_queries(queries[:1])
        times = []
        for q in queries:
            t0 = time.perf_counter()
            enc.encode_queries([q])
            times.append(time.perf_counter() - t0)
        latency[name] = statistics.median(times)

    mrr: dict[str, float] = {}
    for name, enc in encoders.items():
        Q = enc.encode_queries(data.queries)
        D = enc.encode_documents(data.documents)
        mrr[name] = mrr_at(ranks_of_relevant(maxsim(Q, D), data.relevant))

    ref_rate = len(timed_docs) / rounds["torch"].median
    print(
        f"\n{'backend':<15}{'docs/s':>9}{'x torch':>9}{'spread':>8}{'cpu x':>7}{'query ms':>10}"
        f"{'MRR@10':>8}{'dMRR':>8}"
    )
    ref_cpu = rounds["torch"].cpu_median
    summary = {}
    for name in names:
        rate = len(timed_docs) / rounds[name].median
        change = (mrr[name] - mrr["torch"]) / mrr["torch"]
        print(
            f"{name:<15}{rate:>9.1f}{rate / ref_rate:>9.2f}{rounds[name].spread():>8.2f}"
            f"{ref_cpu / rounds[name].cpu_median:>7.2f}"
            f"{latency[name] * 1e3:>10.1f}{mrr[name]:>8.4f}{change:>+8.2%}"
        )
        summary[name] = f"{rate / ref_rate:.2f}x docs/s, MRR {change:+.2%}"
    print(summary_line("encode (vs torch float32)", summary))


if __name__ == "__main__":
    main()
