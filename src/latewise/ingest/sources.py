"""Finding the files to ingest, the per-file error policy, and the run report.

Everything here is shared by the page, text and mixed iterators: expanding paths and folders into
an ordered list of sources, classifying them by suffix, and the ``errors="collect" | "raise"``
policy with its :class:`IngestReport`. No heavy imports.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Generic, Literal, TypeVar

from latewise.errors import FileIngestError, InvalidInputError, InvalidInputTypeError

logger = logging.getLogger(__name__)

__all__ = [
    "IMAGE_SUFFIXES",
    "PDF_SUFFIXES",
    "TEXT_SUFFIXES",
    "ErrorMode",
    "IngestIterator",
    "IngestReport",
    "PathLike",
    "Source",
    "SourceKind",
    "classify_path",
    "iter_sources",
]

#: Suffixes rendered page by page with poppler.
PDF_SUFFIXES: frozenset[str] = frozenset({".pdf"})
#: Suffixes opened with Pillow; each is one page (each frame of a multi-page TIFF is a page).
IMAGE_SUFFIXES: frozenset[str] = frozenset(
    {".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp", ".gif"}
)
#: Suffixes read as text (HTML is converted to text).
TEXT_SUFFIXES: frozenset[str] = frozenset(
    {".txt", ".text", ".md", ".markdown", ".rst", ".html", ".htm"}
)

SourceKind = Literal["pdf", "image", "text"]
ErrorMode = Literal["collect", "raise"]
PathLike = str | os.PathLike[str]

_KIND_SUFFIXES: dict[SourceKind, frozenset[str]] = {
    "pdf": PDF_SUFFIXES,
    "image": IMAGE_SUFFIXES,
    "text": TEXT_SUFFIXES,
}

T = TypeVar("T")


def classify_path(path: PathLike) -> SourceKind | None:
    """Tell what kind of source a file is from its suffix (case-insensitive).

    Args:
        path: a file path.

    Returns:
        ``"pdf"``, ``"image"`` or ``"text"``, or ``None`` when the suffix is not supported.
    """
    suffix = Path(path).suffix.lower()
    for kind, suffixes in _KIND_SUFFIXES.items():
        if suffix in suffixes:
            return kind
    return None


def _supported(kinds: Collection[SourceKind]) -> str:
    return ", ".join(sorted(s for k in kinds for s in _KIND_SUFFIXES[k]))


@dataclass(frozen=True)
class Source:
    """One file found by :func:`iter_sources`.

    Attributes:
        path: the absolute path of the file.
        kind: what it is, or ``None`` when it cannot be ingested (see ``error``).
        error: why the file cannot be ingested (missing, unsupported suffix, unreadable
            folder), or ``None``.
    """

    path: str
    kind: SourceKind | None
    error: str | None = None


@dataclass
class IngestReport:
    """What an ingestion run did, filled in while its iterator is consumed.

    Attributes:
        files_ok: the files read completely, in order.
        pages: how many page records were yielded.
        texts: how many text documents were yielded.
        failures: ``(path, reason)`` for each file that could not be ingested.
        skipped: files found inside folders whose suffix the iterator does not handle.
        documents: documents written to (or confirmed in) an index by
            :meth:`~latewise.LateInteractionIndex.add_files`.
        deleted: documents :meth:`~latewise.LateInteractionIndex.add_files` deleted: those a
            re-indexed file no longer has, and (with ``sync=True``) those of files that are
            gone.
    """

    files_ok: list[str] = field(default_factory=list)
    pages: int = 0
    texts: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    documents: int = 0
    deleted: int = 0

    @property
    def ok(self) -> bool:
        """``True`` when no file failed."""
        return not self.failures

    @property
    def failed_paths(self) -> list[str]:
        """The paths of the files that failed, in order."""
        return [path for path, _ in self.failures]

    def summary(self) -> str:
        """A one-paragraph, human-readable account of the run."""
        head = (
            f"{len(self.files_ok)} file(s) ingested ({self.pages} page(s), {self.texts} text(s)), "
            f"{len(self.failures)} failed, {len(self.skipped)} skipped (unsupported type)"
        )
        lines = [head] + [f"  failed: {path}: {reason}" for path, reason in self.failures]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()


class IngestIterator(Generic[T]):
    """An iterator over ingested records that carries the run's :class:`IngestReport`.

    Records are produced lazily, one at a time, as the iterator is consumed; ``report`` is
    complete once the iterator is exhausted. Use it as a context manager (or call
    :meth:`close`) to release open files when stopping early.

    Example:
        ::

            pages = iter_pages(["scans/"])
            for record in pages:
                ...
            print(pages.report.summary())
    """

    def __init__(self, records: Iterator[T], report: IngestReport) -> None:
        self._records = records
        self.report = report

    def __iter__(self) -> IngestIterator[T]:
        return self

    def __next__(self) -> T:
        return next(self._records)

    def close(self) -> None:
        """Stop the run and release what it holds open (a no-op once exhausted)."""
        close = getattr(self._records, "close", None)
        if close is not None:
            close()

    def __enter__(self) -> IngestIterator[T]:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def validate_error_mode(errors: object) -> ErrorMode:
    """Check the ``errors`` argument of the iterators."""
    if errors == "collect":
        return "collect"
    if errors == "raise":
        return "raise"
    raise InvalidInputError(f"errors must be 'collect' or 'raise', got {errors!r}")


def _as_path_list(paths: object) -> list[str]:
    if isinstance(paths, str | os.PathLike):
        return [os.fspath(paths)]
    if isinstance(paths, bytes) or not isinstance(paths, Iterable):
        raise InvalidInputTypeError(
            f"paths must be a path or a list of paths, got {type(paths).__name__}"
        )
    out: list[str] = []
    wrong: list[int] = []
    for i, p in enumerate(paths):
        if isinstance(p, str | os.PathLike):
            out.append(os.fspath(p))
        else:
            wrong.append(i)
    if wrong:
        raise InvalidInputTypeError(
            f"paths must be strings or os.PathLike; wrong type at positions {wrong[:10]}", wrong
        )
    return out


def _walk(
    folder: str, recursive: bool, exclude: frozenset[str]
) -> Iterator[tuple[str, str | None]]:
    """Yield ``(path, error)`` for files under ``folder``: files sorted by name, then subfolders
    sorted by name (depth first). Hidden entries (a leading dot) and the folders in ``exclude``
    are ignored."""
    try:
        with os.scandir(folder) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError as exc:
        yield folder, f"cannot list the folder: {exc.strerror or exc}"
        return
    subfolders: list[str] = []
    for entry in entries:
        if entry.name.startswith("."):
            continue
        try:
            is_dir = entry.is_dir()
        except OSError:
            is_dir = False
        if is_dir:
            if recursive and os.path.abspath(entry.path) not in exclude:
                subfolders.append(entry.path)
        else:
            yield entry.path, None
    for sub in subfolders:
        yield from _walk(sub, recursive, exclude)


def iter_sources(
    paths: PathLike | Iterable[PathLike],
    kinds: Collection[SourceKind],
    *,
    recursive: bool = True,
    report: IngestReport | None = None,
    exclude: Iterable[PathLike] = (),
) -> Iterator[Source]:
    """Expand files and folders into the sources to ingest, lazily and in a deterministic order.

    Paths are taken in the order given; a folder expands to its files sorted by name, then its
    subfolders (when ``recursive``). A file named explicitly whose kind is not in ``kinds``, or a
    path that does not exist, becomes a :class:`Source` with an ``error``; a file found in a
    folder whose kind is not in ``kinds`` is left out and listed in ``report.skipped``. The same
    file reached twice is yielded once.

    Args:
        paths: a path, or a list of paths, to files and folders.
        kinds: the kinds of file wanted.
        recursive: whether to descend into subfolders.
        report: where skipped files are listed.
        exclude: folders never descended into (the managed page-image folder, so pages saved
            during a run are not picked up as new inputs).

    Raises:
        InvalidInputTypeError: ``paths`` is not a path or a list of paths.
    """
    path_list = _as_path_list(paths)
    excluded = frozenset(os.path.abspath(os.fspath(p)) for p in exclude)
    seen: set[str] = set()
    for raw in path_list:
        path = os.path.abspath(raw)
        if os.path.isdir(path):
            found = 0
            if path in excluded:
                logger.warning("not reading %s: it is the folder page images are saved in", path)
                continue
            for file_path, error in _walk(path, recursive, excluded):
                if error is not None:
                    yield Source(file_path, None, error)
                    continue
                kind = classify_path(file_path)
                if kind is None or kind not in kinds:
                    if report is not None:
                        report.skipped.append(file_path)
                    logger.debug("skipping %s: not a %s file", file_path, _supported(kinds))
                    continue
                if file_path in seen:
                    continue
                seen.add(file_path)
                found += 1
                yield Source(file_path, kind)
            if found == 0:
                logger.warning("folder %s holds no %s files", path, _supported(kinds))
            continue
        if path in seen:
            continue
        seen.add(path)
        if not os.path.exists(path):
            yield Source(path, None, "no such file or directory")
            continue
        kind = classify_path(path)
        if kind is None or kind not in kinds:
            suffix = Path(path).suffix or "(no suffix)"
            yield Source(
                path,
                None,
                f"unsupported file type {suffix!r}; supported suffixes: {_supported(kinds)}",
            )
            continue
        yield Source(path, kind)


def run_sources(
    sources: Iterator[Source],
    handlers: dict[SourceKind, Callable[[str], Iterator[T]]],
    *,
    errors: ErrorMode,
    report: IngestReport,
    count: Callable[[T, IngestReport], None],
) -> Iterator[T]:
    """Apply the per-kind handler to each source with the collect / raise error policy.

    A :class:`FileIngestError` from a handler (or a source that carries an error) is recorded in
    ``report.failures``; in ``"raise"`` mode it is then raised, in ``"collect"`` mode it is logged
    as a warning and the run goes on with the next file. Any other exception (a missing
    dependency, a bug) propagates.
    """
    for source in sources:
        try:
            if source.error is not None or source.kind is None:
                raise FileIngestError(source.path, source.error or "unsupported file")
            for record in handlers[source.kind](source.path):
                count(record, report)
                yield record
        except FileIngestError as exc:
            report.failures.append((exc.path, exc.reason))
            if errors == "raise":
                raise
            logger.warning("skipping %s: %s", exc.path, exc.reason)
            continue
        report.files_ok.append(source.path)
