"""The commands that build and query a collection: ``index`` and ``search``.

Both check their arguments first (a usage error exits 2 before anything is opened), and load a
model only once something must be encoded.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from latewise.cli.app import (
    DEFAULT_COLLECTION,
    DEFAULT_ENCODER,
    EXIT_USAGE,
    CliError,
    CollectionOpt,
    HostOpt,
    PathOpt,
    PortOpt,
    QueryArg,
    WhereOpt,
    app,
    check_target,
    collections,
    connect,
    count_option,
    encoder_argument,
    guard,
    note,
    note_loading,
    open_collection,
    parse_json_object,
    require_query,
    save_query_runtime,
)
from latewise.cli.output import hit_json, hits_table, index_summary, matched_terms

if TYPE_CHECKING:
    from latewise.encoders import Encoder
    from latewise.index import LateInteractionIndex
    from latewise.types import Hit

__all__ = ["index_command", "search_command"]


def _stderr_is_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


#: ``--backend`` values and the encoder arguments they stand for.
BACKENDS: dict[str, dict[str, str]] = {
    "torch": {},
    "onnx": {"backend": "onnx"},
    "openvino": {"backend": "openvino"},
    "onnx-int8": {"backend": "onnx", "quantize": "int8"},
    "openvino-int8": {"backend": "openvino", "quantize": "int8"},
}


def _load_encoder(
    collection: str, name: str | None, backend: str | None, stored: Mapping[str, Any] | None
) -> Encoder | None:
    """The encoder to index with: the one ``--encoder`` names (``minilm``, a hub id or a
    checkpoint folder) on the ``--backend`` given; for an existing collection, its stored one
    (``None``: loaded when needed, with the options it was built with), on ``--backend`` if
    given."""
    options: dict[str, Any] = dict(BACKENDS[backend]) if backend is not None else {}
    if stored is None or name not in (None, stored.get("encoder_source")):
        from latewise.encoders import load_encoder

        return None if name is None else load_encoder(name, **options)
    if backend is None:
        return None
    from latewise.engine.binding import load_stored_encoder

    stored_options = stored.get("encoder_options") or {}
    kept = {k: v for k, v in stored_options.items() if k not in ("backend", "quantize")}
    return load_stored_encoder(collection, {**stored, "encoder_options": kept | options})


# -- index -----------------------------------------------------------------------------------------


@app.command(
    "index",
    epilog=(
        "Text files (.txt .md .rst .html) and the text of PDFs are cut into chunks with the "
        "encoder's own tokenizer; with a ColPali encoder every PDF page and image is one page "
        "document. A file the encoder cannot read is a failure that says so. Re-indexing a "
        "file replaces its documents (unchanged ones are skipped); --sync also removes the "
        "documents of files under PATH that are gone. Exit status: 0 when every file was "
        "indexed; 1 when some files failed (the others are indexed, the failures listed) or on "
        "an error; 2 for a usage error."
    ),
)
@guard
def index_command(
    paths: Annotated[
        list[Path],
        typer.Argument(
            help="Files and folders to index (folders recursively).",
            metavar="PATH",
            show_default=False,
        ),
    ],
    collection: CollectionOpt = DEFAULT_COLLECTION,
    encoder: Annotated[
        str | None,
        typer.Option(
            "--encoder",
            "-e",
            help=(
                "Model for a new collection: 'minilm' (bundled, offline), a hub id or a local "
                "checkpoint folder (ColBERT, ColPali, BERT) [default: minilm]. An existing "
                "collection reuses its stored encoder; if given, it must be the same one."
            ),
            metavar="NAME|PATH",
            show_default=False,
        ),
    ] = None,
    backend: Annotated[
        str | None,
        typer.Option(
            "--backend",
            help=(
                "How a text encoder runs: torch, onnx or openvino (the same vectors), or "
                "onnx-int8 / openvino-int8 (int8 weights: about 2x the documents/s on CPUs "
                "with VNNI, other vectors, so a new collection) [default: torch; an existing "
                "collection: the one it was indexed with]."
            ),
            metavar="NAME",
            show_default=False,
        ),
    ] = None,
    path: PathOpt = None,
    host: HostOpt = None,
    port: PortOpt = None,
    compression: Annotated[
        int | None,
        typer.Option(
            "--compression",
            help="Store residual codes of 1, 2 or 4 bits per dimension instead of float16 "
            "(new collections).",
            metavar="1|2|4",
        ),
    ] = None,
    pool_factor: Annotated[
        int | None,
        count_option(
            "--pool-factor",
            help_text="Keep about 1/N of each document's vectors by token pooling "
            "(new collections).",
            show_default=True,
        ),
    ] = None,
    dpi: Annotated[
        int,
        typer.Option("--dpi", help="Resolution PDF pages are rendered at.", min=10, metavar="N"),
    ] = 100,
    chunk_size: Annotated[
        int | None,
        count_option(
            "--chunk-size",
            help_text="Tokens per text chunk [default: the encoder's document length].",
        ),
    ] = None,
    chunk_overlap: Annotated[
        int | None,
        count_option(
            "--chunk-overlap",
            help_text="Tokens shared by consecutive chunks [default: an eighth of the chunk size].",
            minimum=0,
        ),
    ] = None,
    batch_size: Annotated[
        int | None,
        count_option(
            "--batch-size", help_text="Documents encoded and written per batch [default: 256]."
        ),
    ] = None,
    metadata: Annotated[
        str | None,
        typer.Option(
            "--metadata",
            help='Metadata for every document, as a JSON object, e.g. \'{"project": "x"}\'.',
            metavar="JSON",
        ),
    ] = None,
    sync: Annotated[
        bool,
        typer.Option(
            "--sync",
            help="Also delete the documents of files under PATH that no longer exist.",
        ),
    ] = False,
    quiet: Annotated[
        bool,
        typer.Option("--quiet", "-q", help="No progress bar, no summary; errors only."),
    ] = False,
) -> None:
    """Index files and folders: text files, PDFs and images."""
    extra = parse_json_object(metadata, "--metadata")
    if compression is not None and compression not in (1, 2, 4):
        raise CliError(
            f"--compression must be 1, 2 or 4 (bits per dimension), got {compression}", EXIT_USAGE
        )
    if chunk_size is not None and chunk_overlap is not None and chunk_overlap >= chunk_size:
        raise CliError(
            f"--chunk-overlap ({chunk_overlap}) must be smaller than --chunk-size ({chunk_size})",
            EXIT_USAGE,
        )
    if backend is not None and backend not in BACKENDS:
        raise CliError(
            f"--backend must be one of {', '.join(BACKENDS)}, got {backend!r}", EXIT_USAGE
        )
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise CliError(f"no such file or directory: {', '.join(missing)}", EXIT_USAGE)
    check_target(path, host, port)
    from latewise.index import LateInteractionIndex

    target = connect(path, host, port, create=True)
    known = collections(target)
    started = time.perf_counter()
    if collection in known:
        stored = known[collection].get("encoder_source", "?")
        note(
            f"Adding to collection {collection!r} in {target.location} (encoder: {stored})",
            quiet=quiet,
        )
        chosen = encoder_argument(encoder) if encoder is not None else None
    else:
        chosen = encoder_argument(encoder or DEFAULT_ENCODER)
        note(
            f"Creating collection {collection!r} in {target.location} (encoder: {chosen})",
            quiet=quiet,
        )
    index = LateInteractionIndex(
        _load_encoder(collection, chosen, backend, known.get(collection)),
        client=target.client,
        collection=collection,
        compression=compression,
        pool_factor=pool_factor,
        image_dir=target.image_dir(collection),
    )
    report = index.add_files(
        [str(p) for p in paths],
        metadata=extra,
        dpi=dpi,
        chunk_size=chunk_size,
        chunk_overlap=chunk_overlap,
        batch_size=batch_size,
        show_progress_bar=not quiet and _stderr_is_terminal(),
        errors="collect",
        sync=sync,
    )
    if report.files_ok:
        save_query_runtime(index)
    elapsed = time.perf_counter() - started
    if not quiet:
        typer.echo(
            index_summary(
                collection=collection,
                location=target.location,
                report=report,
                written=index.written,
                total=len(index),
                elapsed=elapsed,
            )
        )
    if report.failures:
        if quiet:
            for failed, reason in report.failures:
                typer.echo(f"failed: {failed}: {reason}", err=True)
        n = len(report.failures)
        if not report.files_ok:
            _, reason = report.failures[0]
            others = f" ({n - 1} other file(s) failed too, listed above)" if n > 1 else ""
            raise CliError(f"nothing indexed: {reason}{others}")
        raise CliError(
            f"{n} of {n + len(report.files_ok)} file(s) could not be indexed (listed above); "
            "the others are indexed"
        )
    if not report.files_ok and not report.deleted:
        from latewise.ingest.documents import readable_kinds
        from latewise.ingest.sources import IMAGE_SUFFIXES, PDF_SUFFIXES, TEXT_SUFFIXES

        suffixes = {"pdf": PDF_SUFFIXES, "image": IMAGE_SUFFIXES, "text": TEXT_SUFFIXES}
        modality = str(known.get(collection, {}).get("modality") or index.encoder.modality)
        wanted = set().union(*(suffixes[k] for k in readable_kinds(modality)))
        raise CliError(
            f"found nothing to index in {', '.join(str(p) for p in paths)}: the collection's "
            f"{modality} encoder reads {' '.join(sorted(wanted))} files"
        )


# -- search ----------------------------------------------------------------------------------------


def _highlight_terms(index: LateInteractionIndex, query: str, hits: list[Hit]) -> list[Any]:
    """Per hit, the words the query matched (the tokens of its matched vectors)."""
    tokens_are_vectors = index.settings.pool_factor == 1
    terms = []
    for hit in hits:
        labels = None
        if hit.text is not None and tokens_are_vectors:
            labels = index.encoder.document_tokens([hit.text])[0]
        terms.append(matched_terms(query, hit.matches or (), labels))
    return terms


@app.command(
    "search",
    epilog=(
        "The table shows rank (1 = best), the MaxSim score, the document id (for delete and "
        "explain), its source (file, and page for pages) and the passage that matched, as wide "
        "as the terminal, matched words highlighted on a terminal. --json prints one JSON "
        "object per hit and line: rank, id, score, text, metadata, page."
    ),
)
@guard
def search_command(
    query: QueryArg,
    k: Annotated[
        int, typer.Option("-k", "--top-k", help="How many results.", min=1, metavar="K")
    ] = 10,
    where: WhereOpt = None,
    json_lines: Annotated[
        bool, typer.Option("--json", help="Print JSON lines instead of a table.")
    ] = False,
    exact: Annotated[
        bool,
        typer.Option("--exact", help="Score every document exactly instead of the ANN candidates."),
    ] = False,
    collection: CollectionOpt = DEFAULT_COLLECTION,
    path: PathOpt = None,
    host: HostOpt = None,
    port: PortOpt = None,
) -> None:
    """Search a collection: the best documents for a query, by MaxSim."""
    require_query(query, "search for")
    flt = parse_json_object(where, "--where")
    _, known, index = open_collection(collection, path, host, port, queries_only=True)
    note_loading(index, known)
    hits = index.search(query, k=k, where=flt, exact=exact)
    if json_lines:
        for hit in hits:
            typer.echo(json.dumps(hit_json(hit), ensure_ascii=False))
    elif not hits:
        note(f"No results in collection {collection!r}.")
    else:
        style = sys.stdout.isatty()
        typer.echo(hits_table(hits, _highlight_terms(index, query, hits), style=style))
    save_query_runtime(index)
