"""The write pipeline: check everything, then encode, pool, compress and store a batch at a time.

``prepare`` (:mod:`latewise.engine.inputs`) -> ``encode`` -> ``pool`` -> ``codec`` ->
``prototypes`` -> ``records`` -> Chroma.

The whole input is checked before anything is written (types, empty texts, ids repeated
anywhere in the call, metadata, ids that already hold other content for ``add``), so bad input
loses nothing and writes nothing. Each batch is then stored rows and blobs first and document
records last, so a document is visible whole or not at all; a failure after some batches were
stored raises :class:`~latewise.errors.PartialWriteError` with the ids written (re-running the
same call skips them and completes it: every document's version is a digest of its content,
metadata, encoder and settings).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from latewise.engine.inputs import Prepared, page_json
from latewise.engine.settings import IndexSettings, WriteStats
from latewise.engine.view import CorpusView
from latewise.errors import (
    DimensionMismatchError,
    DuplicateIdError,
    EmptyInputError,
    InvalidInputError,
    InvalidInputTypeError,
    LatewiseError,
    PartialWriteError,
    StoreError,
)
from latewise.store.chroma import ChromaStore, DocRecord
from latewise.store.state import (
    CODEC_KEY,
    WriteLog,
    claim_value,
    claimed_value,
    has_value,
    put_value,
)
from latewise.types import PageRef

if TYPE_CHECKING:
    import torch

    from latewise.compression import VectorCodec
    from latewise.encoders import Encoder

logger = logging.getLogger(__name__)

__all__ = ["CODEC_SAMPLE_DOCS", "CodecState", "Writer", "progress_bar"]

#: Documents in the first batch of a compressed collection, whose vectors fit the codec: with
#: MiniLM, a codec fitted on 256 documents kept 0.75 of the uncompressed top 10, on 2,000 0.90.
CODEC_SAMPLE_DOCS = 1024


# -- the codec ----------------------------------------------------------------------------------


class CodecState:
    """The collection's vector codec: float16, or the residual codec stored with it (fitted once,
    on the first documents written, and never replaced)."""

    def __init__(self, store: ChromaStore, settings: IndexSettings, dim: int) -> None:
        self.store = store
        self.settings = settings
        self.dim = dim
        self._codec: VectorCodec | None = None

    def reset(self) -> None:
        self._codec = None

    def current(self) -> VectorCodec:
        """The codec documents are stored with (read from Chroma once)."""
        if self._codec is None:
            from latewise.compression import Float16Codec, codec_from_bytes

            stored = claimed_value(self.store, CODEC_KEY)
            if stored is not None:
                self._use(codec_from_bytes(stored))
            elif self.settings.compression is None:
                self._use(Float16Codec(self.dim))
            else:
                raise StoreError(
                    f"collection {self.store.name!r} uses compression but has no codec yet; "
                    "it is fitted on the first documents written"
                )
        assert self._codec is not None
        return self._codec

    def needs_fit(self) -> bool:
        """Whether the next write fits the codec (a compressed collection without one)."""
        return (
            self.settings.compression is not None
            and self._codec is None
            and not has_value(self.store, CODEC_KEY)
        )

    def for_writing(self, sample: Sequence[torch.Tensor]) -> VectorCodec:
        """The codec to write with: the stored one, or one fitted on ``sample`` and stored."""
        if not self.needs_fit():
            return self.current()
        import torch

        from latewise.compression import ResidualCodec

        flat = torch.cat([v.float() for v in sample])
        codec = ResidualCodec.fit(flat, nbits=int(self.settings.compression or 2))
        token = uuid.uuid4().hex
        if claim_value(self.store, CODEC_KEY, token) == token:
            put_value(self.store, f"{CODEC_KEY}.{token}", codec.to_bytes())
            logger.info("fitted a %d-bit residual codec on %d vectors", codec.nbits, flat.shape[0])
        else:
            logger.info("another writer created this collection's codec first; using it")
        self._codec = None
        return self.current()

    def _use(self, codec: VectorCodec) -> None:
        if codec.dim != self.dim:
            raise StoreError(
                f"collection {self.store.name!r} stores a codec for dim {codec.dim} but the "
                f"encoder has dim {self.dim}"
            )
        self._codec = codec


# -- writing ------------------------------------------------------------------------------------


@contextmanager
def progress_bar(total: int, show: bool | None, batch_size: int, name: str) -> Iterator[Any]:
    """A tqdm bar over ``total`` documents when ``show`` (``None``: more than a batch and the
    ``latewise`` logger at INFO), else ``None``."""
    if show is None:
        level = logging.getLogger("latewise").getEffectiveLevel()
        show = total > batch_size and level <= logging.INFO
    if not show:
        yield None
        return
    from tqdm.auto import tqdm

    with tqdm(total=total, desc=f"Indexing into {name}", unit="doc") as bar:
        yield bar


@dataclass
class Writer:
    """Stores prepared documents in batches (see the module docstring).

    Attributes:
        store, view, codecs, settings: the collection's parts.
        encoder: returns the encoder (loaded on first use).
        image_dir: where page images given as PIL images are saved.
        stats: counters updated by every write.
        guard: a context manager held around each batch's store writes (the inter-process
            write lock of an embedded folder).
    """

    store: ChromaStore
    view: CorpusView
    codecs: CodecState
    settings: IndexSettings
    encoder: Callable[[], Encoder]
    image_dir: Path
    stats: WriteStats
    guard: Callable[[], AbstractContextManager[Any]] = nullcontext
    on_first_write: Callable[[], None] | None = None

    def write(
        self,
        prepared: list[Prepared],
        *,
        replace: bool,
        batch_size: int,
        progress: Any = None,
    ) -> list[str]:
        """Write ``prepared`` (already checked); returns their ids in input order."""
        with self.guard():
            current = self.store.get([p.id for p in prepared])
            if not replace:
                conflicts = [
                    p.position for p in prepared if p.id in current and current[p.id].ver != p.ver
                ]
                if conflicts:
                    raise DuplicateIdError(
                        f"ids at positions {conflicts[:10]} already exist with other content; "
                        "use upsert() to replace them (nothing was written)",
                        conflicts,
                    )
        todo = [p for p in prepared if p.id not in current or current[p.id].ver != p.ver]
        if progress is not None:
            progress.update(len(prepared) - len(todo))
        written: list[str] = []
        try:
            for batch in self._batches(todo, batch_size):
                self._write_batch(batch, current)
                written.extend(p.id for p in batch)
                if progress is not None:
                    progress.update(len(batch))
        except (LatewiseError, OSError, RuntimeError, ValueError) as exc:
            if not written:
                raise
            raise PartialWriteError(
                f"the write stopped after storing {len(written)} of {len(todo)} documents "
                f"({type(exc).__name__}: {exc}). The documents written are whole and searchable "
                f"(ids in .written: {written[:5]}{'...' if len(written) > 5 else ''}); fix the "
                "cause and re-run the same call: it skips them and writes the rest",
                written,
            ) from exc
        return [p.id for p in prepared]

    def _batches(self, todo: list[Prepared], size: int) -> Iterator[list[Prepared]]:
        # A residual codec is fitted on the first batch written: give it a larger sample.
        first = max(size, CODEC_SAMPLE_DOCS) if todo and self.codecs.needs_fit() else size
        yield todo[:first]
        for s in range(first, len(todo), size):
            yield todo[s : s + size]

    def _write_batch(self, batch: list[Prepared], current: Mapping[str, DocRecord]) -> None:
        if not batch:
            return
        t0 = time.perf_counter()
        vectors = self._vectors(batch)
        t1 = time.perf_counter()
        with self.guard():
            records, rows, protos = self._records(batch, vectors)
            t2 = time.perf_counter()
            if self.on_first_write is not None:
                self.on_first_write()
            known = self.view.position
            self.store.write(records, rows)
            # Old versions' rows: re-read, since another writer may have replaced them meanwhile.
            replaced = self.store.get([r.id for r in records if r.id in current])
            old = [current[d] for d in replaced if current[d].stored_as != replaced[d].stored_as]
            old += [current[r.id] for r in records if r.id in current and r.id not in replaced]
            if old:
                self.store.delete_rows(old)
            position = WriteLog(self.store).record()
            self.view.apply_write(records, protos, known, position)
        self.stats.encode_seconds += t1 - t0
        self.stats.prepare_seconds += t2 - t1
        self.stats.store_seconds += time.perf_counter() - t2
        self.stats.documents += len(records)
        self.stats.vectors += sum(r.n_vectors for r in records)
        self.stats.rows += sum(r.n_rows for r in records)
        self.stats.bytes += sum(len(r.blob or b"") for r in records)

    def _vectors(self, batch: list[Prepared]) -> list[torch.Tensor]:
        """Each document's ``[n, dim]`` vectors: given, or from the encoder (checked)."""
        import torch

        if batch[0].vectors is not None:
            return [p.vectors for p in batch]
        encoder = self.encoder()
        positions = [p.position for p in batch]
        try:
            vectors = encoder.encode_documents([p.item for p in batch], show_progress_bar=False)
        except (InvalidInputError, InvalidInputTypeError) as exc:
            # Map positions inside the batch back to the caller's positions.
            exc.positions = [positions[i] for i in exc.positions if i < len(positions)]
            raise
        dim = self.codecs.dim
        for i, v in enumerate(vectors):
            if v.dim() != 2 or v.shape[1] != dim:
                raise DimensionMismatchError(
                    f"the encoder returned vectors of shape {tuple(v.shape)} for the document "
                    f"at position {positions[i]}, but collection {self.store.name!r} stores "
                    f"dim {dim}"
                )
            if v.shape[0] == 0:
                raise EmptyInputError(
                    f"the document at position {positions[i]} produced no vectors (only "
                    "punctuation or special tokens?); give it some content",
                    [positions[i]],
                )
        bad = [positions[i] for i, v in enumerate(vectors) if not bool(torch.isfinite(v).all())]
        if bad:
            raise InvalidInputError(
                f"the encoder produced NaN or infinite vectors for documents at positions "
                f"{bad[:10]}; check the model and its dtype",
                bad,
            )
        return vectors

    def _records(
        self, batch: list[Prepared], vectors: list[torch.Tensor]
    ) -> tuple[list[DocRecord], Any, list[torch.Tensor]]:
        """Stored form of a batch: records (with blobs), first-stage rows and the prototypes per
        document (of the vectors as stored: pooled when ``pool_factor`` > 1)."""
        import torch

        from latewise.compression import pool_vectors_batch, prototypes_batch

        if self.settings.pool_factor > 1:
            vectors = pool_vectors_batch(vectors, self.settings.pool_factor)
            vectors = [torch.nn.functional.normalize(v.float(), dim=-1) for v in vectors]
        codec = self.codecs.for_writing(vectors)
        blobs = codec.encode_docs(vectors)
        protos = prototypes_batch(vectors, self.settings.prototypes)
        records: list[DocRecord] = []
        for p, v, blob, proto in zip(batch, vectors, blobs, protos, strict=True):
            page = p.page
            if page is not None and not isinstance(p.item, Path) and not page.image_path:
                page = self._save_image(p.item, p.ver, page)
            records.append(
                DocRecord(
                    id=p.id,
                    ver=p.ver,
                    key=f"{p.ver}.{uuid.uuid4().hex[:12]}",
                    text=p.text,
                    metadata=p.metadata,
                    page=page_json(page),
                    n_vectors=int(v.shape[0]),
                    n_rows=int(proto.shape[0]),
                    blob=blob,
                    filterable=p.filterable,
                )
            )
        rows = torch.cat(protos).float().numpy()
        return records, rows, protos

    def _save_image(self, image: Any, ver: str, page: PageRef) -> PageRef:
        self.image_dir.mkdir(parents=True, exist_ok=True)
        target = self.image_dir / f"{ver}.png"
        if not target.exists():
            image.save(target, format="PNG")
        return replace(
            page,
            path=page.path or str(target),
            image_path=str(target),
            width=image.width,
            height=image.height,
        )

    def delete(self, ids: Sequence[str]) -> int:
        """Delete the documents ``ids`` that exist: their records first (gone from results at
        once), then this write's rows and vectors. Returns how many were deleted."""
        with self.guard():
            records = self.store.get(ids)
            if not records:
                return 0
            known = self.view.position
            self.store.delete_docs(list(records))
            self.store.delete_rows(list(records.values()))
            self.view.apply_delete(list(records), known, WriteLog(self.store).record())
            return len(records)

    def repair(self, *, rebuild: bool = False) -> dict[str, int]:
        """Remove what no document claims and rebuild the first stage if it is damaged (what
        :meth:`LateInteractionIndex.repair` does).

        Stored vectors and first-stage rows of no current document version (left by a crash)
        are deleted. The first-stage collection is rebuilt from every document's stored
        vectors when rows are missing, it cannot be read or queried, or ``rebuild`` is set;
        otherwise nothing is decoded (and no torch is imported).

        Returns:
            ``{"documents", "orphans" (records removed), "rebuilt" (0 or 1), "rows" (rows
            written by a rebuild)}``.
        """
        with self.guard():
            orphans = self.store.remove_orphan_blobs()
            expected = {rid for page in self.store.scan() for rec in page for rid in rec.row_ids()}
            documents = self.store.count()
            if not rebuild:
                try:
                    present = self.store.row_ids_stored()
                    self.store.check_rows()
                except StoreError:
                    logger.warning("the first stage of %s is damaged: rebuilding", self.store.name)
                    rebuild = True
                else:
                    stale = sorted(present - expected)
                    self.store.delete_rows_by_id(stale)
                    orphans += len(stale)
                    rebuild = bool(expected - present)
            rows = self._rebuild_rows() if rebuild else 0
            WriteLog(self.store).record()
            self.view.clear()
        return {"documents": documents, "orphans": orphans, "rebuilt": int(rebuild), "rows": rows}

    def _rebuild_rows(self) -> int:
        import torch

        from latewise.compression import prototypes_batch

        self.store.reset_rows(dict(self.settings.hnsw))
        rows = 0
        for page in self.store.scan(page_size=500):
            self.store.attach_blobs(page)
            vectors = self.codecs.current().decode_docs([r.blob or b"" for r in page])
            protos = prototypes_batch(vectors, self.settings.prototypes)
            changed = []
            for rec, proto in zip(page, protos, strict=True):
                if rec.n_rows != proto.shape[0]:  # written with another prototype count
                    rec.n_rows = int(proto.shape[0])
                    changed.append(rec)
            self.store.write_rows(page, torch.cat(protos).float().numpy())
            self.store.write_docs(changed)
            rows += sum(int(p.shape[0]) for p in protos)
        return rows
