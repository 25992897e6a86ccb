"""Diversifying results: similarity between multi-vector documents (through the exact
kernel) and maximal marginal relevance."""

from __future__ import annotations

import torch

from latewise.scoring.exact import maxsim_flat

__all__ = ["document_similarity", "maximal_marginal_relevance"]


def document_similarity(vectors: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """Similarity of every pair of a few multi-vector documents, for diversifying results.

    Late interaction defines no single vector per document, so two documents are compared the
    way MaxSim compares a query with a document, made symmetric and scaled to ``[-1, 1]``:
    ``sim(a, b) = (MaxSim(a, b) / |a| + MaxSim(b, a) / |b|) / 2`` - the mean over each
    document's vectors of its best match in the other (the symmetric Chamfer similarity). For
    one vector per document (BERT) it is their cosine; a document is 1 with itself (unit
    vectors).

    Args:
        vectors: ``[total_rows, dim]``, document ``i`` being ``vectors[offsets[i]:offsets[i+1]]``.
        offsets: ``[n_docs + 1]`` int64, ascending, starting at 0; every document non-empty.

    Returns:
        float32 ``[n_docs, n_docs]``, symmetric.
    """
    n = offsets.numel() - 1
    directed = torch.empty(n, n, dtype=torch.float32)
    bounds = offsets.tolist()
    for a in range(n):
        rows = vectors[bounds[a] : bounds[a + 1]]
        directed[a] = maxsim_flat(rows, vectors, offsets) / rows.shape[0]
    return (directed + directed.t()) / 2


def maximal_marginal_relevance(
    relevance: torch.Tensor, similarity: torch.Tensor, k: int, lambda_mult: float
) -> list[int]:
    """Greedy maximal marginal relevance (Carbonell & Goldstein, 1998), as LangChain's.

    Picks the most relevant item first, then repeatedly the item maximising
    ``lambda_mult * relevance[i] - (1 - lambda_mult) * max(similarity[i, j] for j picked)``;
    equal values go to the earlier item.

    Args:
        relevance: ``[n]`` query-item similarities, on the scale of ``similarity``.
        similarity: ``[n, n]`` item-item similarities.
        k: how many items to pick (at most ``n``).
        lambda_mult: 1 ranks by relevance alone, 0 by diversity alone.

    Returns:
        The picked positions, in the order picked.
    """
    n = relevance.numel()
    if n == 0 or k < 1:
        return []
    picked = [int(relevance.argmax())]
    closest = similarity[picked[0]].clone()  # each item's highest similarity to a picked one
    taken = torch.zeros(n, dtype=torch.bool)
    taken[picked[0]] = True
    while len(picked) < min(k, n):
        value = lambda_mult * relevance - (1.0 - lambda_mult) * closest
        value[taken] = -torch.inf
        j = int(value.argmax())
        picked.append(j)
        taken[j] = True
        closest = torch.maximum(closest, similarity[j])
    return picked
