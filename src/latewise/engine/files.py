"""Files and folders into a collection: a short loop over :mod:`latewise.ingest`.

:func:`latewise.ingest.documents.file_documents` turns files into documents (page images, or
tokenizer-sized text chunks) with their ids and metadata; this loop upserts them a batch at a
time and, after each file, deletes the documents an earlier version of that file had and this
one no longer has. With ``sync``, documents of files that are gone are deleted too.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from latewise.index import LateInteractionIndex
    from latewise.ingest import IngestReport

logger = logging.getLogger(__name__)

__all__ = ["index_files"]


def index_files(
    index: LateInteractionIndex,
    paths: str | Path | Sequence[str | Path],
    *,
    metadata: Mapping[str, Any] | None,
    chunk_size: int | None,
    chunk_overlap: int | None,
    batch_size: int,
    show_progress_bar: bool | None,
    sync: bool,
    **read: Any,
) -> IngestReport:
    """What :meth:`LateInteractionIndex.add_files` does (see there); ``read`` (``dpi``,
    ``recursive``, ``password``, ``errors``) goes to
    :func:`~latewise.ingest.documents.file_documents`."""
    from latewise.engine.writer import CODEC_SAMPLE_DOCS
    from latewise.ingest import IngestReport
    from latewise.ingest.documents import FileDone, chunker_for, file_documents
    from latewise.store.filters import check_metadata

    extra, _ = check_metadata(metadata, 0)
    report = IngestReport()
    pending: list[Any] = []
    encoder = index.encoder
    # A compressed collection's codec is fitted on the first batch: give it a larger one.
    limit = max(batch_size, CODEC_SAMPLE_DOCS) if index.codecs.needs_fit() else batch_size

    def flush() -> None:
        if pending:
            index.upsert(
                [d.item for d in pending],
                ids=[d.id for d in pending],
                metadatas=[d.metadata for d in pending],
                batch_size=batch_size,
                show_progress_bar=False,
            )
            report.documents += len(pending)
            pending.clear()

    for doc in file_documents(
        paths,
        modality=encoder.modality,
        chunker=None
        if encoder.modality == "image"
        else chunker_for(encoder, chunk_size=chunk_size, chunk_overlap=chunk_overlap),
        image_dir=index.image_dir,
        metadata=extra,
        report=report,
        show_progress_bar=bool(
            index.show_progress_bar if show_progress_bar is None else show_progress_bar
        ),
        **read,
    ):
        if isinstance(doc, FileDone):
            keep = set(doc.ids)
            gone = [i for i in index.ids({"source": doc.source}) if i not in keep]
            if gone:  # what an earlier version of the file had, and this one has not
                report.deleted += index.delete(gone)
            continue
        pending.append(doc)
        if len(pending) >= limit:
            flush()
            limit = batch_size
    flush()
    if sync:
        report.deleted += _delete_missing_files(index, paths)
    return report


def _delete_missing_files(
    index: LateInteractionIndex, paths: str | Path | Sequence[str | Path]
) -> int:
    """Delete the documents of files under ``paths`` that no longer exist."""
    from latewise.ingest.conventions import parse_document_id

    roots = [
        os.path.abspath(os.fspath(p)) for p in ([paths] if isinstance(paths, str | Path) else paths)
    ]
    gone: list[str] = []
    for doc_id in index.ids():
        parsed = parse_document_id(doc_id)
        if parsed is None or os.path.exists(parsed.source):
            continue
        if any(parsed.source == r or parsed.source.startswith(r + os.sep) for r in roots):
            gone.append(doc_id)
    if not gone:
        return 0
    logger.info("deleting %d document(s) of files that no longer exist", len(gone))
    return index.delete(gone)
