"""Text models through sentence-transformers, and the ONNX / OpenVINO backends.

sentence-transformers 6 runs the text models: ``SentenceTransformer`` (one vector per text) and
``MultiVectorEncoder`` (one per token). Its own ONNX / OpenVINO backends need Optimum, which does
not install beside transformers 5, so latewise exports the backbone itself (``torch.onnx``, once,
into ``$XDG_CACHE_HOME/latewise``) and runs it with ONNX Runtime or OpenVINO in place of the
torch model inside the sentence-transformers pipeline; the rest of the pipeline is unchanged.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch

from latewise.encoders._checkpoint import cache_dir, quiet, writing
from latewise.errors import CheckpointError, MissingDependencyError, QueryRuntimeError

if TYPE_CHECKING:
    from latewise.encoders._checkpoint import Checkpoint
    from latewise.encoders.base import Encoder

logger = logging.getLogger(__name__)

Backend = Literal["torch", "onnx", "openvino"]
BACKENDS = ("torch", "onnx", "openvino")
_EXTRA = {"onnx": ("onnxruntime", "onnx"), "openvino": ("openvino", "openvino")}


def module_kinds(ckpt: Checkpoint) -> list[str] | None:
    """The lower-cased class names in ``modules.json`` (``None``: not a sentence-transformers
    checkpoint): ``transformer``, ``pooling``, ``dense``, ``normalize``, ``multivectormask``..."""
    path = ckpt.file("modules.json")
    if path is None:
        return None
    import json

    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        return [str(m["type"]).rsplit(".", 1)[-1].lower() for m in raw]
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise CheckpointError(f"modules.json of {ckpt.given!r} is malformed: {exc}") from exc


def load(
    cls_name: str, ckpt: Checkpoint, device: str, dtype: torch.dtype, modules: list[Any] | None
) -> Any:
    """``SentenceTransformer`` / ``MultiVectorEncoder`` from the checkpoint folder (offline, no
    remote code), or from ``modules``.

    Raises:
        CheckpointError: sentence-transformers cannot load the checkpoint.
    """
    import sentence_transformers

    cls = getattr(sentence_transformers, cls_name)
    try:
        with quiet():
            if modules is not None:
                return cls(modules=modules, device=device)
            return cls(
                str(ckpt.path), device=device, local_files_only=True, model_kwargs={"dtype": dtype}
            )
    except CheckpointError:
        raise
    except Exception as exc:
        raise CheckpointError(f"{cls_name} cannot load {ckpt.given!r}: {exc}") from exc


def backbone(ckpt: Checkpoint, dtype: torch.dtype) -> Any:
    """A bare sentence-transformers ``Transformer`` module over the checkpoint's model."""
    from sentence_transformers.base.modules import Transformer

    try:
        with quiet():
            return Transformer(str(ckpt.path), model_kwargs={"dtype": dtype})
    except Exception as exc:
        raise CheckpointError(f"cannot load a transformer from {ckpt.given!r}: {exc}") from exc


def model_limit(transformer: Any, ckpt: Checkpoint, tokenizer: bool = True) -> int:
    """The longest input (special tokens included) the model reads: its position embeddings, and
    the saved tokenizer's ``model_max_length`` unless sentence-transformers saved it (it writes
    ``max_seq_length`` there, lower than its query and document lengths may be)."""
    config = transformer.model.config
    limit = int(getattr(config, "max_position_embeddings", 512) or 512)
    if getattr(config, "model_type", "") in {"roberta", "xlm-roberta", "camembert"}:
        limit -= 2  # RoBERTa reserves padding_idx + 1 positions
    tok_max = (ckpt.json("tokenizer_config.json") or {}).get("model_max_length") if tokenizer else 0
    return min(limit, tok_max) if isinstance(tok_max, int) and 0 < tok_max < 100_000 else limit


