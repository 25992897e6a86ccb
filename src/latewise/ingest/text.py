"""Text files to text: plain text, Markdown, reStructuredText and HTML, with encoding detection.

Encodings are detected from a byte-order mark (UTF-8, UTF-16, UTF-32), else UTF-8 is tried, then
Windows-1252 and finally Latin-1 (which never fails), with a warning when a legacy encoding was
guessed. HTML becomes text with the standard library's ``html.parser``: scripts and styles are
dropped, block elements become line breaks. No heavy imports.
"""

from __future__ import annotations

import codecs
import logging
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

from latewise.errors import FileIngestError, InvalidInputError
from latewise.ingest.sources import (
    TEXT_SUFFIXES,
    ErrorMode,
    IngestIterator,
    IngestReport,
    PathLike,
    SourceKind,
    iter_sources,
    run_sources,
    validate_error_mode,
)

logger = logging.getLogger(__name__)

__all__ = [
    "TextDocument",
    "decode_text",
    "html_to_text",
    "iter_text_files",
    "read_text_file",
]

_HTML_SUFFIXES = frozenset({".html", ".htm"})
_BOMS: tuple[tuple[bytes, str], ...] = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


@dataclass(frozen=True)
class TextDocument:
    """The text of one file.

    Attributes:
        path: the absolute path of the source file.
        text: the text (HTML converted to text; line endings normalised to ``\\n``).
        encoding: the encoding the bytes were decoded with.
        title: the HTML ``<title>``, when there is one.
    """

    path: str
    text: str
    encoding: str
    title: str | None = None


def decode_text(
    data: bytes, *, encoding: str | None = None, source: str = "<bytes>"
) -> tuple[str, str]:
    """Decode bytes to text, detecting the encoding when none is given.

    Args:
        data: the raw bytes.
        encoding: force this encoding (strict decoding) instead of detecting one.
        source: the file name used in messages.

    Returns:
        ``(text, encoding)``.

    Raises:
        FileIngestError: the forced encoding does not decode the bytes, or the bytes look
            binary (NUL bytes without a UTF-16/32 byte-order mark).
    """
    if encoding is not None:
        try:
            return data.decode(encoding), encoding
        except LookupError as exc:
            raise InvalidInputError(f"unknown encoding {encoding!r}") from exc
        except UnicodeDecodeError as exc:
            raise FileIngestError(
                source,
                f"cannot be decoded as {encoding} (byte {exc.start}: {exc.reason}); "
                "pass the right encoding= or leave it out to detect it",
            ) from exc
    for bom, name in _BOMS:
        if data.startswith(bom):
            try:
                return data.decode(name), name
            except UnicodeDecodeError as exc:
                raise FileIngestError(
                    source, f"starts with a {name} byte-order mark but is not valid {name}"
                ) from exc
    if b"\x00" in data[:8192]:
        raise FileIngestError(source, "looks like a binary file (it contains NUL bytes), not text")
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError as exc:
        bad = exc.start
    for fallback in ("cp1252", "latin-1"):
        try:
            text = data.decode(fallback)
        except UnicodeDecodeError:
            continue
        logger.warning(
            "%s is not valid UTF-8 (byte %d); decoded it as %s. Pass encoding= if that is wrong.",
            source,
            bad,
            fallback,
        )
        return text, fallback
    raise AssertionError("latin-1 decodes any bytes")  # pragma: no cover


