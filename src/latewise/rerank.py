"""Reranking any candidates with MaxSim: the logic behind the framework rerankers.

``MaxSimRerank`` (LlamaIndex) and ``MaxSimCompressor`` (LangChain) are thin adapters over
:func:`rerank`: it encodes the query and the candidates (texts, or page images with a ColPali
encoder) in batches and orders them by exact MaxSim.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from latewise.errors import InvalidInputTypeError, check_positive

if TYPE_CHECKING:
    from latewise.encoders import Encoder

__all__ = ["RerankResult", "rerank"]


@dataclass(frozen=True)
class RerankResult:
    """One reranked candidate.

    Attributes:
        index: the candidate's position in the list given to :func:`rerank`.
        score: its exact MaxSim score against the query.
    """

    index: int
    score: float


def rerank(
    encoder: Encoder,
    query: str,
    candidates: Sequence[Any],
    *,
    top_n: int | None = None,
    batch_size: int | None = None,
) -> list[RerankResult]:
    """Order ``candidates`` by MaxSim against ``query``, best first.

    Args:
        encoder: a latewise encoder; ``candidates`` are what its ``encode_documents`` takes
            (strings for text encoders; PIL images or image paths for ColPali).
        query: the query text.
        candidates: the documents to order.
        top_n: keep only the best ``top_n`` (all when ``None``).
        batch_size: candidates encoded per forward pass (the encoder's default otherwise).

    Returns:
        One :class:`RerankResult` per kept candidate, best first (ties in input order).

    Raises:
        InvalidInputError, InvalidInputTypeError: a bad ``top_n``, or bad candidates (with their
            positions).
    """
    if top_n is not None:
        check_positive("top_n", top_n)
    if not isinstance(query, str):
        raise InvalidInputTypeError(f"query must be a string, got {type(query).__name__}")
    if len(candidates) == 0:
        return []
    from latewise.scoring import maxsim

    q = encoder.encode_queries([query])
    docs = encoder.encode_documents(list(candidates), batch_size=batch_size)
    scores = maxsim(q, docs)[0].tolist()
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    if top_n is not None:
        order = order[:top_n]
    return [RerankResult(i, float(scores[i])) for i in order]
