"""Files and folders into a collection: a short loop over :mod:`latewise.ingest`.

:func:`latewise.ingest.documents.file_documents` turns files into documents (page images, or
tokenizer-sized text chunks) with their ids and metadata; this loop upserts them a batch at a
time and, after each file, deletes the documents an earlier version of that file had and this
one no longer has. With ``sync``, documents of files that are gone are deleted too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from latewise.index import LateInteractionIndex
    from latewise.ingest import IngestReport

__all__ = ["index_files"]


def index_files(
    index: LateInteractionIndex,
    paths: str | Path | Sequence[str | Path],
    *,
    metadata: Mapping[str, Any] | None,
    dpi: int,
    recursive: bool,
    password: str | None,
    chunk_size: int | None,
    chunk_overlap: int | None,
    batch_size: int,
    show_progress_bar: bool | None,
    errors: str,
    sync: bool,
) -> IngestReport:
    """What :meth:`LateInteractionIndex.add_files` does (see there)."""
    from latewise.ingest import IngestReport
    from latewise.ingest.documents import FileDone, file_documents

    report = IngestReport()
    pending: list[Any] = []
    seen: set[str] = set()

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
        encoder=index.encoder,
        image_dir=index.image_dir,
        metadata=metadata,
        dpi=dpi,
        recursive=recursive,
        password=password,
        chunk_size=chunk_size,
        chunk_overlap=chunk_overlap,
        errors=errors,
        report=report,
        show_progress_bar=show_progress_bar,
    ):
        if isinstance(doc, FileDone):
            seen.add(doc.source)
            keep = set(doc.ids)
            gone = [i for i in index.ids({"source": doc.source}) if i not in keep]
            if gone:  # what an earlier version of the file had, and this one has not
                flush()
                index.delete(gone)
            continue
        pending.append(doc)
        if len(pending) >= batch_size:
            flush()
    flush()
    if sync:
        roots = [Path(p).resolve() for p in ([paths] if isinstance(paths, str | Path) else paths)]
        stale = [
            rec.id
            for rec in index.get(index.ids())
            if rec.metadata.get("source") not in seen and _under(rec.metadata.get("source"), roots)
        ]
        if stale:
            index.delete(stale)
        report.deleted = len(stale)
    return report


def _under(source: Any, roots: Sequence[Path]) -> bool:
    if not isinstance(source, str):
        return False
    path = Path(source)
    return any(path == root or root in path.parents for root in roots)
