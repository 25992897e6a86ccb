"""The ``Encoder`` contract: each input becomes a ``[n_vectors, dim]`` matrix of L2-normalised
float32 vectors (BERT: one row; ColBERT: one per kept token; ColPali: one per patch and token).

The base class owns input validation (positions named in errors), length-sorted batching,
progress bars, ``torch.inference_mode``, autocast, device choice and the input order; subclasses
implement ``_encode_query_batch`` / ``_encode_document_batch``.
"""

from __future__ import annotations

import contextlib
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypedDict

from latewise.errors import (
    EmptyInputError,
    ImageLoadError,
    InvalidInputTypeError,
    QueryRuntimeError,
    check_positive,
)

if TYPE_CHECKING:
    import torch
    from PIL.Image import Image

logger = logging.getLogger(__name__)

__all__ = [
    "Encoder",
    "EncoderOptions",
    "Modality",
    "check_images",
    "decode_image",
    "load_images",
    "resolve_device",
    "validate_texts",
]

Modality = Literal["text", "image"]


class EncoderOptions(TypedDict, total=False):
    """The keyword arguments every encoder takes (see :class:`Encoder`)."""

    batch_size: int
    show_progress_bar: bool | None
    device: str | None
    torch_dtype: torch.dtype | str | None
    compute_dtype: torch.dtype | str | None


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
    """Check a non-empty list or tuple of non-blank strings (``what`` names it in messages).

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


def check_images(images: object, what: str = "documents") -> list[tuple[Image | Path, int]]:
    """Validate PIL images and/or image paths: each path's header is read and verified up front,
    its pixels decoded later, a batch at a time, by :func:`decode_image`.

    Returns:
        ``(item, pixels)`` per input: the RGB image or the path, and its width times height.

    Raises:
        InvalidInputTypeError: not a list, or items that are neither images nor paths.
        EmptyInputError: an empty batch.
        ImageLoadError: paths that do not exist or cannot be read (all of them are named).
    """
    from PIL import Image as PILImage

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
    out: list[tuple[Image | Path, int]] = []
    bad: list[tuple[int, str]] = []
    for i, item in enumerate(images):
        if isinstance(item, PILImage.Image):
            rgb = item.convert("RGB") if item.mode != "RGB" else item
            out.append((rgb, rgb.width * rgb.height))
            continue
        path = Path(item)
        if not path.is_file():
            bad.append((i, f"{str(path)!r} does not exist"))
            continue
        try:
            with PILImage.open(path) as im:
                width, height = im.size
                im.verify()
            out.append((path, width * height))
        except Exception as exc:  # PIL raises many types for damaged files
            bad.append((i, f"{str(path)!r} is not a readable image ({exc.__class__.__name__})"))
    if bad:
        details = "; ".join(f"position {i}: {why}" for i, why in bad[:10])
        raise ImageLoadError(f"cannot load {len(bad)} image(s): {details}", [i for i, _ in bad])
    return out


def decode_image(item: Image | Path, position: int) -> Image:
    """The RGB pixels of an item :func:`check_images` accepted (``position`` for errors)."""
    from PIL import Image as PILImage

    if isinstance(item, PILImage.Image):
        return item
    try:
        with PILImage.open(item) as im:
            im.load()
            rgb: Image = im.convert("RGB")
            return rgb
    except Exception as exc:  # changed or truncated since it was checked
        raise ImageLoadError(
            f"cannot load 1 image(s): position {position}: {str(item)!r} is not a readable "
            f"image ({exc.__class__.__name__})",
            [position],
        ) from exc


def load_images(images: object, what: str = "documents") -> list[Image]:
    """Turn a batch of PIL images and/or image paths into RGB PIL images.

    Raises:
        InvalidInputTypeError: not a list, or items that are neither images nor paths.
        EmptyInputError: an empty batch.
        ImageLoadError: paths that do not exist or cannot be decoded (all of them are named).
    """
    return [decode_image(item, i) for i, (item, _) in enumerate(check_images(images, what))]


class Encoder(ABC):
    """Base class of every latewise encoder.

    Args:
        model_name_or_path: a hub id or a local checkpoint folder.
        batch_size: how many inputs go through the model at once.
        show_progress_bar: ``None`` shows a tqdm bar when the ``latewise`` logger is at INFO or
            lower and there is more than one batch.
        device: ``"cpu"``, ``"cuda:1"``, ``"mps"``...; ``None`` picks cuda, then mps, then cpu.
        torch_dtype: the dtype of the model weights (float32 by default); outputs are float32.
        compute_dtype: ``"bfloat16"`` / ``"float16"`` runs the forward passes under
            ``torch.autocast`` (weights stay in ``torch_dtype``): faster on GPUs and CPUs with
            bf16 units (AMX, AVX512-BF16), vectors within ~1e-2 of float32.
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
        compute_dtype: torch.dtype | str | None = None,
    ) -> None:
        check_positive("batch_size", batch_size)
        self.model_name_or_path = str(model_name_or_path)
        self.batch_size = batch_size
        self.show_progress_bar = show_progress_bar
        self.device = resolve_device(device)
        self.torch_dtype = _resolve_dtype(torch_dtype)
        self.compute_dtype = _resolve_compute_dtype(compute_dtype, self.torch_dtype)
        # Set by subclasses once the checkpoint is resolved (see ``fingerprint``).
        self._model_id: str | None = None
        self._checkpoint_digest: str | None = None
        # The arguments that decide the vectors, as given (see ``options``); subclasses add theirs.
        self._options: dict[str, Any] = {
            name: str(value).removeprefix("torch.")
            for name, value in (("torch_dtype", torch_dtype), ("compute_dtype", compute_dtype))
            if value is not None
        }

    # -- the contract -------------------------------------------------------------------------

    @property
    @abstractmethod
    def dim(self) -> int:
        """The dimension of every output vector."""

    @property
    def model_id(self) -> str:
        """The hub id, else the checkpoint folder's name (never an absolute path)."""
        return self._model_id if self._model_id is not None else self.model_name_or_path

    @property
    def options(self) -> dict[str, Any]:
        """The constructor arguments besides the model that decide the vectors (dtypes, backend,
        lengths, markers...), as given and as plain JSON values:
        ``type(enc)(enc.model_name_or_path, **enc.options)`` builds an encoder with the same
        fingerprint. A collection records them, so it reopens with the encoder that wrote it."""
        return dict(self._options)

    @property
    def fingerprint(self) -> dict[str, Any]:
        """Everything that changes the vectors (class, model, weights digest, dim, dtypes,
        settings), as plain JSON values. The index refuses a collection whose differs."""
        info: dict[str, Any] = {
            "encoder": type(self).__name__,
            "model": self.model_id,
            "checkpoint": self._checkpoint_digest,
            "dim": self.dim,
            "torch_dtype": str(self.torch_dtype).removeprefix("torch."),
            "compute_dtype": (
                None
                if self.compute_dtype is None
                else str(self.compute_dtype).removeprefix("torch.")
            ),
        }
        info.update(self._settings())
        if "quantize" in self._options:  # each runtime quantises in its own way
            info.update(quantize=self._options["quantize"], backend=self._options["backend"])
        return info

    @property
    def max_document_tokens(self) -> int | None:
        """How many text tokens of a document (``tokenizer``, no special or marker tokens) the
        encoder reads, so chunkers cut to it; ``None``: no limit or not a text encoder."""
        return None

    @property
    def max_query_tokens(self) -> int | None:
        """How many text tokens of a query (no special or marker tokens) the encoder reads;
        ``None``: no limit known. Longer queries are cut, with a warning."""
        return None

    def _warn_long_queries(self, texts: Sequence[str]) -> None:
        """Log once per call how many query tokens the model's query length drops."""
        limit = self.max_query_tokens
        counts = None if limit is None else self._token_counts(texts)
        long = [(i, n) for i, n in enumerate(counts or ()) if limit is not None and n > limit]
        if long:
            dropped = sum(n - limit for _, n in long if limit is not None)
            logger.warning(
                "%d of %d queries are longer than the model's query length (%d tokens): %d "
                "tokens were dropped (query %d has %d tokens); the model reads only the first %d",
                *(len(long), len(texts), limit, dropped, long[0][0], long[0][1], limit),
            )

    def _text_budget(self, length: int, prefix: str) -> int:
        """Tokens of text that fit in ``length`` beside the special tokens and ``prefix``."""
        special = int(self.tokenizer.num_special_tokens_to_add(pair=False))
        used = len(self.tokenizer(prefix, add_special_tokens=False)["input_ids"]) if prefix else 0
        return max(length - special - used, 1)

    def _token_counts(self, texts: Sequence[str]) -> list[int] | None:
        """Text tokens per text (no special tokens) with a fast tokenizer; ``None`` without."""
        tokenizer = self.tokenizer
        if tokenizer is None or not getattr(tokenizer, "is_fast", False):
            return None
        try:
            ids = tokenizer(
                list(texts), add_special_tokens=False, return_attention_mask=False, verbose=False
            )
            return [len(x) for x in ids["input_ids"]]
        except Exception:  # an exotic tokenizer: no counts
            logger.debug("token counting failed", exc_info=True)
            return None

    def export_query_runtime(self) -> Path:
        """Write this encoder's torch-free query side (an ONNX graph, ``tokenizer.json`` and
        ``query.json``, which :class:`~latewise.encoders.query.QueryRuntime` runs) into the
        latewise cache, once per fingerprint; ``latewise index`` and ``latewise search`` call it.

        Returns:
            The folder (:func:`~latewise.encoders.query.runtime_dir` of the fingerprint).

        Raises:
            QueryRuntimeError: this encoder has no such runtime (image encoders; text
                encoders on another backend or with ``compute_dtype``).
            CheckpointError: the export failed.
        """
        spec = self._query_runtime_settings()
        if spec is None:
            raise QueryRuntimeError(
                f"{type(self).__name__} has no torch-free query runtime (text encoders on the "
                "torch backend have one)"
            )
        from latewise.encoders._st import export_query

        return export_query(self, *spec)

    def _query_runtime_settings(self) -> tuple[dict[str, Any], str | None] | None:
        """What :meth:`export_query_runtime` records beside the graph, and the pipeline's task;
        ``None``: no query runtime."""
        return None

    @abstractmethod
    def document_tokens(self, documents: Sequence[Any]) -> list[list[str]]:
        """A label for every row ``encode_documents`` returns, per document: token strings, or
        ``"patch r,c"`` for image patches."""

    def _settings(self) -> dict[str, Any]:
        """Settings (beyond model and dim) that change vectors; subclasses extend."""
        return {}

    def query_tokens(self, queries: Sequence[str]) -> list[list[str]]:
        """A label for every row ``encode_queries`` returns, per query (here: row numbers)."""
        return [[f"vector {i}" for i in range(v.shape[0])] for v in self.encode_queries(queries)]

    def encode_queries(
        self,
        queries: Sequence[str],
        *,
        batch_size: int | None = None,
        show_progress_bar: bool | None = None,
    ) -> list[torch.Tensor]:
        """One float32, L2-normalised ``[n_i, dim]`` tensor per query text, in input order."""
        texts = validate_texts(queries, "queries")
        self._warn_long_queries(texts)
        lengths = self._text_lengths(texts)
        fn = self._encode_query_batch
        return self._run(texts, fn, lengths, batch_size, show_progress_bar, "Encoding queries")

    def encode_documents(
        self,
        documents: Sequence[Any],
        *,
        batch_size: int | None = None,
        show_progress_bar: bool | None = None,
    ) -> list[torch.Tensor]:
        """One float32, L2-normalised ``[n_i, dim]`` tensor per document (texts; PIL images or
        image paths for ColPali), in input order."""
        items: list[Any]
        fn: Callable[[list[Any]], list[torch.Tensor]] = self._encode_document_batch
        if self.modality == "text":
            items = validate_texts(documents, "documents")
            lengths = self._text_lengths(items)
        else:
            checked = check_images(documents, "documents")
            items = [(i, item) for i, (item, _) in enumerate(checked)]
            lengths = [pixels for _, pixels in checked]
            fn = lambda batch: self._encode_document_batch(  # noqa: E731
                [decode_image(item, i) for i, item in batch]
            )
        return self._run(items, fn, lengths, batch_size, show_progress_bar, "Encoding documents")

    @abstractmethod
    def _encode_query_batch(self, queries: list[str]) -> list[torch.Tensor]:
        """Encode one batch of validated queries (called under ``inference_mode``)."""

    @abstractmethod
    def _encode_document_batch(self, documents: list[Any]) -> list[torch.Tensor]:
        """Encode one batch of validated documents (called under ``inference_mode``)."""

    # -- shared machinery ---------------------------------------------------------------------

    def _text_lengths(self, texts: list[str]) -> list[int]:
        """Sort keys for batching: token counts with a fast tokenizer (~95% fill against ~78%
        sorting by characters), else character counts."""
        counts = self._token_counts(texts) if len(texts) > 1 else None
        return counts if counts is not None else [len(t) for t in texts]

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
        autocast: Any = contextlib.nullcontext()
        if self.compute_dtype is not None:
            autocast = torch.autocast(torch.device(self.device).type, dtype=self.compute_dtype)
        try:
            with torch.inference_mode(), autocast:
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
        name = type(self).__name__
        return f"{name}({self.model_name_or_path!r}, dim={self.dim}, device={self.device!r})"


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


def _resolve_compute_dtype(
    dtype: torch.dtype | str | None, weights: torch.dtype
) -> torch.dtype | None:
    import torch

    if dtype is None:
        return None
    resolved = _resolve_dtype(dtype)
    if resolved == weights:
        return None  # autocast to the weights' own dtype changes nothing
    if resolved not in (torch.bfloat16, torch.float16):
        raise ValueError(f"compute_dtype must be 'bfloat16', 'float16' or None, got {dtype!r}")
    return resolved
