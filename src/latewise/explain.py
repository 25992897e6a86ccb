"""Why a document matched a query: per-token matches for text, similarity maps for pages.

For a text document, each query vector's best-matching document token (the argmax of MaxSim)
and its similarity. For a page image (ColPali), a similarity map per query token over the page's
patch grid, as colpali-engine's interpretability module computes it, rendered as a heatmap
over the page with Pillow.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from latewise.errors import InvalidInputError

if TYPE_CHECKING:
    import torch
    from PIL.Image import Image

    from latewise.encoders import Encoder
    from latewise.types import Record

__all__ = [
    "Explanation",
    "TokenMatch",
    "explain_image",
    "explain_record",
    "explain_text",
    "render_heatmap",
]


@dataclass(frozen=True)
class TokenMatch:
    """One query token and the document token (or patch) it matched best."""

    query_token: str
    document_token: str
    document_position: int
    similarity: float


@dataclass
class Explanation:
    """Why a document scored what it did for a query.

    Attributes:
        query: the query text.
        doc_id: the document id.
        score: the MaxSim score (the sum of ``matches``' similarities).
        matches: one :class:`TokenMatch` per query vector.
        similarity_maps: for page images, ``[n_query_tokens, n_rows, n_cols]`` similarities of
            each query token with each image patch (``None`` for text).
        image: the page image, for page documents.
        out: where the explanation was written, if it was.
    """

    query: str
    doc_id: str
    score: float
    matches: list[TokenMatch]
    similarity_maps: torch.Tensor | None = None
    image: Image | None = field(default=None, repr=False)
    out: Path | None = None

    def __str__(self) -> str:
        lines = [f"{self.doc_id}: score {self.score:.4f} for {self.query!r}"]
        width = max((len(m.query_token) for m in self.matches), default=5)
        for m in self.matches:
            lines.append(
                f"  {m.query_token:<{width}} -> {m.document_token!r} "
                f"(#{m.document_position}, {m.similarity:.3f})"
            )
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable form (without the image and maps)."""
        return {
            "query": self.query,
            "doc_id": self.doc_id,
            "score": self.score,
            "matches": [m.__dict__ for m in self.matches],
        }

    def save(self, out: str | Path, *, token: int | None = None) -> Path:
        """Write the explanation: a PNG heatmap over the page for page documents (the mean map
        over query tokens, or the map of query token ``token``); JSON (``.json``) or a text table
        otherwise."""
        path = Path(out)
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix.lower() == ".png":
            if self.similarity_maps is None or self.image is None:
                raise InvalidInputError(
                    f"a PNG heatmap needs a page image document; {self.doc_id!r} is text — save "
                    "it as .json or .txt"
                )
            maps = self.similarity_maps
            if token is None:
                grid = maps.clamp(min=0).mean(0)
            else:
                if not -maps.shape[0] <= token < maps.shape[0]:
                    raise InvalidInputError(
                        f"token {token} is out of range: the query has {maps.shape[0]} tokens"
                    )
                grid = maps[token]
            render_heatmap(self.image, grid).save(path, format="PNG")
        elif path.suffix.lower() == ".json":
            path.write_text(json.dumps(self.to_dict(), indent=2), encoding="utf-8")
        else:
            path.write_text(str(self) + "\n", encoding="utf-8")
        self.out = path
        return path


def _labels(fn: Any, items: list[Any], n: int) -> list[str]:
    try:
        labels = list(fn(items)[0]) if fn is not None else []
    except Exception:  # labels are a nicety; the scores never depend on them
        labels = []
    return labels if len(labels) == n else [f"#{i}" for i in range(n)]


def _matches(
    q: torch.Tensor, d: torch.Tensor, q_labels: list[str], d_labels: list[str]
) -> tuple[float, list[TokenMatch], torch.Tensor]:
    """The score (from the one exact MaxSim kernel, as search reports it), each query vector's
    match, and the similarity matrix (for maps)."""
    import torch

    from latewise.engine.inputs import as_tensor
    from latewise.scoring import maxsim_flat_matches

    q, d = as_tensor(q).float(), as_tensor(d).float()
    scores, best = maxsim_flat_matches(q, d, torch.tensor([0, d.shape[0]], dtype=torch.int64))
    sim = q @ d.t()
    idx = best[0].tolist()
    matches = [TokenMatch(q_labels[i], d_labels[j], j, float(sim[i, j])) for i, j in enumerate(idx)]
    return float(scores[0]), matches, sim


def explain_text(
    encoder: Encoder, query: str, doc_id: str, text: str, vectors: torch.Tensor | None = None
) -> Explanation:
    """Which document token each query token matched, for a text document (``vectors``: the
    document's stored vectors; encoded from ``text`` when not given)."""
    q = encoder.encode_queries([query])[0]
    d = vectors if vectors is not None else encoder.encode_documents([text])[0]
    q_labels = _labels(getattr(encoder, "query_tokens", None), [query], q.shape[0])
    d_labels = _labels(getattr(encoder, "document_tokens", None), [text], d.shape[0])
    score, matches, _ = _matches(q, d, q_labels, d_labels)
    return Explanation(query, doc_id, score, matches)


def explain_image(
    encoder: Encoder, query: str, doc_id: str, image: Image, vectors: torch.Tensor | None = None
) -> Explanation:
    """Similarity maps of each query token over a page image's patch grid (ColPali);
    ``vectors``: the page's stored vectors (encoded from ``image`` when not given)."""
    patch_grid = getattr(encoder, "patch_grid", None)
    if patch_grid is None:
        raise InvalidInputError(
            f"{type(encoder).__name__} has no patch grid; similarity maps need a ColPali encoder"
        )
    q = encoder.encode_queries([query])[0]
    d = vectors if vectors is not None else encoder.encode_documents([image])[0]
    grid = patch_grid(image)
    q_labels = _labels(getattr(encoder, "query_tokens", None), [query], q.shape[0])
    d_labels = _labels(getattr(encoder, "document_tokens", None), [image], d.shape[0])
    score, matches, sim = _matches(q, d, q_labels, d_labels)
    maps = grid.to_grid(sim)
    return Explanation(query, doc_id, score, matches, similarity_maps=maps, image=image)


def explain_record(encoder: Encoder, query: str, record: Record) -> Explanation:
    """:func:`explain_image` for a stored page, :func:`explain_text` for a stored text, from the
    record's stored vectors."""
    if record.page is not None:
        from latewise.ingest import load_page_image

        image = load_page_image(record.page)
        return explain_image(encoder, query, record.id, image, record.vectors)
    return explain_text(encoder, query, record.id, record.text or "", record.vectors)


def render_heatmap(image: Image, grid: torch.Tensor, *, alpha: float = 0.55) -> Image:
    """Overlay a ``[rows, cols]`` map on ``image`` as a heatmap of the image's own size."""
    import numpy as np
    from PIL import Image as PILImage

    values = grid.detach().float().cpu().numpy()
    lo, hi = float(values.min()), float(values.max())
    norm = (values - lo) / (hi - lo) if hi > lo else np.zeros_like(values)
    # A perceptual dark-blue -> red -> yellow ramp (close to matplotlib's "inferno").
    stops = np.array(
        [[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]], dtype=np.float32
    )
    pos = norm * (len(stops) - 1)
    low = np.clip(np.floor(pos).astype(int), 0, len(stops) - 2)
    frac = (pos - low)[..., None]
    rgb = (stops[low] * (1 - frac) + stops[low + 1] * frac).astype(np.uint8)
    heat = PILImage.fromarray(rgb, mode="RGB").resize(image.size, PILImage.Resampling.BILINEAR)
    return PILImage.blend(image.convert("RGB"), heat, alpha)
