"""``load_encoder``: pick BertEncoder, ColBERTEncoder or ColPaliEncoder from a checkpoint."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

from latewise.encoders._checkpoint import MINILM_HUB_ID, SHORT_NAMES, Checkpoint, resolve_checkpoint
from latewise.encoders.base import Encoder
from latewise.errors import CheckpointError

logger = logging.getLogger(__name__)

__all__ = ["EncoderKind", "detect_kind", "load_encoder"]

EncoderKind = Literal["bert", "colbert", "colpali"]
_KINDS: tuple[str, ...] = ("bert", "colbert", "colpali")
_TEXT_MODEL_TYPES = {"bert", "distilbert", "roberta", "xlm-roberta", "camembert", "electra"}
_TEXT_MODEL_TYPES |= {"deberta", "deberta-v2", "mpnet", "albert", "modernbert", "nomic_bert"}
_TEXT_MODEL_TYPES |= {"ernie", "xlm"}


def detect_kind(ckpt: Checkpoint) -> tuple[EncoderKind, str]:
    """Which encoder a checkpoint wants, and why (see :func:`load_encoder`).

    Raises:
        CheckpointError: none fits; the message names the classes to use instead.
    """
    from latewise.encoders.colbert import colbert_layout
    from latewise.encoders.colpali import colpali_family

    layout = colbert_layout(ckpt)
    if layout is not None:
        return "colbert", f"{layout} ColBERT files"
    family = colpali_family(ckpt)
    if family is not None:
        return "colpali", f"{family} checkpoint"
    from latewise.encoders._st import module_kinds

    if "pooling" in (module_kinds(ckpt) or []):
        return "bert", "sentence-transformers checkpoint with a Pooling module"
    model_type = str(ckpt.config.get("model_type") or "")
    if model_type in _TEXT_MODEL_TYPES:
        return "bert", f"plain {model_type} checkpoint"
    raise CheckpointError(
        f"cannot tell which encoder fits {ckpt.given!r}: no artifact.metadata or PyLate files "
        f"(ColBERT), no ColPali-family config or adapter, no sentence-transformers Pooling and "
        f"model_type {model_type or 'missing'!r} is not a known text encoder. Construct the "
        "class yourself: BertEncoder(path) for one vector per text, ColBERTEncoder(path) for "
        "token-level late interaction, ColPaliEncoder(path, family=...) for page images; or pass "
        "kind='bert' | 'colbert' | 'colpali' to load_encoder"
    )


def load_encoder(
    name_or_path: str | Path,
    *,
    kind: EncoderKind | None = None,
    **kwargs: Any,
) -> Encoder:
    """Load the right encoder for a checkpoint, told from its files.

    - colbert-ai (``artifact.metadata``, ``HF_ColBERT``), PyLate or sentence-transformers
      ``MultiVectorEncoder`` saves: :class:`ColBERTEncoder`;
    - a colpali-engine config or PEFT adapter, or a transformers ``*ForRetrieval`` model
      (``ColPaliForRetrieval``, ``ColQwen2ForRetrieval``...): :class:`ColPaliEncoder`;
    - a sentence-transformers checkpoint with Pooling, or a plain BERT-family checkpoint:
      :class:`BertEncoder` (``kind="colbert"`` for zero-shot late interaction instead);
    - ``"minilm"`` (all-MiniLM-L6-v2, ``latewise[minilm]``): a zero-shot :class:`ColBERTEncoder`.

    Args:
        name_or_path: a local folder, a hub id in the local Hugging Face cache, or ``"minilm"``.
        kind: ``"bert"``, ``"colbert"`` or ``"colpali"`` to choose the class instead.
        **kwargs: passed to the encoder's constructor (``batch_size``, ``device``,
            ``backend``, ``doc_maxlen``...). The backend is ``"torch"`` unless given.

    Example:
        >>> enc = load_encoder("minilm")                        # doctest: +SKIP
        >>> enc = load_encoder("./colbertv2.0", doc_maxlen=300)  # doctest: +SKIP

    Raises:
        CheckpointError: the kind cannot be told (the message names the classes to use).
        MissingDependencyError: an optional package the encoder needs is missing.
    """
    if kind is not None and kind not in _KINDS:
        raise ValueError(f"kind must be one of {', '.join(_KINDS)} or None; got {kind!r}")
    ckpt = resolve_checkpoint(name_or_path)
    if kind is None:
        if ckpt.model_id == MINILM_HUB_ID and str(name_or_path).strip().lower() in SHORT_NAMES:
            kind, why = "colbert", "the 'minilm' short name (zero-shot late interaction)"
        else:
            kind, why = detect_kind(ckpt)
        logger.info("load_encoder(%r): %s -> %s", str(name_or_path), why, kind)
    if kind == "colpali" and {"backend", "quantize"} & set(kwargs):
        raise ValueError(
            f"{ckpt.given!r} is a ColPali checkpoint: backend= and quantize= apply to text "
            "encoders only (ColPali runs on torch)"
        )
    from latewise import encoders

    cls = {"bert": "BertEncoder", "colbert": "ColBERTEncoder", "colpali": "ColPaliEncoder"}[kind]
    encoder: Encoder = getattr(encoders, cls)(name_or_path, **kwargs)
    return encoder
