"""BertEncoder: pooling by hand from the same weights, sentence-transformers files honoured."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoTokenizer, BertModel

from latewise import BertEncoder, CheckpointError

TEXTS = [
    "what is late interaction?",
    "The cat sat on the mat; the dog slept by the door. " * 6,  # longer than 48 tokens
    "Paris",
]


def _hidden(folder: Path, text: str, max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
    tok = AutoTokenizer.from_pretrained(str(folder))
    model = BertModel.from_pretrained(str(folder)).eval()
    ids = tok.convert_tokens_to_ids(tok.tokenize(text))[: max_length - 2]
    ids = [tok.cls_token_id, *ids, tok.sep_token_id]
    with torch.no_grad():
        hidden = model(input_ids=torch.tensor([ids])).last_hidden_state[0]
    return hidden, torch.tensor(ids)


def _normalise(v: torch.Tensor) -> torch.Tensor:
    return (v / v.norm()).unsqueeze(0)


def test_plain_bert_mean_pooling_matches_reference(plain_bert_dir: Path) -> None:
    enc = BertEncoder(plain_bert_dir, batch_size=2)
    assert enc.dim == 32
    assert enc.pooling == "mean"
    got = enc.encode_documents(TEXTS)
    for text, vec in zip(TEXTS, got, strict=True):
        hidden, _ = _hidden(plain_bert_dir, text, 64)
        assert vec.shape == (1, 32)
        assert vec.dtype == torch.float32
        torch.testing.assert_close(vec, _normalise(hidden.mean(0)), atol=1e-6, rtol=0)
    # queries and documents go through the same pooling (no prompts configured)
    torch.testing.assert_close(enc.encode_queries(TEXTS)[0], got[0])


def test_cls_and_max_pooling(plain_bert_dir: Path) -> None:
    cls_vec = BertEncoder(plain_bert_dir, pooling="cls").encode_documents(TEXTS[:1])[0]
    max_vec = BertEncoder(plain_bert_dir, pooling="max").encode_documents(TEXTS[:1])[0]
    hidden, _ = _hidden(plain_bert_dir, TEXTS[0], 64)
    torch.testing.assert_close(cls_vec, _normalise(hidden[0]), atol=1e-6, rtol=0)
    torch.testing.assert_close(max_vec, _normalise(hidden.max(0).values), atol=1e-6, rtol=0)


def test_sentence_transformers_mean_and_max_seq_length(st_bert_dir: Path) -> None:
    enc = BertEncoder(st_bert_dir)
    assert enc.max_length == 48  # sentence_bert_config.json
    assert enc.max_document_tokens == 46
    got = enc.encode_documents(TEXTS)
    for text, vec in zip(TEXTS, got, strict=True):
        hidden, _ = _hidden(st_bert_dir, text, 48)
        torch.testing.assert_close(vec, _normalise(hidden.mean(0)), atol=1e-6, rtol=0)


def test_sentence_transformers_cls_then_dense(st_cls_dense_dir: Path) -> None:
    enc = BertEncoder(st_cls_dense_dir)
    assert (enc.pooling, enc.dim) == ("cls", 24)
    dense = load_file(str(st_cls_dense_dir / "2_Dense" / "model.safetensors"))
    for text, vec in zip(TEXTS, enc.encode_documents(TEXTS), strict=True):
        hidden, _ = _hidden(st_cls_dense_dir, text, 48)
        want = torch.tanh(hidden[0] @ dense["linear.weight"].T + dense["linear.bias"])
        torch.testing.assert_close(vec, _normalise(want), atol=1e-6, rtol=0)


@pytest.mark.parametrize("fixture", ["st_bert_dir", "st_cls_dense_dir"])
def test_agrees_with_sentence_transformers(fixture: str, request: pytest.FixtureRequest) -> None:
    st = pytest.importorskip("sentence_transformers")
    folder: Path = request.getfixturevalue(fixture)
    reference = st.SentenceTransformer(str(folder), device="cpu").encode(
        TEXTS, convert_to_tensor=True, normalize_embeddings=True
    )
    got = torch.cat(BertEncoder(folder).encode_documents(TEXTS))
    torch.testing.assert_close(got, reference.float(), atol=1e-6, rtol=0)


def test_prompts_are_applied(tmp_path: Path, st_bert_dir: Path) -> None:
    import shutil

    folder = tmp_path / "with-prompts"
    shutil.copytree(st_bert_dir, folder)
    (folder / "config_sentence_transformers.json").write_text(
        json.dumps({"prompts": {"query": "query: ", "document": "passage: "}})
    )
    enc = BertEncoder(folder)
    assert (enc.query_prefix, enc.document_prefix) == ("query: ", "passage: ")
    plain = BertEncoder(st_bert_dir)
    torch.testing.assert_close(
        enc.encode_queries(["cat"])[0], plain.encode_documents(["query: cat"])[0]
    )
    assert enc.fingerprint["query_prefix"] == "query: "
    assert enc.fingerprint != plain.fingerprint


def test_fingerprint_and_labels(st_bert_dir: Path) -> None:
    enc = BertEncoder(st_bert_dir)
    fp = enc.fingerprint
    assert json.loads(json.dumps(fp)) == fp
    assert fp["encoder"] == "BertEncoder"
    assert fp["pooling"] == "mean"
    assert fp["dim"] == 32
    assert str(st_bert_dir) not in json.dumps(fp)
    assert enc.document_tokens(["a", "b"]) == [["[MEAN]"], ["[MEAN]"]]


def test_weightedmean_pooling_and_unknown_pooling(tmp_path: Path, st_bert_dir: Path) -> None:
    import shutil

    folder = tmp_path / "weighted"
    shutil.copytree(st_bert_dir, folder)
    config = folder / "1_Pooling" / "config.json"
    config.write_text(json.dumps({"embedding_dimension": 32, "pooling_mode": "weightedmean"}))
    enc = BertEncoder(folder)
    assert enc.pooling == "weightedmean"
    for text, vec in zip(TEXTS, enc.encode_documents(TEXTS), strict=True):
        hidden, _ = _hidden(folder, text, 48)
        weights = torch.arange(1, hidden.shape[0] + 1, dtype=torch.float32).unsqueeze(-1)
        want = (hidden * weights).sum(0) / weights.sum()
        torch.testing.assert_close(vec, _normalise(want), atol=1e-6, rtol=0)
    # ... and the caller's choice wins over the checkpoint's.
    assert BertEncoder(folder, pooling="cls").fingerprint["pooling"] == "cls"
    config.write_text(json.dumps({"embedding_dimension": 32, "pooling_mode": "median"}))
    with pytest.raises(CheckpointError, match="pooling"):
        BertEncoder(folder)


def test_bad_constructor_arguments(plain_bert_dir: Path) -> None:
    with pytest.raises(ValueError, match="pooling"):
        BertEncoder(plain_bert_dir, pooling="sum")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="batch_size"):
        BertEncoder(plain_bert_dir, batch_size=0)
