"""One entry point for mixed inputs: PDFs, images and text files, in one ordered stream."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator

from latewise.ingest.pages import (
    DEFAULT_DPI,
    DEFAULT_PAGE_BATCH_SIZE,
    ImageFormat,
    PageRecord,
    PageRenderer,
)
from latewise.ingest.sources import (
    ErrorMode,
    IngestIterator,
    IngestReport,
    PathLike,
    iter_sources,
    run_sources,
    validate_error_mode,
)
from latewise.ingest.text import TextDocument, _check_encoding, read_text_file

logger = logging.getLogger(__name__)

__all__ = ["IngestRecord", "iter_files"]

IngestRecord = PageRecord | TextDocument


def _count(record: IngestRecord, report: IngestReport) -> None:
    if isinstance(record, PageRecord):
        report.pages += 1
    else:
        report.texts += 1


def iter_files(
    paths: PathLike | Iterable[PathLike],
    *,
    dpi: int = DEFAULT_DPI,
    image_dir: PathLike | None = None,
    image_format: ImageFormat = "png",
    errors: ErrorMode = "collect",
    recursive: bool = True,
    page_batch_size: int = DEFAULT_PAGE_BATCH_SIZE,
    password: str | None = None,
    poppler_path: PathLike | None = None,
    timeout: float | None = None,
    encoding: str | None = None,
    report: IngestReport | None = None,
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
        dpi: the resolution PDF pages are rendered at.
        image_dir: a managed folder where page images are saved (see
            :func:`~latewise.ingest.iter_pages`).
        image_format: ``"png"`` or ``"jpeg"`` for saved pages.
        errors: ``"collect"`` (record failures, go on) or ``"raise"``.
        recursive: whether folders are searched recursively.
        page_batch_size: PDF pages rendered per poppler call.
        password: the user password for encrypted PDFs.
        poppler_path: the folder of poppler's binaries, when they are not on ``PATH``.
        timeout: seconds one poppler call may run.
        encoding: force an encoding for text files instead of detecting it.
        report: an existing report to add to.

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
    renderer = PageRenderer(
        dpi=dpi,
        image_dir=image_dir,
        image_format=image_format,
        page_batch_size=page_batch_size,
        password=password,
        poppler_path=poppler_path,
        timeout=timeout,
    )
    run_report = report if report is not None else IngestReport()

    def read(path: str) -> Iterator[IngestRecord]:
        yield read_text_file(path, encoding=encoding)

    sources = iter_sources(
        paths,
        ("pdf", "image", "text"),
        recursive=recursive,
        report=run_report,
        exclude=[renderer.image_dir] if renderer.image_dir else (),
    )
    records: Iterator[IngestRecord] = run_sources(
        sources,
        {"pdf": renderer.iter_pdf, "image": renderer.iter_image, "text": read},
        errors=mode,
        report=run_report,
        count=_count,
    )
    return IngestIterator(records, run_report)
