"""``ColBERTEncoder``: one L2-normalised vector per token, faithful to ColBERT and PyLate.

Three checkpoint layouts load:

- **colbert-ai** (Stanford ``HF_ColBERT``): encoder weights under ``bert.`` (or the model's base
  prefix) plus ``linear.weight``, settings in ``artifact.metadata``. Tokenisation is colbert-ai's
  own: the text is prefixed with ``". "``, tokenised to ``[CLS] . tokens [SEP]`` and the ``.``
  replaced by the marker (``query_token_id`` / ``doc_token_id``, e.g. ``[unused0]``); queries
  are padded to ``query_maxlen`` with ``[MASK]`` (query augmentation, attended to only when
  ``attend_to_mask_tokens``); document rows of punctuation (the first token of each
  ``string.punctuation`` symbol) and padding are dropped.
- **PyLate** (sentence-transformers files: ``modules.json``, ``1_Dense/``,
  ``config_sentence_transformers.json``): the text is tokenised to ``length - 1`` tokens, the
  prefix token (``query_prefix`` / ``document_prefix``, e.g. ``"[Q] "``) inserted after
  ``[CLS]``, queries padded with ``[MASK]`` when ``do_query_expansion``, the ``Dense`` modules
  applied to every token, and document tokens whose id is one of ``skiplist_words`` (looked up
  with ``convert_tokens_to_ids``, as PyLate does) dropped.
- **zero-shot**: any other BERT-family checkpoint: raw last hidden states, normalised, no
  projection and no marker tokens unless given; punctuation dropped from documents.

Every setting that changes vectors is in :attr:`fingerprint`.
"""

from __future__ import annotations

import logging
import string
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch

