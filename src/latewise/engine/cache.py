"""The in-memory cache of full vectors: stored rows of many documents in a few tensors.

Searches gather their candidates' rows from here with a few tensor ops instead of touching one
Python object per document; Chroma stays the source of truth (a missing document is read from
it again).
"""

from __future__ import annotations

import functools
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

if TYPE_CHECKING:
    import torch

__all__ = ["ResidentRows", "RowSnapshot", "release_free_memory"]

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
