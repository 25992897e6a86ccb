"""``ColPaliEncoder``: one L2-normalised vector per page-image patch (and prompt token).

colpali-engine's own saves run through its models and processors, so inputs are formatted exactly
as it formats them. Families (from ``config.json`` ``architectures`` / ``model_type``, or the base
model named by a PEFT ``adapter_config.json``): ColPali (PaliGemma), ColQwen2, ColQwen2.5,
ColQwen3, ColQwen3.5, ColIdefics3, ColModernVBert, ColGemma3 and ColQwen2.5-Omni, as far as the
installed colpali-engine provides them. transformers-native retrievers (``ColPaliForRetrieval``,
``ColQwen2ForRetrieval``, ``ColModernVBertForRetrieval``: the ``*-hf`` checkpoints, family
``"<name>-hf"``) run through sentence-transformers' ``MultiVectorEncoder``.
"""

from __future__ import annotations

import importlib
import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from latewise.encoders import _st
from latewise.encoders._checkpoint import from_pretrained_quietly, resolve_checkpoint
from latewise.encoders.base import Encoder, load_images, validate_texts
from latewise.errors import CheckpointError, MissingDependencyError

if TYPE_CHECKING:
    from PIL.Image import Image
    from typing_extensions import Unpack

    from latewise.encoders._checkpoint import Checkpoint
    from latewise.encoders.base import EncoderOptions

logger = logging.getLogger(__name__)

__all__ = ["FAMILIES", "ColPaliEncoder", "PatchGrid", "colpali_family"]


@dataclass(frozen=True)
class _Family:
    name: str
    model: str
    processor: str
    model_types: tuple[str, ...]


#: The colpali-engine families latewise can run: family -> (model class, processor class).
FAMILIES: dict[str, _Family] = {
    f.name: f
    for f in (
        _Family("colpali", "ColPali", "ColPaliProcessor", ("paligemma",)),
        _Family("colqwen2", "ColQwen2", "ColQwen2Processor", ("qwen2_vl",)),
        _Family("colqwen2_5", "ColQwen2_5", "ColQwen2_5_Processor", ("qwen2_5_vl",)),
        _Family("colqwen3", "ColQwen3", "ColQwen3Processor", ("qwen3_vl",)),
        _Family("colqwen3_5", "ColQwen3_5", "ColQwen3_5Processor", ("qwen3_5",)),
        _Family("colidefics3", "ColIdefics3", "ColIdefics3Processor", ("idefics3",)),
        _Family("colmodernvbert", "ColModernVBert", "ColModernVBertProcessor", ("modernvbert",)),
        _Family("colgemma3", "ColGemma3", "ColGemmaProcessor3", ("gemma3",)),
        _Family(
            "colqwen2_5omni",
            "ColQwen2_5Omni",
            "ColQwen2_5OmniProcessor",
            ("qwen2_5_omni_thinker", "qwen2_5_omni"),
        ),
    )
}
_BY_CLASS = {f.model.lower(): f.name for f in FAMILIES.values()}
_BY_MODEL_TYPE = {t: f.name for f in FAMILIES.values() for t in f.model_types}
# Names seen in hub ids / adapter base names, most specific first.
_NAME_PATTERNS = (
    (re.compile(r"colqwen2[._]?5[-_]?omni", re.I), "colqwen2_5omni"),
    (re.compile(r"colqwen3[._]5", re.I), "colqwen3_5"),
    (re.compile(r"colqwen2[._]5", re.I), "colqwen2_5"),
    (re.compile(r"colqwen3", re.I), "colqwen3"),
    (re.compile(r"colqwen2?", re.I), "colqwen2"),
    (re.compile(r"colsmol|colidefics", re.I), "colidefics3"),
    (re.compile(r"colmodernvbert", re.I), "colmodernvbert"),
    (re.compile(r"colgemma", re.I), "colgemma3"),
    (re.compile(r"colpali", re.I), "colpali"),
)


