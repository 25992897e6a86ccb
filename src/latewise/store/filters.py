"""Metadata and ``where`` filters: what latewise accepts and how it is spelled for Chroma.

Metadata is stored exactly as given (a JSON round trip) and, where Chroma can filter on a value
(strings, numbers, booleans and non-empty lists of one of them), also as Chroma metadata.
``where`` filters use Chroma's syntax; they are checked here so that a mistake is a
:class:`~latewise.errors.FilterError` naming it, never a filter Chroma silently ignores.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from latewise.errors import FilterError, InvalidInputError, InvalidInputTypeError

__all__ = [
    "OPERATORS",
    "RESERVED_PREFIX",
    "check_contains_targets",
    "check_metadata",
    "check_where",
    "filter_keys",
]

#: Metadata keys starting with this are latewise's own.
RESERVED_PREFIX = "_lw_"
_SCALARS = (str, int, float, bool)
OPERATORS = frozenset(
    {"$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin", "$contains", "$not_contains"}
)


def check_metadata(metadata: Any, position: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """Validate one metadata dict.

    Args:
        metadata: a dict (or ``None``) given for the document at ``position``.
        position: the document's position in the caller's input (for error messages).

    Returns:
        ``(exact, filterable)``: an exact JSON copy, and the part Chroma can filter on.

    Raises:
        InvalidInputTypeError: not a dict.
        InvalidInputError: reserved or empty keys, or values that are not JSON.
    """
    if metadata is None:
        return {}, {}
    if not isinstance(metadata, Mapping):
        raise InvalidInputTypeError(
            f"metadata at position {position} must be a dict or None, got "
            f"{type(metadata).__name__}",
            [position],
        )
    bad_keys = [
        k for k in metadata if not isinstance(k, str) or k.startswith(RESERVED_PREFIX) or not k
    ]
    if bad_keys:
        raise InvalidInputError(
            f"metadata at position {position} has invalid keys {bad_keys[:5]}: keys must be "
            f"non-empty strings not starting with {RESERVED_PREFIX!r}",
            [position],
        )
    try:
        exact = json.loads(json.dumps(dict(metadata), allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(
            f"metadata at position {position} is not JSON-serialisable ({exc}); use strings, "
            "numbers, booleans, lists and dicts",
            [position],
        ) from exc
    filterable: dict[str, Any] = {}
    for key, value in exact.items():
        if isinstance(value, _SCALARS) or (
            isinstance(value, list)
            and value
            and all(isinstance(v, _SCALARS) for v in value)
            and len({type(v) for v in value}) == 1
        ):
            filterable[key] = value
    return exact, filterable


def check_where(where: Any) -> dict[str, Any]:
    """Check a Chroma ``where`` filter and spell it as Chroma wants it.

    Rejects latewise's reserved keys, unknown operators and malformed conditions; several
    top-level conditions become an ``$and``.

    Raises:
        FilterError: what is wrong with the filter.
    """
    if not isinstance(where, Mapping):
        raise FilterError(f"where must be a dict, got {type(where).__name__}")
    if not where:
        raise FilterError("where is an empty dict; pass None for no filter")

    def walk(node: Any) -> None:
        if not isinstance(node, Mapping) or not node:
            raise FilterError(f"malformed filter {node!r}: expected a non-empty dict")
        for key, value in node.items():
            if key in ("$and", "$or"):
                if not isinstance(value, list) or len(value) < 1:
                    raise FilterError(f"{key} needs a list of filters, got {value!r}")
                for sub in value:
                    walk(sub)
            elif not isinstance(key, str) or key.startswith("$"):
                raise FilterError(f"unknown logical operator {key!r}; use $and or $or")
            elif key.startswith(RESERVED_PREFIX):
                raise FilterError(f"metadata keys starting with {RESERVED_PREFIX!r} are reserved")
            elif isinstance(value, Mapping):
                if len(value) != 1:
                    raise FilterError(
                        f"the condition on {key!r} must have exactly one operator, "
                        f"got {dict(value)!r}"
                    )
                ((op, operand),) = value.items()
                if op not in OPERATORS:
                    raise FilterError(
                        f"operator {op!r} on {key!r} is not supported; use one of "
                        f"{sorted(OPERATORS)}"
                    )
                if op in ("$in", "$nin") and not isinstance(operand, list):
                    raise FilterError(f"{op} on {key!r} needs a list, got {operand!r}")
            elif not isinstance(value, _SCALARS):
                raise FilterError(
                    f"the value for {key!r} must be a string, number or boolean, got {value!r}"
                )

    walk(where)
    if len(where) > 1 and not any(k.startswith("$") for k in where):
        # Chroma wants several conditions spelled as $and.
        return {"$and": [{k: v} for k, v in where.items()]}
    return dict(where)


def filter_keys(where: Mapping[str, Any], operator: str) -> set[str]:
    """The metadata keys a (checked) filter applies ``operator`` to."""
    found: set[str] = set()
    for key, value in where.items():
        if key in ("$and", "$or"):
            for sub in value:
                found |= filter_keys(sub, operator)
        elif isinstance(value, Mapping) and operator in value:
            found.add(key)
    return found


def check_contains_targets(
    where: Mapping[str, Any], metadatas: Iterable[tuple[str, Mapping[str, Any]]]
) -> None:
    """Refuse ``$contains`` / ``$not_contains`` on a field that holds strings.

    In Chroma these test membership of a list-valued field; on a string field ``$contains``
    matches nothing and ``$not_contains`` everything, without a word.

    Args:
        where: a checked filter.
        metadatas: ``(document id, metadata)`` of the stored documents.

    Raises:
        FilterError: naming the field, a document where it is a string, and what to use.
    """
    keys = filter_keys(where, "$contains") | filter_keys(where, "$not_contains")
    if not keys:
        return
    for doc_id, meta in metadatas:
        for key in keys:
            if isinstance(meta.get(key), str):
                raise FilterError(
                    f"$contains / $not_contains test membership in list-valued metadata, but "
                    f"{key!r} is a string (e.g. in document {doc_id!r}), where they would match "
                    f"nothing / everything. Use {{{key!r}: {{'$eq': ...}}}} or '$in' for whole "
                    "values, or store the words as a list to test membership"
                )
