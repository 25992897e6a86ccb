"""``PDFPageReader``: every PDF page (or image) as an ``ImageDocument``, for ColPali."""

from __future__ import annotations

import logging
import mimetypes
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from llama_index.core.readers.base import BaseReader
from llama_index.core.schema import Document, ImageDocument

from latewise.errors import InvalidInputError
from latewise.ingest import DEFAULT_DPI, IngestReport, iter_pages
from latewise.ingest.conventions import page_id, page_image_dir
from latewise.ingest.sources import validate_error_mode
from latewise.store.client import DEFAULT_PATH

#: Where page images go when no ``image_dir`` is given (next to the index's default path).
_DEFAULT_IMAGE_DIR = page_image_dir(DEFAULT_PATH)

logger = logging.getLogger(__name__)

__all__ = ["PDFPageReader"]

_MIMETYPES = {"png": "image/png", "jpeg": "image/jpeg"}
_PDF_MIMETYPE = "application/pdf"
#: Metadata of a page that says where it is, not what it says: kept out of the encoded text.
_LOCATION_KEYS = ["file_path", "file_type", "width", "height", "image_path"]


class PDFPageReader(BaseReader):
    """Read PDFs (and images) as one ``ImageDocument`` per page, for ColPali retrieval.

    PDF pages are rendered with poppler (``pdf2image``) a few at a time, so long PDFs never sit
    in memory whole, and saved as images in a folder the reader manages (``image_dir``; names
    are deterministic, so reading an unchanged file again reuses its images). Each document's id
    is ``"<absolute path>#page=<n>"``, so indexing a file again replaces its pages.

    Metadata of each page: ``file_path`` (absolute), ``file_name``, ``file_type``, ``page``
    (1-based), ``page_label`` (the page number as text), ``width`` and ``height`` (pixels of the
    rendered image), plus ``extra_info``. The location keys are left out of the text an encoder
    or an LLM sees (``excluded_embed_metadata_keys`` / ``excluded_llm_metadata_keys``).

    Instantiate:
        .. code-block:: python

            from latewise.integrations.llama_index import PDFPageReader

            reader = PDFPageReader(image_dir="./.latewise/pages", dpi=100)
            documents = reader.load_data("report.pdf")
            # several files, going on past broken ones:
            documents = reader.load_data(["a.pdf", "broken.pdf", "scans/"], errors="collect")
            print(reader.last_report.summary())   # names broken.pdf and why

    Args:
        image_dir: the folder where page images are saved (created if needed).
        dpi: the resolution PDF pages are rendered at.
        image_format: ``"png"`` (lossless) or ``"jpeg"`` (smaller).
        errors: ``"raise"`` (default) stops at the first file that cannot be read with a
            :class:`~latewise.errors.FileIngestError` naming it; ``"collect"`` logs it, records
            it in :attr:`last_report` and goes on with the other files.
        password: the user password of encrypted PDFs.
        recursive: search folders recursively.

    Attributes:
        last_report: the :class:`~latewise.ingest.IngestReport` of the last read (files read,
            pages, failures with their reasons); complete once the documents are all read.
    """

    def __init__(
        self,
        image_dir: str | Path = _DEFAULT_IMAGE_DIR,
        *,
        dpi: int = DEFAULT_DPI,
        image_format: str = "png",
        errors: str = "raise",
        password: str | None = None,
        recursive: bool = True,
    ) -> None:
        if image_format not in _MIMETYPES:
            raise InvalidInputError(f"image_format must be 'png' or 'jpeg', got {image_format!r}")
        validate_error_mode(errors)
        self.image_dir = Path(image_dir)
        self.dpi = dpi
        self.image_format = image_format
        self.errors = errors
        self.password = password
        self.recursive = recursive
        self.last_report: IngestReport | None = None

    def lazy_load_data(  # type: ignore[override]
        self,
        file: str | Path | list[str | Path],
        extra_info: dict[str, Any] | None = None,
        *,
        errors: str | None = None,
        fs: Any = None,
    ) -> Iterator[Document]:
        """Yield one ``ImageDocument`` per page of ``file`` (a file, folder, or a list of them).

        Args:
            file: PDFs, images, folders of them, or a list of these.
            extra_info: metadata added to every page.
            errors: override the reader's ``errors`` for this call.
            fs: only the local file system is supported (``SimpleDirectoryReader`` passes it).

        Raises:
            FileIngestError: in ``"raise"`` mode, a file that is missing, corrupt, encrypted or
                not a PDF / image (the message names it).
            MissingDependencyError: poppler or pdf2image is missing.
        """
        if fs is not None and type(fs).__name__ != "LocalFileSystem":
            raise InvalidInputError(
                f"PDFPageReader reads local files only, got the file system {type(fs).__name__}"
            )
        mode = validate_error_mode(errors if errors is not None else self.errors)
        paths = [os.fspath(p) for p in file] if isinstance(file, list | tuple) else os.fspath(file)
        report = IngestReport()
        self.last_report = report
        pages = iter_pages(
            paths,
            dpi=self.dpi,
            image_dir=self.image_dir,
            image_format=self.image_format,  # type: ignore[arg-type]
            errors=mode,
            recursive=self.recursive,
            password=self.password,
            report=report,
        )
        with pages:
            for record in pages:
                ref = record.ref
                source = os.path.abspath(ref.path)
                is_pdf = source.lower().endswith(".pdf")
                metadata: dict[str, Any] = {
                    "file_path": source,
                    "file_name": os.path.basename(source),
                    "file_type": _PDF_MIMETYPE
                    if is_pdf
                    else (mimetypes.guess_type(source)[0] or "image"),
                    "page": ref.page,
                    "page_label": str(ref.page),
                    "width": ref.width,
                    "height": ref.height,
                    **(extra_info or {}),
                }
                yield ImageDocument(
                    id_=page_id(source, ref.page),
                    image_path=ref.image_path,
                    image_mimetype=_MIMETYPES[self.image_format],
                    metadata=metadata,
                    excluded_embed_metadata_keys=list(_LOCATION_KEYS),
                    excluded_llm_metadata_keys=list(_LOCATION_KEYS),
                )
        if report.failures:
            logger.warning("PDFPageReader: %s", report.summary())

    def load_data(  # type: ignore[override]
        self,
        file: str | Path | list[str | Path],
        extra_info: dict[str, Any] | None = None,
        *,
        errors: str | None = None,
        fs: Any = None,
    ) -> list[Document]:
        """All pages of ``file`` as ``ImageDocument``\\ s (see :meth:`lazy_load_data`)."""
        return list(self.lazy_load_data(file, extra_info, errors=errors, fs=fs))
