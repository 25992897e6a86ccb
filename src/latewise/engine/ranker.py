"""The second stage: exact MaxSim over candidates, and the hits users get.

Every score reported to a user comes from one kernel, :func:`latewise.scoring.maxsim_blocks` /
:func:`latewise.scoring.maxsim_flat` (float32, fixed-size tiles, fixed summation order), so a
query and a document get the same score whichever path scored them: two-stage or exhaustive
search, MMR, ``explain`` or the public :func:`latewise.maxsim`. Candidates' stored vectors
(float16 or residual codes) are expanded to float32 a cache-sized block at a time, never copied
whole.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from latewise.engine.view import CorpusView
from latewise.types import Hit, PageRef

if TYPE_CHECKING:
    import torch

__all__ = ["Ranker"]

#: Documents expanded per step of an exhaustive search (bounds its memory).
_EXHAUSTIVE_STEP = 2000


@dataclass
class Ranker:
    """Exact scoring over a :class:`CorpusView`."""

    view: CorpusView

    def scores(self, query: torch.Tensor, ids: Sequence[str]) -> tuple[list[str], torch.Tensor]:
        """Exact MaxSim of ``query`` against the documents ``ids`` that are still stored:
        ``(kept ids, float32 scores)``."""
        from latewise.scoring import maxsim_blocks

        snap = self.view.snapshot(ids)
        codec = self.view.codec()
        scores = maxsim_blocks(
            query, snap.counts, lambda a, b, r0, r1: codec.expand(snap.rows(a, b))
        )
        return snap.ids, scores

    def vectors(self, ids: Sequence[str]) -> tuple[list[str], torch.Tensor, torch.Tensor]:
        """Full float32 vectors of ``ids`` (those still stored), flat: ``(ids, vectors,
        offsets)``."""
        snap = self.view.snapshot(ids)
        flat = self.view.codec().expand(snap.rows(0, len(snap.ids)))
        return snap.ids, flat, snap.offsets

    def rank(self, query: torch.Tensor, ids: Sequence[str], k: int) -> list[Hit]:
        """The best ``k`` of ``ids`` for ``query`` as hits, best first (equal scores in id
        order), each with its exact score and the document vector each query vector matched."""
        kept, scores = self.scores(query, ids)
        return self._hits(query, kept, scores, k)

    def exhaustive(self, query: torch.Tensor, ids: Sequence[str], k: int) -> list[Hit]:
        """:meth:`rank` over many documents, scored a bounded step at a time."""
        import torch

        from latewise.scoring import best_ids

        best: list[str] = []
        best_scores = torch.empty(0, dtype=torch.float32)
        for s in range(0, len(ids), _EXHAUSTIVE_STEP):
            kept, scores = self.scores(query, ids[s : s + _EXHAUSTIVE_STEP])
            pool = best + kept
            pooled = torch.cat([best_scores, scores])
            best = best_ids(pool, pooled, k)
            where = {d: i for i, d in enumerate(pool)}
            best_scores = pooled[[where[d] for d in best]]
        return self._hits(query, best, best_scores, k)

    def _hits(self, query: torch.Tensor, ids: list[str], scores: torch.Tensor, k: int) -> list[Hit]:
        from latewise.scoring import best_ids, maxsim_flat_matches

        if not ids:
            return []
        top = best_ids(ids, scores, k)
        position = {d: i for i, d in enumerate(ids)}
        values = scores.tolist()
        kept, flat, offsets = self.vectors(top)
        _, matches = maxsim_flat_matches(query, flat, offsets)
        found = dict(zip(kept, matches.tolist(), strict=True))
        hits: list[Hit] = []
        for doc_id in top:
            rec = self.view.records.get(doc_id)
            if rec is None or doc_id not in found:
                continue  # deleted meanwhile
            hits.append(
                Hit(
                    id=doc_id,
                    score=float(values[position[doc_id]]),
                    text=rec.text,
                    metadata=dict(rec.metadata),
                    page=PageRef(**rec.page) if rec.page else None,
                    matches=tuple(int(m) for m in found[doc_id]),
                    rank=len(hits),
                )
            )
        return hits

    def diversify(
        self, query: torch.Tensor, hits: Sequence[Hit], k: int, lambda_mult: float
    ) -> list[Hit]:
        """``k`` of ``hits`` chosen by maximal marginal relevance: relevance is the MaxSim score
        over the number of query vectors, document similarity the symmetric Chamfer similarity
        of their vectors (:func:`latewise.scoring.document_similarity`)."""
        import torch

        from latewise.scoring import document_similarity, maximal_marginal_relevance

        if len(hits) <= 1:
            return list(hits[:k])
        kept, flat, offsets = self.vectors([h.id for h in hits])
        by_id = {h.id: h for h in hits}
        chosen = [by_id[d] for d in kept]  # less any document deleted meanwhile
        relevance = torch.tensor([h.score for h in chosen]) / query.shape[0]
        order = maximal_marginal_relevance(
            relevance, document_similarity(flat, offsets), k, lambda_mult
        )
        return [replace(chosen[j], rank=r) for r, j in enumerate(order)]
