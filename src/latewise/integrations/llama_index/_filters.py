"""LlamaIndex ``MetadataFilters`` translated into the index's Chroma ``where`` filters.

Every operator whose LlamaIndex meaning Chroma can express exactly is mapped; any other raises
:class:`~latewise.errors.FilterError` (a filter is never dropped or approximated):

========================  ==============================================================
LlamaIndex                Chroma ``where``
========================  ==============================================================
``EQ`` ``NE``             ``$eq`` ``$ne`` (``NE`` also matches nodes without the key, as in
                          LlamaIndex)
``GT`` ``GTE`` ``LT``     ``$gt`` ``$gte`` ``$lt`` ``$lte`` (numbers only)
``LTE``
``IN`` ``NIN``            ``$in`` ``$nin`` on a scalar field (the value is a list)
``CONTAINS``              ``$contains``: a list-valued field holds the value
``ANY``                   ``$or`` of ``$contains``: a list field holds any of the values
``ALL``                   ``$and`` of ``$contains``: a list field holds all of the values
``AND`` ``OR``            ``$and`` ``$or`` (nested ``MetadataFilters`` included)
``NOT``                   pushed down by De Morgan: ``NOT`` of ``EQ``/``IN``/``CONTAINS``/
                          ``ANY``/``ALL`` becomes ``$ne``/``$nin``/``$not_contains``...
========================  ==============================================================

Not expressible, so rejected: ``TEXT_MATCH`` and ``TEXT_MATCH_INSENSITIVE`` (Chroma cannot match
substrings of metadata), ``IS_EMPTY`` (Chroma cannot test that a key is missing), ``CONTAINS`` as a
substring test on a string field, and ``NOT`` around a range (``NOT (x > 3)`` also matches nodes
without ``x``, which no Chroma filter can say; write ``x <= 3`` if that is what you mean).
"""

from __future__ import annotations

from typing import Any

from llama_index.core.vector_stores.types import (
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
)

from latewise.errors import FilterError

__all__ = ["metadata_filters_to_where"]

_SCALARS = (str, int, float, bool)

# LlamaIndex operator -> (Chroma operator, Chroma operator of its exact negation or None).
_FIELD_OPS: dict[FilterOperator, tuple[str, str | None]] = {
    FilterOperator.EQ: ("$eq", "$ne"),
    FilterOperator.NE: ("$ne", "$eq"),
    FilterOperator.GT: ("$gt", None),
    FilterOperator.GTE: ("$gte", None),
    FilterOperator.LT: ("$lt", None),
    FilterOperator.LTE: ("$lte", None),
    FilterOperator.IN: ("$in", "$nin"),
    FilterOperator.NIN: ("$nin", "$in"),
    FilterOperator.CONTAINS: ("$contains", "$not_contains"),
}
_RANGE = frozenset({FilterOperator.GT, FilterOperator.GTE, FilterOperator.LT, FilterOperator.LTE})
_UNSUPPORTED: dict[FilterOperator, str] = {
    FilterOperator.TEXT_MATCH: (
        "Chroma cannot match substrings of metadata values; filter on an exact value (EQ / IN) "
        "or store the words as a list and use CONTAINS / ANY"
    ),
    FilterOperator.TEXT_MATCH_INSENSITIVE: (
        "Chroma cannot match substrings of metadata values; store a lower-cased copy of the "
        "field and use EQ / IN, or store the words as a list and use CONTAINS / ANY"
    ),
    FilterOperator.IS_EMPTY: (
        "Chroma cannot test whether a metadata key is missing or empty; store an explicit "
        "value (e.g. has_x=False) and filter on it with EQ"
    ),
}


def metadata_filters_to_where(filters: MetadataFilters | None) -> dict[str, Any] | None:
    """Translate LlamaIndex ``MetadataFilters`` into a Chroma ``where`` dict.

    Args:
        filters: the filters (nested ``MetadataFilters`` allowed), or ``None``.

    Returns:
        The ``where`` dict for :meth:`~latewise.LateInteractionIndex.search`, or ``None`` when
        there is nothing to filter on (``None`` or an empty filter list).

    Raises:
        FilterError: an operator or value Chroma cannot express; the message names the filter
            and says what to use instead.

    Example:
        ::

            from llama_index.core.vector_stores import MetadataFilter, MetadataFilters

            year = MetadataFilter(key="year", value=2020, operator=">=")
            metadata_filters_to_where(MetadataFilters(filters=[year]))  # {"year": {"$gte": 2020}}
    """
    if filters is None:
        return None
    if not isinstance(filters, MetadataFilters):
        raise FilterError(
            f"filters must be llama_index MetadataFilters, got {type(filters).__name__}"
        )
    return _group(filters, negate=False)


