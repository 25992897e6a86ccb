"""``ColBERTEncoder``: one L2-normalised vector per token, on sentence-transformers'
``MultiVectorEncoder``.

Layouts (:func:`colbert_layout`): ``colbert-ai`` (Stanford ``HF_ColBERT``: ``artifact.metadata``
and ``linear.weight``), ``pylate`` (PyLate saves), ``multi-vector-encoder`` (native
sentence-transformers 6 saves) and ``zero-shot`` (any other BERT-family encoder: raw last hidden
states, normalised). sentence-transformers tokenises (markers as prompts, ``[MASK]`` query
expansion), runs the model and masks rows. latewise resolves the settings, the checkpoint's unless
an argument overrides them, exactly as before, so vectors and fingerprints do not change; and it
keeps one rule of its own: PyLate looks skiplist words up with ``convert_tokens_to_ids``, so a word
that is not one token drops ``[UNK]`` rows, where sentence-transformers drops the word instead.
"""

from __future__ import annotations

import logging
import string
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

    from latewise.encoders._checkpoint import Checkpoint
    from latewise.encoders.base import EncoderOptions

logger = logging.getLogger(__name__)

__all__ = ["ColBERTEncoder", "Layout", "colbert_layout"]

Layout = Literal["colbert-ai", "pylate", "multi-vector-encoder", "zero-shot"]
_KNOBS = (
    "query_token_id",
    "doc_token_id",
    "query_maxlen",
    "doc_maxlen",
    "do_query_expansion",
    "attend_to_mask_tokens",
    "mask_punctuation",
    "skiplist_words",
)
# The document length of a legacy save that does not record one (colbert-ai's and PyLate's own
# defaults); sentence-transformers leaves it unset.
_DEFAULT_DOC_MAXLEN = {"colbert-ai": 220, "pylate": 180}
_PYLATE_KEYS = {"query_prefix", "document_prefix", "query_length", "document_length"}


def colbert_layout(ckpt: Checkpoint) -> Layout | None:
    """Which ColBERT layout a checkpoint is in (``None``: not a late-interaction checkpoint)."""
    if ckpt.file("artifact.metadata") is not None or "HF_ColBERT" in (
        ckpt.config.get("architectures") or []
    ):
        return "colbert-ai"
    st_config = ckpt.json("config_sentence_transformers.json") or {}
    if st_config.get("model_type") == "MultiVectorEncoder":
        return "multi-vector-encoder"
    kinds = _st.module_kinds(ckpt) or []
    if ("dense" in kinds and "pooling" not in kinds) or _PYLATE_KEYS & set(st_config):
        return "pylate"
    return None


