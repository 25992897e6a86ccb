"""Tests for latewise.ingest.documents (files to index documents) and ingest.conventions."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from latewise.errors import FileIngestError, InvalidInputError
from latewise.ingest import IngestReport
from latewise.ingest.conventions import (
    chunk_id,
    page_id,
    page_image_dir,
    page_metadata,
    parse_document_id,
)
from latewise.ingest.documents import (
    LONG_LINE_BYTES,
    FileDocument,
    FileDone,
    file_documents,
)
from latewise.types import PageRef
from tests.fixtures.documents import make_image, make_pdf, make_text_pdf


def collect(paths: Any, **kwargs: Any) -> tuple[list[FileDocument | FileDone], IngestReport]:
    report = IngestReport()
    kwargs.setdefault("chunker", None)
    kwargs.setdefault("image_dir", None)
    out = list(file_documents(paths, report=report, **kwargs))
    return out, report


def test_conventions_round_trip() -> None:
    assert page_id("/a/r.pdf", 3) == "/a/r.pdf#page=3"
    assert chunk_id("/a/n.md", 0) == "/a/n.md#chunk=0"
    assert chunk_id("/a/r.pdf", 2, page=4) == "/a/r.pdf#page=4&chunk=2"
    for doc_id, parts in [
        ("/a/r.pdf#page=3", ("/a/r.pdf", 3, None)),
        ("/a/n#1.md#chunk=0", ("/a/n#1.md", None, 0)),
        ("/a/r.pdf#page=4&chunk=2", ("/a/r.pdf", 4, 2)),
    ]:
        parsed = parse_document_id(doc_id)
        assert parsed is not None
        assert (parsed.source, parsed.page, parsed.chunk) == parts
    assert parse_document_id("d42") is None
    assert parse_document_id("/a/x#section") is None
    ref = PageRef("/a/r.pdf", page=2, width=10, height=20)
    assert page_metadata(ref) == {
        "source": "/a/r.pdf",
        "file_name": "r.pdf",
        "page": 2,
        "width": 10,
        "height": 20,
    }
    assert page_image_dir("/db", "docs") == Path("/db/pages/docs")


def test_text_files_give_chunks_then_done(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("Apples are red.", encoding="utf-8")
    (tmp_path / "b.html").write_text(
        "<html><head><title>B</title></head><body><p>Bananas.</p></body></html>", encoding="utf-8"
    )
    (tmp_path / "c.png").write_bytes(b"")  # an image in a folder: skipped, not a failure
    out, report = collect(tmp_path, modality="text", metadata={"project": "x"})
    a, b = str(tmp_path / "a.txt"), str(tmp_path / "b.html")
    assert out == [
        FileDocument(
            a,
            f"{a}#chunk=0",
            "Apples are red.",
            {
                "project": "x",
                "source": a,
                "file_name": "a.txt",
                "chunk": 0,
                "start": 0,
                "end": 15,
            },
        ),
        FileDone(a, (f"{a}#chunk=0",)),
        FileDocument(
            b,
            f"{b}#chunk=0",
            "Bananas.",
            {
                "project": "x",
                "source": b,
                "file_name": "b.html",
                "title": "B",
                "chunk": 0,
                "start": 0,
                "end": 8,
            },
        ),
        FileDone(b, (f"{b}#chunk=0",)),
    ]
    assert report.files_ok == [a, b]
    assert report.texts == 2
    assert report.skipped == [str(tmp_path / "c.png")]
    assert report.failures == []


def test_pdf_text_pages_and_page_documents(tmp_path: Path) -> None:
    pdf = make_text_pdf(tmp_path / "paper.pdf", ["Dogs bark.", "Parrots repeat words."])
    out, report = collect(pdf, modality="text")
    source = str(pdf)
    ids = [d.id for d in out if isinstance(d, FileDocument)]
    assert ids == [f"{source}#page=1&chunk=0", f"{source}#page=2&chunk=0"]
    assert out[-1] == FileDone(source, tuple(ids))
    assert [d.metadata["page"] for d in out if isinstance(d, FileDocument)] == [1, 2]

    scans = tmp_path / "scans"
    scans.mkdir()
    make_pdf(scans / "r.pdf", [(200, 300), (300, 200)])
    make_image(scans / "photo.png")
    out, report = collect(scans, modality="image", image_dir=tmp_path / "pages")
    docs = [d for d in out if isinstance(d, FileDocument)]
    assert [d.id.rsplit("/", 1)[-1] for d in docs] == [
        "photo.png#page=1",
        "r.pdf#page=1",
        "r.pdf#page=2",
    ]
    assert all(isinstance(d.item, PageRef) for d in docs)
    assert docs[2].metadata == {
        "source": str(scans / "r.pdf"),
        "file_name": "r.pdf",
        "page": 2,
        "width": docs[2].item.width,
        "height": docs[2].item.height,
    }
    assert report.pages == 3
    assert sum(isinstance(d, FileDone) for d in out) == 2


def test_encoder_that_cannot_read_a_file_says_so(tmp_path: Path) -> None:
    image = make_image(tmp_path / "a.png")
    note = tmp_path / "n.txt"
    note.write_text("Notes.", encoding="utf-8")
    out, report = collect([image, note], modality="text")
    assert [type(d) for d in out] == [FileDocument, FileDone]
    ((path, reason),) = report.failures
    assert path == str(image)
    assert "reads text (" in reason
    assert ".txt" in reason
    assert "not images" in reason
    assert "image encoder (ColPali)" in reason

    out, report = collect(note, modality="image")
    assert out == []
    ((_, reason),) = report.failures
    assert "reads page images (" in reason
    assert ".pdf" in reason
    assert "not text" in reason
    with pytest.raises(FileIngestError, match="reads page images"):
        collect(note, modality="image", errors="raise")

    # A folder of files the encoder cannot read: a failure, not a silent zero documents.
    folder = tmp_path / "only-images"
    folder.mkdir()
    make_image(folder / "b.png")
    out, report = collect(folder, modality="text")
    assert out == []
    ((_, reason),) = report.failures
    assert "found no file the encoder reads, only b.png" in reason

    with pytest.raises(InvalidInputError, match="modality"):
        collect(note, modality="audio")


def test_scanned_pdf_with_a_text_encoder_names_the_modality(tmp_path: Path) -> None:
    scan = make_pdf(tmp_path / "scan.pdf", [(200, 300)])
    _, report = collect(scan, modality="text")
    ((_, reason),) = report.failures
    assert "no text layer" in reason
    assert "text encoder" in reason
    assert "ColPali" in reason


def test_large_files_are_announced_before_they_are_read(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    one_line = tmp_path / "dump.txt"
    one_line.write_text("word " * (LONG_LINE_BYTES // 5 + 10), encoding="utf-8")
    small = tmp_path / "small.txt"
    small.write_text("Short.\n", encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="latewise"):
        out, _ = collect([small, one_line], modality="text")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert str(one_line) in warnings[0]
    assert "MiB" in warnings[0]
    assert "line longer" in warnings[0]
    assert len(out) == 4


def test_progress_bar_counts_files_and_bytes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("a.txt", "b.txt", "c.txt"):
        (tmp_path / name).write_text(f"Text of {name}.", encoding="utf-8")
    out, _ = collect(tmp_path, modality="text", show_progress_bar=True)
    assert len(out) == 6
    err = capsys.readouterr().err
    assert "Indexing 3/3 files" in err
    total = sum((tmp_path / n).stat().st_size for n in ("a.txt", "b.txt", "c.txt"))
    assert "100%" in err
    assert f"{total}.0/{total}.0" in err
    assert "<00:00" in err  # the estimated time left