def check_backend(backend: str, quantize: str | None, encoder: Encoder) -> dict[str, Any]:
    """Check ``backend`` and ``quantize`` for ``encoder`` (its device and dtypes), and return
    them as the encoder's options (the torch backend unquantised: none)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}; got {backend!r}")
    if quantize not in (None, "int8"):
        raise ValueError(f"quantize must be 'int8' or None; got {quantize!r}")
    if backend == "torch":
        if quantize is not None:
            raise ValueError("quantize='int8' needs backend='onnx' or backend='openvino'")
        return {}
    if encoder.torch_dtype != torch.float32 or encoder.compute_dtype is not None:
        raise ValueError(
            f"backend={backend!r} computes in float32 (or int8 with quantize='int8'); leave "
            "torch_dtype and compute_dtype unset, or use backend='torch'"
        )
    if not encoder.device.startswith("cpu"):
        raise ValueError(f"backend={backend!r} runs on the CPU; pass device='cpu' or leave it out")
    return {"backend": backend, **({"quantize": quantize} if quantize else {})}


def use_backend(transformer: Any, ckpt: Checkpoint, backend: str, quantize: str | None) -> None:
    """Swap the torch model inside ``transformer`` for its ONNX Runtime / OpenVINO export.

    Raises:
        MissingDependencyError: the runtime (extra ``onnx`` or ``openvino``) is not installed.
        CheckpointError: the model cannot be exported.
    """
    if backend == "torch":
        return
    package, extra = _EXTRA[backend]
    try:
        runtime = __import__(package)
    except ImportError as exc:
        raise MissingDependencyError.for_extra(package, extra, f"backend={backend!r}") from exc
    model = transformer.model
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if _takes(model, n)]
    name = re.sub(r"[^\w.-]+", "-", ckpt.model_id).strip("-")
    folder = cache_dir() / f"{name}-{ckpt.digest}"
    onnx_path = _export(
        _Backbone(model, names),
        model,
        names,
        {"last_hidden_state": {0: "batch", 1: "sequence"}},
        folder / "model.onnx",
    )
    threads = torch.get_num_threads()
    run: Any
    if backend == "onnx":
        onnx_path = _fuse(onnx_path, model.config, folder / "model-fused.onnx")
        if quantize:
            onnx_path = _quantize_onnx(
                onnx_path, onnx_path.with_name(onnx_path.stem + "-int8.onnx")
            )
        options = runtime.SessionOptions()
        options.intra_op_num_threads = threads
        # Workers that spin between runs take the CPU from the tokenizer and torch (1.1-1.2x).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = runtime.InferenceSession(str(onnx_path), options, ["CPUExecutionProvider"])
        run = lambda feeds: session.run(None, feeds)[0]  # noqa: E731
    else:
        core = runtime.Core()
        source = _compress_openvino(runtime, onnx_path, folder) if quantize else onnx_path
        settings = {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": threads}
        compiled = core.compile_model(core.read_model(str(source)), "CPU", settings)
        run = lambda feeds: compiled(feeds)[0]  # noqa: E731
    # ONNX Runtime's int8 quantises activations per call: only one text at a time is reproducible
    pad = transformer.tokenizer.pad_token_id if backend == "onnx" and quantize else None
    transformer.model = _Exported(run, names, model.config, pad)


class _Exported(torch.nn.Module):
    """Stands in for the transformers model: the same inputs, ``last_hidden_state`` out.

    With ``pad_id`` (ONNX Runtime int8), each text runs on its own, without the batch's trailing
    ``pad_id`` tokens: dynamic quantisation scales activations once per call, so in a batch a
    text's vectors would depend on the other texts (by up to 0.04 per component in MiniLM's).
    Alone they do not, at about 0.85x the batched speed. Query expansion tokens are kept: they
    are not padding, even where the attention mask hides them."""

    def __init__(self, run: Any, names: list[str], config: Any, pad_id: int | None) -> None:
        super().__init__()
        self._run, self._names, self.config, self._pad = run, names, config, pad_id

    def forward(self, **inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        ids = inputs["input_ids"].cpu()
        full = {n: (inputs[n].cpu() if n in inputs else torch.zeros_like(ids)) for n in self._names}
        if self._pad is None:
            feeds = {name: x.numpy() for name, x in full.items()}
            return {"last_hidden_state": torch.from_numpy(self._run(feeds))}
        used = (ids != self._pad) | (full.get("attention_mask", ids) != 0)
        lengths = used.shape[1] - used.flip(1).int().argmax(1)  # up to the last used token
        out = torch.zeros((*ids.shape, int(self.config.hidden_size)))
        for i, n in enumerate(lengths.tolist()):
            feeds = {name: x[i : i + 1, :n].contiguous().numpy() for name, x in full.items()}
            out[i, :n] = torch.from_numpy(self._run(feeds))[0]
        return {"last_hidden_state": out}


def _takes(model: Any, name: str) -> bool:
    import inspect

    return name in inspect.signature(model.forward).parameters


class _Backbone(torch.nn.Module):
    """The transformers model with positional inputs, ``last_hidden_state`` out."""

    def __init__(self, model: Any, names: list[str]) -> None:
        super().__init__()
        self.model, self.names = model, names

    def forward(self, *args: torch.Tensor) -> torch.Tensor:
        out = self.model(**dict(zip(self.names, args, strict=True)), return_dict=True)
        hidden: torch.Tensor = out.last_hidden_state
        return hidden


class _QueryPipeline(torch.nn.Module):
    """Every sentence-transformers module from token ids to the L2-normalised query vectors:
    ``[batch, tokens, dim]`` and the rows kept (``MultiVectorEncoder``), or ``[batch, dim]``."""

    def __init__(self, st: Any, names: list[str], extras: dict[str, Any], task: str | None) -> None:
        super().__init__()
        self.st, self.names, self.extras, self.task = st, names, extras, task

    def forward(self, *args: torch.Tensor) -> tuple[torch.Tensor, ...]:
        features = {**self.extras, **dict(zip(self.names, args, strict=True))}
        if "query_expansion_positions" in features:
            features["query_expansion_positions"] = features["query_expansion_positions"].bool()
        out = self.st(features, **({"task": self.task} if self.task else {}))
        if self.task is None:
            return (torch.nn.functional.normalize(out["sentence_embedding"].float(), dim=-1),)
        vectors = torch.nn.functional.normalize(out["token_embeddings"].float(), dim=-1)
        return vectors, out["attention_mask"].to(torch.int64)


def export_query(encoder: Any, settings: dict[str, Any], task: str | None) -> Path:
    """Write the torch-free query runtime of a text encoder (see
    :mod:`latewise.encoders.query`): the ONNX graph of its whole query pipeline, its
    ``tokenizer.json`` and ``query.json`` (``settings`` plus the fingerprint), in
    :func:`~latewise.encoders.query.runtime_dir`; ``query.json`` goes last, so a folder that has
    it is complete.

    Args:
        encoder: a :class:`BertEncoder` (``task=None``: one pooled row) or
            :class:`ColBERTEncoder` (``task="query"``: one row per kept token) on the torch backend.
        settings: what the runtime needs besides the graph (prompts, lengths, expansion...).

    Raises:
        QueryRuntimeError: the encoder does not run on torch in float32 (no runtime to write).
        CheckpointError: the export fails.
    """
    import json

    from latewise.encoders.query import FORMAT, runtime_dir

    model = encoder._transformer.model
    if isinstance(model, _Exported) or encoder.compute_dtype is not None:
        raise QueryRuntimeError(
            f"{encoder!r}: the query runtime is exported from the torch backend in float32 "
            "without compute_dtype; load the encoder with its defaults to write it"
        )
    folder = runtime_dir(encoder.fingerprint)
    if (folder / "query.json").is_file():
        return folder
    tokenizer = encoder.tokenizer
    if tokenizer.padding_side != "right":
        raise CheckpointError(f"{encoder!r}: the query runtime pads on the right only")
    sample = encoder._transformer.preprocess(
        ["sample"], prompt=settings["query"]["prompt"], task=task
    )
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if _takes(model, n)]
    names += [n for n in ("query_expansion_positions",) if n in sample]
    extras = {k: v for k, v in sample.items() if not isinstance(v, torch.Tensor)}
    outputs = (
        {"vectors": {0: "batch"}}
        if task is None
        else {
            "vectors": {0: "batch", 1: "sequence"},
            "keep": {0: "batch", 1: "sequence"},
        }
    )
    pipeline = _QueryPipeline(encoder._st, names, extras, task).eval()
    _export(pipeline, model, names, outputs, folder / "model.onnx")
    with writing(folder / "tokenizer.json") as tmp:
        tmp.write_text(tokenizer.backend_tokenizer.to_str(), encoding="utf-8")
    info = {
        "format": FORMAT,
        "fingerprint": encoder.fingerprint,
        "encoder_class": type(encoder).__name__,
        "model_name_or_path": encoder.model_name_or_path,
        "dim": encoder.dim,
        "inputs": names,
        "pad_id": tokenizer.pad_token_id or 0,
        # In memory, a lower-casing tokenizer names an added "[Q] " "[q] "; tokenizer.json not.
        "added_tokens": {
            i: tokenizer.convert_ids_to_tokens(i) for i in tokenizer.added_tokens_decoder
        },
        "max_query_tokens": encoder.max_query_tokens,
        "max_document_tokens": encoder.max_document_tokens,
        **settings,
    }
    with writing(folder / "query.json") as tmp:
        tmp.write_text(json.dumps(info, indent=1), encoding="utf-8")
    logger.info("wrote the query runtime of %s to %s", encoder.model_id, folder)
    return folder


def _export(
    wrapped: torch.nn.Module,
    model: Any,
    names: list[str],
    outputs: dict[str, dict[int, str]],
    target: Path,
) -> Path:
    """Export ``wrapped`` (positional ``names`` in, ``outputs`` out) with ``torch.onnx``, once."""
    if target.is_file():
        return target
    logger.info("exporting the model to ONNX: %s", target)
    if hasattr(model, "set_attn_implementation"):
        model.set_attn_implementation("eager")  # the attention pattern ONNX Runtime fuses
    mask = torch.tensor([[1] * 8, [1] * 5 + [0] * 3])
    sample = {"input_ids": torch.full((2, 8), 5), "attention_mask": mask}
    args = tuple(sample.get(n, torch.zeros((2, 8), dtype=torch.long)) for n in names)
    axes = {**{n: {0: "batch", 1: "sequence"} for n in names}, **outputs}
    try:
        with writing(target) as tmp, warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                wrapped.eval(),
                args,
                str(tmp),
                input_names=names,
                output_names=list(outputs),
                dynamic_axes=axes,
                opset_version=17,
                dynamo=False,
            )
    except Exception as exc:
        raise CheckpointError(f"cannot export {type(model).__name__} to ONNX: {exc}") from exc
    return target


def _fuse(source: Path, config: Any, target: Path) -> Path:
    """ONNX Runtime's fused BERT graph (attention, layer norms, GELU: ~1.2x faster on a CPU),
    for the BERT-like models it knows; otherwise the plain export."""
    if getattr(config, "model_type", "") not in {"bert", "roberta", "xlm-roberta", "electra"}:
        return source
    if not target.is_file():
        from onnxruntime.transformers.optimizer import optimize_model

        try:
            heads, hidden = config.num_attention_heads, config.hidden_size
            with writing(target) as tmp, quiet():
                optimize_model(str(source), "bert", heads, hidden).save_model_to_file(str(tmp))
        except Exception:
            logger.warning(
                "ONNX Runtime could not fuse %s; using it unfused", source, exc_info=True
            )
            return source
    return target


def _quantize_onnx(source: Path, target: Path) -> Path:
    if not target.is_file():
        from onnxruntime.quantization import QuantType, quantize_dynamic

        extra = {"DefaultTensorType": 1}  # float: the fused operators' outputs have no type
        logger.info("quantising %s to int8 (once): %s", source.name, target)
        # ONNX Runtime advises (on the root logger) a shape-inference pre-processing pass,
        # which latewise does not run: the graph is ONNX Runtime's own fused one.
        with writing(target) as tmp, _dropping_root_warnings("pre-processing before quantization"):
            quantize_dynamic(
                str(source),
                str(tmp),
                per_channel=True,
                weight_type=QuantType.QInt8,
                extra_options=extra,
            )
    return target


def _compress_openvino(runtime: Any, source: Path, folder: Path) -> Path:
    target = folder / "openvino-int8.xml"
    if not target.is_file():
        try:
            import nncf
        except ImportError as exc:
            raise MissingDependencyError.for_extra("nncf", "openvino", "quantize='int8'") from exc
        logger.info("compressing %s to int8 weights (once): %s", source.name, target)
        # nncf logs a statistics table and draws a progress bar on stdout: keep stdout for
        # results (the table is quiet, the bar goes to stderr).
        level = nncf.nncf_logger.level
        nncf.set_log_level(logging.WARNING)
        try:
            with contextlib.redirect_stdout(sys.stderr):
                model = nncf.compress_weights(runtime.Core().read_model(str(source)))
        finally:
            nncf.set_log_level(level)
        with writing(target) as tmp:
            runtime.save_model(model, str(tmp))
            os.replace(tmp.with_suffix(".bin"), target.with_suffix(".bin"))
    return target


@contextlib.contextmanager
def _dropping_root_warnings(fragment: str) -> Iterator[None]:
    """Drop records of the root logger that contain ``fragment``, while the block runs."""

    def keep(record: logging.LogRecord) -> bool:
        return fragment not in record.getMessage()

    root = logging.getLogger()
    root.addFilter(keep)
    try:
        yield
    finally:
        root.removeFilter(keep)
