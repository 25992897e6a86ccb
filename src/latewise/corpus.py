"""The in-memory view of a collection that searches run on.

Chroma is the source of truth; this is a cache of it, rebuilt from Chroma whenever the
collection's write generation changes (another process wrote), and updated in place by this
process's own writes. It holds:

- the small record of every document (id, version, text, metadata, page);
- the first-stage "prototype" vectors of every document (a few per document), scanned with exact
  MaxSim to propose candidates — unless they would take more than ``scan_bytes``, in which case
  candidates come from Chroma's HNSW index over the same rows;
- an LRU cache of full multi-vectors (decoded float16 tensors, or residual-compressed blobs that
  are decompressed per query), read from Chroma on demand.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from latewise.errors import StoreError
from latewise.store.chroma import ChromaStore, DocRecord, blob_id

if TYPE_CHECKING:
    import torch

    from latewise.compression import VectorCodec

logger = logging.getLogger(__name__)

__all__ = ["CorpusView", "PrototypeTable"]


@dataclass
class _Vectors:
    """Full vectors of one document version: a float32-exact tensor or a compressed blob."""

    ver: str
    tensor: torch.Tensor | None
    blob: bytes | None
    n: int

    @property
    def nbytes(self) -> int:
        if self.tensor is not None:
            return int(self.tensor.numel() * self.tensor.element_size()) + 64
        return len(self.blob or b"") + 64


class PrototypeTable:
    """Every document's prototype vectors in one int8 matrix, scanned with MaxSim.

    Rows are quantised to int8 with one float32 scale per row (relative error ~0.4%, a quarter of
    float32's memory). Each document owns ``width`` consecutive rows (fewer prototypes are padded
    by repeating one, which leaves its MaxSim unchanged), so a scan is one int8 matrix product
    per chunk — the query is quantised to int8 too — and a max over a reshaped view, with no
    scatter. New documents wait in a small pending list and deleted ones leave dead slots until
    the next compaction, which runs before a scan when anything changed.
    """

    #: Whether ``torch._int_mm`` (int8 GEMM) runs here; set to ``False`` after its first failure.
    _int_mm_ok: bool = True

    def __init__(self, dim: int) -> None:
        import torch

        self.dim = dim
        self.width = 1
        self.codes = torch.empty(0, dim, dtype=torch.int8)  # [slots * width, dim]
        self.scales = torch.empty(0, dtype=torch.float32)
        self.ids: list[str | None] = []  # slot -> document id (None: deleted)
        self.slot: dict[str, int] = {}
        self._pending: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._dirty = False

    def __len__(self) -> int:
        return len(self.slot) + len(self._pending)

    def put(self, doc_id: str, vectors: torch.Tensor) -> None:
        """Add or replace a document's prototypes (``[m, dim]`` float, ``m >= 1``)."""
        import torch

        self.remove(doc_id)
        x = vectors.detach().float()
        scale = (x.abs().amax(dim=1) / 127.0).clamp(min=1e-12)
        codes = torch.round(x / scale[:, None]).clamp(-127, 127).to(torch.int8)
        self._pending[doc_id] = (codes, scale)
        self._dirty = True

    def remove(self, doc_id: str) -> None:
        if self._pending.pop(doc_id, None) is not None:
            return
        slot = self.slot.pop(doc_id, None)
        if slot is not None:
            self.ids[slot] = None
            self._dirty = True

    def clear(self) -> None:
        self.__init__(self.dim)  # type: ignore[misc]

    @property
    def nbytes(self) -> int:
        pending = sum(c.numel() + 4 * s.numel() for c, s in self._pending.values())
        return int(self.codes.numel() + 4 * self.scales.numel()) + pending

    @staticmethod
    def _pad(t: torch.Tensor, width: int, axis: int = 0) -> torch.Tensor:
        """``t`` with its first entry along ``axis`` repeated until that axis has ``width``."""
        import torch

        m = t.shape[axis]
        if m == width:
            return t
        first = t.narrow(axis, 0, 1)
        reps = [1] * t.dim()
        reps[axis] = width - m
        return torch.cat([t, first.repeat(*reps)], dim=axis)

    def _compact(self) -> None:
        import torch

        if not self._dirty:
            return
        width = max([self.width, *(c.shape[0] for c, _ in self._pending.values())])
        live = [i for i, d in enumerate(self.ids) if d is not None]
        old_codes = self.codes.view(-1, self.width, self.dim)
        old_scales = self.scales.view(-1, self.width)
        keep = torch.tensor(live, dtype=torch.int64)
        codes = [self._pad(old_codes[keep], width, axis=1).reshape(-1, self.dim)]
        scales = [self._pad(old_scales[keep], width, axis=1).reshape(-1)]
        ids: list[str | None] = [self.ids[i] for i in live]
        for doc_id, (c, sc) in self._pending.items():
            codes.append(self._pad(c, width))
            scales.append(self._pad(sc, width))
            ids.append(doc_id)
        self.width = width
        self.codes = torch.cat(codes)
        self.scales = torch.cat(scales)
        self.ids = ids
        self.slot = {d: i for i, d in enumerate(ids) if d is not None}
        self._pending.clear()
        self._dirty = False

    def scores(self, query: torch.Tensor) -> torch.Tensor:
        """MaxSim of ``query`` (``[n_q, dim]``) against every slot's prototypes: ``[slots]``."""
        import torch

        self._compact()
        n_slots, width = len(self.ids), self.width
        out = torch.empty(n_slots, dtype=torch.float32)
        if n_slots == 0:
            return out
        q = query.detach().float()
        n_q = q.shape[0]
        step = width * 8192
        if PrototypeTable._int_mm_ok:
            try:
                q_scale = (q.abs().amax(dim=1) / 127.0).clamp(min=1e-12)
                # int8 GEMM wants the output width a multiple of 8: pad with zero columns.
                q8 = torch.zeros(self.dim, -(-n_q // 8) * 8, dtype=torch.int8)
                q8[:, :n_q] = torch.round(q / q_scale[:, None]).clamp(-127, 127).t()
                for a in range(0, self.codes.shape[0], step):
                    sim = torch._int_mm(self.codes[a : a + step], q8)[:, :n_q].float()
                    sim.mul_(self.scales[a : a + step, None]).mul_(q_scale)
                    out[a // width : (a + sim.shape[0]) // width] = (
                        sim.view(-1, width, n_q).amax(dim=1).sum(dim=1)
                    )
                return out
            except RuntimeError:  # no int8 GEMM for this build or shape: bfloat16 instead
                logger.debug("torch._int_mm unavailable; scanning in bfloat16", exc_info=True)
                PrototypeTable._int_mm_ok = False
        qb = q.to(torch.bfloat16).t().contiguous()
        for a in range(0, self.codes.shape[0], step):
            sim = (self.codes[a : a + step].to(torch.bfloat16) @ qb).float()
            sim.mul_(self.scales[a : a + step, None])
            out[a // width : (a + sim.shape[0]) // width] = (
                sim.view(-1, width, n_q).amax(dim=1).sum(dim=1)
            )
        return out

    def top(self, query: torch.Tensor, n: int, allowed: Sequence[str] | None) -> list[str]:
        """The ``n`` documents whose prototypes score best against ``query`` by MaxSim."""
        import torch

        scores = self.scores(query)
        n_docs = len(self.ids)
        if allowed is not None:
            mask = torch.full((n_docs,), -math.inf)
            slots = [self.slot[d] for d in allowed if d in self.slot]
            if slots:
                mask[torch.tensor(slots)] = 0.0
            scores = scores + mask
        k = min(n, n_docs)
        values, top = scores.topk(k)
        return [
            d
            for i, v in zip(top.tolist(), values.tolist(), strict=True)
            if (d := self.ids[i]) is not None and v > -math.inf
        ]


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
        self._vectors: OrderedDict[str, _Vectors] = OrderedDict()
        self._vector_bytes = 0
        self._local = threading.local()

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
        vectors: Sequence[torch.Tensor],
        generation: str,
        previous: str | None,
    ) -> None:
        """Take in documents this process just wrote (and the generation it wrote)."""

        with self.lock:
            if self.generation is None:
                return  # not loaded yet: the first search loads everything
            for rec, proto, vec in zip(records, prototypes, vectors, strict=True):
                self._drop(rec.id)
                self.records[rec.id] = DocRecord(
                    rec.id, rec.ver, rec.text, rec.metadata, rec.page, rec.n_vectors, rec.n_rows
                )
                if self.protos is not None:
                    self.protos.put(rec.id, proto)
                self._remember(rec.id, rec.ver, vec, rec.blob)
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
            self._vectors.clear()
            self._vector_bytes = 0

    def _drop(self, doc_id: str) -> None:
        self.records.pop(doc_id, None)
        if self.protos is not None:
            self.protos.remove(doc_id)
        old = self._vectors.pop(doc_id, None)
        if old is not None:
            self._vector_bytes -= old.nbytes

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
        compressed collection that step proposes ``n_wide`` documents and centroid interaction
        (:meth:`ResidualCodec.centroid_scores`) keeps the best ``n`` of them.
        """
        from latewise.compression import ResidualCodec

        codec = self._codec()
        wide = max(n, n_wide or n) if isinstance(codec, ResidualCodec) else n
        found: list[str] | None = None
        with self.lock:
            pool = (
                list(self.records) if allowed is None else [d for d in allowed if d in self.records]
            )
            if len(pool) <= n:
                return pool
            if self.protos is not None:
                found = self.protos.top(query, wide, allowed)
        if found is None:
            found = self.ann_candidates(query, wide, n_probe, where)
        if len(found) <= n or not isinstance(codec, ResidualCodec):
            return found
        entries = self._entries(found)
        approx = codec.centroid_scores(query, [entry.blob or b"" for _, entry in entries]).tolist()
        best = sorted(range(len(entries)), key=lambda j: (-approx[j], entries[j][0]))[:n]
        return [entries[j][0] for j in best]

    def ann_candidates(
        self, query: torch.Tensor, n: int, n_probe: int, where: Mapping[str, Any] | None
    ) -> list[str]:
        """Candidates from Chroma's HNSW over the prototype rows (for collections too large to
        scan in memory): each query vector's ``n_probe`` nearest rows, ranked by the sum over
        query vectors of the best row similarity found (a missed vector counts its worst)."""
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
        docs = {d for best in per_token for d in best}
        approx = {d: sum(b.get(d, f) for b, f in zip(per_token, floors, strict=True)) for d in docs}
        return sorted(approx, key=lambda d: (-approx[d], d))[:n]

    # -- full vectors -------------------------------------------------------------------------

    def _entries(self, ids: Sequence[str]) -> list[tuple[str, _Vectors]]:
        """The cached vectors of ``ids`` (those still stored), read from Chroma where missing."""
        with self.lock:
            recs = [self.records[d] for d in ids if d in self.records]
            missing = [r for r in recs if self._cached(r) is None]
        codec = self._codec()
        if missing:
            blobs = self.store.get_blobs([r.blob_id for r in missing])
            for rec in missing:
                blob = blobs.get(rec.blob_id)
                if blob is None:
                    raise StoreError(
                        f"document {rec.id!r} in collection {self.store.name!r} has no stored "
                        f"vectors (blob {blob_id(rec.id, rec.ver)!r} is missing); re-add it"
                    )
                with self.lock:
                    self._remember(rec.id, rec.ver, _maybe_decode(codec, blob), blob)
        with self.lock:
            entries = []
            for rec in recs:
                entry = self._cached(rec)
                if entry is None:  # evicted meanwhile by a small cache: read it again
                    blob = self.store.get_blobs([rec.blob_id]).get(rec.blob_id)
                    if blob is None:
                        continue
                    entry = _Vectors(rec.ver, _maybe_decode(codec, blob), blob, rec.n_vectors)
                entries.append((rec.id, entry))
        return entries

    def candidate_scores(
        self, query: torch.Tensor, ids: Sequence[str]
    ) -> tuple[list[str], torch.Tensor]:
        """Exact float32 MaxSim of ``query`` against documents ``ids`` (those still stored).

        The stored form (float16 or residual codes) is turned into float32 a cache-sized block
        at a time and scored at once (:func:`latewise.scoring.maxsim_blocks`), never copied whole.
        """
        from latewise.compression import ResidualCodec
        from latewise.scoring import maxsim_blocks

        entries = self._entries(ids)
        kept = [doc_id for doc_id, _ in entries]
        codec = self._codec()
        if isinstance(codec, ResidualCodec):
            return kept, codec.maxsim_docs(query, [entry.blob or b"" for _, entry in entries])
        tensors = [entry.tensor for _, entry in entries if entry.tensor is not None]

        def fetch(a: int, b: int, r0: int, r1: int) -> torch.Tensor:
            import torch

            return torch.cat(tensors[a:b]).float()

        return kept, maxsim_blocks(query, [t.shape[0] for t in tensors], fetch)

    def full_vectors(
        self, ids: Sequence[str], dtype: torch.dtype | None = None
    ) -> tuple[list[str], torch.Tensor, torch.Tensor]:
        """Full vectors of ``ids`` (those still stored), flat: ``(ids, vectors, offsets)``, in
        ``dtype`` (float32 by default)."""
        import torch

        codec = self._codec()
        tensors: list[torch.Tensor] = []
        blob_parts: list[bytes] = []
        kept: list[str] = []
        for doc_id, entry in self._entries(ids):
            kept.append(doc_id)
            if entry.tensor is not None:
                tensors.append(entry.tensor)
            else:
                blob_parts.append(entry.blob or b"")
        dtype = dtype or torch.float32
        if blob_parts:
            flat, offsets = codec.decode_docs_flat(blob_parts)
            return kept, flat.to(dtype), offsets
        lengths = torch.tensor([t.shape[0] for t in tensors], dtype=torch.int64)
        offsets = torch.zeros(len(tensors) + 1, dtype=torch.int64)
        torch.cumsum(lengths, 0, out=offsets[1:])
        # Gather into reused per-thread buffers: fresh large allocations cost several times
        # more than the copies (page faults), and float16 converts fastest through float32.
        rows = int(offsets[-1])
        half = self._buffer(torch.float16, rows, codec.dim)
        torch.cat(tensors, out=half) if tensors else None
        flat = self._buffer(torch.float32, rows, codec.dim)
        flat.copy_(half)
        if dtype != torch.float32:
            out = self._buffer(dtype, rows, codec.dim)
            out.copy_(flat)
            flat = out
        return kept, flat, offsets

    def _buffer(self, dtype: torch.dtype, rows: int, dim: int) -> torch.Tensor:
        """A reused ``[rows, dim]`` buffer of this thread (valid until its next call)."""
        import torch

        buffers: dict[torch.dtype, torch.Tensor] = self._local.__dict__.setdefault("buffers", {})
        buf = buffers.get(dtype)
        if buf is None or buf.shape[0] < rows or buf.shape[1] != dim:
            buf = torch.empty(max(rows, 1024), dim, dtype=dtype)
            buffers[dtype] = buf
        return buf[:rows]

    def _cached(self, rec: DocRecord) -> _Vectors | None:
        entry = self._vectors.get(rec.id)
        if entry is None or entry.ver != rec.ver:
            return None
        self._vectors.move_to_end(rec.id)
        return entry

    def _remember(
        self, doc_id: str, ver: str, vectors: torch.Tensor | None, blob: bytes | None
    ) -> None:
        from latewise.compression import Float16Codec

        old = self._vectors.pop(doc_id, None)
        if old is not None:
            self._vector_bytes -= old.nbytes
        codec = self._codec()
        if isinstance(codec, Float16Codec) and vectors is not None:
            import torch

            entry = _Vectors(ver, vectors.to(torch.float16), None, int(vectors.shape[0]))
        else:
            if blob is None:
                return
            entry = _Vectors(ver, None, blob, 0)
        self._vectors[doc_id] = entry
        self._vector_bytes += entry.nbytes
        if self.cache_bytes is not None:
            while self._vector_bytes > self.cache_bytes and len(self._vectors) > 1:
                _, evicted = self._vectors.popitem(last=False)
                self._vector_bytes -= evicted.nbytes

    def memory(self) -> dict[str, int]:
        """Bytes held: prototypes and cached full vectors."""
        with self.lock:
            protos = self.protos.nbytes if self.protos is not None else 0
            return {"prototype_bytes": protos, "vector_bytes": self._vector_bytes}


def _maybe_decode(codec: VectorCodec, blob: bytes) -> torch.Tensor | None:
    from latewise.compression import Float16Codec

    return codec.decode_doc(blob) if isinstance(codec, Float16Codec) else None