def colpali_family(ckpt: Checkpoint) -> str | None:
    """The colpali-engine family of a checkpoint, or ``None`` if it is not a ColPali-style one."""
    config = ckpt.config
    for arch in config.get("architectures") or []:
        if str(arch).endswith("ForRetrieval"):
            return str(arch).removesuffix("ForRetrieval").lower() + "-hf"
        family = _BY_CLASS.get(str(arch).lower())
        if family is not None:
            return family
    adapter = ckpt.json("adapter_config.json")
    if adapter is not None:
        base = str(adapter.get("base_model_name_or_path") or "")
        for pattern, family in _NAME_PATTERNS:
            if pattern.search(base) or pattern.search(ckpt.model_id):
                return family
    model_type = str(config.get("model_type") or "")
    if model_type in _BY_MODEL_TYPE:
        return _BY_MODEL_TYPE[model_type]
    if adapter is not None or not config:
        for pattern, family in _NAME_PATTERNS:
            if pattern.search(ckpt.model_id):
                return family
    return None


@dataclass(frozen=True)
class PatchGrid:
    """Where an image's patches are among the rows ``encode_documents`` returns for it: an
    ``n_rows`` x ``n_cols`` grid over an image of ``image_size`` (width, height), the patch at grid
    row ``r`` (from the top), column ``c`` (from the left) in row ``row_index[r * n_cols + c]``."""

    n_rows: int
    n_cols: int
    row_index: list[int]
    image_size: tuple[int, int]

    def row(self, r: int, c: int) -> int:
        """The output row of the patch at grid row ``r``, column ``c``."""
        if not (0 <= r < self.n_rows and 0 <= c < self.n_cols):
            raise IndexError(f"patch ({r}, {c}) is outside the {self.n_rows}x{self.n_cols} grid")
        return self.row_index[r * self.n_cols + c]

    def to_grid(self, values: torch.Tensor) -> torch.Tensor:
        """Arrange per-row values ``[..., n_output_rows]`` as ``[..., n_rows, n_cols]``."""
        index = torch.tensor(self.row_index, dtype=torch.long, device=values.device)
        return values.index_select(-1, index).reshape(*values.shape[:-1], self.n_rows, self.n_cols)


