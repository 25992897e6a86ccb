"""PDF pages and images to RGB page images, streamed one page at a time.

:func:`iter_pages` streams the pages of files and folders (and, through
:func:`stream_records`, :func:`~latewise.ingest.iter_files` adds text files to the stream);
:func:`render_page` and :func:`load_page_image` give one page. The rendering itself is
:class:`~latewise.ingest.rendering.PageRenderer`'s.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from latewise.errors import FileIngestError, InvalidInputError
from latewise.ingest.rendering import (
    DEFAULT_DPI,
    ImageFormat,
    PageOptions,
    PageRecord,
    PageRenderer,
    load_cached,
    save_atomic,
    to_rgb,
)
from latewise.ingest.sources import (
    ErrorMode,
    IngestIterator,
    IngestReport,
    PathLike,
    SourceKind,
    classify_path,
    iter_sources,
    run_sources,
    validate_error_mode,
)
from latewise.types import PageRef

if TYPE_CHECKING:
    from PIL.Image import Image
    from typing_extensions import Unpack

logger = logging.getLogger(__name__)

__all__ = ["iter_pages", "load_page_image", "render_page", "stream_records"]

_R = TypeVar("_R")


def stream_records(
    paths: PathLike | Iterable[PathLike],
    renderer: PageRenderer,
    readers: Mapping[SourceKind, Callable[[str], Iterator[_R]]] | None = None,
    count: Callable[[_R, IngestReport], None] | None = None,
    *,
    errors: ErrorMode,
    recursive: bool,
    report: IngestReport | None,
) -> IngestIterator[PageRecord | _R]:
    """The records of ``paths``, with the collect / raise error policy.

    Args:
        paths: files and folders.
        renderer: renders the PDF pages and opens the images.
        readers: file kind -> reader, for the other kinds of file to read (e.g. text).
        count: tallies a record of ``readers`` in the report (pages count as
            ``report.pages``).
        errors: ``"collect"`` or ``"raise"``.
        recursive: whether folders are searched recursively.
        report: an existing report to add to.
    """
    readers = dict(readers or {})
    mode = validate_error_mode(errors)
    run_report = report if report is not None else IngestReport()

    def tally(record: PageRecord | _R, into: IngestReport) -> None:
        if isinstance(record, PageRecord):
            into.pages += 1
        elif count is not None:
            count(record, into)

    sources = iter_sources(
        paths,
        ("pdf", "image", *readers),
        recursive=recursive,
        report=run_report,
        exclude=[renderer.image_dir] if renderer.image_dir else (),
    )
    records: Iterator[PageRecord | _R] = run_sources(
        sources,
        {"pdf": renderer.iter_pdf, "image": renderer.iter_image, **readers},
        errors=mode,
        report=run_report,
        count=tally,
    )
    return IngestIterator(records, run_report)


def iter_pages(
    paths: PathLike | Iterable[PathLike],
    *,
    errors: ErrorMode = "collect",
    recursive: bool = True,
    report: IngestReport | None = None,
    **page_options: Unpack[PageOptions],
) -> IngestIterator[PageRecord]:
    """Stream the pages of PDFs, images and folders of them, one :class:`PageRecord` at a time.

    Files are taken in the order given; a folder contributes its PDFs and images sorted by name
    (subfolders after files, when ``recursive``); other files in folders are skipped and listed
    in ``report.skipped``. A PDF's pages are rendered ``page_batch_size`` at a time, so memory
    holds only a few pages however long the PDF is.

    Args:
        paths: a file or folder, or a list of them.
        errors: ``"collect"`` records a file that cannot be read in ``report.failures`` and goes
            on with the next; ``"raise"`` raises its :class:`~latewise.errors.FileIngestError`.
        recursive: whether folders are searched recursively.
        report: an existing report to add to (to share one across several runs).
        **page_options: how pages are rendered and saved (:class:`PageOptions`, the arguments
            of :class:`PageRenderer`):

            - ``dpi``: the resolution PDF pages are rendered at (default 100).
            - ``image_dir``: a managed folder to save every page image in
              (``PageRef.image_path``); names are deterministic, so re-indexing an unchanged
              file reuses its images. ``None`` (default) keeps pages in memory only.
            - ``image_format``: ``"png"`` (default) or ``"jpeg"`` for saved pages.
            - ``page_batch_size``: PDF pages rendered per poppler call (default 4).
            - ``password``: the user password for encrypted PDFs.
            - ``poppler_path``: the folder of poppler's binaries, when they are not on ``PATH``.
            - ``timeout``: seconds one poppler call may run.

    Returns:
        An iterator of :class:`PageRecord` whose ``report`` is complete once it is exhausted.

    Raises:
        FileIngestError: in ``"raise"`` mode, for the first file that is missing, of an
            unsupported type, empty, corrupt, encrypted (without the right password) or
            unreadable.
        MissingDependencyError: poppler or pdf2image is missing (in either mode).
        InvalidInputError: an argument is out of range.

    Example:
        ::

            pages = iter_pages(["report.pdf", "scans/"], image_dir=".latewise/pages")
            for record in pages:
                print(record.ref.path, record.ref.page, record.image.size)
            print(pages.report.summary())
    """
    mode = validate_error_mode(errors)
    renderer = PageRenderer(**page_options)
    return stream_records(paths, renderer, errors=mode, recursive=recursive, report=report)


def render_page(
    path: PathLike,
    page: int = 1,
    *,
    dpi: int = DEFAULT_DPI,
    size: tuple[int, int] | None = None,
    password: str | None = None,
    poppler_path: PathLike | None = None,
    timeout: float | None = None,
) -> Image:
    """Render one page of a PDF (or open one page of an image) as an RGB image.

    Args:
        path: the PDF or image file.
        page: the 1-based page number.
        dpi: the resolution for PDF pages (ignored when ``size`` is given).
        size: ``(width, height)`` in pixels to render a PDF page at (or resize an image to).
        password: the user password for an encrypted PDF.
        poppler_path: the folder of poppler's binaries, when they are not on ``PATH``.
        timeout: seconds the poppler call may run.

    Raises:
        FileIngestError: the file cannot be read, or has no such page.
        MissingDependencyError: poppler or pdf2image is missing.
    """
    source = os.path.abspath(os.fspath(path))
    if isinstance(page, bool) or not isinstance(page, int) or page < 1:
        raise InvalidInputError(f"page must be a 1-based page number, got {page!r}")
    renderer = PageRenderer(dpi=dpi, password=password, poppler_path=poppler_path, timeout=timeout)
    kind = classify_path(source)
    if kind == "pdf":
        n_pages = renderer.pdf_page_count(source)
        if page > n_pages:
            raise FileIngestError(source, f"has {n_pages} page(s); page {page} does not exist")
        image = renderer.render_pdf_pages(source, page, page, size=size)[0]
        return to_rgb(image)
    if kind == "image":
        for record in renderer.iter_image(source):
            if record.ref.page == page:
                image = record.image
                if size is not None and image.size != tuple(size):
                    image = image.resize(size)
                return image
        raise FileIngestError(source, f"the image has no page (frame) {page}")
    raise FileIngestError(source, f"not a PDF or image file (suffix {Path(source).suffix!r})")


def load_page_image(
    ref: PageRef,
    *,
    dpi: int = DEFAULT_DPI,
    save: bool = True,
    password: str | None = None,
    poppler_path: PathLike | None = None,
) -> Image:
    """The image of a page: the saved file when it exists, else re-rendered from the source.

    When re-rendering and the reference knows the page's size, the page is rendered at exactly
    that size (so patch positions stay valid); otherwise at ``dpi``. With ``save``, a missing
    saved image is written back to ``ref.image_path``.

    Args:
        ref: the page reference (from a :class:`PageRecord` or a search hit).
        dpi: the resolution used when the size is unknown.
        save: write a re-rendered page back to ``ref.image_path``.
        password: the user password for an encrypted PDF.
        poppler_path: the folder of poppler's binaries, when they are not on ``PATH``.

    Raises:
        FileIngestError: the saved image is missing and the source cannot be rendered.
    """
    if ref.image_path is not None:
        cached = load_cached(ref.image_path)
        if cached is not None:
            return cached
    size = (ref.width, ref.height) if ref.width and ref.height else None
    image = render_page(
        ref.path, ref.page, dpi=dpi, size=size, password=password, poppler_path=poppler_path
    )
    if size is not None and image.size != size:
        logger.warning(
            "page %d of %s re-rendered at %s, not the %s it was indexed at; resizing "
            "(the source may have changed since indexing)",
            ref.page,
            ref.path,
            image.size,
            size,
        )
        image = image.resize(size)
    if save and ref.image_path is not None:
        os.makedirs(os.path.dirname(ref.image_path) or ".", exist_ok=True)
        image_format: ImageFormat = (
            "jpeg" if ref.image_path.lower().endswith((".jpg", ".jpeg")) else "png"
        )
        save_atomic(image, ref.image_path, image_format, ref.path)
    return image
