"""A collection's shared state beside its documents: the write log and the vector codec.

Both live in Chroma, so every process (or a Chroma server's clients) sees the same:

- the **write log** (``NAME__lw_log``): every write appends one record, and its record count is
  the collection's write *position*. A process that knew position ``p`` and then wrote checks
  that its own record made the position ``p + 1``: if so nobody else wrote meanwhile and its
  in-memory view is current; otherwise another writer's documents may be missing from it and
  the next search reloads. Appending and counting cannot lose a write the way reading and then
  overwriting a single token can.
- the **codec** of a compressed collection (chunked in ``NAME__lw_meta``), fitted once on the
  first documents written and never replaced.

This module knows Chroma and bytes, never models or tensors.
"""

from __future__ import annotations

import base64
import uuid
from typing import TYPE_CHECKING

from latewise.errors import StoreError

if TYPE_CHECKING:
    from latewise.store.chroma import ChromaStore

__all__ = ["CODEC_KEY", "WriteLog", "get_value", "put_value"]

CODEC_KEY = "codec"
_CHUNK = 4_000_000  # characters of base64 per record
_ONE: list[float] = [1.0]


class WriteLog:
    """The append-only log of writes to one collection (see the module docstring)."""

    def __init__(self, store: ChromaStore) -> None:
        self.store = store

    def position(self) -> int:
        """How many writes the collection has seen (by any process)."""
        return int(self.store.call(self.store.log.count))

    def record(self) -> int:
        """Append this process's write; return the position after it (read after appending)."""
        self.store.call(
            lambda: self.store.log.add(ids=[uuid.uuid4().hex], embeddings=[_ONE])  # type: ignore[arg-type]
        )
        return self.position()


def put_value(store: ChromaStore, key: str, data: bytes) -> None:
    """Store a binary value under ``key`` (chunked records in the meta collection)."""
    text = base64.b64encode(data).decode("ascii")
    chunks = [text[i : i + _CHUNK] for i in range(0, len(text), _CHUNK)] or [""]
    meta = store.meta
    old = store.call(lambda: meta.get(where={"key": key}, include=[])["ids"])
    ids = [f"{key}:{i}" for i in range(len(chunks))]
    store.call(
        lambda: meta.upsert(
            ids=ids,
            embeddings=[_ONE] * len(chunks),  # type: ignore[arg-type]
            metadatas=[
                {"key": key, "part": i, "n": len(chunks), "data": c} for i, c in enumerate(chunks)
            ],
        )
    )
    stale = [i for i in old if i not in set(ids)]
    if stale:
        store.call(lambda: meta.delete(ids=stale))


def get_value(store: ChromaStore, key: str) -> bytes | None:
    """The binary value stored under ``key``, or ``None``."""
    meta = store.meta
    got = store.call(lambda: meta.get(where={"key": key}, include=["metadatas"]))  # type: ignore[list-item]
    metas = sorted((m for m in got["metadatas"] or [] if m), key=lambda m: int(m["part"]))
    if not metas:
        return None
    if len(metas) != int(metas[0]["n"]):
        raise StoreError(
            f"collection {store.name!r}: the stored {key} is incomplete (a write was cut "
            "short); run index.repair() or `latewise repair`"
        )
    return base64.b64decode("".join(str(m["data"]) for m in metas))
