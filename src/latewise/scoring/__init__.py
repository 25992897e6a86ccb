"""Exact MaxSim (late-interaction) scoring: one kernel behind every reported score.

``score(q, d) = sum_i max_j <q_i, d_j>``. :mod:`latewise.scoring.exact` holds the kernel
(fixed-size float32 GEMM tiles, per-document maxima, a fixed-order sum), so a (query, document)
pair gets bit-identical scores whichever path scores it; :func:`maxsim` scores many queries
against a corpus through it. :mod:`~latewise.scoring.int8` (prototype scan) and
:mod:`~latewise.scoring.codes` (centroid interaction) are approximate first stages that report
no score.

This package knows tensors and nothing else.
"""

from __future__ import annotations

from latewise.scoring._workers import run_tasks
from latewise.scoring.diversity import document_similarity, maximal_marginal_relevance
from latewise.scoring.exact import (
    best_ids,
    maxsim_blocks,
    maxsim_flat,
    maxsim_flat_matches,
    maxsim_matches,
    top_k,
)
from latewise.scoring.packed import PackedVectors, offsets_of, run_rows
from latewise.scoring.scorer import MaxSimScorer, maxsim

__all__ = [
    "MaxSimScorer",
    "PackedVectors",
    "best_ids",
    "document_similarity",
    "maximal_marginal_relevance",
    "maxsim",
    "maxsim_blocks",
    "maxsim_flat",
    "maxsim_flat_matches",
    "maxsim_matches",
    "offsets_of",
    "run_rows",
    "run_tasks",
    "top_k",
]