class ColPaliEncoder(Encoder):
    """Late-interaction page-image encoder over colpali-engine (ColPali, ColQwen2/2.5/3, ...).

    ``encode_documents`` takes PIL images or image paths and returns one row per image patch
    (plus the processor's prompt tokens); ``encode_queries`` takes text. Padding rows are dropped.

    Setup:
        ``pip install 'latewise[colpali]'``.

    Instantiate:
        >>> enc = ColPaliEncoder("vidore/colqwen2.5-v0.2", torch_dtype="bfloat16")  # doctest: +SKIP

    Encode:
        >>> D = enc.encode_documents(["page1.png", "page2.png"])   # doctest: +SKIP
        >>> Q = enc.encode_queries(["revenue by quarter"])         # doctest: +SKIP
        >>> grid = enc.patch_grid("page1.png")                     # where each patch's row is

    Args:
        model_name_or_path: a local folder or a hub id (from the local Hugging Face cache).
        family: force a colpali-engine family (a key of :data:`FAMILIES`).
        batch_size, show_progress_bar, device, torch_dtype, compute_dtype: see
            :class:`~latewise.encoders.base.Encoder` (images are large: small batches on CPU).

    Raises:
        MissingDependencyError: colpali-engine (extra ``colpali``) is not installed.
        CheckpointError: the family cannot be told, or the checkpoint cannot be loaded.
    """

    modality = "image"

    def __init__(
        self,
        model_name_or_path: str | Path,
        *,
        family: str | None = None,
        **options: Unpack[EncoderOptions],
    ) -> None:
        options.setdefault("batch_size", 4)  # page images are large
        super().__init__(model_name_or_path, **options)
        if family is not None and family not in FAMILIES:
            raise ValueError(f"family must be one of {', '.join(FAMILIES)}; got {family!r}")
        ckpt = resolve_checkpoint(model_name_or_path)
        self._model_id = ckpt.model_id
        self._checkpoint_digest = ckpt.digest
        name = family or colpali_family(ckpt)
        if name is None:
            raise CheckpointError(
                f"cannot tell which ColPali family {ckpt.given!r} is (config.json model_type "
                f"{ckpt.config.get('model_type')!r}, architectures "
                f"{ckpt.config.get('architectures')}); pass family= one of {', '.join(FAMILIES)}, "
                "or use ColBERTEncoder / BertEncoder for text checkpoints"
            )
        self.family = name
        if family is not None:
            self._options["family"] = family
        what = f"ColPaliEncoder({ckpt.given!r})"
        self._st: Any = None
        if name.endswith("-hf"):  # transformers-native: sentence-transformers runs it
            self._st = _st.load("MultiVectorEncoder", ckpt, self.device, self.torch_dtype, None)
            self._model, self.processor = self._st[0].model, self._st[0].processor
        else:
            spec = FAMILIES[name]
            model_cls, processor_cls = _colpali_classes(spec)
            self._model = from_pretrained_quietly(
                model_cls, ckpt.path, what, dtype=self.torch_dtype
            )
            _tie_unloaded_output_embeddings(self._model, what)
            self._model.to(self.device)
            try:
                self.processor = processor_cls.from_pretrained(str(ckpt.path))
            except Exception as exc:
                raise CheckpointError(f"{what}: cannot load the {spec.processor}: {exc}") from exc
        # ``tokenizer`` stays None: it is the text-document tokenizer used by chunkers, and this
        # encoder's documents are images. The query tokenizer is ``processor.tokenizer``.
        config = self._model.config
        self._dim = int(getattr(self._model, "dim", None) or config.embedding_dim)
        logger.info(
            "ColPaliEncoder %s (%s): dim=%d on %s", self.model_id, name, self._dim, self.device
        )

    # -- contract -----------------------------------------------------------------------------

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def model(self) -> Any:
        """The colpali-engine model."""
        return self._model

    def _settings(self) -> dict[str, Any]:
        return {"family": self.family}

    def _encode_query_batch(self, queries: list[str]) -> list[torch.Tensor]:
        lengths = self.processor.process_queries(queries)["attention_mask"].sum(1).tolist()
        return self._grouped(queries, lengths, "query", self.processor.process_queries)

    def _encode_document_batch(self, documents: list[Any]) -> list[torch.Tensor]:
        keys = [im.size for im in documents]
        return self._grouped(documents, keys, "document", self.processor.process_images)

    def _grouped(
        self, items: list[Any], keys: list[Any], task: str, process: Any
    ) -> list[torch.Tensor]:
        """Run items sharing a key (token count, image size) together, so no batch is padded.

        A row's vectors then never depend on what it was batched with: with padding, some
        families' attention (PaliGemma's bidirectional prefix under SDPA, in transformers 5)
        lets real tokens see the padding, so a query's vectors would change with its batch.
        """
        groups: dict[Any, list[int]] = {}
        for i, key in enumerate(keys):
            groups.setdefault(key, []).append(i)
        out: list[torch.Tensor | None] = [None] * len(items)
        for idx in groups.values():
            group = [items[i] for i in idx]
            if self._st is not None:
                rows = self._st.encode(group, task=task, batch_size=len(group))
                vectors = [torch.nn.functional.normalize(r.float(), dim=-1) for r in rows]
            else:
                vectors = self._forward(process(group))
            for i, v in zip(idx, vectors, strict=True):
                out[i] = v
        return [v for v in out if v is not None]

    def query_tokens(self, queries: Sequence[str]) -> list[list[str]]:
        """The token string of every row ``encode_queries`` returns, per query."""
        texts = validate_texts(queries, "queries")
        batch = self.processor.process_queries(texts)
        out = []
        for ids, att in zip(
            batch["input_ids"].tolist(), batch["attention_mask"].tolist(), strict=True
        ):
            kept = [i for i, a in zip(ids, att, strict=True) if a]
            out.append([str(t) for t in self.processor.tokenizer.convert_ids_to_tokens(kept)])
        return out

    def document_tokens(self, documents: Sequence[Any]) -> list[list[str]]:
        """Labels of every row ``encode_documents`` returns, per image: ``"patch r,c"`` for the
        image patches (grid row, column) and the token string for the other rows."""
        images = load_images(documents, "documents")
        labels: list[list[str]] = []
        for image in images:
            batch = self.processor.process_images([image])
            att = batch["attention_mask"][0].bool()
            ids = batch["input_ids"][0][att].tolist()
            row_labels = [str(t) for t in self.processor.tokenizer.convert_ids_to_tokens(ids)]
            grid = self._grid(image, batch)
            for r in range(grid.n_rows):
                for c in range(grid.n_cols):
                    row_labels[grid.row_index[r * grid.n_cols + c]] = f"patch {r},{c}"
            labels.append(row_labels)
        return labels

    def patch_grid(self, image: Image | str | Path) -> PatchGrid:
        """Where each image patch lands among the rows ``encode_documents([image])`` returns.

        Follows colpali-engine's interpretability helpers (``get_n_patches``,
        ``get_image_mask``; for Idefics3-style image splitting, the local tiles in spatial
        order, the global tile left out).

        Raises:
            ImageLoadError: the image path cannot be read.
            CheckpointError: this family's patches do not form a grid latewise can map.
        """
        loaded = load_images([image], "image")[0]
        return self._grid(loaded, self.processor.process_images([loaded]))

    # -- internals ----------------------------------------------------------------------------

    def _forward(self, batch: Any) -> list[torch.Tensor]:
        dtype = self.torch_dtype
        inputs = {
            k: (v.to(self.device, dtype) if v.is_floating_point() else v.to(self.device))
            for k, v in batch.items()
            if isinstance(v, torch.Tensor) and k != "labels"
        }
        out = self._model(**inputs)
        attention = inputs["attention_mask"].bool()
        rows = [o[a].float() for o, a in zip(out, attention, strict=True)]
        return [torch.nn.functional.normalize(r, p=2, dim=-1) for r in rows]

    def _grid(self, image: Image, batch: Any) -> PatchGrid:
        att = batch["attention_mask"][0].bool()
        out_row = torch.cumsum(att.long(), 0) - 1  # position -> output row
        proc = self.processor
        config = self._model.config
        size = (int(image.width), int(image.height))
        if self._st is not None:  # transformers' processors: the image tokens, row-major
            config = getattr(config, "vlm_config", config)
            image_token = proc.tokenizer.convert_tokens_to_ids(proc.image_token)
            mask = (batch["input_ids"][0] == image_token) & att
        if hasattr(proc, "get_local_image_mask"):  # Idefics3-style tiles + a global tile
            mask = proc.get_local_image_mask(batch)[0] & att
            n_cols, n_rows = self._idefics_grid(image, int(mask.sum()))
            positions = torch.arange(att.shape[0], dtype=torch.float32).unsqueeze(-1)
            spatial = proc.rearrange_image_embeddings(positions, mask, (n_cols, n_rows))
            by_xy = spatial[..., 0].long()  # [n_cols, n_rows] -> position
            order = by_xy.transpose(0, 1).reshape(-1)  # row-major over (r, c)
        else:
            if self._st is None:
                mask = proc.get_image_mask(batch)[0] & att
            positions_1d = mask.nonzero(as_tuple=True)[0]
            n = int(positions_1d.numel())
            if "image_grid_thw" in batch:
                _, h, w = (int(x) for x in batch["image_grid_thw"][0])
                merge = int(_config_value(config, "spatial_merge_size", 1))
                n_rows, n_cols = h // merge, w // merge
            else:
                patch = int(_config_value(config, "patch_size", 0))
                get_n_patches = getattr(proc, "get_n_patches", None)
                n_cols, n_rows = get_n_patches(size, patch) if get_n_patches else (0, 0)
                if n_cols * n_rows != n and math.isqrt(n) ** 2 == n:
                    n_rows = n_cols = math.isqrt(n)  # pooled square grids (Gemma3)
            if n_rows * n_cols != n:
                raise CheckpointError(
                    f"{self.family}: {n} image tokens do not form the expected "
                    f"{n_rows}x{n_cols} patch grid; similarity maps are not available"
                )
            order = positions_1d
        row_index = [int(out_row[p]) for p in order.tolist()]
        return PatchGrid(n_rows=n_rows, n_cols=n_cols, row_index=row_index, image_size=size)

    def _idefics_grid(self, image: Image, n_local: int) -> tuple[int, int]:
        """(n_cols, n_rows) of the local-tile token grid of an Idefics3-style processor."""
        proc = self.processor
        side = math.isqrt(int(proc.image_seq_len))
        info = proc.image_processor([image], return_row_col_info=True, return_tensors="pt")
        rows = int(_first(info.get("rows"), 0))
        cols = int(_first(info.get("cols"), 0))
        if rows == 0 or cols == 0:  # the image was not split: one tile
            rows = cols = 1
        n_cols, n_rows = cols * side, rows * side
        if n_cols * n_rows != n_local:
            raise CheckpointError(
                f"{self.family}: {n_local} local image tokens do not form a {n_rows}x{n_cols} "
                "grid; similarity maps are not available"
            )
        return n_cols, n_rows


