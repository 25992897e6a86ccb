"""Checking a write's whole input before anything is written.

Every document gets its position (for error messages), its id (given, or a digest of content
and metadata) and its *version*: a digest of content, metadata, encoder fingerprint and storage
settings, so that re-writing unchanged content is recognised and skipped. Bad items raise typed
errors naming their positions, and nothing is written.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from latewise.errors import (
    DimensionMismatchError,
    DuplicateIdError,
    EmptyInputError,
    ImageLoadError,
    InvalidInputError,
    InvalidInputTypeError,
)
from latewise.store.filters import check_metadata
from latewise.types import PageRef

if TYPE_CHECKING:
    import torch

__all__ = [
    "Prepared",
    "as_tensor",
    "check_ids",
    "check_queries",
    "page_json",
    "prepare_inputs",
]


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
                [digest, meta, version_key, page_json(page)], sort_keys=True, default=str
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


def as_tensor(value: Any) -> Any:
    """A numpy array (a query runtime's output, or given vectors) as a torch tensor sharing its
    memory; anything else unchanged."""
    import numpy as np

    if isinstance(value, np.ndarray):
        import torch

        return torch.from_numpy(np.ascontiguousarray(value))
    return value


def _check_vectors(value: Any, pos: int, dim: int | None) -> torch.Tensor:
    import torch

    value = as_tensor(value)
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


def page_json(page: PageRef | None) -> dict[str, Any] | None:
    if page is None:
        return None
    return {
        "path": page.path,
        "page": page.page,
        "width": page.width,
        "height": page.height,
        "image_path": page.image_path,
    }


def check_ids(ids: Iterable[str], *, unique: bool = False) -> list[str]:
    """``ids`` as a list: a single string is refused; with ``unique``, repeats are dropped and
    any id that is not a string is refused, naming its position."""
    if isinstance(ids, str):
        raise InvalidInputTypeError("ids must be a list of strings, got a single string")
    if not unique:
        return list(ids)
    out = list(dict.fromkeys(ids))
    wrong = [i for i, x in enumerate(out) if not isinstance(x, str)]
    if wrong:
        raise InvalidInputTypeError(f"ids must be strings; positions {wrong[:10]} are not", wrong)
    return out


def check_queries(queries: Sequence[Any], dim: int, name: str) -> list[torch.Tensor]:
    """Encoded queries (tensors or float32 arrays) as ``[n, dim]`` tensors (``name``: the
    collection, for the error)."""
    tensors = [as_tensor(q) for q in queries]
    for i, q in enumerate(tensors):
        if q.dim() != 2 or q.shape[1] != dim:
            raise DimensionMismatchError(
                f"query {i} has shape {tuple(q.shape)}; collection {name!r} needs [n, {dim}]"
            )
    return tensors


def query_vectors(query: Any, encode: Callable[[str], Any]) -> torch.Tensor:
    """One query's vectors: a text encoded by ``encode``, or given ``[n, dim]`` vectors (a
    tensor or a float32 array)."""
    import numpy as np
    import torch

    if isinstance(query, str):
        query = encode(query)
    if not isinstance(query, torch.Tensor | np.ndarray):
        raise InvalidInputTypeError(
            f"query must be a string or its [n, dim] vectors, got {type(query).__name__}"
        )
    return (
        query if isinstance(query, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(query))
    )