def _group(filters: MetadataFilters, *, negate: bool) -> dict[str, Any] | None:
    condition = filters.condition or FilterCondition.AND
    parts_in = list(filters.filters)
    if condition == FilterCondition.NOT:
        # LlamaIndex: NOT matches when none of the filters match: AND of the negations.
        negate, condition = not negate, FilterCondition.OR
    elif condition not in (FilterCondition.AND, FilterCondition.OR):
        raise FilterError(f"unknown filter condition {condition!r}; use AND, OR or NOT")
    if negate:  # De Morgan
        condition = FilterCondition.AND if condition == FilterCondition.OR else FilterCondition.OR
    parts: list[dict[str, Any]] = []
    for item in parts_in:
        if isinstance(item, MetadataFilters):
            sub = _group(item, negate=negate)
            if sub is not None:
                parts.append(sub)
        elif isinstance(item, MetadataFilter):
            parts.append(_field(item, negate=negate))
        else:
            raise FilterError(
                f"filters may hold MetadataFilter or MetadataFilters, got {type(item).__name__}"
            )
    return _combine("$and" if condition == FilterCondition.AND else "$or", parts)


def _combine(op: str, parts: list[dict[str, Any]]) -> dict[str, Any] | None:
    if not parts:
        return None
    if len(parts) == 1:  # Chroma wants at least two clauses under $and / $or
        return parts[0]
    return {op: parts}


def _field(f: MetadataFilter, *, negate: bool) -> dict[str, Any]:
    key, value = f.key, f.value
    operator = FilterOperator(f.operator)
    shown = f"MetadataFilter(key={key!r}, operator={operator.name}, value={value!r})"
    if operator in _UNSUPPORTED:
        raise FilterError(f"{shown} cannot be expressed in Chroma: {_UNSUPPORTED[operator]}")
    if not isinstance(key, str) or not key:
        raise FilterError(f"{shown}: the key must be a non-empty string")
    if value is None:
        raise FilterError(
            f"{shown}: Chroma cannot compare with None; store an explicit value and filter on it"
        )
    if operator in (FilterOperator.ANY, FilterOperator.ALL):
        values = _values(value, shown)
        # ANY: some value is in the list field; ALL: every value is. NOT swaps them (De Morgan).
        op = "$not_contains" if negate else "$contains"
        joiner = "$or" if (operator == FilterOperator.ANY) != negate else "$and"
        combined = _combine(joiner, [{key: {op: v}} for v in values])
        assert combined is not None  # _values rejects an empty list
        return combined
    chroma_op, negated = _FIELD_OPS[operator]
    if operator in (FilterOperator.IN, FilterOperator.NIN):
        operand: Any = _values(value, shown)
    else:
        if not isinstance(value, _SCALARS):
            raise FilterError(
                f"{shown}: {operator.name} needs a single string, number or boolean; "
                "use IN / NIN / ANY / ALL for a list of values"
            )
        if operator in _RANGE and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise FilterError(
                f"{shown}: Chroma compares only numbers with {operator.name}; "
                "use EQ / IN for strings"
            )
        operand = value
    if negate:
        if negated is None:
            raise FilterError(
                f"NOT around {shown} cannot be expressed in Chroma: the negation of a range "
                "also matches nodes without the key, and Chroma has no filter for a missing key; "
                "write the complementary range instead (e.g. LTE for NOT GT), which leaves out "
                "nodes without the key"
            )
        chroma_op = negated
    return {key: {chroma_op: operand}}


def _values(value: Any, shown: str) -> list[Any]:
    if not isinstance(value, list):
        raise FilterError(f"{shown}: this operator needs a list of values, got {value!r}")
    if not value:
        raise FilterError(f"{shown}: the list of values is empty; give at least one value")
    if len({type(v) for v in value}) != 1 or not isinstance(value[0], _SCALARS):
        raise FilterError(
            f"{shown}: the values must be strings, numbers or booleans, all of one type"
        )
    return list(value)
