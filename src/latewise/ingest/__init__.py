"""Turning files into what the index encodes: page images, text, and token-sized chunks.

- :func:`iter_pages`: PDFs (rendered with poppler, a few pages at a time), images and folders of
  them, streamed as :class:`PageRecord` (an RGB image and a :class:`~latewise.types.PageRef`).
- :func:`iter_text_files` / :func:`read_text_file`: ``.txt``, ``.md``, ``.rst``, ``.html`` as
  :class:`TextDocument`, with encoding detection and HTML-to-text.
- :func:`iter_files`: a mixed folder in one stream, classified by suffix.
- :class:`TokenChunker`: tokenizer-aware chunking that never loses a token.

Every iterator takes ``errors="collect"`` (failures go to ``iterator.report``, the run goes on) or
``errors="raise"``. Importing this package is cheap: Pillow and pdf2image load when first used.
"""

from __future__ import annotations

from latewise.ingest.chunking import TextChunk, TokenChunker
from latewise.ingest.files import IngestRecord, iter_files
from latewise.ingest.pages import iter_pages, load_page_image, render_page
from latewise.ingest.rendering import DEFAULT_DPI, PageRecord, PageRenderer, page_image_path
from latewise.ingest.sources import (
    IMAGE_SUFFIXES,
    PDF_SUFFIXES,
    TEXT_SUFFIXES,
    IngestIterator,
    IngestReport,
    classify_path,
)
from latewise.ingest.text import (
    TextDocument,
    decode_text,
    html_to_text,
    iter_text_files,
    read_text_file,
)

__all__ = [
    "DEFAULT_DPI",
    "IMAGE_SUFFIXES",
    "PDF_SUFFIXES",
    "TEXT_SUFFIXES",
    "IngestIterator",
    "IngestRecord",
    "IngestReport",
    "PageRecord",
    "PageRenderer",
    "TextChunk",
    "TextDocument",
    "TokenChunker",
    "classify_path",
    "decode_text",
    "html_to_text",
    "iter_files",
    "iter_pages",
    "iter_text_files",
    "load_page_image",
    "page_image_path",
    "read_text_file",
    "render_page",
]
