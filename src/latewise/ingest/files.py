"""One entry point for mixed inputs: PDFs, images and text files, in one ordered stream."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from latewise.ingest.pages import stream_records
from latewise.ingest.rendering import PageOptions, PageRecord, PageRenderer
from latewise.ingest.sources import (
    ErrorMode,
    IngestIterator,
    IngestReport,
    PathLike,
    validate_error_mode,
)
from latewise.ingest.text import TextDocument, _check_encoding, read_text_file

if TYPE_CHECKING:
    from typing_extensions import Unpack

logger = logging.getLogger(__name__)

__all__ = ["IngestRecord", "iter_files"]

IngestRecord = PageRecord | TextDocument


def _count_text(_record: TextDocument, report: IngestReport) -> None:
    report.texts += 1


def iter_files(
    paths: PathLike | Iterable[PathLike],
    *,
    errors: ErrorMode = "collect",
    recursive: bool = True,
    encoding: str | None = None,
    report: IngestReport | None = None,
    **page_options: Unpack[PageOptions],
) -> IngestIterator[IngestRecord]:
    """Stream a mix of files and folders: PDFs and images as pages, text files as text.

    Each file is classified by its suffix (:func:`~latewise.ingest.classify_path`): ``.pdf``
    yields one :class:`~latewise.ingest.PageRecord` per page, image suffixes one per image (per
    frame of a multi-page TIFF), text suffixes (``.txt``, ``.md``, ``.rst``, ``.html``, ...) one
    :class:`~latewise.ingest.TextDocument`. Files come in the order given, folders sorted by name;
    files in folders with other suffixes are skipped and listed in ``report.skipped``; a file
    named explicitly with an unsupported suffix is a failure.

    Args:
        paths: a file or folder, or a list of them.
        errors: ``"collect"`` (record failures, go on) or ``"raise"``.
        recursive: whether folders are searched recursively.
        encoding: force an encoding for text files instead of detecting it.
        report: an existing report to add to.
        **page_options: how PDF pages and images are rendered and saved, as
            :func:`~latewise.ingest.iter_pages` takes them (:class:`PageOptions`): ``dpi``
            (default 100), ``image_dir``, ``image_format``, ``page_batch_size``, ``password``,
            ``poppler_path``, ``timeout``.

    Returns:
        An iterator of :class:`PageRecord` and :class:`TextDocument` whose ``report`` is complete
        once it is exhausted.

    Raises:
        FileIngestError: in ``"raise"`` mode, for the first file that cannot be ingested.
        MissingDependencyError: a PDF is met and poppler or pdf2image is missing.
    """
    mode = validate_error_mode(errors)
    if encoding is not None:
        _check_encoding(encoding)
    renderer = PageRenderer(**page_options)

    def read(path: str) -> Iterator[TextDocument]:
        yield read_text_file(path, encoding=encoding)

    return stream_records(
        paths,
        renderer,
        {"text": read},
        _count_text,
        errors=mode,
        recursive=recursive,
        report=report,
    )
