"""The in-memory view of a collection that searches run on.

Chroma is the source of truth; this is a cache of it, rebuilt from Chroma whenever the
collection's write generation changes (another process wrote), and updated in place by this
process's own writes. It holds:

- the small record of every document (id, version, text, metadata, page);
- the first-stage "prototype" vectors of every document (a few per document), scanned with exact
  MaxSim to propose candidates — unless they would take more than ``scan_bytes``, in which case
  candidates come from Chroma's HNSW index over the same rows;
- the full multi-vectors of the documents searches needed, read from Chroma on demand and kept
  in their stored form (float16, or residual codes decompressed per query) as rows of one
  matrix (:class:`ResidentRows`), so a query gathers its candidates' rows with a few tensor ops
  instead of touching one Python object per document; bounded by ``cache_bytes`` (least
  recently used documents leave first).
"""

from __future__ import annotations

import functools
import logging
import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from latewise.errors import StoreError
from latewise.scoring.exact import best_ids
from latewise.scoring.int8 import PrototypeTable
from latewise.store.chroma import ChromaStore, DocRecord, blob_id

if TYPE_CHECKING:
    import torch

    from latewise.compression import VectorCodec

logger = logging.getLogger(__name__)

__all__ = [
    "CorpusView",
    "PrototypeTable",
    "ResidentRows",
    "RowSnapshot",
    "best_ids",
    "release_free_memory",
]

#: After reading this many bytes of stored vectors, or the records of this many documents,
#: freed temporaries are handed back to the operating system (:func:`release_free_memory`).
_RELEASE_AFTER_BYTES = 128 << 20
_RELEASE_AFTER_DOCS = 5_000