class ColBERTEncoder(Encoder):
    """Late-interaction text encoder: one vector per token (ColBERT, PyLate, sentence-transformers
    ``MultiVectorEncoder`` saves, or zero-shot over any BERT).

    Setup:
        ``pip install latewise`` (``latewise[minilm]`` adds an offline model for zero-shot use;
        ``latewise[onnx]`` / ``latewise[openvino]`` the faster CPU backends).

    Instantiate:
        >>> enc = ColBERTEncoder("answerdotai/answerai-colbert-small-v1")  # doctest: +SKIP
        >>> enc = ColBERTEncoder("./colbertv2.0", doc_maxlen=300)          # doctest: +SKIP
        >>> enc = ColBERTEncoder("minilm", backend="onnx")                 # doctest: +SKIP

    Encode:
        >>> Q = enc.encode_queries(["what is late interaction?"])          # doctest: +SKIP
        >>> D = enc.encode_documents(["ColBERT keeps one vector per token."])  # doctest: +SKIP

    Args:
        model_name_or_path: a local folder, a hub id (from the local Hugging Face cache) or
            ``"minilm"``.
        query_maxlen: query length in tokens, markers included; with query expansion queries are
            padded to it with ``[MASK]``. ``None``: the checkpoint's value.
        doc_maxlen: document length in tokens, markers included (longer texts are truncated).
        attend_to_mask_tokens: let every token attend to the ``[MASK]`` expansion tokens.
        mask_punctuation: drop the skiplist's tokens (punctuation) from documents.
        query_token_id: the query marker token (``"[unused0]"``, ``"[Q] "``) or its id; ``""``
            for none.
        doc_token_id: the document marker token or its id; ``""`` for none.
        do_query_expansion: pad queries with ``[MASK]`` to ``query_maxlen``.
        skiplist_words: words whose tokens are dropped from documents (``string.punctuation``).
        backend: ``"torch"``, ``"onnx"`` (ONNX Runtime) or ``"openvino"``; the last two export the
            model once into ``$XDG_CACHE_HOME/latewise`` and run float32 on the CPU, vectors
            within ~1e-5 of torch's (the fingerprint does not change).
        quantize: ``"int8"`` (onnx / openvino only): ONNX Runtime's dynamic int8 (each text runs
            on its own, so its vectors never depend on its batch) or OpenVINO's int8 weights
            (about 2x the documents/s on CPUs with VNNI); the vectors change, and so does the
            fingerprint.
        batch_size, show_progress_bar, device, torch_dtype, compute_dtype: see
            :class:`~latewise.encoders.base.Encoder`.

    Raises:
        CheckpointError: the checkpoint cannot be read or its settings are inconsistent.
        MissingDependencyError: ``"minilm"`` without the ``minilm`` extra, or a backend's runtime.
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
        backend: _st.Backend = "torch",
        quantize: Literal["int8"] | None = None,
        **options: Unpack[EncoderOptions],
    ) -> None:
        if backend != "torch" and options.get("device") is None:
            options["device"] = "cpu"  # the exported backends run on the CPU
        super().__init__(model_name_or_path, **options)
        self._options.update(_st.check_backend(backend, quantize, self))
        for name, value in (("query_maxlen", query_maxlen), ("doc_maxlen", doc_maxlen)):
            if value is not None and (not isinstance(value, int) or value < 4):
                raise ValueError(f"{name} must be an integer >= 4, got {value!r}")
        if isinstance(skiplist_words, str):
            raise TypeError("skiplist_words must be a list of words, not a single string")
        ckpt = resolve_checkpoint(model_name_or_path)
        self._model_id, self._checkpoint_digest = ckpt.model_id, ckpt.digest
        self.backend, self.quantize = backend, quantize
        self.layout: Layout = colbert_layout(ckpt) or "zero-shot"
        what = f"ColBERTEncoder({ckpt.given!r})"
        from sentence_transformers.base.modules import Normalize
        from sentence_transformers.multi_vector_encoder.modules import MultiVectorMask

        modules = None
        if self.layout == "zero-shot":
            mask = MultiVectorMask()
            modules = [_st.backbone(ckpt, self.torch_dtype), mask, Normalize("token_embeddings")]
        self._st = _st.load("MultiVectorEncoder", ckpt, self.device, self.torch_dtype, modules)
        self._transformer = self._st[0]
        self.tokenizer = self._transformer.tokenizer
        self._mask = next((m for m in self._st if isinstance(m, MultiVectorMask)), None)
        self._renormalise = not isinstance(self._st[-1], Normalize)
        knobs = {
            "query_maxlen": query_maxlen,
            "doc_maxlen": doc_maxlen,
            "attend_to_mask_tokens": attend_to_mask_tokens,
            "mask_punctuation": mask_punctuation,
            "query_token_id": query_token_id,
            "doc_token_id": doc_token_id,
            "do_query_expansion": do_query_expansion,
            "skiplist_words": None if skiplist_words is None else list(skiplist_words),
        }
        given = {k: v for k, v in knobs.items() if v is not None}
        self._options.update(given)
        self._configure(ckpt, given, what)
        self._dim = int(self._st.get_embedding_dimension())
        _st.use_backend(self._transformer, ckpt, backend, quantize)
        logger.info(
            "ColBERTEncoder %s (%s): dim=%d query_maxlen=%d doc_maxlen=%d on %s (%s)",
            self.model_id,
            self.layout,
            self._dim,
            self.query_maxlen,
            self.doc_maxlen,
            self.device,
            backend,
        )

    # -- settings -----------------------------------------------------------------------------

    def _stored(self, ckpt: Checkpoint) -> dict[str, Any]:
        """The checkpoint's own settings in latewise's names: as sentence-transformers read them
        (colbert-ai's ``artifact.metadata``, PyLate's config, native saves), or zero-shot's."""
        t = self._transformer
        default_len = int((ckpt.json("sentence_bert_config.json") or {}).get("max_seq_length") or 0)
        default_len = min(default_len or self._limit, self._limit)
        if self.layout == "zero-shot":
            return {
                "query_token_id": "",
                "doc_token_id": "",
                "query_maxlen": default_len,
                "doc_maxlen": default_len,
                "do_query_expansion": False,
                "attend_to_mask_tokens": False,
                "mask_punctuation": True,
            }
        markers = [self._st.prompts.get(task) or "" for task in ("query", "document")]
        if self.layout == "colbert-ai":  # a marker token; the space after it is the prompt's
            markers = [m.removesuffix(" ") for m in markers]
        expansion = t.query_expansion
        stored = {
            "query_token_id": markers[0],
            "doc_token_id": markers[1],
            "query_maxlen": expansion["length"] if expansion else t.query_length or default_len,
            "doc_maxlen": t.document_length or _DEFAULT_DOC_MAXLEN.get(self.layout, default_len),
            "do_query_expansion": expansion is not None,
            "attend_to_mask_tokens": bool(expansion and expansion["attend"]),
            "mask_punctuation": bool(self._mask and self._mask.skiplist_words),
            "skiplist_words": list(self._mask.skiplist_words) if self._mask else [],
        }
        # colbert-ai also reads a metadata file nested under "config" (sentence-transformers
        # reads flat ones only); its names are latewise's.
        nested = (ckpt.json("artifact.metadata") or {}).get("config")
        if self.layout == "colbert-ai" and isinstance(nested, dict):
            stored |= {k: nested[k] for k in _KNOBS if nested.get(k) is not None}
        return stored

    def _configure(self, ckpt: Checkpoint, knobs: dict[str, Any], what: str) -> None:
        """Resolve the settings (arguments over the checkpoint's) and set them on the modules."""
        native = self.layout == "multi-vector-encoder"
        self._limit = _st.model_limit(self._transformer, ckpt, tokenizer=not native)
        s = {**self._stored(ckpt), **knobs}
        if self.layout == "zero-shot" and "query_maxlen" not in knobs and s["do_query_expansion"]:
            s["query_maxlen"] = 32  # expanded queries: ColBERT's 32 tokens, not the model's limit
        expansion = bool(s["do_query_expansion"])
        attend = bool(s["attend_to_mask_tokens"]) and expansion
        if knobs.get("attend_to_mask_tokens") and not expansion:
            logger.warning("%s: attend_to_mask_tokens has no effect without query expansion", what)
        if expansion and self.tokenizer.mask_token_id is None:
            raise CheckpointError(
                f"{what}: query expansion needs a [MASK] token and this tokenizer has none; "
                "pass do_query_expansion=False"
            )
        lengths = []
        for name in ("query_maxlen", "doc_maxlen"):
            if int(s[name]) > self._limit:
                logger.warning(
                    "%s: %s=%d exceeds the model's limit of %d tokens; using %d",
                    *(what, name, int(s[name]), self._limit, self._limit),
                )
            lengths.append(min(int(s[name]), self._limit))
        self.query_maxlen, self.doc_maxlen = lengths
        self.do_query_expansion, self.attend_to_mask_tokens = expansion, attend
        self._markers = [self._marker(s[k], what, native) for k in _KNOBS[:2]]
        self._skiplist: list[int] = []
        if s["mask_punctuation"]:
            words = s.get("skiplist_words")
            self._skiplist = self._skiplist_ids(
                list(string.punctuation if words is None else words)
            )
        t = self._transformer
        t.query_expansion = None
        t.query_length, t.document_length = self.query_maxlen, self.doc_maxlen
        if expansion:
            t.query_length = None
            t.query_expansion = {"strategy": "fixed", "attend": attend, "length": self.query_maxlen}
        if self._mask is not None:
            self._mask.skiplist_words = self.tokenizer.convert_ids_to_tokens(self._skiplist)
            self._mask.resolve_with_tokenizer(self.tokenizer)

    def _marker(self, marker: Any, what: str, text_prompt: bool) -> str | None:
        """The marker token (or prompt text) of a setting; registered so it stays one token."""
        if marker is None or marker == "" or marker is False:
            return None
        tok = self.tokenizer
        if isinstance(marker, int) and not isinstance(marker, bool):
            token = tok.convert_ids_to_tokens(marker)
            if token is None:
                raise CheckpointError(f"{what}: marker token id {marker} is not in the vocabulary")
            marker = token
        text: str = str(marker)
        if text_prompt:
            return text
        token_id = tok.convert_tokens_to_ids(text)
        if token_id is None or (token_id == tok.unk_token_id and text != tok.unk_token):
            raise CheckpointError(
                f"{what}: the marker token {text!r} is not in the tokenizer's vocabulary; save "
                "the tokenizer with it (PyLate adds its prefixes with tokenizer.add_tokens) or "
                'pass query_token_id / doc_token_id naming a token that exists ("" for none)'
            )
        if tok.tokenize(text) != [text]:
            from transformers import AddedToken

            special = AddedToken(text, normalized=False, special=True)
            tok.add_special_tokens(
                {"additional_special_tokens": [special]}, replace_extra_special_tokens=False
            )
        return text

    def _skiplist_ids(self, words: list[str]) -> list[int]:
        tok = self.tokenizer
        if self.layout == "pylate":
            # PyLate: convert_tokens_to_ids(word) for each word (an unknown word maps to [UNK]).
            return sorted({int(i) for i in tok.convert_tokens_to_ids(words) if i is not None})
        if self.layout == "multi-vector-encoder":  # sentence-transformers: unknown words dropped
            ids = [tok.convert_tokens_to_ids(w) for w in words]
            return sorted({int(i) for i in ids if i is not None and i != tok.unk_token_id})
        # colbert-ai: the first token id of each symbol, tokenised without special tokens.
        encoded = [tok.encode(w, add_special_tokens=False) for w in words]
        return sorted({int(ids[0]) for ids in encoded if ids})

    def _prompt(self, query: bool) -> str:
        marker = self._markers[0 if query else 1]
        if marker is None:
            return ""
        return (
            marker
            if marker.endswith(" ") or self.layout == "multi-vector-encoder"
            else marker + " "
        )

    # -- contract -----------------------------------------------------------------------------

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def mask_punctuation(self) -> bool:
        return bool(self._skiplist)

    @property
    def max_document_tokens(self) -> int:
        return self._text_budget(self.doc_maxlen, self._prompt(False))

    @property
    def max_query_tokens(self) -> int:
        return self._text_budget(self.query_maxlen, self._prompt(True))

    def _settings(self) -> dict[str, Any]:
        lowercase = bool(getattr(self._transformer, "do_lower_case", False))
        return {
            "layout": self.layout,
            "query_marker": self._markers[0],
            "doc_marker": self._markers[1],
            "query_maxlen": self.query_maxlen,
            "doc_maxlen": self.doc_maxlen,
            "do_query_expansion": self.do_query_expansion,
            "attend_to_mask_tokens": self.attend_to_mask_tokens,
            "skiplist": self._skiplist,
            "lowercase": lowercase and self.layout != "colbert-ai",
        }

    def _query_runtime_settings(self) -> tuple[dict[str, Any], str | None]:
        expansion = {"token_id": self.tokenizer.mask_token_id, "attend": self.attend_to_mask_tokens}
        query = {
            "prompt": self._prompt(True),
            "max_length": self.query_maxlen,
            "expansion": expansion if self.do_query_expansion else None,
        }
        mask = self._mask
        skip = self._skiplist if mask is not None and "document" in mask.skiplist_tasks else []
        document = {
            "prompt": self._prompt(False),
            "max_length": self.doc_maxlen,
            "skiplist": skip,
            "keep_only": None if mask is None else mask.keep_only_token_ids,
        }
        return {"query": query, "document": document}, "query"

    def document_tokens(self, documents: Sequence[Any]) -> list[list[str]]:
        """The token string of every row ``encode_documents`` returns, per document."""
        return self._tokens(validate_texts(documents, "documents"), query=False)

    def query_tokens(self, queries: Sequence[str]) -> list[list[str]]:
        """The token string of every row ``encode_queries`` returns, per query (``[MASK]`` for
        expansion rows)."""
        return self._tokens(validate_texts(queries, "queries"), query=True)

    def _tokens(self, texts: list[str], *, query: bool) -> list[list[str]]:
        task = "query" if query else "document"
        features = self._transformer.preprocess(texts, prompt=self._prompt(query), task=task)
        if self._mask is not None:
            features = self._mask(features, task=task)
        rows = zip(features["input_ids"], features["attention_mask"].bool(), strict=True)
        return [
            [str(t) for t in self.tokenizer.convert_ids_to_tokens(i[k].tolist())] for i, k in rows
        ]

    def _encode_query_batch(self, queries: list[str]) -> list[torch.Tensor]:
        return self._encode(queries, query=True)

    def _encode_document_batch(self, documents: list[str]) -> list[torch.Tensor]:
        return self._encode(documents, query=False)

    def _encode(self, texts: list[str], *, query: bool) -> list[torch.Tensor]:
        out: list[torch.Tensor] = self._st.encode(
            texts,
            prompt=self._prompt(query),
            task="query" if query else "document",
            batch_size=len(texts),
            show_progress_bar=False,
            normalize_embeddings=self._renormalise,
        )
        return out
