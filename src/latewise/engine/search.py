"""A search from checked arguments to hits: the view brought up to date, the filter resolved,
candidates from the first stage, exact scores from the ranker."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from latewise.engine.first_stage import FirstStage
from latewise.engine.ranker import Ranker
from latewise.engine.settings import IndexSettings, SearchSizes
from latewise.engine.view import CorpusView
from latewise.store.chroma import ChromaStore
from latewise.store.filters import check_filter
from latewise.types import Hit, PageRef, Record

if TYPE_CHECKING:
    import torch

    from latewise.engine.writer import CodecState

__all__ = ["Searcher"]


@dataclass
class Searcher:
    """Reads of one collection: searches and stored documents."""

    store: ChromaStore
    view: CorpusView
    codecs: CodecState
    settings: IndexSettings
    first_stage: FirstStage
    ranker: Ranker

    def filter(
        self, where: Mapping[str, Any] | None, records: Mapping[str, Any] | None = None
    ) -> dict[str, Any] | None:
        """``where`` checked for Chroma; ``$contains`` on a string field refused (checked
        against ``records``, or the stored documents)."""
        if where is None:
            return None
        pairs = (
            ((d, r.metadata) for d, r in records.items())
            if records is not None
            else ((r.id, r.metadata) for page in self.store.scan() for r in page)
        )
        return check_filter(where, pairs)

    def select(self, ids: Sequence[str] | None, where: Mapping[str, Any] | None) -> list[str]:
        """``ids`` (every document when ``None``) that match ``where``, in order."""
        if where is None:
            return list(ids or [])
        matching = self.store.ids(self.filter(where))
        if ids is None:
            return matching
        keep = set(matching)
        return [i for i in ids if i in keep]

    def stats(self, dim: int) -> dict[str, Any]:
        """Documents, first-stage rows, memory held and which first stage runs."""
        rows = self.store.row_count()
        return {
            "documents": self.store.count(),
            "rows": rows,
            **self.view.memory(),
            "first_stage": "in-memory prototypes" if self.view.scans(rows, dim) else "Chroma HNSW",
        }

    def search(
        self,
        queries: Sequence[torch.Tensor],
        k: int,
        where: Mapping[str, Any] | None,
        *,
        exact: bool,
        sizes: SearchSizes,
    ) -> list[list[Hit]]:
        """The ``k`` best documents for each query (two-stage, or every document if ``exact``)."""
        self.view.refresh()
        checked = self.filter(where, self.view.records)
        allowed = self.store.ids(checked) if checked is not None else None
        if exact:
            pool = allowed if allowed is not None else list(self.view.records)
            return [self.ranker.exhaustive(q, pool, k) for q in queries]
        n = sizes.rerank(self.settings.compression is not None, k)
        return [
            self.ranker.rank(
                q,
                self.first_stage.candidates(
                    q, n, allowed=allowed, where=checked, n_wide=sizes.wide(n)
                ),
                k,
            )
            for q in queries
        ]

    def records(self, ids: Sequence[str], *, include_vectors: bool) -> list[Record]:
        """The stored documents among ``ids``, in the order asked (missing ones left out)."""
        found = self.store.get(ids, with_blob=include_vectors)
        codec = self.codecs.current() if include_vectors and found else None
        return [
            Record(
                id=rec.id,
                text=rec.text,
                metadata=dict(rec.metadata),
                page=PageRef(**rec.page) if rec.page else None,
                n_vectors=rec.n_vectors,
                vectors=codec.decode_doc(rec.blob or b"") if codec is not None else None,
            )
            for rec in (found[d] for d in ids if d in found)
        ]
