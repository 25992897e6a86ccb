"""The write pipeline: check everything, then encode, pool, compress and store a batch at a time.

``prepare`` -> ``encode`` -> ``pool`` -> ``codec`` -> ``prototypes`` -> ``records`` -> Chroma.

The whole input is checked before anything is written (types, empty texts, ids repeated
anywhere in the call, metadata, ids that already hold other content for ``add``), so bad input
loses nothing and writes nothing. Each batch is then stored rows and blobs first and document
records last, so a document is visible whole or not at all; a failure after some batches were
stored raises :class:`~latewise.errors.PartialWriteError` with the ids written (re-running the
same call skips them and completes it: every document's version is a digest of its content,
metadata, encoder and settings).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from latewise.engine.settings import IndexSettings, WriteStats
from latewise.engine.view import CorpusView
from latewise.errors import (
    DimensionMismatchError,
    DuplicateIdError,
    EmptyInputError,
    ImageLoadError,
    InvalidInputError,
    InvalidInputTypeError,
    LatewiseError,
    PartialWriteError,
    StoreError,
)
from latewise.store.chroma import ChromaStore, DocRecord
from latewise.store.filters import check_metadata
from latewise.store.state import CODEC_KEY, WriteLog, get_value, put_value
from latewise.types import PageRef

if TYPE_CHECKING:
    import torch

    from latewise.compression import VectorCodec
    from latewise.encoders import Encoder

logger = logging.getLogger(__name__)

__all__ = ["CodecState", "Prepared", "Writer", "prepare_inputs"]

#: Documents in the first batch of a compressed collection, whose vectors fit the codec: with
#: MiniLM, a codec fitted on 256 documents kept 0.75 of the uncompressed top 10, on 2,000 0.90.
CODEC_SAMPLE_DOCS = 1024


@dataclass
class Prepared:
    """One input, checked and hashed, before encoding."""

    position: int
    id: str
    item: Any
    text: str | None
    page: PageRef | None
    metadata: dict[str, Any]
    filterable: dict[str, Any]
    ver: str
    #: Vectors computed elsewhere (``add_vectors``): not encoded again.
    vectors: Any = None


# -- checking the input -------------------------------------------------------------------------


def prepare_inputs(
    items: Iterable[Any] | None,
    ids: Iterable[Any] | None,
    metadatas: Iterable[Any] | None,
    *,
    modality: str,
    version_key: Any,
    vectors: Sequence[Any] | None = None,
    dim: int | None = None,
) -> list[Prepared]:
    """Check a whole write's input and give every document its id and version.

    Args:
        items: texts, or page images / image paths / :class:`PageRef` (``modality="image"``);
            with ``vectors``, optional texts stored beside them.
        ids, metadatas: one per document, or ``None``.
        modality: the encoder's ``"text"`` or ``"image"``.
        version_key: what besides content and metadata makes a version (encoder fingerprint,
            settings).
        vectors: ``[n_i, dim]`` arrays or tensors computed elsewhere, instead of encoding.
        dim: the collection's dimension (checked against ``vectors``).

    Raises:
        InvalidInputTypeError, EmptyInputError, InvalidInputError, DuplicateIdError,
        DimensionMismatchError, ImageLoadError: naming the positions of the bad items.
    """
    if vectors is not None:
        base: Iterable[Any] = vectors
        texts = None if items is None else _as_list(items, "texts")
    else:
        base = _as_list(items, "items")
        texts = None
    base = _as_list(base, "vectors" if vectors is not None else "items")
    n = len(base)
    if n == 0:
        raise EmptyInputError("nothing to write: pass at least one document")
    id_list = None if ids is None else _as_list(ids, "ids", n)
    meta_list = None if metadatas is None else _as_list(metadatas, "metadatas", n)
    if texts is not None and len(texts) != n:
        raise InvalidInputError(f"got {n} vectors but {len(texts)} texts")
    out: list[Prepared] = []
    first_seen: dict[str, int] = {}
    repeats: list[int] = []
    for pos in range(n):
        meta, filterable = check_metadata(None if meta_list is None else meta_list[pos], pos)
        text: str | None = None
        page: PageRef | None = None
        given = None
        if vectors is not None:
            given = _check_vectors(base[pos], pos, dim)
            item: Any = None
            text = None if texts is None else _check_text(texts[pos], pos, empty_ok=True)
            digest = hashlib.sha256(given.numpy().tobytes()).hexdigest()
        elif modality == "text":
            item = text = _check_text(base[pos], pos, empty_ok=False)
            digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
        else:
            item, page, digest = _prepare_image(base[pos], pos)
        doc_id = None if id_list is None else id_list[pos]
        if doc_id is None:
            doc_id = _content_id(digest, meta)
        elif not isinstance(doc_id, str) or not doc_id:
            raise InvalidInputTypeError(
                f"ids must be non-empty strings; got {doc_id!r} at position {pos}", [pos]
            )
        else:
            _check_text(doc_id, pos, empty_ok=False, what="id")
        if doc_id in first_seen:
            repeats.extend((first_seen[doc_id], pos))
        else:
            first_seen[doc_id] = pos
        ver = hashlib.sha256(
            json.dumps(
                [digest, meta, version_key, _page_json(page)], sort_keys=True, default=str
            ).encode()
        ).hexdigest()[:16]
        out.append(Prepared(pos, doc_id, item, text, page, meta, filterable, ver, given))
    if repeats:
        where = sorted(set(repeats))
        raise DuplicateIdError(
            f"ids repeat within the call at positions {where[:10]}; every document needs its "
            "own id (nothing was written)",
            where,
        )
    return out


def _as_list(values: Any, what: str, n: int | None = None) -> list[Any]:
    if isinstance(values, str | bytes) or not isinstance(values, Iterable):
        raise InvalidInputTypeError(
            f"{what} must be a list, got {type(values).__name__}; wrap a single document in a list"
        )
    if isinstance(values, Mapping):
        raise InvalidInputTypeError(f"{what} must be a list, got a single dict")
    got = list(values)
    if n is not None and len(got) != n:
        raise InvalidInputError(f"got {n} documents but {len(got)} {what}; give one per document")
    return got


def _check_text(value: Any, pos: int, *, empty_ok: bool, what: str = "document") -> str:
    if not isinstance(value, str):
        raise InvalidInputTypeError(
            f"{what}s must be strings for a text encoder; got {type(value).__name__} at "
            f"position {pos}",
            [pos],
        )
    if not empty_ok and not value.strip():
        raise EmptyInputError(
            f"{what} at position {pos} is empty or whitespace-only; remove it or give it content",
            [pos],
        )
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidInputError(
            f"{what} at position {pos} is not valid Unicode text (character {exc.start}: a lone "
            "surrogate such as '\\ud800'); decode the source with errors='replace' or drop that "
            "character",
            [pos],
        ) from exc
    return value


def _check_vectors(value: Any, pos: int, dim: int | None) -> torch.Tensor:
    import numpy as np
    import torch

    if isinstance(value, np.ndarray):
        value = torch.from_numpy(np.ascontiguousarray(value))
    if not isinstance(value, torch.Tensor):
        raise InvalidInputTypeError(
            f"vectors at position {pos} must be a [n, dim] array or tensor, got "
            f"{type(value).__name__}",
            [pos],
        )
    if value.dim() != 2 or value.shape[0] == 0:
        raise InvalidInputError(
            f"vectors at position {pos} have shape {tuple(value.shape)}; each document needs a "
            "[n, dim] matrix with n >= 1",
            [pos],
        )
    if dim is not None and value.shape[1] != dim:
        raise DimensionMismatchError(
            f"vectors at position {pos} have dim {value.shape[1]}, but the collection stores "
            f"dim {dim}"
        )
    value = value.detach().to("cpu", torch.float32)
    if not bool(torch.isfinite(value).all()):
        raise InvalidInputError(f"vectors at position {pos} hold NaN or infinite values", [pos])
    return torch.nn.functional.normalize(value, dim=-1)


def _prepare_image(item: Any, position: int) -> tuple[Any, PageRef, str]:
    from PIL import Image as PILImage

    if isinstance(item, PageRef):
        source = item.image_path or item.path
        return Path(source), item, _file_digest(source, position)
    if isinstance(item, str | Path):
        p = Path(item)
        return p, PageRef(path=str(p), page=1, image_path=str(p)), _file_digest(p, position)
    if isinstance(item, PILImage.Image):
        rgb = item.convert("RGB") if item.mode != "RGB" else item
        digest = hashlib.sha256(f"{rgb.size}".encode() + rgb.tobytes()).hexdigest()
        return rgb, PageRef(path="", page=1, width=rgb.width, height=rgb.height), digest
    raise InvalidInputTypeError(
        "documents for an image encoder must be PIL images, image paths or PageRefs; got "
        f"{type(item).__name__} at position {position}",
        [position],
    )


def _file_digest(path: str | Path, position: int) -> str:
    p = Path(path)
    try:
        h = hashlib.sha256()
        with p.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        return h.hexdigest()
    except OSError as exc:
        raise ImageLoadError(
            f"cannot read image at position {position}: {str(p)!r} ({exc.strerror or exc})",
            [position],
        ) from exc


def _content_id(digest: str, metadata: Mapping[str, Any]) -> str:
    h = hashlib.sha256((digest + json.dumps(metadata, sort_keys=True)).encode()).hexdigest()
    return h[:32]


def _page_json(page: PageRef | None) -> dict[str, Any] | None:
    if page is None:
        return None
    return {
        "path": page.path,
        "page": page.page,
        "width": page.width,
        "height": page.height,
        "image_path": page.image_path,
    }


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

            stored = get_value(self.store, CODEC_KEY)
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
            and get_value(self.store, CODEC_KEY) is None
        )

    def for_writing(self, sample: Sequence[torch.Tensor]) -> VectorCodec:
        """The codec to write with: the stored one, or one fitted on ``sample`` and stored."""
        if not self.needs_fit():
            return self.current()
        import torch

        from latewise.compression import ResidualCodec

        flat = torch.cat([v.float() for v in sample])
        codec = ResidualCodec.fit(flat, nbits=int(self.settings.compression or 2))
        put_value(self.store, CODEC_KEY, codec.to_bytes())
        logger.info("fitted a %d-bit residual codec on %d vectors", codec.nbits, flat.shape[0])
        self._codec = None
        return self.current()  # what is stored now (another writer's, if it stored first)

    def _use(self, codec: VectorCodec) -> None:
        if codec.dim != self.dim:
            raise StoreError(
                f"collection {self.store.name!r} stores a codec for dim {codec.dim} but the "
                f"encoder has dim {self.dim}"
            )
        self._codec = codec


# -- writing ------------------------------------------------------------------------------------


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
            old = [current[d] for d in replaced if current[d].ver != replaced[d].ver]
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
                    text=p.text,
                    metadata=p.metadata,
                    page=_page_json(page),
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
                    self.store.probe_rows()
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
