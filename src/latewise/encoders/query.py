"""``QueryRuntime``: a text encoder's query side without torch, for a fast first search.

Searching needs only the query encoder. :meth:`BertEncoder.export_query_runtime
<latewise.encoders.bert.BertEncoder.export_query_runtime>` (and ColBERT's) writes, once per
model, a folder in the latewise cache (:func:`runtime_dir`, keyed by the encoder's fingerprint):

- ``model.onnx``: every module of the query pipeline, from token ids and attention mask to the
  L2-normalised float32 vectors (and, for one vector per token, the rows kept);
- ``tokenizer.json``: the tokenizer, for the ``tokenizers`` library;
- ``query.json``: the fingerprint, prompts, lengths, query expansion, document-side rules.

:class:`QueryRuntime` runs it with ONNX Runtime and ``tokenizers`` only: no torch, transformers
or sentence-transformers import. It encodes queries and labels query and document tokens; it
has no document model (``encode_documents`` raises :class:`~latewise.errors.QueryRuntimeError`).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from latewise.encoders._checkpoint import cache_dir
from latewise.encoders.base import Encoder, validate_texts
from latewise.errors import MissingDependencyError, QueryRuntimeError, check_positive

if TYPE_CHECKING:
    import numpy as np

logger = logging.getLogger(__name__)

__all__ = ["FORMAT", "QueryRuntime", "find_query_runtime", "runtime_dir", "save_query_runtime"]

#: The layout of ``query.json`` this version writes and reads.
FORMAT = 1


def runtime_dir(fingerprint: Mapping[str, Any]) -> Path:
    """The cache folder of the query runtime for an encoder ``fingerprint``."""
    key = json.dumps(dict(fingerprint), sort_keys=True, separators=(",", ":"))
    return cache_dir() / "query" / hashlib.sha256(key.encode()).hexdigest()[:32]


def find_query_runtime(fingerprint: Mapping[str, Any]) -> QueryRuntime | None:
    """The query runtime written for ``fingerprint``, or ``None`` when the model must answer:
    none was written, ONNX Runtime is not installed, or the one written cannot be used (a
    warning says why)."""
    folder = runtime_dir(fingerprint)
    if not (folder / "query.json").is_file():
        return None
    try:
        return QueryRuntime.for_fingerprint(fingerprint)
    except MissingDependencyError:
        logger.info("ONNX Runtime is not installed; the model encodes the query")
    except Exception as exc:  # damaged or stale (missing keys too): the model still answers
        logger.warning("cannot use the query runtime in %s (%s); loading the model", folder, exc)
    return None


def save_query_runtime(encoder: Encoder) -> Path | None:
    """Write ``encoder``'s query runtime (:meth:`~latewise.encoders.base.Encoder
    .export_query_runtime`) when it has one and the ``onnx`` extra is installed; returns its
    folder, or ``None``. A failed export is a warning, never an error: searches load the model.
    """
    import importlib.util

    if not all(importlib.util.find_spec(p) for p in ("onnx", "onnxruntime")):
        logger.info("no query runtime written: it needs the onnx extra (onnx, onnxruntime)")
        return None
    try:
        return encoder.export_query_runtime()
    except QueryRuntimeError:
        return None  # no torch-free query side for this encoder (image encoders, a runtime)
    except Exception as exc:  # the export (torch.onnx, onnx) raises its own types
        logger.warning(
            "could not write the query runtime of %s (%s); search loads the model instead",
            encoder.model_id,
            exc,
        )
        return None


class QueryRuntime(Encoder):
    """The query side of a :class:`~latewise.encoders.bert.BertEncoder` or
    :class:`~latewise.encoders.colbert.ColBERTEncoder`, on ONNX Runtime and ``tokenizers``:
    the same ``fingerprint``, ``dim`` and query vectors (within ~1e-5), as float32 numpy arrays.

    Instantiate:
        >>> enc = QueryRuntime.for_fingerprint(index.config["fingerprint"])  # doctest: +SKIP
        >>> index = LateInteractionIndex(enc, collection="docs")  # doctest: +SKIP

    Args:
        folder: a folder the torch encoder's ``export_query_runtime()`` wrote.
        batch_size: how many queries run through the model at once.

    Raises:
        MissingDependencyError: ONNX Runtime (extra ``onnx``) is not installed.
        QueryRuntimeError: the folder holds no complete query runtime of this format.
    """

    modality = "text"

    def __init__(self, folder: str | Path, *, batch_size: int = 32) -> None:
        check_positive("batch_size", batch_size)
        folder = Path(folder)
        try:
            info = json.loads((folder / "query.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise QueryRuntimeError(
                f"no readable query runtime in {str(folder)!r} ({exc}); write it with the torch "
                "encoder's export_query_runtime()"
            ) from exc
        if info.get("format") != FORMAT:
            raise QueryRuntimeError(
                f"the query runtime in {str(folder)!r} has format {info.get('format')!r}, this "
                f"latewise reads {FORMAT}; write it again with export_query_runtime()"
            )
        try:
            import onnxruntime
        except ImportError as exc:
            raise MissingDependencyError.for_extra("onnxruntime", "onnx", "QueryRuntime") from exc
        from tokenizers import Tokenizer

        self.folder, self.info = folder, info
        self.model_name_or_path = str(info["model_name_or_path"])
        self.batch_size, self.show_progress_bar, self.device = batch_size, False, "cpu"
        self._model_id = str(info["fingerprint"].get("model"))
        self._checkpoint_digest = info["fingerprint"].get("checkpoint")
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3
        try:
            self._tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
            self._session = onnxruntime.InferenceSession(
                str(folder / "model.onnx"), options, ["CPUExecutionProvider"]
            )
        except Exception as exc:  # ONNX Runtime and tokenizers raise their own types
            raise QueryRuntimeError(
                f"the query runtime in {str(folder)!r} is damaged ({exc}); delete the folder and "
                "write it again with export_query_runtime()"
            ) from exc
        self._tokenizer.no_padding()
        self._tokenizer.no_truncation()
        self._added = {int(i): str(t) for i, t in info.get("added_tokens", {}).items()}
        logger.info("QueryRuntime %s from %s", self._model_id, folder)

    @classmethod
    def for_fingerprint(cls, fingerprint: Mapping[str, Any], **kwargs: Any) -> QueryRuntime:
        """The query runtime written for ``fingerprint`` (see :func:`runtime_dir`).

        Raises:
            QueryRuntimeError: none was written for it (or it is incomplete).
            MissingDependencyError: ONNX Runtime is not installed.
        """
        folder = runtime_dir(fingerprint)
        if not (folder / "query.json").is_file():
            raise QueryRuntimeError(
                f"no query runtime for {fingerprint.get('encoder')}({fingerprint.get('model')!r}) "
                f"in {str(folder)!r}; load the encoder and call its export_query_runtime()"
            )
        runtime = cls(folder, **kwargs)
        if runtime.fingerprint != dict(fingerprint):
            raise QueryRuntimeError(
                f"the query runtime in {str(folder)!r} was written for another encoder; "
                "delete the folder and write it again with export_query_runtime()"
            )
        return runtime

    # -- the contract -------------------------------------------------------------------------

    @property
    def dim(self) -> int:
        return int(self.info["dim"])

    @property
    def fingerprint(self) -> dict[str, Any]:
        """The fingerprint of the torch encoder that wrote the runtime."""
        return dict(self.info["fingerprint"])

    @property
    def max_query_tokens(self) -> int | None:
        limit = self.info.get("max_query_tokens")
        return None if limit is None else int(limit)

    @property
    def max_document_tokens(self) -> int | None:
        limit = self.info.get("max_document_tokens")
        return None if limit is None else int(limit)

    def encode_queries(  # type: ignore[override]
        self,
        queries: Sequence[str],
        *,
        batch_size: int | None = None,
        show_progress_bar: bool | None = None,
    ) -> list[np.ndarray]:
        """One float32, L2-normalised ``[n_i, dim]`` array per query text, in input order."""
        texts = validate_texts(queries, "queries")
        self._warn_long_queries(texts)
        size = batch_size or self.batch_size
        out: list[np.ndarray] = []
        for start in range(0, len(texts), size):
            out.extend(vectors for vectors, _ in self._infer(texts[start : start + size]))
        return out

    def query_tokens(self, queries: Sequence[str]) -> list[list[str]]:
        """The token of every row ``encode_queries`` returns (``[MASK]`` for expansion rows;
        one ``"[MEAN]"``-like label per query for one pooled vector)."""
        texts = validate_texts(queries, "queries")
        if "label" in self.info:
            return [[str(self.info["label"])] for _ in texts]
        return [self._labels(ids) for _, ids in self._infer(texts)]

    def document_tokens(self, documents: Sequence[Any]) -> list[list[str]]:
        """The token of every row the torch encoder's ``encode_documents`` returns."""
        texts = validate_texts(documents, "documents")
        if "label" in self.info:
            return [[str(self.info["label"])] for _ in texts]
        import numpy as np

        doc = self.info["document"]
        skip = list(doc.get("skiplist") or ())
        only = doc.get("keep_only")
        labels = []
        for e in self._tokenize(texts, doc["prompt"], int(doc["max_length"])):
            ids = np.asarray(e.ids, dtype=np.int64)
            keep = ~np.isin(ids, skip) & (np.isin(ids, only) if only else True)
            labels.append(self._labels(ids[keep]))
        return labels

    def encode_documents(self, documents: Sequence[Any], **kwargs: Any) -> list[Any]:
        """Not available: raises :class:`~latewise.errors.QueryRuntimeError`."""
        raise self._query_only("encode documents")

    def _encode_query_batch(self, queries: list[str]) -> list[Any]:
        return [vectors for vectors, _ in self._infer(queries)]

    def _encode_document_batch(self, documents: list[Any]) -> list[Any]:
        raise self._query_only("encode documents")

    # -- machinery ----------------------------------------------------------------------------

    def _query_only(self, what: str) -> QueryRuntimeError:
        return QueryRuntimeError(
            f"QueryRuntime({self.model_id!r}) runs the query side only and cannot {what}; load "
            f"the model: load_encoder({self.model_name_or_path!r})"
        )

    def _token_counts(self, texts: Sequence[str]) -> list[int] | None:
        found = self._tokenizer.encode_batch(list(texts), add_special_tokens=False)
        return [len(e.ids) for e in found]

    def _tokenize(self, texts: Sequence[str], prompt: str, max_length: int) -> list[Any]:
        tok = self._tokenizer
        tok.enable_truncation(max_length)
        try:
            return list(tok.encode_batch([prompt + t for t in texts]))
        finally:
            tok.no_truncation()

    def _labels(self, ids: Any) -> list[str]:
        """Token strings; added tokens as the torch encoder's tokenizer names them."""
        added, tok = self._added, self._tokenizer
        return [added.get(int(i)) or str(tok.id_to_token(int(i))) for i in ids]

    def _infer(self, texts: Sequence[str]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per query: its vectors and the token id of each (empty for a pooled vector), from
        the inputs the sentence-transformers query pipeline builds (prompt, truncation, padding
        with the expansion token, which the model attends to or not)."""
        import numpy as np

        q = self.info["query"]
        found = self._tokenize(texts, q["prompt"], int(q["max_length"]))
        expansion = q.get("expansion")
        width = int(q["max_length"]) if expansion else max(len(e.ids) for e in found)
        ids = np.full((len(found), width), int(self.info["pad_id"]), dtype=np.int64)
        mask, types = np.zeros_like(ids), np.zeros_like(ids)
        for row, e in enumerate(found):
            ids[row, : len(e.ids)] = e.ids
            mask[row, : len(e.ids)] = e.attention_mask
            types[row, : len(e.ids)] = e.type_ids
        positions = (mask == 0).astype(np.int64)
        if expansion:
            ids[positions == 1] = int(expansion["token_id"])
            mask = np.ones_like(mask) if expansion["attend"] else mask
        values = {
            "input_ids": ids,
            "attention_mask": mask,
            "token_type_ids": types,
            "query_expansion_positions": positions,
        }
        outputs = self._session.run(None, {n: values[n] for n in self.info["inputs"]})
        vectors = np.asarray(outputs[0], dtype=np.float32)
        if len(outputs) == 1:
            return [(v[None, :].copy(), ids[i, :0]) for i, v in enumerate(vectors)]
        keep = outputs[1].astype(bool)
        return [(v[k].copy(), i[k]) for v, k, i in zip(vectors, keep, ids, strict=True)]