from latewise.encoders._checkpoint import read_tensors, resolve_checkpoint
from latewise.encoders._text import (
    TextBackbone,
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

__all__ = ["ColBERTEncoder", "Layout", "colbert_layout"]

Layout = Literal["colbert-ai", "pylate", "zero-shot"]

# colbert-ai's ColBERTConfig defaults, used when artifact.metadata lacks a value.
_COLBERT_AI_DEFAULTS: dict[str, Any] = {
    "query_token_id": "[unused0]",
    "doc_token_id": "[unused1]",
    "query_maxlen": 32,
    "doc_maxlen": 220,
    "mask_punctuation": True,
    "attend_to_mask_tokens": False,
}
# PyLate's defaults, used when config_sentence_transformers.json lacks a value.
_PYLATE_DEFAULTS: dict[str, Any] = {
    "query_prefix": "[Q] ",
    "document_prefix": "[D] ",
    "query_length": 32,
    "document_length": 180,
    "do_query_expansion": True,
    "attend_to_expansion_tokens": False,
}
_PYLATE_KEYS = {
    "query_prefix",
    "document_prefix",
    "query_length",
    "document_length",
    "do_query_expansion",
    "attend_to_expansion_tokens",
    "skiplist_words",
}


def colbert_layout(ckpt: Checkpoint) -> Layout | None:
    """Which ColBERT layout a checkpoint is in (``None``: not a ColBERT-trained checkpoint)."""
    architectures = ckpt.config.get("architectures") or []
    if ckpt.file("artifact.metadata") is not None or "HF_ColBERT" in architectures:
        return "colbert-ai"
    modules = read_modules(ckpt)
    kinds = [m.kind for m in modules or []]
    st_config = ckpt.json("config_sentence_transformers.json") or {}
    if ("dense" in kinds and "pooling" not in kinds) or _PYLATE_KEYS & set(st_config):
        return "pylate"
    return None


@dataclass(frozen=True)
class _Settings:
    layout: Layout
    query_marker: str | None
    doc_marker: str | None
    query_maxlen: int
    doc_maxlen: int
    do_query_expansion: bool
    attend_to_mask_tokens: bool
    skiplist: frozenset[int]


@dataclass
class _Batch:
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    keep: torch.Tensor  # rows returned to the caller


class ColBERTEncoder(Encoder):
    """Late-interaction text encoder: one vector per token (ColBERT, PyLate, or zero-shot BERT).

    Setup:
        ``pip install latewise`` (``latewise[minilm]`` adds an offline model for zero-shot use).

    Instantiate:
        >>> enc = ColBERTEncoder("answerdotai/answerai-colbert-small-v1")  # doctest: +SKIP
        >>> enc = ColBERTEncoder("./colbertv2.0", doc_maxlen=300)          # doctest: +SKIP
        >>> enc = ColBERTEncoder("minilm")            # zero-shot late interaction, doctest: +SKIP

    Encode:
        >>> Q = enc.encode_queries(["what is late interaction?"])          # doctest: +SKIP
        >>> D = enc.encode_documents(["ColBERT keeps one vector per token."])  # doctest: +SKIP
        >>> from latewise import maxsim; maxsim(Q, D)                      # doctest: +SKIP

    Args:
        model_name_or_path: a local folder, a hub id (from the local Hugging Face cache) or
            ``"minilm"``.
        query_maxlen: query length in tokens, markers included; with query expansion queries are
            padded to it with ``[MASK]``. ``None``: the checkpoint's value (zero-shot: the
            model's limit).
        doc_maxlen: document length in tokens, markers included (longer texts are truncated).
        attend_to_mask_tokens: let every token attend to the ``[MASK]`` expansion tokens.
        mask_punctuation: drop punctuation tokens from documents.
        query_token_id: the query marker token (e.g. ``"[unused0]"`` or ``"[Q] "``) or its id;
            ``""`` for none.
        doc_token_id: the document marker token or its id; ``""`` for none.
        do_query_expansion: pad queries with ``[MASK]`` to ``query_maxlen`` (ColBERT's query
            augmentation). ``None``: the checkpoint's value (ColBERT checkpoints: on; zero-shot:
            off).
        skiplist_words: the words whose tokens are dropped from documents (default:
            ``string.punctuation``).
        batch_size: texts per forward pass.
        show_progress_bar: see :class:`~latewise.encoders.base.Encoder`.
        device: ``None`` picks cuda, then mps, then cpu.
        torch_dtype: weight dtype (float32 by default).
        compute_dtype: autocast dtype for the forward passes (``"bfloat16"``: ~2x faster on
            CPUs with bf16 units and on GPUs); see :class:`~latewise.encoders.base.Encoder`.

    Raises:
        CheckpointError: the checkpoint cannot be read or its settings are inconsistent.
        MissingDependencyError: ``"minilm"`` without the ``minilm`` extra.
    """

    modality = "text"

    def __init__(
        self,
        model_name_or_path: str | Path,
        *,
        query_maxlen: int | None = None,
        doc_maxlen: int | None = None,
        attend_to_mask_tokens: bool | None = None,
        mask_punctuation: bool | None = None,
        query_token_id: str | int | None = None,
        doc_token_id: str | int | None = None,
        do_query_expansion: bool | None = None,
        skiplist_words: Sequence[str] | None = None,
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
        for name, value in (("query_maxlen", query_maxlen), ("doc_maxlen", doc_maxlen)):
            if value is not None and (not isinstance(value, int) or value < 4):
                raise ValueError(f"{name} must be an integer >= 4, got {value!r}")
        if isinstance(skiplist_words, str):
            raise TypeError("skiplist_words must be a list of words, not a single string")
        ckpt = resolve_checkpoint(model_name_or_path)
        self._model_id = ckpt.model_id
        self._checkpoint_digest = ckpt.digest
        layout: Layout = colbert_layout(ckpt) or "zero-shot"
        modules = read_modules(ckpt) if layout != "colbert-ai" else None
        what = f"ColBERTEncoder({ckpt.given!r})"
        self._backbone: TextBackbone = load_backbone(
            ckpt,
            folder=transformer_folder(ckpt, modules),
            dtype=self.torch_dtype,
            device=self.device,
            what=what,
        )
        self.tokenizer = self._backbone.tokenizer
        self._projection: list[torch.nn.Module] = _projection(ckpt, layout, modules, what)
        for layer in self._projection:
            layer.to(device=self.device, dtype=self.torch_dtype)
        self._dim = (
            int(getattr(self._projection[-1], "out_features", 0))
            if self._projection
            else self._backbone.hidden_size
        )
        knobs: dict[str, Any] = {
            "query_maxlen": query_maxlen,
            "doc_maxlen": doc_maxlen,
            "attend_to_mask_tokens": attend_to_mask_tokens,
            "mask_punctuation": mask_punctuation,
            "query_token_id": query_token_id,
            "doc_token_id": doc_token_id,
            "do_query_expansion": do_query_expansion,
            "skiplist_words": None if skiplist_words is None else list(skiplist_words),
        }
        self._s = self._resolve_settings(ckpt, layout, knobs, what)
        self._q_marker_id = self._marker_id(self._s.query_marker, what)
        self._d_marker_id = self._marker_id(self._s.doc_marker, what)
        mask_id = self.tokenizer.mask_token_id
        if self._s.do_query_expansion and mask_id is None:
            raise CheckpointError(
                f"{what}: query expansion needs a [MASK] token and this tokenizer has none; "
                "pass do_query_expansion=False"
            )
        pad_id = self.tokenizer.pad_token_id
        self._mask_id = int(mask_id) if mask_id is not None else None
        self._pad_id = int(pad_id) if pad_id is not None else int(mask_id or 0)
        logger.info(
            "ColBERTEncoder %s (%s): dim=%d query_maxlen=%d doc_maxlen=%d on %s",
            self.model_id,
            layout,
            self._dim,
            self._s.query_maxlen,
            self._s.doc_maxlen,
            self.device,
        )

    # -- settings -----------------------------------------------------------------------------

    def _resolve_settings(
        self, ckpt: Checkpoint, layout: Layout, knobs: dict[str, Any], what: str
    ) -> _Settings:
        limit = self._backbone.model_limit
        default_len = self._backbone.max_length

        def pick(name: str, stored: Any) -> Any:
            return knobs[name] if knobs[name] is not None else stored

        if layout == "colbert-ai":
            meta = ckpt.json("artifact.metadata") or {}
            if isinstance(meta.get("config"), dict):
                meta = meta["config"]
            stored = {k: meta.get(k, v) for k, v in _COLBERT_AI_DEFAULTS.items()}
            stored = {k: (_COLBERT_AI_DEFAULTS[k] if v is None else v) for k, v in stored.items()}
            meta_dim = meta.get("dim")
            if meta_dim is not None and int(meta_dim) != self._dim:
                raise CheckpointError(
                    f"{what}: artifact.metadata says dim={meta_dim} but linear.weight projects "
                    f"to {self._dim}"
                )
            query_marker = pick("query_token_id", stored["query_token_id"])
            doc_marker = pick("doc_token_id", stored["doc_token_id"])
            query_maxlen = int(pick("query_maxlen", stored["query_maxlen"]))
            doc_maxlen = int(pick("doc_maxlen", stored["doc_maxlen"]))
            expansion = bool(pick("do_query_expansion", True))
            attend = bool(pick("attend_to_mask_tokens", stored["attend_to_mask_tokens"]))
            mask_punct = bool(pick("mask_punctuation", stored["mask_punctuation"]))
        elif layout == "pylate":
            st = ckpt.json("config_sentence_transformers.json") or {}
            stored = {k: st.get(k, v) for k, v in _PYLATE_DEFAULTS.items()}
            stored = {k: (_PYLATE_DEFAULTS[k] if v is None else v) for k, v in stored.items()}
            query_marker = pick("query_token_id", stored["query_prefix"])
            doc_marker = pick("doc_token_id", stored["document_prefix"])
            query_maxlen = int(pick("query_maxlen", stored["query_length"]))
            doc_maxlen = int(pick("doc_maxlen", stored["document_length"]))
            expansion = bool(pick("do_query_expansion", stored["do_query_expansion"]))
            attend = bool(pick("attend_to_mask_tokens", stored["attend_to_expansion_tokens"]))
            mask_punct = bool(pick("mask_punctuation", True))
            if knobs["skiplist_words"] is None and st.get("skiplist_words") is not None:
                knobs["skiplist_words"] = [str(w) for w in st["skiplist_words"]]
        else:
            query_marker = pick("query_token_id", "")
            doc_marker = pick("doc_token_id", "")
            expansion = bool(pick("do_query_expansion", False))
            # Expanded queries are padded to query_maxlen: ColBERT's 32, not the model's limit.
            query_maxlen = int(pick("query_maxlen", 32 if expansion else default_len))
            doc_maxlen = int(pick("doc_maxlen", default_len))
            attend = bool(pick("attend_to_mask_tokens", False))
            mask_punct = bool(pick("mask_punctuation", True))
        if not expansion:
            if knobs["attend_to_mask_tokens"]:
                logger.warning(
                    "%s: attend_to_mask_tokens has no effect without query expansion", what
                )
            attend = False  # nothing to attend to (PyLate does the same)
        for name, value in (("query_maxlen", query_maxlen), ("doc_maxlen", doc_maxlen)):
            if value > limit:
                logger.warning(
                    "%s: %s=%d exceeds the model's limit of %d tokens; using %d",
                    what,
                    name,
                    value,
                    limit,
                    limit,
                )
        query_maxlen, doc_maxlen = min(query_maxlen, limit), min(doc_maxlen, limit)
        words = knobs["skiplist_words"]
        if words is None:
            words = list(string.punctuation)
        skiplist = frozenset(self._skiplist_ids(words, layout)) if mask_punct else frozenset()
        return _Settings(
            layout=layout,
            query_marker=self._marker_token(query_marker),
            doc_marker=self._marker_token(doc_marker),
            query_maxlen=query_maxlen,
            doc_maxlen=doc_maxlen,
            do_query_expansion=expansion,
            attend_to_mask_tokens=attend,
            skiplist=skiplist,
        )

    def _marker_token(self, marker: Any) -> str | None:
        if marker is None or marker == "" or marker is False:
            return None
        if isinstance(marker, int) and not isinstance(marker, bool):
            token = self.tokenizer.convert_ids_to_tokens(marker)
            if token is None:
                raise CheckpointError(f"marker token id {marker} is not in the vocabulary")
            return str(token)
        return str(marker)

    def _marker_id(self, marker: str | None, what: str) -> int | None:
        if marker is None:
            return None
        token_id = self.tokenizer.convert_tokens_to_ids(marker)
        unk = self.tokenizer.unk_token_id
        if token_id is None or (token_id == unk and marker != self.tokenizer.unk_token):
            raise CheckpointError(
                f"{what}: the marker token {marker!r} is not in the tokenizer's vocabulary; save "
                "the tokenizer with it (PyLate adds its prefixes with tokenizer.add_tokens) or "
                'pass query_token_id / doc_token_id naming a token that exists ("" for none)'
            )
        return int(token_id)

    def _skiplist_ids(self, words: list[str], layout: Layout) -> list[int]:
        if layout == "pylate":
            # PyLate: convert_tokens_to_ids(word) for each word (an unknown word maps to [UNK]).
            return [int(i) for i in self.tokenizer.convert_tokens_to_ids(words) if i is not None]
        # colbert-ai: the first token id of each symbol, tokenised without special tokens.
        ids: list[int] = []
        for word in words:
            encoded = self.tokenizer.encode(word, add_special_tokens=False)
            if encoded:
                ids.append(int(encoded[0]))
        return ids

    # -- contract -----------------------------------------------------------------------------

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def layout(self) -> Layout:
        """The checkpoint layout in use: ``"colbert-ai"``, ``"pylate"`` or ``"zero-shot"``."""
        return self._s.layout

    @property
    def query_maxlen(self) -> int:
        return self._s.query_maxlen

    @property
    def doc_maxlen(self) -> int:
        return self._s.doc_maxlen

    @property
    def attend_to_mask_tokens(self) -> bool:
        return self._s.attend_to_mask_tokens

    @property
    def do_query_expansion(self) -> bool:
        return self._s.do_query_expansion

    @property
    def mask_punctuation(self) -> bool:
        return bool(self._s.skiplist)

    @property
    def max_document_tokens(self) -> int:
        special = int(self.tokenizer.num_special_tokens_to_add(pair=False))
        marker = 1 if self._d_marker_id is not None else 0
        return max(self._s.doc_maxlen - special - marker, 1)

    def _settings(self) -> dict[str, Any]:
        s = self._s
        return {
            "layout": s.layout,
            "query_marker": s.query_marker,
            "doc_marker": s.doc_marker,
            "query_maxlen": s.query_maxlen,
            "doc_maxlen": s.doc_maxlen,
            "do_query_expansion": s.do_query_expansion,
            "attend_to_mask_tokens": s.attend_to_mask_tokens,
            "skiplist": sorted(s.skiplist),
            "lowercase": self._backbone.do_lower_case and s.layout != "colbert-ai",
        }

    def document_tokens(self, documents: Sequence[Any]) -> list[list[str]]:
        """The token string of every row ``encode_documents`` returns, per document."""
        texts = validate_texts(documents, "documents")
        return self._tokens(self._tokenize(texts, query=False))

    def query_tokens(self, queries: Sequence[str]) -> list[list[str]]:
        """The token string of every row ``encode_queries`` returns, per query (``[MASK]`` for
        expansion rows)."""
        texts = validate_texts(queries, "queries")
        return self._tokens(self._tokenize(texts, query=True))

    def _encode_query_batch(self, queries: list[str]) -> list[torch.Tensor]:
        return self._encode(self._tokenize(queries, query=True))

    def _encode_document_batch(self, documents: list[str]) -> list[torch.Tensor]:
        return self._encode(self._tokenize(documents, query=False))

    # -- tokenisation -------------------------------------------------------------------------

    def _tokenize(self, texts: list[str], *, query: bool) -> _Batch:
        s = self._s
        maxlen = s.query_maxlen if query else s.doc_maxlen
        marker = self._q_marker_id if query else self._d_marker_id
        if s.layout == "colbert-ai" and marker is not None:
            # colbert-ai: ". " placeholder, tokenised with special tokens, then replaced.
            enc = self.tokenizer(
                [". " + t for t in texts],
                add_special_tokens=True,
                truncation=True,
                max_length=maxlen,
                return_attention_mask=False,
            )["input_ids"]
            rows = [list(ids) for ids in enc]
            for ids in rows:
                ids[1] = marker
        else:
            # PyLate: tokenise to maxlen - 1 (when a prefix is used), insert it after [CLS].
            prepared = texts if s.layout == "colbert-ai" else self._backbone.prepare(texts)
            budget = maxlen - 1 if marker is not None else maxlen
            enc = self.tokenizer(
                prepared,
                add_special_tokens=True,
                truncation="longest_first",
                max_length=budget,
                return_attention_mask=False,
            )["input_ids"]
            rows = [list(ids) for ids in enc]
            if marker is not None:
                rows = [[*ids[:1], marker, *ids[1:]] for ids in rows]
        expand = query and s.do_query_expansion
        width = maxlen if expand else max(len(r) for r in rows)
        fill = self._mask_id if expand and self._mask_id is not None else self._pad_id
        n = len(rows)
        input_ids = torch.full((n, width), fill, dtype=torch.long)
        attention = torch.zeros((n, width), dtype=torch.long)
        for i, ids in enumerate(rows):
            input_ids[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            attention[i, : len(ids)] = 1
        if expand and s.attend_to_mask_tokens:
            attention.fill_(1)
        if query:
            keep = torch.ones_like(attention, dtype=torch.bool) if expand else attention.bool()
        else:
            keep = attention.bool()
            if s.layout == "colbert-ai":
                # colbert-ai drops padding by id, not by attention mask.
                keep = input_ids != self._pad_id
            if s.skiplist:
                skip = torch.tensor(sorted(s.skiplist), dtype=torch.long)
                keep = keep & ~torch.isin(input_ids, skip)
        return _Batch(input_ids=input_ids, attention_mask=attention, keep=keep)

    def _tokens(self, batch: _Batch) -> list[list[str]]:
        out: list[list[str]] = []
        for ids, keep in zip(batch.input_ids.tolist(), batch.keep.tolist(), strict=True):
            kept = [i for i, k in zip(ids, keep, strict=True) if k]
            out.append([str(t) for t in self.tokenizer.convert_ids_to_tokens(kept)])
        return out

    # -- model --------------------------------------------------------------------------------

    def _encode(self, batch: _Batch) -> list[torch.Tensor]:
        hidden = self._backbone.forward(
            {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask}
        )
        for layer in self._projection:
            hidden = layer(hidden)
        keep = batch.keep.to(hidden.device)
        vectors = torch.nn.functional.normalize(hidden.float(), p=2, dim=-1)
        return [v[k] for v, k in zip(vectors, keep, strict=True)]


def _projection(
    ckpt: Checkpoint, layout: Layout, modules: list[ModuleEntry] | None, what: str
) -> list[torch.nn.Module]:
    """The token-level projection: colbert-ai's ``linear``, PyLate's Dense modules, or none."""
    if layout == "colbert-ai":
        weight = read_tensors(ckpt.path, {"linear.weight"}, what)["linear.weight"]
        if weight.dim() != 2:
            raise CheckpointError(f"{what}: linear.weight must be 2-D, got {tuple(weight.shape)}")
        linear = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=False)
        with torch.no_grad():
            linear.weight.copy_(weight.float())
        return [linear.eval()]
    if layout == "pylate":
        layers: list[torch.nn.Module] = []
        for entry in modules or []:
            if entry.kind == "dense":
                layers.append(load_dense(ckpt, entry))
            elif entry.kind == "pooling":
                raise CheckpointError(
                    f"{what}: a PyLate checkpoint must not pool tokens (modules.json has "
                    f"{entry.type})"
                )
        if not layers:
            logger.warning("%s: PyLate settings but no Dense module; using raw hidden states", what)
        return layers
    return []
