"""Files to index documents: pages and text chunks, with their ids and metadata.

:func:`file_documents` turns files and folders into the documents an index stores, one at a
time, following :mod:`latewise.ingest.conventions`: with an image encoder every PDF page and
image is a page document; with a text encoder text files and the text layer of PDFs are cut
into token-sized chunks. After a file's last document it yields a :class:`FileDone` listing every
id the file produced, so the caller can remove the documents of an earlier version of the file
that it no longer has.

A file the encoder cannot read (an image for a text encoder, a text file for an image encoder,
a PDF without a text layer for a text encoder) is a failure that names the encoder's modality
and what it reads, never a silent zero documents. A file that will take unusually long (very
large, or one huge line of text) is announced with a warning before it is read.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from latewise.errors import FileIngestError, InvalidInputError
from latewise.ingest.chunking import TokenChunker
from latewise.ingest.conventions import chunk_id, file_metadata, page_id, page_metadata
from latewise.ingest.rendering import DEFAULT_DPI, PageRenderer
from latewise.ingest.sources import (
    IMAGE_SUFFIXES,
    PDF_SUFFIXES,
    TEXT_SUFFIXES,
    IngestReport,
    PathLike,
    Source,
    SourceKind,
    classify_path,
    iter_sources,
    run_sources,
    validate_error_mode,
)
from latewise.ingest.text import read_text_file
from latewise.types import PageRef

logger = logging.getLogger(__name__)

__all__ = [
    "LARGE_FILE_BYTES",
    "LONG_LINE_BYTES",
    "FileDocument",
    "FileDone",
    "Modality",
    "chunker_for",
    "file_documents",
    "readable_kinds",
]

Modality = Literal["text", "image"]

#: Files larger than this (per kind) are announced with a warning before they are read.
LARGE_FILE_BYTES: dict[SourceKind, int] = {
    "text": 8 << 20,
    "pdf": 64 << 20,
    "image": 32 << 20,
}
#: A text file whose first line is at least this long is announced with a warning: one huge
#: line (minified HTML, a JSON dump) is slow to tokenize and cut into chunks.
LONG_LINE_BYTES = 1 << 20


@dataclass(frozen=True)
class FileDocument:
    """One document cut from a file.

    Attributes:
        source: the absolute path of the file.
        id: ``"<source>#page=N"``, ``"<source>#chunk=N"`` or ``"<source>#page=N&chunk=M"``.
        item: the text of a chunk (``str``) or the page (:class:`~latewise.types.PageRef`).
        metadata: ``source``, ``file_name``, and ``page``/``width``/``height`` (pages) or
            ``chunk``/``start``/``end`` (chunks; plus ``page`` and ``title`` where known), over
            the caller's extra metadata.
    """

    source: str
    id: str
    item: Any
    metadata: dict[str, Any]


@dataclass(frozen=True)
class FileDone:
    """Yielded after the last document of a file that was read completely.

    Attributes:
        source: the absolute path of the file.
        ids: every id the file produced in this run, in order.
    """

    source: str
    ids: tuple[str, ...]


def readable_kinds(modality: str) -> tuple[SourceKind, ...]:
    """The kinds of file an encoder of ``modality`` reads.

    Raises:
        InvalidInputError: ``modality`` is neither ``"text"`` nor ``"image"``.
    """
    if modality == "image":
        return ("pdf", "image")
    if modality == "text":
        return ("text", "pdf")
    raise InvalidInputError(f"modality must be 'text' or 'image', got {modality!r}")


def _suffixes(*groups: frozenset[str]) -> str:
    return " ".join(sorted(set().union(*groups)))


def _cannot_read(modality: str, kind: SourceKind) -> str:
    """Why an encoder of ``modality`` refuses a file of ``kind``."""
    if modality == "image":
        return (
            f"the collection's encoder reads page images ({_suffixes(PDF_SUFFIXES, IMAGE_SUFFIXES)}"
            "), not text; index text files with a text encoder (e.g. --encoder minilm) into "
            "another collection"
        )
    what = "images" if kind == "image" else "this file"
    return (
        f"the collection's encoder reads text ({_suffixes(TEXT_SUFFIXES)} and the text layer of "
        f".pdf), not {what}; index images and scanned PDFs with an image encoder (ColPali) into "
        "another collection"
    )


def chunker_for(
    encoder: Any, *, chunk_size: int | None = None, chunk_overlap: int | None = None
) -> TokenChunker | None:
    """The chunker for an encoder's text documents, or ``None`` to keep whole texts.

    An encoder with a tokenizer and a document length (or an explicit ``chunk_size``) gets a
    :class:`~latewise.ingest.TokenChunker` that cuts to what it reads; one without a tokenizer or
    length limit reads whole texts.
    """
    if getattr(encoder, "tokenizer", None) is None:
        return None
    if not (chunk_size or getattr(encoder, "max_document_tokens", None)):
        return None
    return TokenChunker.from_encoder(encoder, chunk_size=chunk_size, chunk_overlap=chunk_overlap)


def _human(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"  # pragma: no cover - the loop returns


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def _warn_if_slow(path: str, kind: SourceKind) -> None:
    """Warn, before reading, about a file that will take unusually long."""
    size = _size(path)
    if size >= LARGE_FILE_BYTES[kind]:
        logger.warning(
            "%s is large (%s); reading and encoding it may take a while", path, _human(size)
        )
        return
    if kind == "text" and size >= LONG_LINE_BYTES:
        try:
            with open(path, "rb") as fh:
                head = fh.read(LONG_LINE_BYTES)
        except OSError:
            return  # reading it reports the problem
        if b"\n" not in head and b"\r" not in head:
            logger.warning(
                "%s (%s) has a line longer than %s; tokenizing one huge line is slow",
                path,
                _human(size),
                _human(LONG_LINE_BYTES),
            )


def _progress_bar(total: int, n_files: int) -> Any:
    from tqdm.auto import tqdm

    return tqdm(
        total=total,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc=f"Indexing 0/{n_files} files",
        dynamic_ncols=True,
    )


def _tracked(sources: list[Source], bar: Any) -> Iterator[Source]:
    """Yield ``sources``, advancing ``bar`` by each file's size once the next one is asked for
    (the previous file is then finished, read or failed)."""
    previous: Source | None = None
    for done, source in enumerate(sources):
        if previous is not None:
            bar.update(_size(previous.path))
            bar.set_description(f"Indexing {done}/{len(sources)} files", refresh=False)
        previous = source
        yield source
    if previous is not None:
        bar.update(_size(previous.path))
        bar.set_description(f"Indexing {len(sources)}/{len(sources)} files", refresh=False)


def file_documents(
    paths: PathLike | Iterable[PathLike],
    *,
    modality: str,
    chunker: TokenChunker | None,
    image_dir: str | Path | None,
    report: IngestReport,
    metadata: Mapping[str, Any] | None = None,
    dpi: int = DEFAULT_DPI,
    recursive: bool = True,
    password: str | None = None,
    errors: str = "collect",
    show_progress_bar: bool = False,
) -> Iterator[FileDocument | FileDone]:
    """Stream the documents of files and folders, each file followed by a :class:`FileDone`.

    Args:
        paths: files and/or folders (folders sorted by name, searched recursively when
            ``recursive``).
        modality: the encoder's modality: ``"image"`` (pages of PDFs and images) or ``"text"``
            (text files and the text layer of PDFs, chunked).
        chunker: cuts texts into chunks (see :func:`chunker_for`); ``None`` keeps whole texts.
        image_dir: where rendered page images are saved (image modality); never searched for
            inputs, whatever the modality.
        report: filled in as the stream is consumed: files read, pages and texts, failures,
            files of other kinds skipped in folders.
        metadata: extra metadata for every document (the file keys win over it).
        dpi: the resolution PDF pages are rendered at.
        recursive: search folders recursively.
        password: the password of encrypted PDFs.
        errors: ``"collect"`` records a file that cannot be read in ``report`` and goes on;
            ``"raise"`` stops at the first one.
        show_progress_bar: draw a progress bar over the bytes of the files (with an ETA); the
            files are listed before the first is read.

    Yields:
        :class:`FileDocument` for each page or chunk, and :class:`FileDone` after the last
        document of each file read completely.

    Raises:
        FileIngestError: in ``"raise"`` mode, the first file that cannot be read (for a file the
            encoder cannot read, the reason names the modality and what it reads). In
            ``"collect"`` mode, a run that found files but none the encoder reads records a
            failure saying so.
        MissingDependencyError: a PDF is met and poppler or pdf2image is missing.
    """
    mode = validate_error_mode(errors)
    kinds = readable_kinds(modality)
    other: tuple[SourceKind, ...] = ("text",) if modality == "image" else ("image",)
    extra = dict(metadata or {})
    renderer = PageRenderer(
        dpi=dpi, image_dir=image_dir if modality == "image" else None, password=password
    )

    def pages(path: str) -> Iterator[FileDocument | FileDone]:
        ids: list[str] = []
        records = renderer.iter_pdf(path) if classify_path(path) == "pdf" else None
        for rec in records if records is not None else renderer.iter_image(path):
            ref = rec.ref
            doc_id = page_id(path, ref.page)
            ids.append(doc_id)
            meta = {**extra, **page_metadata(ref), "source": path}
            yield FileDocument(path, doc_id, ref, meta)
        yield FileDone(path, tuple(ids))

    def chunks(
        path: str, text: str, base: dict[str, Any], page: int | None, ids: list[str]
    ) -> Iterator[FileDocument]:
        if chunker is None:
            spans = [(0, 0, len(text), text)] if text.strip() else []
        else:
            spans = [(c.index, c.start, c.end, c.text) for c in chunker.split_text(text)]
        for index, start, end, chunk in spans:
            doc_id = chunk_id(path, index, page)
            ids.append(doc_id)
            yield FileDocument(
                path, doc_id, chunk, {**base, "chunk": index, "start": start, "end": end}
            )

    def texts(path: str) -> Iterator[FileDocument | FileDone]:
        doc = read_text_file(path)
        base = {**extra, **file_metadata(path)}
        if doc.title:
            base["title"] = doc.title
        ids: list[str] = []
        yield from chunks(path, doc.text, base, None, ids)
        yield FileDone(path, tuple(ids))

    def pdf_texts(path: str) -> Iterator[FileDocument | FileDone]:
        ids: list[str] = []
        for page, text in renderer.iter_pdf_text(path):
            base = {**extra, **file_metadata(path), "page": page}
            yield from chunks(path, text, base, page, ids)
        yield FileDone(path, tuple(ids))

    def refuse(path: str) -> Iterator[FileDocument | FileDone]:
        raise FileIngestError(path, _cannot_read(modality, classify_path(path) or "text"))

    Handler = Callable[[str], Iterator[FileDocument | FileDone]]

    def checked(handler: Handler) -> Handler:
        def run(path: str) -> Iterator[FileDocument | FileDone]:
            kind = classify_path(path)
            if kind is not None:
                _warn_if_slow(path, kind)
            yield from handler(path)

        return run

    handlers: dict[SourceKind, Handler]
    if modality == "image":
        handlers = {"pdf": checked(pages), "image": checked(pages), "text": refuse}
    else:
        handlers = {"text": checked(texts), "pdf": checked(pdf_texts), "image": refuse}

    def explicit(source: Source) -> Source:
        """A file named explicitly that the encoder cannot read goes to ``refuse``."""
        kind = classify_path(source.path)
        if source.error is not None and kind in other and os.path.isfile(source.path):
            return Source(source.path, kind)
        return source

    listed = (
        explicit(s)
        for s in iter_sources(
            paths,
            kinds,
            recursive=recursive,
            report=report,
            exclude=[image_dir] if image_dir is not None else (),
        )
    )
    bar = None
    stream: Iterator[Source] = listed
    if show_progress_bar:
        sources = list(listed)
        bar = _progress_bar(sum(_size(s.path) for s in sources), len(sources))
        stream = _tracked(sources, bar)

    def count(doc: FileDocument | FileDone, rep: IngestReport) -> None:
        if isinstance(doc, FileDone):
            return
        if isinstance(doc.item, PageRef):
            rep.pages += 1
        elif doc.metadata.get("chunk") == 0:
            rep.texts += 1

    produced = 0
    try:
        for doc in run_sources(stream, handlers, errors=mode, report=report, count=count):
            if isinstance(doc, FileDocument):
                produced += 1
            yield doc
    finally:
        if bar is not None:
            bar.close()
    unreadable = [p for p in report.skipped if classify_path(p) in other]
    if produced == 0 and unreadable and not report.failures:
        shown = ", ".join(Path(p).name for p in unreadable[:3])
        more = f" and {len(unreadable) - 3} more" if len(unreadable) > 3 else ""
        failure = FileIngestError(
            os.fspath(unreadable[0]),
            f"found no file the encoder reads, only {shown}{more}: "
            f"{_cannot_read(modality, 'image' if other == ('image',) else 'text')}",
        )
        report.failures.append((failure.path, failure.reason))
        if mode == "raise":
            raise failure
        logger.warning("%s", failure)
