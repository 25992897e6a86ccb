"""The latewise error hierarchy.

Every error latewise raises on purpose derives from :class:`LatewiseError`, and most also derive
from the matching built-in (``ValueError``, ``TypeError``, ``KeyError``, ``ImportError``) so code
written against the built-ins keeps working. Messages say what was wrong, where (the position of
the offending item in a batch), and how to fix it. This module imports nothing heavy.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = [
    "CheckpointError",
    "DimensionMismatchError",
    "DocumentNotFoundError",
    "DuplicateIdError",
    "EmptyInputError",
    "EncoderMismatchError",
    "FileIngestError",
    "FilterError",
    "ImageLoadError",
    "InvalidInputError",
    "InvalidInputTypeError",
    "LatewiseError",
    "MissingDependencyError",
    "QueryRuntimeError",
    "SettingsMismatchError",
    "StoreError",
]


class LatewiseError(Exception):
    """Base class of every error latewise raises on purpose."""


class InvalidInputError(LatewiseError, ValueError):
    """An input value is unusable (empty, whitespace-only, malformed).

    Attributes:
        positions: the positions of the offending items in the batch the caller passed
            (empty when the whole argument is at fault, e.g. an empty list).
    """

    def __init__(self, message: str, positions: Sequence[int] = ()) -> None:
        super().__init__(message)
        self.positions: list[int] = list(positions)


class EmptyInputError(InvalidInputError):
    """An empty batch, or items that are empty or whitespace-only."""


class InvalidInputTypeError(LatewiseError, TypeError):
    """An input has the wrong type (``None``, a number where text was expected, ...).

    Attributes:
        positions: the positions of the offending items in the batch.
    """

    def __init__(self, message: str, positions: Sequence[int] = ()) -> None:
        super().__init__(message)
        self.positions: list[int] = list(positions)


class ImageLoadError(InvalidInputError):
    """An image path that does not exist or cannot be decoded as an image."""


class FileIngestError(LatewiseError, ValueError):
    """A file (PDF, image, text) could not be read or rendered.

    Attributes:
        path: the file at fault.
    """

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"cannot ingest {path!r}: {reason}")
        self.path = path
        self.reason = reason


class DimensionMismatchError(LatewiseError, ValueError):
    """Vectors whose dimension differs from the one the index or scorer expects."""


class EncoderMismatchError(LatewiseError, ValueError):
    """A collection was opened with an encoder other than the one that wrote it."""


class CheckpointError(LatewiseError, ValueError):
    """A checkpoint that cannot be loaded, or whose kind cannot be told from its files."""


class FilterError(LatewiseError, ValueError):
    """A metadata filter that is malformed or uses an operator the store cannot express."""


class DocumentNotFoundError(LatewiseError, KeyError):
    """A document id that is not in the index."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable.
        return str(self.args[0]) if self.args else ""


class StoreError(LatewiseError, RuntimeError):
    """The vector store refused an operation or holds data latewise cannot read."""


class QueryRuntimeError(LatewiseError, RuntimeError):
    """A torch-free query runtime is missing, stale, or was asked for more than queries."""


class MissingDependencyError(LatewiseError, ImportError):
    """An optional dependency is not installed; the message names the extra to install."""

    @classmethod
    def for_extra(cls, package: str, extra: str, feature: str) -> MissingDependencyError:
        """Build the error for ``feature``, which needs ``package`` from ``latewise[extra]``."""
        return cls(
            f"{feature} needs the {package!r} package, which is not installed. "
            f"Install it with: pip install 'latewise[{extra}]'"
        )


class DuplicateIdError(InvalidInputError):
    """Ids given twice in one call, or ``add`` of ids that already hold other content."""


class SettingsMismatchError(LatewiseError, ValueError):
    """An index setting that differs from the one the collection was created with."""


class PartialWriteError(StoreError):
    """A write failed after some of its documents were stored.

    Attributes:
        written: the ids stored before the failure, in input order. Every one of them is whole
            (searchable with its vectors); re-running the same call skips them and writes the
            rest (writes are idempotent).
    """

    def __init__(self, message: str, written: Sequence[str]) -> None:
        super().__init__(message)
        self.written = list(written)


class ConcurrentWriteError(StoreError):
    """Another process holds the write lock of an embedded collection folder."""


def check_positive(name: str, value: object) -> int:
    """``value`` if it is an int >= 1 (not a bool); else :class:`InvalidInputError` naming it."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise InvalidInputError(f"{name} must be a positive integer, got {value!r}")
    return value


def check_fraction(name: str, value: object) -> float:
    """``value`` as a float if it is a number in [0, 1] (not a bool); else
    :class:`InvalidInputError` naming it."""
    if not isinstance(value, int | float) or isinstance(value, bool) or not (0.0 <= value <= 1.0):
        raise InvalidInputError(f"{name} must be a number in [0, 1], got {value!r}")
    return float(value)


def check_list(value: object, kind: type, what: str, noun: str) -> list[Any]:
    """``value`` as a list if it is a sequence (not a string, nor one ``kind``) of ``kind``
    items; else :class:`InvalidInputTypeError` naming ``what`` and the positions at fault
    (``noun``: the items in words, e.g. ``"strings"``)."""
    if isinstance(value, str | kind) or not isinstance(value, Sequence):
        raise InvalidInputTypeError(f"{what} must be a list of {noun}, got {type(value).__name__}")
    wrong = [i for i, x in enumerate(value) if not isinstance(x, kind)]
    if wrong:
        raise InvalidInputTypeError(
            f"{what} must all be {noun}; positions {wrong[:10]} are not", wrong
        )
    return list(value)