def release_free_memory() -> bool:
    """Return memory freed by large temporary objects to the operating system.

    Loading a collection makes many short-lived objects (Chroma's rows as Python floats, parsed
    blobs); glibc keeps the freed pages mapped, so the process stays as large as at its peak.
    Opening a 50k-document index (8.7M vectors, 2-bit) and running 30 searches grew the process
    by 143 bytes/vector without this, 100 with it (39 of them are the prototypes and cached
    vectors). Asks glibc's ``malloc_trim``; a no-op elsewhere.

    Returns:
        Whether anything could be asked (glibc found).
    """
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim`` (looked up once), or ``None`` without glibc."""
    import ctypes

    try:
        trim = ctypes.CDLL(None).malloc_trim  # the C library the interpreter runs on
    except (OSError, AttributeError, TypeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return cast("Callable[[int], int]", trim)


class ResidentRows:
    """The stored vectors of many documents, one row per vector, in a few column tensors.

    The columns are the codec's in-memory form (:meth:`VectorCodec.columns`: float16 vectors,
    or residual codes' centroid ids and packed residuals); each document owns a run of
    consecutive rows. Rows are only ever appended past the last used row; a replaced, deleted or
    evicted document leaves dead rows until a compaction copies the live ones into new tensors.
    A row is therefore never overwritten while in use, and a :class:`RowSnapshot` taken under
    the owner's lock stays valid after the lock is released.
    """

    #: Per-document bookkeeping counted in :attr:`nbytes` (dict entry and tuple).
    DOC_OVERHEAD = 64

    def __init__(self, capacity_hint: int = 0) -> None:
        #: Rows to allocate at the first write (all a collection's vectors, when they will all
        #: be cached): growing copies everything, and the copies' freed memory is not always
        #: returned to the system.
        self.capacity_hint = capacity_hint
        self.columns: dict[str, torch.Tensor] = {}
        self.used = 0  # rows written (live or dead)
        self.live = 0  # rows of documents present
        self.docs: OrderedDict[str, tuple[str, int, int]] = OrderedDict()  # id -> (ver, start, n)

    @property
    def row_bytes(self) -> int:
        return sum(c[:1].numel() * c.element_size() for c in self.columns.values())

    @property
    def nbytes(self) -> int:
        """Bytes of the rows written so far (live and dead) plus per-document bookkeeping."""
        return self.used * self.row_bytes + self.DOC_OVERHEAD * len(self.docs)

    @property
    def live_bytes(self) -> int:
        """:attr:`nbytes` less the dead rows awaiting compaction."""
        return self.live * self.row_bytes + self.DOC_OVERHEAD * len(self.docs)

    def put(self, doc_id: str, ver: str, columns: Mapping[str, torch.Tensor]) -> None:
        """Store a document version's rows (replacing any earlier version)."""
        import torch

        self.remove(doc_id)
        n = int(next(iter(columns.values())).shape[0])
        need = self.used + n
        for name, col in columns.items():
            old = self.columns.get(name)
            if old is None or old.shape[0] < need:
                # Grow by a quarter: untouched capacity costs address space, not memory.
                size = self.capacity_hint if old is None else old.shape[0] * 5 // 4
                grown = torch.empty((max(need, size), *col.shape[1:]), dtype=col.dtype)
                if old is not None:
                    grown[: self.used] = old[: self.used]
                self.columns[name] = old = grown
            old[self.used : need] = col
        self.docs[doc_id] = (ver, self.used, n)
        self.used = need
        self.live += n

    def remove(self, doc_id: str) -> None:
        entry = self.docs.pop(doc_id, None)
        if entry is not None:
            self.live -= entry[2]

    def evict(self, limit: int) -> None:
        """Forget least recently used documents until at most ``limit`` bytes are live (the most
        recent one always stays)."""
        while self.live_bytes > limit and len(self.docs) > 1:
            _, (_, _, n) = self.docs.popitem(last=False)
            self.live -= n

    def compact(self) -> None:
        """Copy the live rows into new tensors once dead rows are a quarter of those used."""
        import torch

        from latewise.scoring import run_rows

        if self.used - self.live <= max(self.used // 4, 1024):
            return
        entries = list(self.docs.values())
        index = run_rows(
            torch.tensor([s for _, s, _ in entries], dtype=torch.int64),
            torch.tensor([n for _, _, n in entries], dtype=torch.int64),
        )
        self.columns = {name: col.index_select(0, index) for name, col in self.columns.items()}
        pos = 0
        for doc_id, (ver, _, n) in self.docs.items():
            self.docs[doc_id] = (ver, pos, n)
            pos += n
        self.used = pos


@dataclass(frozen=True)
class RowSnapshot:
    """The stored rows of some documents, laid end to end, gathered a range at a time.

    Attributes:
        ids: the documents, in the order asked for (those not stored left out).
        positions: the position of each of ``ids`` in the request.
        counts: each document's number of vectors.
        columns: the column tensors the documents were in when the snapshot was taken.
        starts: each document's first row in ``columns`` (int64).
    """

    ids: list[str]
    positions: list[int]
    counts: list[int]
    columns: dict[str, torch.Tensor]
    starts: torch.Tensor

    def rows(self, a: int, b: int, names: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
        """The rows of documents ``a..b-1`` (of the columns ``names``, or all)."""
        import torch

        from latewise.scoring import run_rows

        index = run_rows(self.starts[a:b], torch.tensor(self.counts[a:b], dtype=torch.int64))
        wanted = self.columns if names is None else {n: self.columns[n] for n in names}
        return {name: col.index_select(0, index) for name, col in wanted.items()}

    @property
    def offsets(self) -> torch.Tensor:
        from latewise.scoring import offsets_of

        return offsets_of(self.counts)


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
        self._codec = codec
        self.cache_bytes = cache_bytes
        self.scan_bytes = scan_bytes
        self.lock = threading.RLock()
        self.generation: str | None = None
        self.records: dict[str, DocRecord] = {}
        self.protos: PrototypeTable | None = None
        self.scanning = True
        self._rows: ResidentRows | None = None
        self._local = threading.local()
        self._loaded_bytes = 0  # stored vectors read since memory was last released

    # -- keeping in step ---------------------------------------------------------------------

    def refresh(self) -> None:
        """Reload what changed in Chroma since the last look (cheap when nothing did)."""
        with self.lock:
            generation = self.store.generation()
            if self.generation is not None and generation == self.generation:
                return
            stored = {rec.id: rec for page in self.store.scan() for rec in page}
            changed = [
                rec
                for doc_id, rec in stored.items()
                if doc_id not in self.records or self.records[doc_id].ver != rec.ver
            ]
            gone = [doc_id for doc_id in self.records if doc_id not in stored]
            for doc_id in gone:
                self._drop(doc_id)
            first_load = self.generation is None
            self.records.update({rec.id: rec for rec in changed})
            total_rows = sum(rec.n_rows for rec in self.records.values())
            dim = self._codec().dim
            self.scanning = total_rows * dim * 2 <= self.scan_bytes
            if self.scanning:
                if self.protos is None:
                    self.protos = PrototypeTable(dim)
                    first_load = True
                self._load_prototypes(changed, all_rows=first_load)
            else:
                self.protos = None
            self.generation = generation
            if len(changed) >= _RELEASE_AFTER_DOCS:
                release_free_memory()
            logger.debug(
                "collection %s: %d documents (%d changed, %d gone), %s first stage",
                self.store.name,
                len(self.records),
                len(changed),
                len(gone),
                "in-memory" if self.scanning else "HNSW",
            )

    def _load_prototypes(self, changed: Sequence[DocRecord], *, all_rows: bool) -> None:
        import torch

        wanted = {rec.id: rec.ver for rec in changed}
        rows: dict[str, dict[int, Any]] = {}
        source = (
            self.store.load_rows()
            if all_rows
            else self.store.load_rows([rid for rec in changed for rid in rec.row_ids()])
        )
        for ids, vectors in source:
            for rid, vec in zip(ids, vectors, strict=True):
                doc_id, ver, j = rid.rsplit("#", 2)
                if wanted.get(doc_id) == ver:
                    rows.setdefault(doc_id, {})[int(j)] = vec
        import numpy as np

        for rec in changed:
            got = rows.get(rec.id, {})
            if len(got) != rec.n_rows:
                raise StoreError(
                    f"document {rec.id!r} in collection {self.store.name!r} has "
                    f"{len(got)} of its {rec.n_rows} first-stage rows; run index.repair() or "
                    "re-add it with upsert()"
                )
            stacked = np.stack([got[j] for j in range(rec.n_rows)])
            assert self.protos is not None
            self.protos.put(rec.id, torch.from_numpy(stacked))

    def apply_write(
        self,
        records: Sequence[DocRecord],
        prototypes: Sequence[torch.Tensor],
        generation: str,
        previous: str | None,
    ) -> None:
        """Take in documents this process just wrote (and the generation it wrote)."""

        with self.lock:
            if self.generation is None:
                return  # not loaded yet: the first search loads everything
            parts = iter(self._split([rec.blob for rec in records if rec.blob is not None]))
            for rec, proto in zip(records, prototypes, strict=True):
                self._drop(rec.id)
                self.records[rec.id] = DocRecord(
                    rec.id, rec.ver, rec.text, rec.metadata, rec.page, rec.n_vectors, rec.n_rows
                )
                if self.protos is not None:
                    self.protos.put(rec.id, proto)
                if rec.blob is not None:
                    self._arena().put(rec.id, rec.ver, next(parts))
            self._trim()
            self._advance(generation, previous)

    def apply_delete(self, ids: Sequence[str], generation: str, previous: str | None) -> None:
        """Forget documents this process just deleted."""
        with self.lock:
            for doc_id in ids:
                self._drop(doc_id)
            self._advance(generation, previous)

    def _advance(self, generation: str, previous: str | None) -> None:
        # When nobody else wrote since our last look, our view is current at the new
        # generation; otherwise compare with Chroma on the next search.
        if self.generation is not None:
            self.generation = generation if previous == self.generation else "stale"

    def clear(self) -> None:
        with self.lock:
            self.generation = None
            self.records.clear()
            self.protos = None
            self._rows = None

    def _drop(self, doc_id: str) -> None:
        self.records.pop(doc_id, None)
        if self.protos is not None:
            self.protos.remove(doc_id)
        if self._rows is not None:
            self._rows.remove(doc_id)

    # -- first stage --------------------------------------------------------------------------

    def candidates(
        self,
        query: torch.Tensor,
        n: int,
        *,
        allowed: Sequence[str] | None = None,
        where: Mapping[str, Any] | None = None,
        n_probe: int = 32,
        n_wide: int | None = None,
    ) -> list[str]:
        """At most ``n`` candidate documents for ``query``.

        ``allowed`` (the ids matching ``where``, when a filter is given) restricts them. All
        documents when they are ``n`` or fewer; else the best by MaxSim over their prototypes,
        scanned in memory; else (prototypes too many to hold) from Chroma's HNSW index. In a
        compressed collection that step proposes ``n_wide`` documents, and the best ``n`` of
        them by the sum of that first score and their centroid-interaction score
        (:func:`latewise.scoring.codes.centroid_interaction`) are kept.
        """
        from latewise.compression import ResidualCodec

        codec = self._codec()
        wide = max(n, n_wide or n) if isinstance(codec, ResidualCodec) else n
        found: tuple[list[str], torch.Tensor] | None = None
        with self.lock:
            pool = (
                list(self.records) if allowed is None else [d for d in allowed if d in self.records]
            )
            if len(pool) <= n:
                return pool
            if self.protos is not None:
                found = self.protos.top(query, wide, allowed)
        ids, first = found or self.ann_candidates(query, wide, n_probe, where)
        if len(ids) <= n or not isinstance(codec, ResidualCodec):
            return ids
        # Two estimates of each candidate's MaxSim made from different summaries of its vectors
        # (prototypes; every vector replaced by its centroid) err differently: their sum ranks
        # better than either (MiniLM, 48.5k documents: the best 192 of 2,048 held 0.984 of the
        # exact top 10 by centroid interaction alone, 0.989 by the sum).
        from latewise.scoring import codes

        snap = self.snapshot(ids)
        centroid = codes.centroid_interaction(
            codec, query, snap.counts, lambda a, b, r0, r1: snap.rows(a, b, ["codes"])["codes"]
        )
        return best_ids(snap.ids, centroid + first[snap.positions], n)

    def ann_candidates(
        self, query: torch.Tensor, n: int, n_probe: int, where: Mapping[str, Any] | None
    ) -> tuple[list[str], torch.Tensor]:
        """Candidates from Chroma's HNSW over the prototype rows (for collections too large to
        scan in memory): each query vector's ``n_probe`` nearest rows, ranked by the sum over
        query vectors of the best row similarity found (a missed vector counts its worst).

        Returns:
            The best ``n`` ids and their approximate scores, best first.
        """
        import numpy as np

        found = self.store.query_rows(query.numpy().astype(np.float32), n_probe, where)
        per_token: list[dict[str, float]] = []
        floors: list[float] = []
        with self.lock:
            current = {d: r.ver for d, r in self.records.items()}
        for hits in found:
            best: dict[str, float] = {}
            for h in hits:
                if current.get(h.doc_id) != h.ver:
                    continue  # a row of an old version, or of a document not written whole
                if h.similarity > best.get(h.doc_id, -math.inf):
                    best[h.doc_id] = h.similarity
            per_token.append(best)
            floors.append(min(best.values()) if best else 0.0)
        import torch

        docs = {d for best in per_token for d in best}
        approx = {d: sum(b.get(d, f) for b, f in zip(per_token, floors, strict=True)) for d in docs}
        ids = sorted(approx, key=lambda d: (-approx[d], d))[:n]
        return ids, torch.tensor([approx[d] for d in ids], dtype=torch.float32)

    # -- full vectors -------------------------------------------------------------------------

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
        columns, counts = self._codec().columns(blobs)
        split = {name: torch.split(col, counts) for name, col in columns.items()}
        return [{name: parts[i] for name, parts in split.items()} for i in range(len(counts))]

    def _load(self, missing: Sequence[DocRecord]) -> None:
        """Read documents' stored vectors from Chroma (outside the lock) and keep their rows."""
        blobs = self.store.get_blobs([r.blob_id for r in missing])
        for rec in missing:
            if rec.blob_id not in blobs:
                raise StoreError(
                    f"document {rec.id!r} in collection {self.store.name!r} has no stored "
                    f"vectors (blob {blob_id(rec.id, rec.ver)!r} is missing); re-add it"
                )
        parts = self._split([blobs[r.blob_id] for r in missing])
        with self.lock:
            arena = self._arena()
            for rec, part in zip(missing, parts, strict=True):
                current = self.records.get(rec.id)
                if current is not None and current.ver == rec.ver:
                    arena.put(rec.id, rec.ver, part)
            self._loaded_bytes += sum(len(b) for b in blobs.values())
            release = self._loaded_bytes >= _RELEASE_AFTER_BYTES
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
            if entry is None or entry[0] != rec.ver:
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

    def candidate_scores(
        self, query: torch.Tensor, ids: Sequence[str]
    ) -> tuple[list[str], torch.Tensor]:
        """Exact float32 MaxSim of ``query`` against documents ``ids`` (those still stored).

        The stored rows (float16 or residual codes) are turned into float32 a cache-sized block
        at a time and scored at once (:func:`latewise.scoring.maxsim_blocks`), never copied whole.
        """
        from latewise.scoring import maxsim_blocks

        snap = self.snapshot(ids)
        codec = self._codec()
        return snap.ids, maxsim_blocks(
            query, snap.counts, lambda a, b, r0, r1: codec.expand(snap.rows(a, b))
        )

    def full_vectors(self, ids: Sequence[str]) -> tuple[list[str], torch.Tensor, torch.Tensor]:
        """Full float32 vectors of ``ids`` (those still stored), flat: ``(ids, vectors,
        offsets)``; ``vectors`` is a reused buffer of this thread, valid until its next call."""
        snap = self.snapshot(ids)
        codec = self._codec()
        flat = codec.expand(
            snap.rows(0, len(snap.ids)), out=self._buffer(sum(snap.counts), codec.dim)
        )
        return snap.ids, flat, snap.offsets

    def _buffer(self, rows: int, dim: int) -> torch.Tensor:
        """A reused ``[rows, dim]`` float32 buffer of this thread (fresh large allocations cost
        several times more than filling them: page faults)."""
        import torch

        buf: torch.Tensor | None = getattr(self._local, "buffer", None)
        if buf is None or buf.shape[0] < rows or buf.shape[1] != dim:
            buf = torch.empty(max(rows, 1024), dim, dtype=torch.float32)
            self._local.buffer = buf
        return buf[:rows]

    def memory(self) -> dict[str, int]:
        """Bytes held: prototypes and cached full vectors."""
        with self.lock:
            protos = self.protos.nbytes if self.protos is not None else 0
            rows = self._rows.nbytes if self._rows is not None else 0
            return {"prototype_bytes": protos, "vector_bytes": rows}
