"""The int8 prototype table: an approximate first stage, never a reported score.

Every document's few prototype vectors sit in one int8 matrix; a scan proposes the candidates
that the exact kernel (:mod:`latewise.scoring.exact`) then scores.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

__all__ = ["CHUNK_ROWS", "PrototypeTable"]

#: Table rows widened to float32 and scored at a time (whole documents): 4 MiB at dim 128.
CHUNK_ROWS = 8_192


class PrototypeTable:
    """Every document's prototype vectors in one int8 matrix, scanned with MaxSim.

    Rows are quantised to int8 with one float32 scale per row (relative error ~0.4%, a quarter of
    float32's memory). Each document owns ``width`` consecutive rows (fewer prototypes are padded
    by repeating one, which leaves its MaxSim unchanged), so a scan is one float32 matrix product
    per chunk of rows and a max over a reshaped view, with no scatter. New documents wait in a
    small pending list and deleted ones leave dead slots until the next compaction, which runs
    before a scan when anything changed.
    """

    def __init__(self, dim: int) -> None:
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
        m = t.shape[axis]
        if m == width:
            return t
        first = t.narrow(axis, 0, 1)
        reps = [1] * t.dim()
        reps[axis] = width - m
        return torch.cat([t, first.repeat(*reps)], dim=axis)

    def _compact(self) -> None:
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
        """MaxSim of ``query`` (``[n_q, dim]``) against every slot's prototypes: ``[slots]``.

        The table is read :data:`CHUNK_ROWS` rows at a time, each chunk widened to float32 and
        multiplied by the query in float32 (on CPUs without int8 matrix units, such as this
        project's 2-core EPYC, ``torch._int_mm`` ran 20-25x slower than this: 61 vs 3 ms for
        12,000 rows, 1.57 s vs 66 ms for 300,000, one thread).
        """
        self._compact()
        n_slots, width = len(self.ids), self.width
        out = torch.empty(n_slots, dtype=torch.float32)
        if n_slots == 0:
            return out
        qt = query.detach().float().t().contiguous()
        n_q = qt.shape[1]
        step = max(1, CHUNK_ROWS // width) * width
        rows = torch.empty(min(step, self.codes.shape[0]), self.dim, dtype=torch.float32)
        for a in range(0, self.codes.shape[0], step):
            codes = self.codes[a : a + step]
            sim = rows[: codes.shape[0]].copy_(codes) @ qt
            sim.mul_(self.scales[a : a + step, None])
            out[a // width : (a + sim.shape[0]) // width] = (
                sim.view(-1, width, n_q).amax(dim=1).sum(dim=1)
            )
        return out

    def top(
        self, query: torch.Tensor, n: int, allowed: Sequence[str] | None
    ) -> tuple[list[str], torch.Tensor]:
        """The ``n`` documents whose prototypes score best against ``query`` by MaxSim, best
        first, and their scores."""
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
        kept = [
            (j, d)
            for j, (i, v) in enumerate(zip(top.tolist(), values.tolist(), strict=True))
            if (d := self.ids[i]) is not None and v > -math.inf
        ]
        if len(kept) < k:
            values = values[torch.tensor([j for j, _ in kept], dtype=torch.int64)]
        return [d for _, d in kept], values
