"""The argument check the codecs and the poolers share: one document's ``[n, dim]`` vectors."""

from __future__ import annotations

import torch

from latewise.compression._format import at_position
from latewise.errors import InvalidInputError, InvalidInputTypeError

__all__ = ["at_position", "check_matrix"]


def check_matrix(
    vectors: object, position: int | None = None, *, empty_any_dtype: bool = False
) -> torch.Tensor:
    """``vectors`` if it is a 2-D float tensor.

    Args:
        vectors: the value to check.
        position: its position in a batch, named in the error.
        empty_any_dtype: also accept a ``[0, dim]`` tensor of another dtype.

    Raises:
        InvalidInputTypeError: not a tensor.
        InvalidInputError: not 2-D, or not floating point.
    """
    where, pos = at_position(position)
    if not isinstance(vectors, torch.Tensor):
        raise InvalidInputTypeError(
            f"vectors{where} must be a [n, dim] tensor, got {type(vectors).__name__}", pos
        )
    floating = vectors.is_floating_point() or (empty_any_dtype and vectors.shape[0] == 0)
    if vectors.dim() != 2 or not floating:
        raise InvalidInputError(
            f"vectors{where} must be a 2-D float tensor, got {vectors.dtype} "
            f"{tuple(vectors.shape)}",
            pos,
        )
    return vectors
