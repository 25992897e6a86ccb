"""What the BERT and ColBERT encoders share: the transformer backbone, its tokenizer, and the
sentence-transformers / PyLate module files (``modules.json``, ``Dense`` folders).

Only imported by ``bert.py`` and ``colbert.py`` (which import torch/transformers lazily through it).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from latewise.encoders._checkpoint import (
    Checkpoint,
    dtype_kwargs,
    from_pretrained_quietly,
    load_weights,
)
from latewise.errors import CheckpointError

logger = logging.getLogger(__name__)

__all__ = [
    "DenseLayer",
    "ModuleEntry",
    "TextBackbone",
    "load_backbone",
    "load_dense",
    "read_modules",
]


@dataclass(frozen=True)
class ModuleEntry:
    """One line of a sentence-transformers ``modules.json``.

    Attributes:
        kind: ``"transformer"``, ``"pooling"``, ``"dense"``, ``"normalize"`` or ``"other"``.
        path: the module's folder relative to the checkpoint ("" for the root).
        type: the full class path as written in the file.
    """

    kind: str
    path: str
    type: str


def read_modules(ckpt: Checkpoint) -> list[ModuleEntry] | None:
    """Parse ``modules.json`` (``None`` when the checkpoint is not a sentence-transformers one)."""
    path = ckpt.file("modules.json")
    if path is None:
        return None
    import json

    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"modules.json of {ckpt.given!r} is not valid JSON: {exc}") from exc
    if not isinstance(raw, list):
        raise CheckpointError(f"modules.json of {ckpt.given!r} must be a list of modules")
    entries: list[ModuleEntry] = []
    for item in sorted(raw, key=lambda m: int(m.get("idx", 0)) if isinstance(m, dict) else 0):
        if not isinstance(item, dict) or "type" not in item:
            raise CheckpointError(f"modules.json of {ckpt.given!r} has a malformed entry: {item!r}")
        type_name = str(item["type"])
        short = type_name.rsplit(".", 1)[-1].lower()
        kind = short if short in {"transformer", "pooling", "dense", "normalize"} else "other"
        entries.append(ModuleEntry(kind, str(item.get("path", "")), type_name))
    return entries


class DenseLayer(torch.nn.Module):
    """A sentence-transformers / PyLate ``Dense`` module: ``activation(linear(x)) [+ residual]``."""

    def __init__(
        self,
        linear: torch.nn.Linear,
        activation: torch.nn.Module,
        residual: torch.nn.Module | None,
    ) -> None:
        super().__init__()
        self.linear = linear
        self.activation = activation
        self.residual = residual

    @property
    def out_features(self) -> int:
        return int(self.linear.out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.activation(self.linear(x))
        if self.residual is not None:
            out = out + self.residual(x)
        return out


def _activation(name: str | None, where: str, default: type[torch.nn.Module]) -> torch.nn.Module:
    """Resolve an activation class path without importing arbitrary code."""
    if name is None:
        return default()
    short = name.rsplit(".", 1)[-1]
    cls = getattr(torch.nn, short, None)
    if not name.startswith("torch.") or not (
        isinstance(cls, type) and issubclass(cls, torch.nn.Module)
    ):
        raise CheckpointError(
            f"{where}: unsupported activation_function {name!r}; only torch.nn activations are "
            "loaded (latewise never imports code named by a checkpoint)"
        )
    module: torch.nn.Module = cls()
    return module


def load_dense(ckpt: Checkpoint, entry: ModuleEntry) -> DenseLayer:
    """Load a ``Dense`` module folder (``config.json`` + weights). Without an
    ``activation_function`` in its config, a sentence-transformers Dense uses tanh and a PyLate
    Dense the identity (their classes' defaults).

    Raises:
        CheckpointError: missing or inconsistent config / weights.
    """
    rel = entry.path
    where = f"{ckpt.given!r} module {rel!r}"
    config = ckpt.json(rel, "config.json")
    if config is None:
        raise CheckpointError(f"{where}: missing {rel}/config.json")
    try:
        in_features = int(config["in_features"])
        out_features = int(config["out_features"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{where}: config.json lacks in_features/out_features") from exc
    bias = bool(config.get("bias", True))
    state = load_weights(ckpt.path / rel, where)
    linear = torch.nn.Linear(in_features, out_features, bias=bias)
    residual: torch.nn.Module | None = None
    if config.get("use_residual", False):
        residual = (
            torch.nn.Identity()
            if in_features == out_features
            else torch.nn.Linear(in_features, out_features, bias=False)
        )
    default = torch.nn.Identity if "pylate" in entry.type.lower() else torch.nn.Tanh
    activation = _activation(config.get("activation_function"), where, default)
    module = DenseLayer(linear, activation, residual)
    wanted = {k for k, _ in module.state_dict().items()}
    missing = wanted - set(state)
    if missing:
        raise CheckpointError(f"{where}: weights missing: {sorted(missing)}")
    try:
        module.load_state_dict({k: state[k] for k in wanted})
    except RuntimeError as exc:
        raise CheckpointError(f"{where}: weights do not match config.json: {exc}") from exc
    return module.eval()


@dataclass
class TextBackbone:
    """A loaded transformer encoder with its tokenizer.

    Attributes:
        model: the transformers ``AutoModel`` (no head).
        tokenizer: its fast tokenizer.
        folder: where model and tokenizer were loaded from.
        max_length: the sequence length (special tokens included) to use by default: the
            sentence-transformers ``max_seq_length`` when given, else ``model_limit``.
        model_limit: the longest sequence the model can read (position embeddings, tokenizer).
        do_lower_case: lowercase inputs first (sentence-transformers' ``do_lower_case``).
    """

    model: Any
    tokenizer: Any
    folder: Path
    max_length: int
    model_limit: int
    do_lower_case: bool

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Last hidden states ``[batch, seq, hidden]`` of a tokenised batch (moved to the model)."""
        device = next(self.model.parameters()).device
        inputs = {k: v.to(device) for k, v in batch.items() if k in _MODEL_INPUTS}
        out = self.model(**inputs)
        hidden: torch.Tensor = out[0] if isinstance(out, tuple) else out.last_hidden_state
        return hidden

    def prepare(self, texts: list[str]) -> list[str]:
        """Apply sentence-transformers' text clean-up (strip, optional lowercase)."""
        texts = [t.strip() for t in texts]
        return [t.lower() for t in texts] if self.do_lower_case else texts


_MODEL_INPUTS = {"input_ids", "attention_mask", "token_type_ids"}


def transformer_folder(ckpt: Checkpoint, modules: list[ModuleEntry] | None) -> Path:
    """The folder of the Transformer module (the root for most checkpoints)."""
    if modules:
        for entry in modules:
            if entry.kind == "transformer":
                return ckpt.path / entry.path
    return ckpt.path


def load_backbone(
    ckpt: Checkpoint,
    *,
    folder: Path,
    dtype: torch.dtype,
    device: str,
    what: str,
    state_dict: dict[str, torch.Tensor] | None = None,
) -> TextBackbone:
    """Load a transformer encoder (``AutoModel``, no pooler) and its tokenizer from ``folder``.

    Args:
        ckpt: the checkpoint (for messages and sentence-transformers settings).
        folder: where ``config.json``, weights and tokenizer are.
        dtype: weight dtype.
        device: where to put the model.
        what: the encoder's name, for messages.
        state_dict: weights to use instead of the folder's files (already stripped of any
            prefix such as ``bert.``).

    Raises:
        CheckpointError: unloadable config, weights or tokenizer.
    """
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    try:
        config = AutoConfig.from_pretrained(str(folder))
    except Exception as exc:
        raise CheckpointError(f"{what}: cannot read config.json in {folder}: {exc}") from exc
    try:
        mapped: Any = AutoModel._model_mapping[type(config)]
    except KeyError as exc:
        raise CheckpointError(
            f"{what}: {config.model_type!r} models have no transformers AutoModel class"
        ) from exc
    candidates = mapped if isinstance(mapped, tuple | list) else (mapped,)
    model_class: Any = next(c for c in candidates if c is not None)
    kwargs: dict[str, Any] = dtype_kwargs(dtype)
    import inspect

    if "add_pooling_layer" in inspect.signature(model_class).parameters:
        kwargs["add_pooling_layer"] = False  # the pooler is never used
    if state_dict is not None:
        kwargs["state_dict"] = state_dict
    model = from_pretrained_quietly(model_class, folder, what, config=config, **kwargs)
    model.to(device)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
    except Exception as exc:
        raise CheckpointError(f"{what}: cannot load the tokenizer in {folder}: {exc}") from exc
    if not getattr(tokenizer, "is_fast", False):
        logger.warning("%s: %s is a slow tokenizer; encoding will be slower", what, folder)

    st = ckpt.json("sentence_bert_config.json") or {}
    if folder != ckpt.path and (folder / "sentence_bert_config.json").is_file():
        st = ckpt.json(folder.name, "sentence_bert_config.json") or st
    limit = int(getattr(config, "max_position_embeddings", 512) or 512)
    if getattr(config, "model_type", "") in {"roberta", "xlm-roberta", "camembert"}:
        limit -= 2  # RoBERTa reserves padding_idx + 1 positions
    tok_max = getattr(tokenizer, "model_max_length", None)
    if isinstance(tok_max, int) and 0 < tok_max < 100_000:
        limit = min(limit, tok_max)
    max_length = int(st.get("max_seq_length") or limit)
    max_length = min(max_length, limit)
    return TextBackbone(
        model=model,
        tokenizer=tokenizer,
        folder=folder,
        max_length=max_length,
        model_limit=limit,
        do_lower_case=bool(st.get("do_lower_case", False)),
    )
