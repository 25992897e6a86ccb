"""What the commands print: result tables with snippets, JSON, collection blocks, summaries.

Pure formatting, no Chroma and no models: every function takes plain values (hits, counts,
stored configurations) and returns text.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    from latewise.engine.settings import WriteStats
    from latewise.ingest import IngestReport
    from latewise.types import Hit

__all__ = [
    "Snippet",
    "collection_block",
    "disk_usage",
    "hit_json",
    "hit_source",
    "hits_table",
    "human_bytes",
    "index_summary",
    "make_snippet",
    "matched_terms",
    "terminal_width",
]

_WORD = re.compile(r"\w+")
_ELLIPSIS = "…"
#: Columns of the snippet when the terminal is too narrow for the other columns.
_MIN_SNIPPET = 30


def terminal_width() -> int:
    """The terminal's width in columns (``$COLUMNS``, else 120 when it cannot be told)."""
    return shutil.get_terminal_size((120, 24)).columns


def human_bytes(n: int) -> str:
    """``n`` bytes as ``12.3 MiB``."""
    if n < 1024:
        return f"{n} B"
    value = n / 1024
    for unit in ("KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def disk_usage(folder: Path) -> int:
    """Bytes allocated on disk under ``folder`` (like ``du``; apparent sizes where the file
    system does not report blocks)."""
    total = 0
    for root, _dirs, files in os.walk(folder):
        for name in files:
            try:
                st = os.lstat(os.path.join(root, name))
            except OSError:
                continue
            blocks = getattr(st, "st_blocks", None)
            total += blocks * 512 if blocks is not None else st.st_size
    return total


# -- search results --------------------------------------------------------------------------------


def hit_json(hit: Hit) -> dict[str, Any]:
    """One hit as the JSON object ``search --json`` prints."""
    return {
        "rank": hit.rank + 1,
        "id": hit.id,
        "score": hit.score,
        "text": hit.text,
        "metadata": hit.metadata,
        "page": asdict(hit.page) if hit.page is not None else None,
    }


def hit_source(hit: Hit) -> str:
    """The file a hit came from, with its page: ``report.pdf p.2``."""
    meta = hit.metadata
    origin = hit.page.path if hit.page is not None and hit.page.path else None
    name = meta.get("file_name") or Path(str(meta.get("source") or origin or "")).name or "-"
    page = hit.page.page if hit.page is not None else meta.get("page")
    return f"{name} p.{page}" if page is not None else str(name)


def _term(label: str) -> str | None:
    """A token label as a lowercase search term, or ``None`` for special tokens, punctuation,
    word pieces (``##rr``) and single letters."""
    if label.startswith("##"):
        return None
    term = label.lstrip("▁Ġ").lower()
    if len(term) < 2 or not _WORD.fullmatch(term):
        return None
    return term


def _related(term: str, words: Collection[str]) -> bool:
    return any(w.startswith(term) or term.startswith(w) for w in words)


def matched_terms(
    query: str, matches: Sequence[int], labels: Sequence[str] | None
) -> frozenset[str]:
    """The words to highlight in a hit's text.

    Args:
        query: the query text.
        matches: for each query vector, the document vector it matched (``Hit.matches``).
        labels: the token of each document vector (``Encoder.document_tokens``), or ``None``
            when vectors are not tokens (pooled documents, one-vector encoders).

    Returns:
        The document tokens the query matched; of those, the ones that are (prefixes of) query
        words when there are any (query-expansion vectors also match filler words). When no
        token can be told (no labels, or none is a word), the query's words of three letters
        or more.
    """
    query_words = {w.lower() for w in _WORD.findall(query)}
    terms: set[str] = set()
    if labels is not None:
        for position in matches:
            if 0 <= position < len(labels):
                term = _term(labels[position])
                if term is not None:
                    terms.add(term)
    close = {t for t in terms if _related(t, query_words)}
    if close:
        return frozenset(close)
    if terms:
        return frozenset(terms)
    return frozenset(w for w in query_words if len(w) >= 3)


def _is_match(word: str, terms: Collection[str]) -> bool:
    """A word matches a term it equals, or a term of four letters or more it starts with
    (the token ``erupt`` of ``erupted``)."""
    return any(word == t or (len(t) >= 4 and word.startswith(t)) for t in terms)


@dataclass(frozen=True)
class Snippet:
    """A window of a text, and the spans (start, end) in it to highlight."""

    text: str
    spans: tuple[tuple[int, int], ...]

    def render(self, style: bool) -> str:
        """The text, with its spans in bold yellow when ``style`` (a terminal)."""
        if not style or not self.spans:
            return self.text
        out, last = [], 0
        for start, end in self.spans:
            out.append(self.text[last:start])
            out.append(typer.style(self.text[start:end], fg="yellow", bold=True))
            last = end
        out.append(self.text[last:])
        return "".join(out)


def make_snippet(text: str, terms: Collection[str], width: int) -> Snippet:
    """The part of ``text`` (whitespace collapsed) of at most ``width`` characters that holds the
    most distinct ``terms``, starting a little before the first of them, with ``…`` where it was
    cut, and the matching words marked."""
    flat = " ".join(text.split())
    width = max(width, 8)
    words = [(m.start(), m.end(), m.group().lower()) for m in _WORD.finditer(flat)]
    found = [(s, e, w) for s, e, w in words if _is_match(w, terms)]
    if len(flat) <= width:
        a, b = 0, len(flat)
    else:
        room = width - 2  # an ellipsis each side at most
        a, best = 0, -1
        starts = [s for s, _, _ in words] or [0]
        # The start of the text first: it wins ties, so a passage is cut only to show more.
        for s in [0, *(s for s, _, _ in found)]:
            lead = s - min(room // 5, s)
            begin = next((w for w in starts if w >= lead), s)
            distinct = len({w for s2, e2, w in found if s2 >= begin and e2 <= begin + room})
            if distinct > best:
                a, best = begin, distinct
        b = min(len(flat), a + room)
        if b < len(flat):
            cut = flat.rfind(" ", a, b)
            if cut > a + room // 2:
                b = cut
    body = flat[a:b].strip()
    a += len(flat[a:b]) - len(flat[a:b].lstrip())
    prefix = _ELLIPSIS if a > 0 else ""
    suffix = _ELLIPSIS if a + len(body) < len(flat) else ""
    shift = len(prefix) - a
    spans = tuple((s + shift, e + shift) for s, e, _ in found if s >= a and e <= a + len(body))
    return Snippet(prefix + body + suffix, spans)


def _page_label(hit: Hit) -> str:
    if hit.page is None:
        return ""
    size = f", {hit.page.width}x{hit.page.height} px" if hit.page.width else ""
    return f"[page image{size}]"


def hits_table(
    hits: Sequence[Hit],
    terms: Sequence[Collection[str]],
    *,
    width: int | None = None,
    style: bool = False,
) -> str:
    """The result table: rank, score, id, source, and a snippet as wide as the terminal.

    Args:
        hits: the hits, best first.
        terms: per hit, the words to highlight (:func:`matched_terms`).
        width: the terminal's width (default: :func:`terminal_width`).
        style: highlight matched words (only when stdout is a terminal).
    """
    rows = [(str(h.rank + 1), f"{h.score:.4f}", h.id, hit_source(h)) for h in hits]
    header = ("rank", "score", "id", "source", "snippet")
    widths = [max(len(header[i]), *(len(r[i]) for r in rows)) for i in range(4)]
    total = width if width is not None else terminal_width()
    room = max(total - sum(widths) - 2 * 4, _MIN_SNIPPET)

    def line(cells: Sequence[str], snippet: str) -> str:
        return "  ".join(
            [
                cells[0].rjust(widths[0]),
                cells[1].rjust(widths[1]),
                cells[2].ljust(widths[2]),
                cells[3].ljust(widths[3]),
                snippet,
            ]
        ).rstrip()

    lines = [line(header[:4], header[4])]
    for hit, row, hit_terms in zip(hits, rows, terms, strict=True):
        if hit.text is not None:
            snippet = make_snippet(hit.text, hit_terms, room).render(style)
        else:
            snippet = _page_label(hit)
        lines.append(line(row, snippet))
    return "\n".join(lines)


# -- info ------------------------------------------------------------------------------------------


def _short(value: Any) -> str:
    if isinstance(value, list | tuple) and len(value) > 4:
        return f"[{len(value)} items]"
    return str(value)


def collection_block(entry: Mapping[str, Any]) -> str:
    """One collection of ``info``: encoder, model, fingerprint, counts, settings."""
    enc = entry["encoder"]
    fp: Mapping[str, Any] = enc["fingerprint"]
    settings: Mapping[str, Any] = entry["settings"]
    compression = settings.get("compression")
    hnsw = " ".join(f"{k}={v}" for k, v in sorted(dict(settings.get("hnsw", {})).items()))
    details = ", ".join(
        f"{key}={_short(value)}"
        for key, value in sorted(fp.items())
        if key not in ("encoder", "model", "dim", "checkpoint")
    )
    options = ", ".join(f"{k}={v!r}" for k, v in sorted(dict(enc.get("options") or {}).items()))
    return "\n".join(
        [
            f"{entry['name']}",
            f"  encoder:     {enc['class']} from {enc['source']!r} ({entry['modality']})"
            + (f" with {options}" if options else ""),
            f"  model:       {fp.get('model')} (dim {fp.get('dim')}, weights "
            f"{fp.get('checkpoint')})",
            f"  fingerprint: {details}",
            f"  documents:   {entry['documents']}",
            f"  rows:        {entry['rows']} first-stage rows",
            f"  settings:    compression="
            f"{'float16' if compression is None else f'{compression}-bit'}, "
            f"pool_factor={settings.get('pool_factor')}, prototypes={settings.get('prototypes')}, "
            f"hnsw {hnsw}",
        ]
    )


# -- index -----------------------------------------------------------------------------------------


def _names(paths: Iterable[str], limit: int = 5) -> str:
    items = list(paths)
    shown = ", ".join(Path(p).name for p in items[:limit])
    more = f" and {len(items) - limit} more" if len(items) > limit else ""
    return shown + more


def index_summary(
    *,
    collection: str,
    location: str,
    report: IngestReport,
    written: WriteStats,
    total: int,
    elapsed: float,
) -> str:
    """What ``index`` did: files read, documents written / unchanged / deleted, vectors."""
    unchanged = max(report.documents - written.documents, 0)
    parts = []
    if report.texts:
        parts.append(f"{report.texts} text(s)")
    if report.pages:
        parts.append(f"{report.pages} page(s)")
    read = f" ({', '.join(parts)})" if parts else ""
    deleted = f", {report.deleted} deleted" if report.deleted else ""
    lines = [
        f"Indexed {len(report.files_ok)} file(s){read} into collection {collection!r} "
        f"({location}) in {elapsed:.1f} s",
        f"  documents: {written.documents} written, {unchanged} unchanged (skipped){deleted}; "
        f"{total} in the collection",
        f"  vectors:   {written.vectors} ({written.rows} first-stage rows), "
        f"{human_bytes(written.bytes)} of vectors stored",
    ]
    if report.skipped:
        lines.append(
            f"  skipped:   {len(report.skipped)} file(s) of other types: {_names(report.skipped)}"
        )
    if report.failures:
        lines.append(f"  failed:    {len(report.failures)} file(s)")
        lines.extend(f"    {failed}: {reason}" for failed, reason in report.failures)
    return "\n".join(lines)
