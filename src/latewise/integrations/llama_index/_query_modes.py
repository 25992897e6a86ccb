"""The retriever's query settings: ``similarity_top_k``, the query mode and MMR's arguments.

:class:`~latewise.integrations.llama_index.LateInteractionRetriever` offers LlamaIndex's
``"default"`` mode (rank by MaxSim) and ``"mmr"`` (maximal marginal relevance), with the
``vector_store_kwargs`` LlamaIndex's vector index retrievers take for it.
"""

from __future__ import annotations

import math
from typing import Any

from llama_index.core.vector_stores.types import VectorStoreQueryMode

from latewise.errors import InvalidInputError, check_fraction, check_positive

__all__ = ["MODES", "check_mode", "check_top_k", "mmr_args"]

#: The query modes the retriever offers.
MODES = (VectorStoreQueryMode.DEFAULT, VectorStoreQueryMode.MMR)
_MMR_KEYS = frozenset({"mmr_threshold", "mmr_prefetch_factor", "mmr_prefetch_k"})
#: LlamaIndex's default: MMR chooses among 4 times as many nodes as it returns.
_MMR_PREFETCH_FACTOR = 4.0


def check_top_k(value: Any) -> int:
    """``similarity_top_k`` if it is a positive integer.

    Raises:
        InvalidInputError: it is not.
    """
    return check_positive("similarity_top_k", value)


def check_mode(mode: Any) -> VectorStoreQueryMode:
    """``mode`` as a :class:`VectorStoreQueryMode` the retriever offers.

    Raises:
        InvalidInputError: an unknown mode, or one latewise does not offer (hybrid, sparse...).
    """
    try:
        checked = VectorStoreQueryMode(mode)
    except ValueError:
        checked = None
    if checked not in MODES:
        raise InvalidInputError(
            f"vector_store_query_mode must be 'default' or 'mmr', got {mode!r} (latewise ranks "
            "by exact MaxSim; hybrid, sparse and the other modes are not offered)"
        )
    return checked


def mmr_args(kwargs: dict[str, Any], k: int) -> tuple[int, float]:
    """``(fetch_k, lambda_mult)`` from LlamaIndex's MMR arguments (checked).

    Args:
        kwargs: ``vector_store_kwargs``: ``mmr_threshold`` (``lambda``, default 0.5),
            ``mmr_prefetch_factor`` (default 4) or ``mmr_prefetch_k``.
        k: how many nodes the query returns.

    Raises:
        InvalidInputError: an unknown key or a value out of range.
    """
    unknown = sorted(set(kwargs) - _MMR_KEYS)
    if unknown:
        raise InvalidInputError(f"unknown vector_store_kwargs {unknown}; use {sorted(_MMR_KEYS)}")
    threshold = kwargs.get("mmr_threshold")
    lambda_mult = check_fraction("mmr_threshold", 0.5 if threshold is None else threshold)
    if kwargs.get("mmr_prefetch_k") is not None:
        return check_positive("mmr_prefetch_k", kwargs["mmr_prefetch_k"]), lambda_mult
    factor = kwargs.get("mmr_prefetch_factor", _MMR_PREFETCH_FACTOR)
    if not isinstance(factor, int | float) or isinstance(factor, bool) or factor < 1:
        raise InvalidInputError(f"mmr_prefetch_factor must be a number >= 1, got {factor!r}")
    return max(k, math.ceil(k * factor)), lambda_mult