def _tie_unloaded_output_embeddings(model: Any, what: str) -> None:
    """Point a language-model head left on the ``meta`` device at the input embeddings.

    colpali-engine declares the (unused) LM head of some families as ignorable when missing, and
    checkpoints saved with tied embeddings do not store it, so it stays an unallocated ``meta``
    tensor that ``.to(device)`` refuses to move. Tying it, as the base model would, fixes that.
    """
    embeddings = model.get_input_embeddings()
    weight = getattr(embeddings, "weight", None)
    for module in model.modules():
        param = getattr(module, "weight", None)
        if isinstance(param, torch.nn.Parameter) and param.is_meta:
            if weight is None or weight.is_meta or param.shape != weight.shape:
                raise CheckpointError(f"{what}: weights of {type(module).__name__} were not loaded")
            module.weight = weight
    leftover = [n for n, p in model.named_parameters() if p.is_meta]
    if leftover:
        raise CheckpointError(f"{what}: weights not loaded: {leftover[:5]}")


def _first(value: Any, default: int) -> Any:
    while isinstance(value, list | tuple):
        if not value:
            return default
        value = value[0]
    if isinstance(value, torch.Tensor):
        return value.flatten()[0].item() if value.numel() else default
    return default if value is None else value


def _config_value(config: Any, name: str, default: Any) -> Any:
    for holder in (getattr(config, "vision_config", None), config):
        if holder is not None and getattr(holder, name, None) is not None:
            return getattr(holder, name)
    return default


def _colpali_classes(spec: _Family) -> tuple[Any, Any]:
    try:
        module = importlib.import_module("colpali_engine.models")
    except ImportError as exc:
        raise MissingDependencyError.for_extra(
            "colpali-engine", "colpali", "ColPaliEncoder"
        ) from exc
    except Exception as exc:  # e.g. torchvision built for another torch: "torchvision::nms"
        raise MissingDependencyError(
            f"colpali-engine is installed but fails to import ({type(exc).__name__}: {exc}). "
            "This usually means torch and torchvision builds do not match; reinstall them "
            "together, e.g. pip install --force-reinstall torch torchvision "
            "'latewise[colpali]'"
        ) from exc
    model_cls = getattr(module, spec.model, None)
    processor_cls = getattr(module, spec.processor, None)
    if model_cls is None or processor_cls is None:
        raise CheckpointError(
            f"the installed colpali-engine has no {spec.model} / {spec.processor}; upgrade it: "
            "pip install -U 'latewise[colpali]'"
        )
    return model_cls, processor_cls