class _HTMLToText(HTMLParser):
    """Collects the visible text of an HTML document, with block elements as line breaks."""

    # Never <head> itself: HTML lets "</head>" be left out, which would hide the whole body.
    SKIP = frozenset({"script", "style", "noscript", "template", "svg", "iframe", "object"})
    PARAGRAPH = frozenset(
        {
            "p", "h1", "h2", "h3", "h4", "h5", "h6", "pre", "blockquote", "table", "ul", "ol",
            "dl", "section", "article", "header", "footer", "figure", "hr", "form", "fieldset",
            "details", "address", "aside", "nav", "main",
        }
    )  # fmt: skip
    LINE = frozenset(
        {
            "br", "div", "li", "tr", "dt", "dd", "figcaption", "caption", "summary", "legend",
            "option", "body", "html", "thead", "tbody", "tfoot",
        }
    )  # fmt: skip
    CELL = frozenset({"td", "th"})
    VOID = frozenset({"br", "hr", "img", "meta", "link", "input", "wbr", "col", "area", "source"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.title_parts: list[str] = []
        self._skip = 0
        self._pre = 0
        self._in_title = False
        self._cells = 0

    def _br(self, tag: str) -> None:
        self.parts.append("\n\n" if tag in self.PARAGRAPH else "\n")

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "title":
            self._in_title = True
        if tag in self.SKIP and tag not in self.VOID:
            self._skip += 1
            return
        if self._skip:
            return
        if tag == "pre":
            self._pre += 1
        if tag == "tr":
            self._cells = 0
        if tag in self.CELL:
            if self._cells:
                self.parts.append(" | ")
            self._cells += 1
        elif tag in self.PARAGRAPH or tag in self.LINE:
            self._br(tag)
        if tag == "li":
            self.parts.append("- ")
        elif tag == "img":
            alt = dict(attrs).get("alt")
            if alt and alt.strip():
                self.parts.append(f" {alt.strip()} ")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.SKIP:  # <svg/>, <script/>: nothing inside
            return
        self.handle_starttag(tag, attrs)
        if tag not in self.VOID:
            self.handle_endtag(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False
        if tag in self.SKIP:
            self._skip = max(0, self._skip - 1)
            return
        if self._skip:
            return
        if tag == "pre":
            self._pre = max(0, self._pre - 1)
        if tag in self.PARAGRAPH or (tag in self.LINE and tag != "br"):
            self._br(tag)

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title_parts.append(data)
            return
        if self._skip:
            return
        self.parts.append(data if self._pre else re.sub(r"\s+", " ", data))

    def text(self) -> str:
        raw = "".join(self.parts).replace("\xa0", " ")
        raw = re.sub(r"[ \t\f\v]+", " ", raw)
        raw = re.sub(r" *\n *", "\n", raw)
        raw = re.sub(r"\n{3,}", "\n\n", raw)
        return raw.strip()

    def title(self) -> str | None:
        title = re.sub(r"\s+", " ", "".join(self.title_parts)).strip()
        return title or None


def html_to_text(html: str) -> tuple[str, str | None]:
    """Convert HTML to plain text.

    Scripts, styles, ``<head>`` and similar invisible content are dropped; paragraphs and headings
    are separated by blank lines, other blocks (``div``, ``li``, ``tr``, ``br``) by line breaks;
    list items start with ``- ``, table cells are joined with `` | ``; entities are decoded.

    Args:
        html: the HTML source.

    Returns:
        ``(text, title)``, where ``title`` is the ``<title>`` text or ``None``.
    """
    parser = _HTMLToText()
    parser.feed(html)
    parser.close()
    return parser.text(), parser.title()


def read_text_file(path: PathLike, *, encoding: str | None = None) -> TextDocument:
    """Read a ``.txt``, ``.md``, ``.rst`` or ``.html`` file as text.

    Args:
        path: the file.
        encoding: force an encoding instead of detecting it.

    Returns:
        The :class:`TextDocument`.

    Raises:
        FileIngestError: the file is missing, unreadable, empty, binary, has no text (only
            whitespace, or HTML without visible text), or its suffix is not a text suffix.
    """
    source = os.path.abspath(os.fspath(path))
    suffix = Path(source).suffix.lower()
    if suffix not in TEXT_SUFFIXES:
        raise FileIngestError(
            source,
            f"unsupported text file type {suffix or '(no suffix)'!r}; "
            f"supported: {', '.join(sorted(TEXT_SUFFIXES))}",
        )
    try:
        with open(source, "rb") as fh:
            data = fh.read()
    except FileNotFoundError as exc:
        raise FileIngestError(source, "no such file or directory") from exc
    except IsADirectoryError as exc:
        raise FileIngestError(source, "is a folder, not a file") from exc
    except OSError as exc:
        raise FileIngestError(source, f"cannot read the file: {exc.strerror or exc}") from exc
    if not data:
        raise FileIngestError(source, "the file is empty (0 bytes)")
    text, used = decode_text(data, encoding=encoding, source=source)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    title: str | None = None
    if suffix in _HTML_SUFFIXES:
        text, title = html_to_text(text)
        if not text:
            raise FileIngestError(source, "the HTML has no visible text")
    elif not text.strip():
        raise FileIngestError(source, "the file holds only whitespace")
    return TextDocument(path=source, text=text, encoding=used, title=title)


def _check_encoding(encoding: str) -> None:
    try:
        codecs.lookup(encoding)
    except LookupError as exc:
        raise InvalidInputError(f"unknown encoding {encoding!r}") from exc


def _count_text(_record: TextDocument, report: IngestReport) -> None:
    report.texts += 1


def iter_text_files(
    paths: PathLike | Iterable[PathLike],
    *,
    errors: ErrorMode = "collect",
    recursive: bool = True,
    encoding: str | None = None,
    report: IngestReport | None = None,
) -> IngestIterator[TextDocument]:
    """Stream text files (and folders of them) as :class:`TextDocument` records.

    Same order and error semantics as :func:`~latewise.ingest.iter_pages`: files in the order
    given, folders sorted by name, other files in folders skipped (``report.skipped``).

    Args:
        paths: a file or folder, or a list of them.
        errors: ``"collect"`` (record failures and go on) or ``"raise"``.
        recursive: whether folders are searched recursively.
        encoding: force an encoding for every file instead of detecting it.
        report: an existing report to add to.

    Returns:
        An iterator of :class:`TextDocument` whose ``report`` is complete once it is exhausted.

    Raises:
        FileIngestError: in ``"raise"`` mode, for the first file that cannot be read.
    """
    mode = validate_error_mode(errors)
    if encoding is not None:
        _check_encoding(encoding)
    run_report = report if report is not None else IngestReport()
    kinds: tuple[SourceKind, ...] = ("text",)
    sources = iter_sources(paths, kinds, recursive=recursive, report=run_report)

    def read(path: str) -> Iterator[TextDocument]:
        yield read_text_file(path, encoding=encoding)

    records = run_sources(
        sources,
        {"text": read},
        errors=mode,
        report=run_report,
        count=_count_text,
    )
    return IngestIterator(records, run_report)
