"""ColBERTEncoder against independent references computed by hand from the same weights.

For each layout (colbert-ai, PyLate, zero-shot) the reference builds the token ids itself from
the layout's rules, runs ``BertModel`` on one text at a time, applies the projection read straight
from the weight files, normalises, and drops the rows the layout drops.
"""

from __future__ import annotations

import json
import shutil
import string
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoTokenizer, BertConfig, BertModel

from latewise import ColBERTEncoder, maxsim
from tests.fixtures.text_models import (
    COLBERT_AI_METADATA,
    PYLATE_CONFIG,
    build_colbert_ai,
)

QUERIES = [
    "what is late interaction?",
    "cat",
    "how does colbert score documents with maxsim over every token of a long query text",
]
DOCS = [
    "ColBERT keeps one vector per token, and scores documents with MaxSim.",
    "The cat sat on the mat; the dog slept by the door.",
    "Paris is the capital of France (and its largest city). " * 4,
    "!!",
]
ATOL = 1e-6


def _bert(folder: Path, prefix: str = "") -> BertModel:
    config = BertConfig.from_pretrained(str(folder))
    model = BertModel(config, add_pooling_layer=False).eval()
    state = load_file(str(folder / "model.safetensors"))
    state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    state = {k: v for k, v in state.items() if not k.startswith("pooler.")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not [k for k in missing if "position_ids" not in k], missing
    assert not unexpected
    return model


def _run(model: BertModel, ids: list[int], attention: list[int]) -> torch.Tensor:
    with torch.no_grad():
        out = model(
            input_ids=torch.tensor([ids]), attention_mask=torch.tensor([attention])
        ).last_hidden_state[0]
    return out


def _reference(
    folder: Path,
    texts: list[str],
    *,
    query: bool,
    prefix: str,
    marker: str | None,
    maxlen: int,
    expansion: bool,
    attend: bool,
    projection: torch.Tensor | None,
    skip_ids: set[int],
) -> list[torch.Tensor]:
    """ColBERT by hand: [CLS] marker tokens [SEP] (+[MASK] expansion), BERT, W, normalise, mask."""
    tok = AutoTokenizer.from_pretrained(str(folder))
    model = _bert(folder, prefix)
    out = []
    for text in texts:
        body = tok.convert_tokens_to_ids(tok.tokenize(text))
        head = [tok.cls_token_id] + ([tok.convert_tokens_to_ids(marker)] if marker else [])
        body = body[: maxlen - len(head) - 1]
        ids = [*head, *body, tok.sep_token_id]
        attention = [1] * len(ids)
        if query and expansion:
            extra = maxlen - len(ids)
            ids += [tok.mask_token_id] * extra
            attention += [1 if attend else 0] * extra
        hidden = _run(model, ids, attention)
        if projection is not None:
            hidden = hidden @ projection.T
        vectors = torch.nn.functional.normalize(hidden, dim=-1)
        if not query:
            keep = torch.tensor([i not in skip_ids for i in ids])
            vectors = vectors[keep]
        out.append(vectors)
    return out


def _punctuation_ids(folder: Path) -> set[int]:
    tok = AutoTokenizer.from_pretrained(str(folder))
    return {tok.encode(p, add_special_tokens=False)[0] for p in string.punctuation}


def _assert_same(got: list[torch.Tensor], want: list[torch.Tensor]) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert g.dtype == torch.float32
        assert g.shape == w.shape
        torch.testing.assert_close(g, w, atol=ATOL, rtol=0)


# -- colbert-ai layout --------------------------------------------------------------------------


def _colbert_ai_reference(folder: Path, texts: list[str], *, query: bool, attend: bool = False):
    meta = COLBERT_AI_METADATA
    weight = load_file(str(folder / "model.safetensors"))["linear.weight"]
    return _reference(
        folder,
        texts,
        query=query,
        prefix="bert.",
        marker=str(meta["query_token_id"] if query else meta["doc_token_id"]),
        maxlen=int(meta["query_maxlen"] if query else meta["doc_maxlen"]),
        expansion=True,
        attend=attend,
        projection=weight,
        skip_ids=_punctuation_ids(folder),
    )


@pytest.fixture(scope="module")
def colbert_ai(colbert_ai_dir: Path) -> ColBERTEncoder:
    return ColBERTEncoder(colbert_ai_dir, batch_size=2)


def test_colbert_ai_queries_match_reference(
    colbert_ai: ColBERTEncoder, colbert_ai_dir: Path
) -> None:
    got = colbert_ai.encode_queries(QUERIES)
    _assert_same(got, _colbert_ai_reference(colbert_ai_dir, QUERIES, query=True))
    # Query augmentation: every query has exactly query_maxlen rows, [MASK] rows included.
    assert all(q.shape == (COLBERT_AI_METADATA["query_maxlen"], 16) for q in got)


def test_colbert_ai_documents_match_reference(
    colbert_ai: ColBERTEncoder, colbert_ai_dir: Path
) -> None:
    got = colbert_ai.encode_documents(DOCS)
    _assert_same(got, _colbert_ai_reference(colbert_ai_dir, DOCS, query=False))
    # The all-punctuation document keeps only [CLS], [D] and [SEP].
    assert got[3].shape[0] == 3


def test_colbert_ai_settings_come_from_artifact_metadata(colbert_ai: ColBERTEncoder) -> None:
    assert colbert_ai.layout == "colbert-ai"
    assert colbert_ai.dim == 16
    assert colbert_ai.query_maxlen == COLBERT_AI_METADATA["query_maxlen"]
    assert colbert_ai.doc_maxlen == COLBERT_AI_METADATA["doc_maxlen"]
    assert colbert_ai.attend_to_mask_tokens is False
    assert colbert_ai.max_document_tokens == COLBERT_AI_METADATA["doc_maxlen"] - 3
    assert colbert_ai.query_tokens(["cat"])[0][:4] == ["[CLS]", "[unused0]", "cat", "[SEP]"]
    assert colbert_ai.query_tokens(["cat"])[0][4:] == ["[MASK]"] * 8


def test_attend_to_mask_tokens_override(colbert_ai: ColBERTEncoder, colbert_ai_dir: Path) -> None:
    attending = ColBERTEncoder(colbert_ai_dir, attend_to_mask_tokens=True)
    got = attending.encode_queries(QUERIES)
    _assert_same(got, _colbert_ai_reference(colbert_ai_dir, QUERIES, query=True, attend=True))
    assert not torch.allclose(got[1], colbert_ai.encode_queries(QUERIES)[1])
    assert attending.fingerprint["attend_to_mask_tokens"] is True
    assert attending.fingerprint != colbert_ai.fingerprint


def test_knobs_override_checkpoint(colbert_ai_dir: Path) -> None:
    enc = ColBERTEncoder(colbert_ai_dir, query_maxlen=6, doc_maxlen=8, mask_punctuation=False)
    queries = enc.encode_queries(["what is late interaction?"])
    assert queries[0].shape[0] == 6
    docs = enc.encode_documents(["a, b. c; d! e? f g h i j k"])
    tokens = enc.document_tokens(["a, b. c; d! e? f g h i j k"])[0]
    assert docs[0].shape[0] == len(tokens) == 8  # truncated, punctuation kept
    assert "," in tokens
    fp = enc.fingerprint
    assert (fp["query_maxlen"], fp["doc_maxlen"], fp["skiplist"]) == (6, 8, [])
    unmarked = ColBERTEncoder(colbert_ai_dir, query_token_id="", doc_token_id="")
    assert unmarked.query_tokens(["cat"])[0][:3] == ["[CLS]", "cat", "[SEP]"]
    assert unmarked.document_tokens(["the cat"])[0] == ["[CLS]", "the", "cat", "[SEP]"]
    assert unmarked.max_document_tokens == COLBERT_AI_METADATA["doc_maxlen"] - 2


def test_metadata_nested_under_config_is_read_as_colbert_ai_reads_it(
    tmp_path: Path, colbert_ai_dir: Path
) -> None:
    """colbert-ai's ``ColBERTConfig.from_path`` also reads ``{"config": {...}}``;
    sentence-transformers reads flat files only, so latewise applies the nested settings."""
    folder = tmp_path / "nested"
    shutil.copytree(colbert_ai_dir, folder)
    knobs: dict[str, Any] = {"query_maxlen": 9, "doc_maxlen": 18, "mask_punctuation": False}
    knobs["attend_to_mask_tokens"] = True
    meta = {**COLBERT_AI_METADATA, **knobs}
    (folder / "artifact.metadata").write_text(json.dumps({"config": meta}))
    nested, flat = ColBERTEncoder(folder), ColBERTEncoder(colbert_ai_dir, **knobs)
    assert (nested.query_maxlen, nested.doc_maxlen) == (9, 18)
    assert nested.attend_to_mask_tokens is True
    assert nested.mask_punctuation is False
    _assert_same(nested.encode_queries(QUERIES), flat.encode_queries(QUERIES))
    _assert_same(nested.encode_documents(DOCS), flat.encode_documents(DOCS))


def test_pytorch_bin_weights_load_like_safetensors(
    tmp_path: Path, colbert_ai: ColBERTEncoder
) -> None:
    folder = build_colbert_ai(tmp_path / "tiny-colbert", weights="bin")
    enc = ColBERTEncoder(folder)
    _assert_same(enc.encode_documents(DOCS), colbert_ai.encode_documents(DOCS))
    _assert_same(enc.encode_queries(QUERIES), colbert_ai.encode_queries(QUERIES))


def test_document_tokens_label_every_row(colbert_ai: ColBERTEncoder) -> None:
    labels = colbert_ai.document_tokens(DOCS)
    vectors = colbert_ai.encode_documents(DOCS)
    assert [len(t) for t in labels] == [v.shape[0] for v in vectors]
    assert labels[1][:4] == ["[CLS]", "[unused1]", "the", "cat"]
    assert all(t not in string.punctuation for row in labels for t in row)


def test_max_document_tokens_is_what_the_model_reads(colbert_ai: ColBERTEncoder) -> None:
    n = colbert_ai.max_document_tokens
    tok = colbert_ai.tokenizer
    words = ["cat", "dog", "mat", "door", "sat", "slept", "the", "on", "by"]
    text = " ".join((words * 10)[:n])
    assert len(tok(text, add_special_tokens=False)["input_ids"]) == n
    full = colbert_ai.encode_documents([text])[0]
    assert full.shape[0] == n + 3  # [CLS] [D] text [SEP]: nothing cut
    longer = colbert_ai.encode_documents([text + " cat dog mat"])[0]
    torch.testing.assert_close(longer[:-1], full[:-1], atol=ATOL, rtol=0)


def test_order_and_batching_do_not_change_vectors(colbert_ai: ColBERTEncoder) -> None:
    together = colbert_ai.encode_documents(DOCS, batch_size=4)
    alone = [colbert_ai.encode_documents([d])[0] for d in DOCS]
    _assert_same(together, alone)
    reversed_out = colbert_ai.encode_documents(DOCS[::-1], batch_size=3)
    _assert_same(reversed_out[::-1], together)


def test_scores_rank_matching_document_first(colbert_ai: ColBERTEncoder) -> None:
    Q = colbert_ai.encode_queries(["the cat sat on the mat"])
    D = colbert_ai.encode_documents(DOCS)
    scores = maxsim(Q, D)
    assert scores.shape == (1, len(DOCS))
    assert torch.isfinite(scores).all()


# -- PyLate layout ------------------------------------------------------------------------------


def _pylate_reference(folder: Path, texts: list[str], *, query: bool) -> list[torch.Tensor]:
    """PyLate by hand: tokenise to length - 1, insert the prefix after [CLS], pad queries with
    [MASK], Dense (no bias, identity), normalise; skiplist ids from convert_tokens_to_ids."""
    tok = AutoTokenizer.from_pretrained(str(folder))
    cfg: dict[str, Any] = PYLATE_CONFIG
    skip = {tok.convert_tokens_to_ids(w) for w in cfg["skiplist_words"]}
    weight = load_file(str(folder / "1_Dense" / "model.safetensors"))["linear.weight"]
    return _reference(
        folder,
        texts,
        query=query,
        prefix="",
        marker=cfg["query_prefix"] if query else cfg["document_prefix"],
        maxlen=cfg["query_length"] if query else cfg["document_length"],
        expansion=cfg["do_query_expansion"],
        attend=cfg["attend_to_expansion_tokens"],
        projection=weight,
        skip_ids=skip,
    )


@pytest.fixture(scope="module")
def pylate(pylate_dir: Path) -> ColBERTEncoder:
    return ColBERTEncoder(pylate_dir, batch_size=3)


def test_pylate_queries_match_reference(pylate: ColBERTEncoder, pylate_dir: Path) -> None:
    assert pylate.layout == "pylate"
    got = pylate.encode_queries(QUERIES)
    _assert_same(got, _pylate_reference(pylate_dir, QUERIES, query=True))
    assert all(q.shape == (PYLATE_CONFIG["query_length"], 16) for q in got)


def test_pylate_documents_match_reference(pylate: ColBERTEncoder, pylate_dir: Path) -> None:
    got = pylate.encode_documents(DOCS)
    _assert_same(got, _pylate_reference(pylate_dir, DOCS, query=False))
    # document_length comes from config_sentence_transformers.json, not max_seq_length (19).
    assert pylate.doc_maxlen == PYLATE_CONFIG["document_length"]
    tok = pylate.tokenizer
    assert pylate.document_tokens(["the cat"])[0][1] == tok.convert_ids_to_tokens(
        tok.convert_tokens_to_ids(PYLATE_CONFIG["document_prefix"])
    )


def test_pylate_without_query_expansion(pylate_dir: Path) -> None:
    enc = ColBERTEncoder(pylate_dir, do_query_expansion=False, attend_to_mask_tokens=True)
    got = enc.encode_queries(QUERIES)
    cfg = PYLATE_CONFIG
    tok = AutoTokenizer.from_pretrained(str(pylate_dir))
    weight = load_file(str(pylate_dir / "1_Dense" / "model.safetensors"))["linear.weight"]
    want = _reference(
        pylate_dir,
        QUERIES,
        query=True,
        prefix="",
        marker=cfg["query_prefix"],
        maxlen=cfg["query_length"],
        expansion=False,
        attend=False,
        projection=weight,
        skip_ids=set(),
    )
    _assert_same(got, want)
    assert got[1].shape[0] == 4  # [CLS] [Q] cat [SEP], no padding rows
    assert enc.attend_to_mask_tokens is False  # nothing to attend to without expansion
    assert tok.mask_token_id is not None


def test_missing_prefix_token_is_a_clear_error(tmp_path: Path, pylate_dir: Path) -> None:
    folder = tmp_path / "pylate-copy"
    shutil.copytree(pylate_dir, folder)
    config = json.loads((folder / "config_sentence_transformers.json").read_text())
    config["query_prefix"] = "[NOT-A-TOKEN]"
    (folder / "config_sentence_transformers.json").write_text(json.dumps(config))
    from latewise import CheckpointError

    with pytest.raises(CheckpointError, match=r"\[NOT-A-TOKEN\].*not in the tokenizer"):
        ColBERTEncoder(folder)


# -- zero-shot layout ---------------------------------------------------------------------------


def test_zero_shot_matches_raw_hidden_states(plain_bert_dir: Path) -> None:
    enc = ColBERTEncoder(plain_bert_dir)
    assert enc.layout == "zero-shot"
    assert enc.dim == 32  # hidden size: no projection
    skip = _punctuation_ids(plain_bert_dir)
    common = {"prefix": "", "marker": None, "maxlen": 64, "projection": None}
    _assert_same(
        enc.encode_queries(QUERIES),
        _reference(
            plain_bert_dir,
            QUERIES,
            query=True,
            expansion=False,
            attend=False,
            skip_ids=set(),
            **common,
        ),
    )
    _assert_same(
        enc.encode_documents(DOCS),
        _reference(
            plain_bert_dir,
            DOCS,
            query=False,
            expansion=False,
            attend=False,
            skip_ids=skip,
            **common,
        ),
    )
    fp = enc.fingerprint
    assert (fp["layout"], fp["query_marker"], fp["doc_marker"]) == ("zero-shot", None, None)
    assert fp["do_query_expansion"] is False


def test_zero_shot_with_markers_and_expansion(plain_bert_dir: Path) -> None:
    enc = ColBERTEncoder(
        plain_bert_dir,
        query_token_id="[unused0]",
        doc_token_id="[unused1]",
        query_maxlen=9,
        doc_maxlen=16,
        do_query_expansion=True,
    )
    skip = _punctuation_ids(plain_bert_dir)
    common = {"prefix": "", "projection": None, "attend": False}
    _assert_same(
        enc.encode_queries(QUERIES),
        _reference(
            plain_bert_dir,
            QUERIES,
            query=True,
            marker="[unused0]",
            maxlen=9,
            expansion=True,
            skip_ids=set(),
            **common,
        ),
    )
    _assert_same(
        enc.encode_documents(DOCS),
        _reference(
            plain_bert_dir,
            DOCS,
            query=False,
            marker="[unused1]",
            maxlen=16,
            expansion=False,
            skip_ids=skip,
            **common,
        ),
    )
    assert enc.fingerprint["query_marker"] == "[unused0]"


# -- fingerprints -------------------------------------------------------------------------------


def test_fingerprint_is_portable_json(
    colbert_ai: ColBERTEncoder, colbert_ai_dir: Path, tmp_path: Path
) -> None:
    fp = colbert_ai.fingerprint
    assert json.loads(json.dumps(fp)) == fp
    text = json.dumps(fp)
    assert str(colbert_ai_dir) not in text
    assert str(Path.home()) not in text
    assert fp["encoder"] == "ColBERTEncoder"
    assert fp["model"] == colbert_ai_dir.name
    # The same files in another place (another machine, another venv) -> the same fingerprint.
    elsewhere = tmp_path / "other-machine" / colbert_ai_dir.name
    shutil.copytree(colbert_ai_dir, elsewhere)
    assert ColBERTEncoder(elsewhere, batch_size=2).fingerprint == fp


def test_fingerprint_changes_when_weights_change(
    colbert_ai: ColBERTEncoder, colbert_ai_dir: Path, tmp_path: Path
) -> None:
    from safetensors.torch import save_file

    folder = tmp_path / colbert_ai_dir.name
    shutil.copytree(colbert_ai_dir, folder)
    state = load_file(str(folder / "model.safetensors"))
    state["linear.weight"] = state["linear.weight"] * 1.5  # retrain only the projection
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    changed = ColBERTEncoder(folder).fingerprint
    assert changed["checkpoint"] != colbert_ai.fingerprint["checkpoint"]
    assert {k: v for k, v in changed.items() if k != "checkpoint"} == {
        k: v for k, v in colbert_ai.fingerprint.items() if k != "checkpoint"
    }


# -- sentence-transformers 6 native saves -------------------------------------------------------


def test_native_multi_vector_encoder_save_loads(tmp_path: Path, pylate_dir: Path) -> None:
    """A ``MultiVectorEncoder.save`` folder (its own format: ``modules.json`` with
    ``MultiVectorMask``, ``model_type: MultiVectorEncoder``) loads by path like a hub id, and
    gives PyLate's vectors, since it was converted from the PyLate checkpoint."""
    from sentence_transformers import MultiVectorEncoder

    from latewise import load_encoder

    folder = tmp_path / "native-mve"
    MultiVectorEncoder(str(pylate_dir), device="cpu", local_files_only=True).save(str(folder))
    config = json.loads((folder / "config_sentence_transformers.json").read_text())
    assert config["model_type"] == "MultiVectorEncoder"
    enc = load_encoder(folder)
    assert isinstance(enc, ColBERTEncoder)
    assert enc.layout == "multi-vector-encoder"
    assert (enc.query_maxlen, enc.doc_maxlen) == (10, 20)
    _assert_same(enc.encode_queries(QUERIES), _pylate_reference(pylate_dir, QUERIES, query=True))
    _assert_same(enc.encode_documents(DOCS), _pylate_reference(pylate_dir, DOCS, query=False))
    assert enc.fingerprint["layout"] == "multi-vector-encoder"
    assert enc.fingerprint["query_marker"] == PYLATE_CONFIG["query_prefix"]


def test_pylate_skiplist_word_that_is_no_token_drops_unk_like_pylate(
    tmp_path: Path, pylate_dir: Path
) -> None:
    """PyLate looks skiplist words up with ``convert_tokens_to_ids``: a word that is not one
    token maps to ``[UNK]``, and ``[UNK]`` document rows are dropped. sentence-transformers drops
    the word instead and keeps those rows; latewise keeps PyLate's rule for PyLate checkpoints."""
    from sentence_transformers import MultiVectorEncoder

    folder = tmp_path / "pylate-unk"
    shutil.copytree(pylate_dir, folder)
    config = json.loads((folder / "config_sentence_transformers.json").read_text())
    config["skiplist_words"] = [*string.punctuation, "not-a-token"]
    (folder / "config_sentence_transformers.json").write_text(json.dumps(config))
    text = [
        "the cat sat on the mat \u00a7\u00a9 by the door"
    ]  # two characters outside the vocabulary
    enc = ColBERTEncoder(folder)
    tokens = enc.tokenizer.tokenize(text[0])
    assert tokens.count("[UNK]") == 2
    got = enc.encode_documents(text)
    assert "[UNK]" not in enc.document_tokens(text)[0]
    tok = AutoTokenizer.from_pretrained(str(folder))
    weight = load_file(str(folder / "1_Dense" / "model.safetensors"))["linear.weight"]
    skip = {tok.convert_tokens_to_ids(w) for w in config["skiplist_words"]}
    assert tok.unk_token_id in skip
    want = _reference(
        folder,
        text,
        query=False,
        prefix="",
        marker=PYLATE_CONFIG["document_prefix"],
        maxlen=PYLATE_CONFIG["document_length"],
        expansion=False,
        attend=False,
        projection=weight,
        skip_ids=skip,
    )
    _assert_same(got, want)
    st_rows = MultiVectorEncoder(str(folder), device="cpu", local_files_only=True).encode_document(
        text
    )[0]
    assert st_rows.shape[0] == got[0].shape[0] + 2  # sentence-transformers keeps the [UNK] rows
