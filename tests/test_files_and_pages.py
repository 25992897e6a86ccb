"""index.add_files, page retrieval with a tiny ColPali, explanations and token pooling."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from latewise import DocumentNotFoundError, InvalidInputError, LateInteractionIndex
from tests.fixtures.documents import make_garbage_pdf, make_image, make_pdf, make_text_pdf
from tests.fixtures.hash_encoder import HashEncoder


@pytest.fixture(scope="module")
def colpali(colpali_dir: Path) -> Any:
    from latewise import ColPaliEncoder

    return ColPaliEncoder(str(colpali_dir), device="cpu")


def page_index(tmp_path: Path, encoder: Any, **kw: Any) -> LateInteractionIndex:
    return LateInteractionIndex(
        encoder,
        path=tmp_path / "db",
        collection="pages",
        image_dir=tmp_path / "pages",
        n_rerank=2,
        **kw,
    )


def test_pdf_pages_indexed_and_searched(tmp_path: Path, colpali: Any) -> None:
    (tmp_path / "in").mkdir()
    good = make_pdf(
        tmp_path / "in" / "report.pdf", page_sizes=((200, 300), (300, 200), (200, 300), (250, 250))
    )
    other = make_image(tmp_path / "in" / "chart.png", size=(90, 60))
    bad = make_garbage_pdf(tmp_path / "in" / "broken.pdf")
    index = page_index(tmp_path, colpali)
    report = index.add_files([good, bad, other])
    assert report.failed_paths == [str(bad)]
    assert "broken.pdf" in report.summary()
    assert report.pages == 5
    assert report.documents == 5
    assert len(index) == 5
    hits = index.search("quarterly report table", k=5)
    assert len(hits) == 5
    for hit in hits:
        assert hit.text is None
        assert hit.page is not None
        assert Path(hit.page.image_path or "").is_file()
        with Image.open(hit.page.image_path or "") as im:
            assert im.size == (hit.page.width, hit.page.height)
        assert hit.metadata["source"] == hit.page.path
        assert hit.metadata["page"] == hit.page.page
    pages = sorted((h.metadata["file_name"], h.metadata["page"]) for h in hits)
    assert pages == [
        ("chart.png", 1),
        ("report.pdf", 1),
        ("report.pdf", 2),
        ("report.pdf", 3),
        ("report.pdf", 4),
    ]
    # Page images live on disk in the managed folder, never in Chroma as pixels.
    assert all(str(tmp_path / "pages") in (h.page.image_path or "") for h in hits if h.page)
    # Re-indexing the same files changes nothing (and raises nothing).
    again = index.add_files([good, other])
    assert again.documents == 5
    assert len(index) == 5


def test_reindexing_a_shorter_file_removes_its_old_pages(tmp_path: Path, colpali: Any) -> None:
    path = make_pdf(tmp_path / "doc.pdf", page_sizes=((200, 300),) * 3)
    index = page_index(tmp_path, colpali)
    index.add_files([path])
    assert len(index) == 3
    make_pdf(path, page_sizes=((200, 300),) * 2)
    index.add_files([path])
    assert sorted(index.get(index.ids())[i].metadata["page"] for i in range(2)) == [1, 2]
    assert len(index) == 2


def test_explain_page_writes_heatmap_of_page_size(tmp_path: Path, colpali: Any) -> None:
    path = make_pdf(tmp_path / "doc.pdf", page_sizes=((200, 300), (300, 200)))
    index = page_index(tmp_path, colpali)
    index.add_files([path])
    hit = index.search("a table", k=1)[0]
    out = tmp_path / "map.png"
    explanation = index.explain("a table", hit.id, out=out)
    assert explanation.similarity_maps is not None
    n_tokens = len(explanation.matches)
    assert explanation.similarity_maps.shape[0] == n_tokens
    with Image.open(out) as im:
        assert im.size == (hit.page.width, hit.page.height)  # type: ignore[union-attr]
    explanation.save(tmp_path / "token0.png", token=0)
    assert (tmp_path / "token0.png").is_file()
    assert explanation.score == pytest.approx(sum(m.similarity for m in explanation.matches))
    with pytest.raises(DocumentNotFoundError):
        index.explain("a table", "no-such-id")


def test_token_pooling_shrinks_stored_vectors(tmp_path: Path, colpali: Any) -> None:
    images = [
        make_image(tmp_path / f"im{i}.png", size=(64, 48), color=(40 * i, 90, 200 - 30 * i))
        for i in range(3)
    ]
    full = colpali.encode_documents(images)
    plain = LateInteractionIndex(colpali, path=tmp_path / "db", collection="plain")
    pooled = LateInteractionIndex(colpali, path=tmp_path / "db", collection="pooled", pool_factor=3)
    plain.add(images)
    pooled.add(images)
    for rec_plain, rec_pooled, vectors in zip(
        plain.get(plain.ids(), include_vectors=True),
        pooled.get(plain.ids(), include_vectors=True) or [],
        full,
        strict=False,
    ):
        assert rec_plain.n_vectors == vectors.shape[0]
        assert rec_pooled.n_vectors == max(vectors.shape[0] // 3, 1)
    # Scores under pooling stay close to the unpooled ones, and the top page is the same.
    query = "a blue rectangle"
    a = plain.search(query, k=3, exact=True)
    b = pooled.search(query, k=3, exact=True)
    assert {h.id for h in a} == {h.id for h in b}


def test_text_files_chunked_with_the_encoders_tokenizer(tmp_path: Path) -> None:
    from latewise import load_encoder

    encoder = load_encoder("minilm")
    folder = tmp_path / "docs"
    folder.mkdir()
    long_text = " ".join(
        f"Sentence {i} explains how late interaction scores tokens." for i in range(120)
    )
    (folder / "long.md").write_text(long_text, encoding="utf-8")
    (folder / "page.html").write_text(
        "<html><head><title>Cats</title></head>"
        "<body><p>Cats purr when they are happy.</p></body></html>",
        encoding="utf-8",
    )
    make_text_pdf(folder / "paper.pdf", ["Dogs bark at the mail carrier.", "Parrots repeat words."])
    (folder / "skip.bin").write_bytes(b"\x00\x01")
    index = LateInteractionIndex(encoder, path=tmp_path / "db", collection="text", n_rerank=2)
    report = index.add_files([folder])
    assert report.ok, report.summary()
    chunks = [r for r in index.get(index.ids()) if r.metadata["file_name"] == "long.md"]
    assert len(chunks) > 1  # cut, not truncated
    limit = encoder.max_document_tokens
    tok = encoder.tokenizer
    for rec in chunks:
        assert len(tok(rec.text, add_special_tokens=False)["input_ids"]) <= limit
    covered = "".join(
        sorted(((r.metadata["start"], r.text) for r in chunks), key=lambda t: t[0])[0][1]
    )
    assert covered.startswith("Sentence 0")
    hit = index.search("why do cats purr", k=1)[0]
    assert hit.metadata["title"] == "Cats"
    assert hit.metadata["file_name"] == "page.html"
    hit = index.search("parrots repeat", k=1)[0]
    assert hit.metadata["file_name"] == "paper.pdf"
    assert hit.metadata["page"] == 2
    explanation = index.explain("why do cats purr", index.search("why do cats purr", k=1)[0].id)
    assert {"cats", "pu"} <= {m.document_token for m in explanation.matches}
    with pytest.raises(InvalidInputError, match="PNG"):
        explanation.save(tmp_path / "x.png")
    explanation.save(tmp_path / "x.json")
    assert "matches" in (tmp_path / "x.json").read_text()


def test_add_files_with_text_encoder_rejects_images(tmp_path: Path) -> None:
    image = make_image(tmp_path / "a.png")
    index = LateInteractionIndex(HashEncoder(), path=tmp_path / "db", collection="txt")
    report = index.add_files([image])
    assert report.failed_paths == [str(image)]
    reason = report.failures[0][1]
    assert "encoder reads text (" in reason
    assert "not images" in reason


def test_add_files_fits_a_compression_codec_on_many_files(
    tmp_path: Path, codec_fits: list[int]
) -> None:
    fitted = codec_fits
    folder = tmp_path / "notes"
    folder.mkdir()
    for i in range(12):
        (folder / f"n{i:02d}.txt").write_text(f"note {i} about topic{i % 3} and more words here")
    encoder = HashEncoder()
    index = LateInteractionIndex(
        encoder, path=tmp_path / "db", collection="txt", compression=2, batch_size=3
    )
    report = index.add_files([folder])
    assert report.ok
    assert len(index) == 12
    # One codec, fitted on the vectors of all twelve files, not on the first batch of three.
    texts = [r.text or "" for r in index.get(index.ids())]
    assert fitted == [sum(v.shape[0] for v in encoder.encode_documents(texts))]
    # Re-indexing: nothing refitted, nothing duplicated; a file that changed replaces its doc.
    (folder / "n00.txt").write_text("note zero rewritten")
    again = LateInteractionIndex(encoder, path=tmp_path / "db", collection="txt", batch_size=3)
    assert again.add_files([folder]).ok
    assert len(again) == 12
    assert len(fitted) == 1
    assert [r.text for r in again.get([i for i in again.ids() if "n00" in i])] == [
        "note zero rewritten"
    ]
