"""The in-memory view of a collection that searches run on, kept in step with Chroma.

Chroma is the source of truth; this is a cache of it. It holds the small record of every
document (id, version, text, metadata, page), the first-stage prototype table (while it fits in
``scan_bytes``) and, in :class:`~latewise.engine.cache.ResidentRows`, the stored vectors of the
documents searches needed. It is reloaded from Chroma when the collection's write position
(:class:`~latewise.store.state.WriteLog`) moved past what it has seen, and updated in place by
this process's own writes.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from latewise.engine.cache import ResidentRows, RowSnapshot, release_free_memory
from latewise.errors import StoreError
from latewise.store.chroma import ChromaStore, DocRecord
from latewise.store.state import WriteLog

if TYPE_CHECKING:
    import torch

    from latewise.compression import VectorCodec
    from latewise.scoring.int8 import PrototypeTable

logger = logging.getLogger(__name__)

__all__ = ["CorpusView"]


class CorpusView:
    """Documents, prototypes and cached vectors of one collection, kept in step with Chroma.

    Args:
        store: the collection's store.
        codec: a callable returning the collection's vector codec.
        cache_bytes: bound on the cached full vectors (``None``: no bound).
        scan_bytes: prototypes are held and scanned in memory while they take at most this
            many bytes; beyond it, candidates come from Chroma's HNSW index.
    """

    def __init__(
        self,
        store: ChromaStore,
        codec: Callable[[], VectorCodec],
        *,
        cache_bytes: int | None,
        scan_bytes: int,
    ) -> None:
        self.store = store
        self.log = WriteLog(store)
        self.codec = codec
        self.cache_bytes = cache_bytes
        self.scan_bytes = scan_bytes
        self.lock = threading.RLock()
        #: The write position this view reflects (``None``: not loaded; -1: stale).
        self.position: int | None = None
        self.records: dict[str, DocRecord] = {}
        self.protos: PrototypeTable | None = None
        self._rows: ResidentRows | None = None
        #: After reading this many bytes of stored vectors, or the records of this many
        #: documents, freed temporaries are handed back to the operating system.
        self.release_after_bytes = 128 << 20
        self.release_after_docs = 5_000
        self._loaded_bytes = 0  # stored vectors read since memory was last released

    # -- keeping in step ---------------------------------------------------------------------

    def refresh(self) -> None:
        """Reload what changed in Chroma since the last look (cheap when nothing did)."""
        with self.lock:
            position = self.log.position()  # read before the records: a later write re-triggers
            if self.position is not None and position == self.position:
                return
            stored = {rec.id: rec for page in self.store.scan() for rec in page}
            changed = [
                rec
                for doc_id, rec in stored.items()
                if doc_id not in self.records or self.records[doc_id].stored_as != rec.stored_as
            ]
            gone = [doc_id for doc_id in self.records if doc_id not in stored]
            for doc_id in gone:
                self._drop(doc_id)
            first_load = self.position is None or self.protos is None
            self.records.update({rec.id: rec for rec in changed})
            dim = self.codec().dim
            if self.scans(sum(rec.n_rows for rec in self.records.values()), dim):
                if self.protos is None:
                    from latewise.scoring.int8 import PrototypeTable

                    self.protos = PrototypeTable(dim)
                self._load_prototypes(list(self.records.values()) if first_load else changed)
            else:
                self.protos = None
            self.position = position
            if len(changed) >= self.release_after_docs:
                release_free_memory()
            logger.debug(
                "collection %s: %d documents (%d changed, %d gone), %s first stage",
                self.store.name,
                len(self.records),
                len(changed),
                len(gone),
                "in-memory" if self.protos is not None else "HNSW",
            )

    def scans(self, rows: int, dim: int) -> bool:
        """Whether ``rows`` first-stage rows of ``dim`` are scanned in memory (else: HNSW)."""
        return rows * dim * 2 <= self.scan_bytes

    def _load_prototypes(self, changed: Sequence[DocRecord]) -> None:
        import numpy as np
        import torch

        rows: dict[str, dict[int, np.ndarray]] = {}
        # Read by id: only the rows of each document's current version come back.
        source = self.store.load_rows([rid for rec in changed for rid in rec.row_ids()])
        for ids, vectors in source:
            for rid, vec in zip(ids, vectors, strict=True):
                doc_id, _, j = rid.rsplit("#", 2)
                rows.setdefault(doc_id, {})[int(j)] = vec
        assert self.protos is not None
        for rec in changed:
            got = rows.get(rec.id, {})
            if len(got) != rec.n_rows:
                raise StoreError(
                    f"document {rec.id!r} in collection {self.store.name!r} has "
                    f"{len(got)} of its {rec.n_rows} first-stage rows; run index.repair() (or "
                    "`latewise repair`), which rebuilds them from the stored vectors"
                )
            self.protos.put(rec.id, torch.from_numpy(np.stack([got[j] for j in range(rec.n_rows)])))

    def apply_write(
        self,
        records: Sequence[DocRecord],
        prototypes: Sequence[torch.Tensor],
        known: int | None,
        position: int,
    ) -> None:
        """Take in documents this process just wrote: the view knew write position ``known``
        before, and the log stood at ``position`` right after this write's record."""
        with self.lock:
            if self.position is None:
                return  # not loaded yet: the first search loads everything
            parts = iter(self._split([rec.blob for rec in records if rec.blob is not None]))
            for rec, proto in zip(records, prototypes, strict=True):
                self._drop(rec.id)
                self.records[rec.id] = DocRecord(
                    rec.id,
                    rec.ver,
                    rec.text,
                    rec.metadata,
                    rec.page,
                    rec.n_vectors,
                    rec.n_rows,
                    key=rec.key,
                    n_chunks=rec.n_chunks,
                )
                if self.protos is not None:
                    self.protos.put(rec.id, proto)
                if rec.blob is not None:
                    self._arena().put(rec.id, rec.stored_as, next(parts))
            self._trim()
            self._advance(known, position)

    def apply_delete(self, ids: Sequence[str], known: int | None, position: int) -> None:
        """Forget documents this process just deleted."""
        with self.lock:
            for doc_id in ids:
                self._drop(doc_id)
            self._advance(known, position)

    def _advance(self, known: int | None, position: int) -> None:
        # Current only when our own record was the one write since the position we knew;
        # otherwise another process wrote meanwhile and the next search reloads.
        if self.position is not None:
            self.position = position if known == self.position and position == known + 1 else -1

    def clear(self) -> None:
        with self.lock:
            self.position = None
            self.records.clear()
            self.protos = None
            self._rows = None

    def _drop(self, doc_id: str) -> None:
        self.records.pop(doc_id, None)
        if self.protos is not None:
            self.protos.remove(doc_id)
        if self._rows is not None:
            self._rows.remove(doc_id)

    # -- stored vectors -----------------------------------------------------------------------

    def _arena(self) -> ResidentRows:
        if self._rows is None:
            unbounded = self.cache_bytes is None
            hint = sum(r.n_vectors for r in self.records.values()) if unbounded else 0
            self._rows = ResidentRows(hint)
        return self._rows

    def _split(self, blobs: Sequence[bytes]) -> list[dict[str, torch.Tensor]]:
        """Each blob's columns (parsed and checked together)."""
        import torch

        if not blobs:
            return []
        columns, counts = self.codec().columns(blobs)
        split = {name: torch.split(col, counts) for name, col in columns.items()}
        return [{name: parts[i] for name, parts in split.items()} for i in range(len(counts))]

    def _load(self, missing: Sequence[DocRecord]) -> None:
        """Read documents' stored vectors from Chroma (outside the lock) and keep their rows."""
        blobs = self.store.get_blobs(missing)
        for rec in missing:
            if rec.blob_id not in blobs:
                raise StoreError(
                    f"document {rec.id!r} in collection {self.store.name!r} has no stored "
                    f"vectors (blob {rec.blob_id!r} is missing); re-add it with upsert()"
                )
        parts = self._split([blobs[r.blob_id] for r in missing])
        with self.lock:
            arena = self._arena()
            for rec, part in zip(missing, parts, strict=True):
                current = self.records.get(rec.id)
                if current is not None and current.stored_as == rec.stored_as:
                    arena.put(rec.id, rec.stored_as, part)
            self._loaded_bytes += sum(len(b) for b in blobs.values())
            release = self._loaded_bytes >= self.release_after_bytes
            if release:
                self._loaded_bytes = 0
        del blobs, parts
        if release:
            release_free_memory()

    def snapshot(self, ids: Sequence[str]) -> RowSnapshot:
        """The stored rows of documents ``ids`` (those still stored), read from Chroma where not
        resident; valid however the collection changes afterwards."""
        for _ in range(3):
            with self.lock:
                snap, missing = self._take(ids, partial=False)
                if snap is not None:
                    return snap
            self._load(missing)
        with self.lock:  # a cache too small for the request, emptied by other searches meanwhile
            snap, _ = self._take(ids, partial=True)
            assert snap is not None
            return snap

    def _take(
        self, ids: Sequence[str], *, partial: bool
    ) -> tuple[RowSnapshot | None, list[DocRecord]]:
        """A snapshot of the resident ones of ``ids``, or (unless ``partial``) ``None`` and the
        records of those stored in Chroma but not resident."""
        import torch

        arena = self._arena()
        docs, records, bounded = arena.docs, self.records, self.cache_bytes is not None
        kept: list[str] = []
        positions: list[int] = []
        starts: list[int] = []
        counts: list[int] = []
        missing: list[DocRecord] = []
        for i, d in enumerate(ids):
            rec = records.get(d)
            if rec is None:
                continue
            entry = docs.get(d)
            if entry is None or entry[0] != rec.stored_as:
                missing.append(rec)
                continue
            kept.append(d)
            positions.append(i)
            starts.append(entry[1])
            counts.append(entry[2])
        if missing and not partial:
            return None, missing
        if bounded:
            for d in kept:
                docs.move_to_end(d)
        snap = RowSnapshot(
            kept, positions, counts, dict(arena.columns), torch.tensor(starts, dtype=torch.int64)
        )
        self._trim()
        return snap, missing

    def _trim(self) -> None:
        if self._rows is None:
            return
        if self.cache_bytes is not None:
            self._rows.evict(self.cache_bytes)
        self._rows.compact()

    def memory(self) -> dict[str, int]:
        """Bytes held: prototypes and cached full vectors."""
        with self.lock:
            protos = self.protos.nbytes if self.protos is not None else 0
            rows = self._rows.nbytes if self._rows is not None else 0
            return {"prototype_bytes": protos, "vector_bytes": rows}
