"""ONNX Runtime and OpenVINO backends: exported from local checkpoints offline, the same vectors
and fingerprint as torch in float32, int8 quantisation marked in the fingerprint."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from latewise import (
    BertEncoder,
    ColBERTEncoder,
    LateInteractionIndex,
    MissingDependencyError,
    maxsim,
)

QUERIES = ["what is late interaction?", "cat"]
DOCS = [
    "ColBERT keeps one vector per token, and scores documents with MaxSim.",
    "The cat sat on the mat; the dog slept by the door.",
    "Paris is the capital of France (and its largest city). " * 4,
]
RUNTIMES = {"onnx": "onnxruntime", "openvino": "openvino"}


@pytest.fixture(autouse=True)
def cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path_factory.getbasetemp() / "latewise-cache"
    monkeypatch.setenv("LATEWISE_CACHE", str(folder))
    return folder


def _close(got: list[torch.Tensor], want: list[torch.Tensor], atol: float) -> None:
    for g, w in zip(got, want, strict=True):
        assert g.dtype == torch.float32
        assert g.shape == w.shape
        torch.testing.assert_close(g, w, atol=atol, rtol=0)


@pytest.mark.parametrize("backend", sorted(RUNTIMES))
@pytest.mark.parametrize("fixture", ["colbert_ai_dir", "pylate_dir", "plain_bert_dir"])
def test_colbert_backend_matches_torch(
    backend: str, fixture: str, request: pytest.FixtureRequest, cache: Path
) -> None:
    pytest.importorskip(RUNTIMES[backend])
    folder: Path = request.getfixturevalue(fixture)
    reference = ColBERTEncoder(folder)
    enc = ColBERTEncoder(folder, backend=backend)  # type: ignore[arg-type]
    assert enc.device == "cpu"
    _close(enc.encode_queries(QUERIES), reference.encode_queries(QUERIES), 1e-5)
    _close(enc.encode_documents(DOCS), reference.encode_documents(DOCS), 1e-5)
    assert enc.fingerprint == reference.fingerprint  # the same vectors: collections interoperate
    assert list(cache.glob("*/model.onnx"))
    again = ColBERTEncoder(folder, backend=backend)  # type: ignore[arg-type]
    _close(again.encode_documents(DOCS), enc.encode_documents(DOCS), 0.0)


@pytest.mark.parametrize("backend", sorted(RUNTIMES))
def test_int8_is_close_and_marked_in_the_fingerprint(
    backend: str,
    colbert_ai_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    pytest.importorskip(RUNTIMES[backend])
    if backend == "openvino":
        pytest.importorskip("nncf")
    monkeypatch.setenv("LATEWISE_CACHE", str(tmp_path))  # export and quantise here, now
    reference = ColBERTEncoder(colbert_ai_dir)
    capfd.readouterr()
    enc = ColBERTEncoder(colbert_ai_dir, backend=backend, quantize="int8")  # type: ignore[arg-type]
    # stdout is for results (`latewise search --json`): the quantisers print nothing there
    assert capfd.readouterr().out == ""
    # Each runtime quantises in its own way, so the fingerprint names the backend too.
    assert enc.fingerprint == {**reference.fingerprint, "quantize": "int8", "backend": backend}
    assert enc.options == {"backend": backend, "quantize": "int8"}
    got, want = enc.encode_documents(DOCS), reference.encode_documents(DOCS)
    for g, w in zip(got, want, strict=True):
        assert g.shape == w.shape
        torch.testing.assert_close(g.norm(dim=-1), torch.ones(g.shape[0]), atol=1e-5, rtol=0)
        assert (g * w).sum(-1).min() > 0.9  # each token vector stays near its float32 one
    assert not all(torch.equal(g, w) for g, w in zip(got, want, strict=True))
    # A text's int8 vectors do not depend on what it is batched with (ONNX Runtime quantises
    # activations with one scale per call, by up to 0.04 per component: each text runs alone;
    # OpenVINO's weights-only int8 leaves only float rounding of other shapes).
    _close([enc.encode_documents([d])[0] for d in DOCS], got, 1e-6)
    pair = enc.encode_queries([QUERIES[1], DOCS[2]])[0]
    _close([pair], enc.encode_queries([QUERIES[1]]), 1e-6)
    scores = maxsim(enc.encode_queries(QUERIES), got)
    torch.testing.assert_close(
        scores, maxsim(reference.encode_queries(QUERIES), want), atol=0.5, rtol=0
    )


@pytest.mark.parametrize("backend", sorted(RUNTIMES))
def test_bert_backend_matches_torch(backend: str, st_cls_dense_dir: Path) -> None:
    pytest.importorskip(RUNTIMES[backend])
    reference = BertEncoder(st_cls_dense_dir)
    enc = BertEncoder(st_cls_dense_dir, backend=backend)  # type: ignore[arg-type]
    _close(enc.encode_documents(DOCS), reference.encode_documents(DOCS), 1e-5)
    assert enc.fingerprint == reference.fingerprint


def test_bad_backend_arguments(plain_bert_dir: Path) -> None:
    with pytest.raises(ValueError, match="backend"):
        ColBERTEncoder(plain_bert_dir, backend="tensorrt")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="quantize"):
        ColBERTEncoder(plain_bert_dir, quantize="int8")
    with pytest.raises(ValueError, match="quantize"):
        BertEncoder(plain_bert_dir, backend="onnx", quantize="int4")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="CPU"):
        ColBERTEncoder(plain_bert_dir, backend="onnx", device="cuda")
    with pytest.raises(ValueError, match="float32"):
        ColBERTEncoder(plain_bert_dir, backend="openvino", torch_dtype="bfloat16")
    with pytest.raises(ValueError, match="compute_dtype"):  # autocast would not reach ONNX
        BertEncoder(plain_bert_dir, backend="onnx", compute_dtype="bfloat16")


def test_missing_runtime_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, plain_bert_dir: Path
) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import now fails
    with pytest.raises(MissingDependencyError, match=r"latewise\[onnx\]"):
        ColBERTEncoder(plain_bert_dir, backend="onnx")
    monkeypatch.setitem(sys.modules, "openvino", None)
    with pytest.raises(MissingDependencyError, match=r"latewise\[openvino\]"):
        BertEncoder(plain_bert_dir, backend="openvino")


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_a_collection_reopens_with_the_options_of_its_encoder(
    backend: str, colbert_ai_dir: Path, tmp_path: Path
) -> None:
    """Opened without an encoder, a collection loads the one that wrote it: its class, model
    and the arguments that decide its vectors (here lengths, punctuation, int8 on ONNX)."""
    pytest.importorskip(RUNTIMES.get(backend, "torch"))
    options: dict[str, Any] = {"doc_maxlen": 12, "mask_punctuation": False}
    if backend != "torch":
        options |= {"backend": backend, "quantize": "int8"}
    enc = ColBERTEncoder(colbert_ai_dir, **options)
    assert enc.options == options
    LateInteractionIndex(enc, path=tmp_path, collection="opts").add(DOCS)
    reopened = LateInteractionIndex(path=tmp_path, collection="opts")
    assert len(reopened.search("the cat sat", k=2)) == 2  # the query encoded by the stored one
    assert reopened.encoder.options == options
    assert reopened.encoder.fingerprint == enc.fingerprint


def test_stored_options_this_version_does_not_know_are_a_clear_error(
    plain_bert_dir: Path,
) -> None:
    from latewise import StoreError
    from latewise.engine.binding import load_stored_encoder

    config = {"encoder_class": "BertEncoder", "encoder_source": str(plain_bert_dir)}
    with pytest.raises(StoreError, match=r"does not know \(warp_speed\).*upgrade latewise"):
        load_stored_encoder("future", {**config, "encoder_options": {"warp_speed": 9}})
    enc = load_stored_encoder("now", {**config, "encoder_options": {"max_length": 12}})
    assert enc.options == {"max_length": 12}
