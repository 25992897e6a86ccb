"""Bad input gives typed latewise errors naming what was wrong and where, on every path."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from latewise import (
    BertEncoder,
    ColBERTEncoder,
    EmptyInputError,
    ImageLoadError,
    InvalidInputTypeError,
    LatewiseError,
)
from latewise.encoders.base import Encoder


@pytest.fixture(scope="module")
def text_encoders(colbert_ai_dir: Path, st_bert_dir: Path) -> list[Encoder]:
    return [ColBERTEncoder(colbert_ai_dir), BertEncoder(st_bert_dir)]


@pytest.fixture(scope="module")
def colpali(colpali_dir: Path) -> Any:
    from latewise import ColPaliEncoder

    return ColPaliEncoder(colpali_dir)


def _paths(enc: Encoder) -> list[tuple[str, Callable[[Any], Any]]]:
    return [("queries", enc.encode_queries), ("documents", enc.encode_documents)]


TEXT_CASES: list[tuple[str, Any, type[Exception], list[int], str]] = [
    ("empty list", [], EmptyInputError, [], "empty list"),
    ("empty text", ["fine", ""], EmptyInputError, [1], "position 1"),
    ("whitespace text", ["  \n\t", "fine", " "], EmptyInputError, [0, 2], "positions 0, 2"),
    ("None", None, InvalidInputTypeError, [], "NoneType"),
    ("None item", ["fine", None], InvalidInputTypeError, [1], "position 1"),
    ("non-str items", [1, "fine", b"bytes"], InvalidInputTypeError, [0, 2], "positions 0, 2"),
    ("lone string", "just one text", InvalidInputTypeError, [], "wrap a single text"),
]


@pytest.mark.parametrize(("case", "value", "error", "positions", "says"), TEXT_CASES)
def test_text_paths_reject_bad_input(
    text_encoders: list[Encoder],
    case: str,
    value: Any,
    error: type[Exception],
    positions: list[int],
    says: str,
) -> None:
    for enc in text_encoders:
        for what, encode in _paths(enc):
            with pytest.raises(error) as info:
                encode(value)
            assert isinstance(info.value, LatewiseError), (case, what)
            assert getattr(info.value, "positions", None) == positions, (case, what)
            assert says in str(info.value), (case, what, str(info.value))
            if value not in (None, [], "just one text") and case != "non-str items":
                assert what in str(info.value)  # "queries ..." / "documents ..."


def test_token_labels_validate_too(text_encoders: list[Encoder]) -> None:
    for enc in text_encoders:
        with pytest.raises(EmptyInputError):
            enc.document_tokens(["ok", " "])
    with pytest.raises(InvalidInputTypeError):
        text_encoders[0].query_tokens([None])


@pytest.mark.parametrize(("case", "value", "error", "positions", "says"), TEXT_CASES)
def test_colpali_query_path_rejects_bad_input(
    colpali: Any, case: str, value: Any, error: type[Exception], positions: list[int], says: str
) -> None:
    with pytest.raises(error) as info:
        colpali.encode_queries(value)
    assert info.value.positions == positions, case  # type: ignore[attr-defined]
    assert says in str(info.value)


def test_colpali_document_path_rejects_bad_input(colpali: Any, tmp_path: Path) -> None:
    from PIL import Image

    good = Image.new("RGB", (32, 32), "white")
    text_file = tmp_path / "notes.txt"
    text_file.write_text("not an image")
    missing = tmp_path / "missing.png"

    with pytest.raises(EmptyInputError):
        colpali.encode_documents([])
    with pytest.raises(ImageLoadError) as info:
        colpali.encode_documents([good, str(missing), text_file])
    assert info.value.positions == [1, 2]
    message = str(info.value)
    assert "position 1" in message
    assert "does not exist" in message
    assert "missing.png" in message
    assert "position 2" in message
    assert "not a readable image" in message
    assert isinstance(info.value, ValueError)
    with pytest.raises(InvalidInputTypeError) as type_info:
        colpali.encode_documents([good, None, 7])
    assert type_info.value.positions == [1, 2]
    with pytest.raises(InvalidInputTypeError):
        colpali.encode_documents(str(missing))  # a lone path, not a list
    with pytest.raises(ImageLoadError):
        colpali.patch_grid(missing)
    with pytest.raises(ImageLoadError):
        colpali.document_tokens([missing])


def test_colpali_truncated_image_is_named_with_its_position(colpali: Any, tmp_path: Path) -> None:
    from PIL import Image

    whole = tmp_path / "whole.png"
    Image.effect_noise((64, 64), 40).convert("RGB").save(whole)
    cut = tmp_path / "cut.png"
    cut.write_bytes(
        whole.read_bytes()[: whole.stat().st_size // 2]
    )  # a valid header, half the data
    with pytest.raises(ImageLoadError) as info:
        colpali.encode_documents([whole, cut])
    assert info.value.positions == [1]
    assert "cut.png" in str(info.value)


def test_colpali_decodes_image_paths_one_batch_at_a_time(
    colpali: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from PIL import Image

    import latewise.encoders.base as base

    paths = []
    for i in range(6):
        paths.append(tmp_path / f"p{i}.png")
        Image.new("RGB", (40 + i, 40), "white").save(paths[-1])
    live: list[int] = []
    decoded = 0
    real = base.decode_image

    def counting(item: Any, position: int) -> Any:
        nonlocal decoded
        decoded += 1
        return real(item, position)

    original = colpali._encode_document_batch

    def batch(images: list[Any]) -> Any:
        live.append(decoded)  # pixels decoded so far, when this batch runs
        return original(images)

    monkeypatch.setattr(base, "decode_image", counting)
    monkeypatch.setattr(colpali, "_encode_document_batch", batch)
    out = colpali.encode_documents(paths, batch_size=2)
    assert len(out) == 6
    assert live == [2, 4, 6]  # each batch decoded just before it runs, never all up front
