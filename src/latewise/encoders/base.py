"""The ``Encoder`` contract every model wrapper follows, and the machinery they share.

An encoder turns each input into a matrix ``[n_vectors, dim]`` of L2-normalised float32 vectors
(BERT: one row; ColBERT: one row per kept token; ColPali: one row per patch and text token). The
base class owns what is the same for all of them: input validation with positions in the error,
length-sorted batching, progress bars, ``torch.inference_mode``, device choice and restoring the
input order. Subclasses implement only ``_encode_query_batch`` / ``_encode_document_batch``.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from latewise.errors import (
    EmptyInputError,
    ImageLoadError,
    InvalidInputTypeError,
)

if TYPE_CHECKING:
    import torch
    from PIL.Image import Image

logger = logging.getLogger(__name__)

__all__ = ["Encoder", "Modality", "load_images", "resolve_device", "validate_texts"]

Modality = Literal["text", "image"]


def resolve_device(device: str | None = None) -> str:
    """Pick the device: the one given, else ``cuda``, then ``mps``, then ``cpu``."""
    if device is not None:
        return str(device)
    import torch

    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return "cpu"


def _describe(positions: Sequence[int]) -> str:
    shown = ", ".join(str(p) for p in positions[:10])
    more = f" and {len(positions) - 10} more" if len(positions) > 10 else ""
    return f"position{'s' if len(positions) > 1 else ''} {shown}{more}"


def validate_texts(texts: object, what: str = "texts") -> list[str]:
    """Check a batch of texts; raise a typed error naming every bad position.

    Args:
        texts: the caller's batch; must be a non-empty list or tuple of non-blank strings.
        what: how to call the batch in messages ("queries", "documents").

    Raises:
        InvalidInputTypeError: ``texts`` is not a list/tuple (a lone string included), or holds
            items that are not strings.
        EmptyInputError: the batch is empty, or holds empty / whitespace-only strings.
    """
    if isinstance(texts, str | bytes) or not isinstance(texts, list | tuple):
        raise InvalidInputTypeError(
            f"{what} must be a list of strings, got {type(texts).__name__}; "
            f"wrap a single text in a list: [{what[:-1] if what.endswith('s') else what}]"
        )
    if len(texts) == 0:
        raise EmptyInputError(f"{what} is an empty list; pass at least one text")
    wrong = [i for i, t in enumerate(texts) if not isinstance(t, str)]
    if wrong:
        kinds = sorted({type(texts[i]).__name__ for i in wrong})
        raise InvalidInputTypeError(
            f"{what} must all be strings; got {', '.join(kinds)} at {_describe(wrong)}",
            wrong,
        )
    blank = [i for i, t in enumerate(texts) if not t.strip()]
    if blank:
        raise EmptyInputError(
            f"{what} hold empty or whitespace-only text at {_describe(blank)}; "
            "remove those items or give them content",
            blank,
        )
    return list(texts)


def load_images(images: object, what: str = "documents") -> list[Image]:
    """Turn a batch of PIL images and/or image paths into RGB PIL images.

    Raises:
        InvalidInputTypeError: not a list, or items that are neither images nor paths.
        EmptyInputError: an empty batch.
        ImageLoadError: paths that do not exist or cannot be decoded (all of them are named).
    """
    from PIL import Image as PILImage
    from PIL import UnidentifiedImageError

    if isinstance(images, str | bytes | Path) or not isinstance(images, list | tuple):
        raise InvalidInputTypeError(
            f"{what} must be a list of PIL images or image paths, got {type(images).__name__}"
        )
    if len(images) == 0:
        raise EmptyInputError(f"{what} is an empty list; pass at least one image")
    wrong = [i for i, x in enumerate(images) if not isinstance(x, PILImage.Image | str | Path)]
    if wrong:
        kinds = sorted({type(images[i]).__name__ for i in wrong})
        raise InvalidInputTypeError(
            f"{what} must be PIL images or image paths; got {', '.join(kinds)} at "
            f"{_describe(wrong)}",
            wrong,
        )
    out: list[Image] = []
    bad: list[tuple[int, str]] = []
    for i, item in enumerate(images):
        if isinstance(item, PILImage.Image):
            out.append(item.convert("RGB") if item.mode != "RGB" else item)
            continue
        path = Path(item)
        if not path.is_file():
            bad.append((i, f"{str(path)!r} does not exist"))
            continue
        try:
            with PILImage.open(path) as im:
                im.load()
                out.append(im.convert("RGB"))
        except (UnidentifiedImageError, OSError) as exc:
            bad.append((i, f"{str(path)!r} is not a readable image ({exc.__class__.__name__})"))
    if bad:
        details = "; ".join(f"position {i}: {why}" for i, why in bad[:10])
        raise ImageLoadError(f"cannot load {len(bad)} image(s): {details}", [i for i, _ in bad])
    return out


class Encoder(ABC):
    """Base class of every latewise encoder.

    Args:
        model_name_or_path: a hub id or a local checkpoint folder.
        batch_size: how many inputs go through the model at once.
        show_progress_bar: show a tqdm bar; ``None`` shows one when the ``latewise`` logger is at
            INFO or lower and there is more than one batch.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``...; ``None`` picks cuda, then
            mps, then cpu.
        torch_dtype: the dtype of the model weights (``torch.float32`` by default); outputs are
            always float32.

    Subclasses set ``modality`` (what ``encode_documents`` takes) and implement the two batch
    methods; everything else is shared.
    """

    modality: Modality = "text"
    #: The Hugging Face tokenizer, for text encoders (used by the tokenizer-aware chunker).
    tokenizer: Any = None

    def __init__(
        self,
        model_name_or_path: str | Path,
        *,
        batch_size: int = 32,
        show_progress_bar: bool | None = None,
        device: str | None = None,
        torch_dtype: torch.dtype | str | None = None,
    ) -> None:
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.model_name_or_path = str(model_name_or_path)
        self.batch_size = batch_size
        self.show_progress_bar = show_progress_bar
        self.device = resolve_device(device)
        self.torch_dtype = _resolve_dtype(torch_dtype)

    # -- the contract -------------------------------------------------------------------------

    @property
    @abstractmethod
    def dim(self) -> int:
        """The dimension of every output vector."""

    @property
    def fingerprint(self) -> dict[str, Any]:
        """Everything that changes the vectors: model id/path, class, dim and settings.

        Two encoders with equal fingerprints produce the same vectors. The index stores this with
        a collection and refuses to open it with an encoder whose fingerprint differs.
        """
        return {
            "encoder": type(self).__name__,
            "model": self.model_name_or_path,
            "dim": self.dim,
            **self._settings(),
        }

    @property
    def max_document_tokens(self) -> int | None:
        """How many tokenizer tokens of a text document the encoder reads (``None``: no limit or
        not a text encoder). Chunkers cut documents to this so nothing is silently truncated."""
        return None

    @abstractmethod
    def document_tokens(self, documents: Sequence[Any]) -> list[list[str]]:
        """A label for every row ``encode_documents`` returns for each document, in row order.

        Text encoders give the token strings (so explanations can say which words matched);
        ColPali gives ``"patch r,c"`` for image patches and token strings for the rest.
        """

    def _settings(self) -> dict[str, Any]:
        """Settings (beyond model and dim) that change vectors; subclasses extend."""
        return {}

    def encode_queries(
        self,
        queries: Sequence[str],
        *,
        batch_size: int | None = None,
        show_progress_bar: bool | None = None,
    ) -> list[torch.Tensor]:
        """Encode query texts.

        Returns:
            One float32, L2-normalised ``[n_i, dim]`` tensor per query, in input order.
        """
        texts = validate_texts(queries, "queries")
        return self._run(
            texts,
            self._encode_query_batch,
            [len(t) for t in texts],
            batch_size,
            show_progress_bar,
            "Encoding queries",
        )

    def encode_documents(
        self,
        documents: Sequence[Any],
        *,
        batch_size: int | None = None,
        show_progress_bar: bool | None = None,
    ) -> list[torch.Tensor]:
        """Encode documents: texts for text encoders, PIL images or image paths for ColPali.

        Returns:
            One float32, L2-normalised ``[n_i, dim]`` tensor per document, in input order.
        """
        items: list[Any]
        if self.modality == "text":
            items = validate_texts(documents, "documents")
            lengths = [len(t) for t in items]
        else:
            items = load_images(documents, "documents")
            lengths = [im.width * im.height for im in items]
        return self._run(
            items,
            self._encode_document_batch,
            lengths,
            batch_size,
            show_progress_bar,
            "Encoding documents",
        )

    @abstractmethod
    def _encode_query_batch(self, queries: list[str]) -> list[torch.Tensor]:
        """Encode one batch of validated queries (called under ``inference_mode``)."""

    @abstractmethod
    def _encode_document_batch(self, documents: list[Any]) -> list[torch.Tensor]:
        """Encode one batch of validated documents (called under ``inference_mode``)."""

    # -- shared machinery ---------------------------------------------------------------------

    def _run(
        self,
        items: list[Any],
        fn: Callable[[list[Any]], list[torch.Tensor]],
        lengths: list[int],
        batch_size: int | None,
        show_progress_bar: bool | None,
        desc: str,
    ) -> list[torch.Tensor]:
        import torch

        size = batch_size or self.batch_size
        # Longest first: similar lengths share a batch (less padding), and an out-of-memory
        # error shows up on the first batch rather than the last.
        order = sorted(range(len(items)), key=lambda i: -lengths[i])
        starts = range(0, len(order), size)
        show = self._should_show_progress(show_progress_bar, len(starts))
        out: list[torch.Tensor | None] = [None] * len(items)
        progress = _progress(len(items), desc) if show else None
        try:
            with torch.inference_mode():
                for start in starts:
                    idx = order[start : start + size]
                    vectors = fn([items[i] for i in idx])
                    for i, v in zip(idx, vectors, strict=True):
                        out[i] = v.detach().to("cpu", torch.float32).contiguous()
                    if progress is not None:
                        progress.update(len(idx))
        finally:
            if progress is not None:
                progress.close()
        return [v for v in out if v is not None]

    def _should_show_progress(self, explicit: bool | None, n_batches: int) -> bool:
        if explicit is not None:
            return explicit
        if self.show_progress_bar is not None:
            return self.show_progress_bar
        return n_batches > 1 and logging.getLogger("latewise").getEffectiveLevel() <= logging.INFO

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.model_name_or_path!r}, dim={self.dim}, device={self.device!r})"


def _progress(total: int, desc: str) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="item")


def _resolve_dtype(dtype: torch.dtype | str | None) -> torch.dtype:
    import torch

    if dtype is None:
        return torch.float32
    if isinstance(dtype, str):
        resolved = getattr(torch, dtype.removeprefix("torch."), None)
        if not isinstance(resolved, torch.dtype):
            raise ValueError(f"unknown torch_dtype {dtype!r}; use e.g. 'float32' or 'bfloat16'")
        return resolved
    return dtype
