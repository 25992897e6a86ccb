"""``PDFPageLoader``: one LangChain ``Document`` per PDF page, with the page image on disk."""

from __future__ import annotations

import base64
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Literal

from langchain_core.document_loaders import BaseLoader
from langchain_core.documents import Document

from latewise.ingest import DEFAULT_DPI, IngestReport, iter_pages
from latewise.ingest.conventions import page_id, page_image_dir
from latewise.ingest.rendering import DEFAULT_PAGE_BATCH_SIZE
from latewise.ingest.sources import ErrorMode, validate_error_mode
from latewise.integrations.langchain._documents import page_content_for, page_metadata
from latewise.store.client import DEFAULT_PATH
from latewise.types import PageRef

logger = logging.getLogger(__name__)

__all__ = ["PDFPageLoader"]

#: Where page images go when no ``image_dir`` is given (next to the index's default path).
DEFAULT_IMAGE_DIR = os.fspath(page_image_dir(DEFAULT_PATH))


class PDFPageLoader(BaseLoader):
    """Load PDFs (and page images) as one ``Document`` per page, for ColPali indexing.

    Pages are rendered with poppler a few at a time while the loader is iterated, and each page
    image is saved in a managed folder (``image_dir``) under a deterministic name, so loading an
    unchanged file again reuses its images. Each document has:

    - ``id``: ``"<source>#page=<n>"`` (what :meth:`LateInteractionIndex.add_files` uses, so
      re-adding a page replaces it);
    - ``page_content``: a textual reference, ``"Page <n> of <source>"``;
    - ``metadata``: ``source`` (absolute path), ``file_name``, ``page`` (1-based), ``width`` and
      ``height`` (pixels of the rendered page), ``image_path`` and, with ``include_base64``,
      ``image_base64`` (the saved image file's bytes, base64) and ``image_mime_type``.

    Setup:
        .. code-block:: bash

            pip install -U "latewise[langchain,colpali]"
            apt-get install poppler-utils   # poppler renders the pages

    Instantiate:
        .. code-block:: python

            from latewise.integrations.langchain import PDFPageLoader

            loader = PDFPageLoader("report.pdf", image_dir="./.latewise/pages", dpi=100)
            # several files or folders; skip (and report) unreadable ones:
            loader = PDFPageLoader(["a.pdf", "scans/"], errors="collect")

    Load:
        .. code-block:: python

            for doc in loader.lazy_load():      # streamed, page by page
                doc.metadata["page"], doc.metadata["image_path"]
            docs = loader.load()
            loader.report.failures              # [(path, reason)] with errors="collect"

    Async:
        .. code-block:: python

            async for doc in loader.alazy_load():
                ...

    Add:
        Index the pages with a ColPali encoder:

        .. code-block:: python

            from latewise import ColPaliEncoder
            from latewise.integrations.langchain import LateInteractionVectorStore

            store = LateInteractionVectorStore(encoder=ColPaliEncoder("vidore/colpali-v1.3"),
                                               path="./.latewise", collection="pages")
            store.add_documents(loader.load())

    Use as retriever:
        .. code-block:: python

            store.as_retriever(search_kwargs={"k": 3}).invoke("quarterly revenue chart")

    Args:
        file_path: a PDF or image file, a folder of them, or a list of files and folders.
        image_dir: the managed folder for page images (created if needed); default
            ``./.latewise/pages``.
        dpi: the resolution pages are rendered at.
        image_format: ``"png"`` (lossless) or ``"jpeg"`` (smaller).
        include_base64: also put each page image, base64-encoded, in the metadata, for handing
            pages straight to a multimodal chat model. Leave it off for documents you index:
            the index stores metadata as given (in Chroma), and ``image_path`` already locates
            the page.
        password: the user password of encrypted PDFs.
        errors: ``"raise"`` (default) raises a :class:`~latewise.errors.FileIngestError` naming
            the first file that cannot be read; ``"collect"`` skips such files and lists them in
            :attr:`report`.
        recursive: search folders recursively.
        page_batch_size: pages rendered per poppler call (memory holds about this many pages).
        poppler_path: the folder of poppler's binaries, when they are not on ``PATH``.
        timeout: seconds one poppler call may run before the file counts as failed.

    Attributes:
        report: the :class:`~latewise.ingest.IngestReport` of the latest load (files read,
            pages, failures); complete once the iteration finishes.
    """

    def __init__(
        self,
        file_path: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
        *,
        image_dir: str | os.PathLike[str] | None = None,
        dpi: int = DEFAULT_DPI,
        image_format: Literal["png", "jpeg"] = "png",
        include_base64: bool = False,
        password: str | None = None,
        errors: ErrorMode = "raise",
        recursive: bool = True,
        page_batch_size: int = DEFAULT_PAGE_BATCH_SIZE,
        poppler_path: str | os.PathLike[str] | None = None,
        timeout: float | None = None,
    ) -> None:
        self.file_path = file_path
        self.image_dir = Path(image_dir if image_dir is not None else DEFAULT_IMAGE_DIR)
        self.dpi = dpi
        self.image_format: Literal["png", "jpeg"] = image_format
        self.include_base64 = include_base64
        self.password = password
        self.errors: ErrorMode = validate_error_mode(errors)
        self.recursive = recursive
        self.page_batch_size = page_batch_size
        self.poppler_path = poppler_path
        self.timeout = timeout
        self.report = IngestReport()

    def lazy_load(self) -> Iterator[Document]:
        """Yield one ``Document`` per page, rendering pages as they are asked for.

        Raises:
            FileIngestError: with ``errors="raise"``, a file that is missing, corrupt, encrypted
                (without the right password) or not a PDF/image; the message names it.
            MissingDependencyError: poppler or pdf2image is not installed.
        """
        self.report = IngestReport()
        pages = iter_pages(
            self.file_path,
            dpi=self.dpi,
            image_dir=self.image_dir,
            image_format=self.image_format,
            errors=self.errors,
            recursive=self.recursive,
            page_batch_size=self.page_batch_size,
            password=self.password,
            poppler_path=self.poppler_path,
            timeout=self.timeout,
            report=self.report,
        )
        with pages:
            for record in pages:
                yield self._document(record.ref)
        for path, reason in self.report.failures:
            logger.warning("skipped %s: %s", path, reason)

    def _document(self, ref: PageRef) -> Document:
        metadata = page_metadata(ref)
        metadata["file_name"] = Path(ref.path).name
        if self.include_base64 and ref.image_path is not None:
            metadata["image_base64"] = base64.b64encode(Path(ref.image_path).read_bytes()).decode(
                "ascii"
            )
            metadata["image_mime_type"] = f"image/{self.image_format}"
        return Document(
            id=page_id(ref.path, ref.page),
            page_content=page_content_for(ref),
            metadata=metadata,
        )
