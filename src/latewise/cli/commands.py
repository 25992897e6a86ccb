"""The commands: index, search, info, list, delete, drop, repair, explain.

Each command checks its arguments first (a usage error exits 2 before anything is opened or
loaded), then opens the database. Only ``index``, ``search`` and ``explain`` load a model, and
only once something must be encoded; ``info``, ``list``, ``delete``, ``drop`` and ``repair``
never import torch.
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
import time
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
    JsonOpt,
    PathOpt,
    PortOpt,
    Target,
    WhereOpt,
    YesOpt,
    app,
    check_target,
    collections,
    confirm_or_abort,
    connect,
    encoder_argument,
    guard,
    note,
    open_index,
    parse_json_object,
    unknown_collection,
)
from latewise.cli.output import (
    collection_block,
    disk_usage,
    hit_json,
    hits_table,
    human_bytes,
    index_summary,
    matched_terms,
)

if TYPE_CHECKING:
    from latewise.encoders import Encoder
    from latewise.index import LateInteractionIndex
    from latewise.types import Hit

logger = logging.getLogger(__name__)

__all__ = [
    "delete_command",
    "drop_command",
    "explain_command",
    "index_command",
    "info_command",
    "list_command",
    "repair_command",
    "search_command",
]


def _loading(index: LateInteractionIndex, known: dict[str, Any] | None = None) -> None:
    """Say which model is about to load (it takes seconds)."""
    source = (known or {}).get(index.name, {}).get("encoder_source", "?")
    note(f"Loading the encoder of collection {index.name!r} ({source})...")


def _stderr_is_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def _load_encoder(name: str) -> Encoder:
    """The encoder ``--encoder`` names: ``minilm``, a hub id or a checkpoint folder."""
    from latewise.encoders import load_encoder

    return load_encoder(name)


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
        typer.Option(
            "--pool-factor",
            help="Keep about 1/N of each document's vectors by token pooling (new collections).",
            min=1,
            metavar="N",
        ),
    ] = None,
    dpi: Annotated[
        int,
        typer.Option("--dpi", help="Resolution PDF pages are rendered at.", min=10, metavar="N"),
    ] = 100,
    chunk_size: Annotated[
        int | None,
        typer.Option(
            "--chunk-size",
            help="Tokens per text chunk [default: the encoder's document length].",
            min=1,
            metavar="N",
            show_default=False,
        ),
    ] = None,
    chunk_overlap: Annotated[
        int | None,
        typer.Option(
            "--chunk-overlap",
            help="Tokens shared by consecutive chunks [default: an eighth of the chunk size].",
            min=0,
            metavar="N",
            show_default=False,
        ),
    ] = None,
    batch_size: Annotated[
        int | None,
        typer.Option(
            "--batch-size",
            help="Documents encoded and written per batch [default: 256].",
            min=1,
            metavar="N",
            show_default=False,
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
        _load_encoder(chosen) if chosen is not None else None,
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
    query: Annotated[
        str, typer.Argument(help="The query text.", metavar="QUERY", show_default=False)
    ],
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
    if not query.strip():
        raise CliError("the query is empty: give the text to search for", EXIT_USAGE)
    flt = parse_json_object(where, "--where")
    check_target(path, host, port)
    target = connect(path, host, port, create=False)
    known = collections(target)
    index = open_index(target, collection, known)
    _loading(index, known)
    hits = index.search(query, k=k, where=flt, exact=exact)
    if json_lines:
        for hit in hits:
            typer.echo(json.dumps(hit_json(hit), ensure_ascii=False))
        return
    if not hits:
        note(f"No results in collection {collection!r}.")
        return
    style = sys.stdout.isatty()
    typer.echo(hits_table(hits, _highlight_terms(index, query, hits), style=style))


# -- info, list ------------------------------------------------------------------------------------


@app.command("info")
@guard
def info_command(
    collection: Annotated[
        str | None,
        typer.Option(
            "--collection",
            "-c",
            help="Show only this collection [default: all].",
            show_default=False,
            metavar="NAME",
        ),
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    path: PathOpt = None,
    host: HostOpt = None,
    port: PortOpt = None,
) -> None:
    """Collections: encoder fingerprint, documents, first-stage rows, settings, size on disk."""
    check_target(path, host, port)
    target = connect(path, host, port, create=False)
    known = collections(target)
    if collection is not None:
        if collection not in known:
            raise unknown_collection(collection, known, target)
        known = {collection: known[collection]}
    entries = []
    for name, config in known.items():
        stats = open_index(target, name, known).stats()
        entries.append(
            {
                "name": name,
                "documents": int(stats["documents"]),
                "rows": int(stats["rows"]),
                "encoder": {
                    "class": config.get("encoder_class"),
                    "source": config.get("encoder_source"),
                    "fingerprint": stats.get("encoder") or config.get("fingerprint", {}),
                },
                "modality": config.get("modality"),
                "settings": stats.get("settings") or config.get("settings", {}),
                "format": config.get("format"),
            }
        )
    disk = disk_usage(target.folder) if target.folder is not None else None
    if json_out:
        out = {"location": target.location, "disk_bytes": disk, "collections": entries}
        typer.echo(json.dumps(out, indent=2, sort_keys=True))
        return
    size = f" ({human_bytes(disk)} on disk, all collections)" if disk is not None else ""
    typer.echo(f"{target.location}{size}")
    if not entries:
        typer.echo("No latewise collections yet; create one with: latewise index PATH...")
    for entry in entries:
        typer.echo("")
        typer.echo(collection_block(entry))


@app.command(
    "list",
    epilog="Ids come sorted; --json prints one object per line: id, metadata.",
)
@guard
def list_command(
    where: WhereOpt = None,
    limit: Annotated[
        int | None,
        typer.Option(
            "--limit", "-n", help="Show at most N documents [default: all].", min=1, metavar="N"
        ),
    ] = None,
    json_lines: JsonOpt = False,
    collection: CollectionOpt = DEFAULT_COLLECTION,
    path: PathOpt = None,
    host: HostOpt = None,
    port: PortOpt = None,
) -> None:
    """List the documents of a collection (ids and sources), all or those matching --where."""
    flt = parse_json_object(where, "--where")
    check_target(path, host, port)
    target = connect(path, host, port, create=False)
    index = open_index(target, collection)
    ids = sorted(index.ids(flt))
    shown = ids if limit is None else ids[:limit]
    records = index.get(shown)
    if json_lines:
        for rec in records:
            typer.echo(json.dumps({"id": rec.id, "metadata": rec.metadata}, ensure_ascii=False))
    else:
        for rec in records:
            source = rec.metadata.get("file_name") or ""
            page = rec.metadata.get("page")
            where_from = f"{source} p.{page}" if page is not None and source else str(source)
            typer.echo(f"{rec.id}\t{where_from}".rstrip())
    if len(shown) < len(ids):
        note(f"... {len(ids) - len(shown)} more (raise --limit to see them)")
    if not ids:
        note(f"No documents in collection {collection!r}" + (f" match {where}." if where else "."))


# -- delete, drop, repair --------------------------------------------------------------------------


@app.command(
    "delete",
    epilog=(
        "With both ids and --where, only the given ids that match the filter are deleted. "
        "Asks for confirmation on a terminal unless --yes; a non-interactive run (no terminal "
        "on stdin) does not ask. Exit status 1 when none of the given ids exist; a --where that "
        "matches nothing deletes nothing and exits 0."
    ),
)
@guard
def delete_command(
    ids: Annotated[
        list[str] | None,
        typer.Argument(
            help="Ids of the documents to delete (see `search`).", metavar="ID", show_default=False
        ),
    ] = None,
    where: WhereOpt = None,
    yes: YesOpt = False,
    collection: CollectionOpt = DEFAULT_COLLECTION,
    path: PathOpt = None,
    host: HostOpt = None,
    port: PortOpt = None,
) -> None:
    """Delete documents by id and/or by metadata filter."""
    flt = parse_json_object(where, "--where")
    if not ids and flt is None:
        raise CliError("give the ids of the documents to delete, or --where JSON", EXIT_USAGE)
    check_target(path, host, port)
    target = connect(path, host, port, create=False)
    index = open_index(target, collection)
    if ids:
        found = {r.id for r in index.get(ids)}
        absent = [i for i in dict.fromkeys(ids) if i not in found]
        for doc_id in absent:
            note(f"not found: {doc_id}")
        targets = [i for i in dict.fromkeys(ids) if i in found]
        if flt is not None:
            matching = set(index.ids(flt))
            targets = [i for i in targets if i in matching]
        if not targets:
            raise CliError(
                f"none of the given ids {'match --where in' if found else 'exist in'} "
                f"collection {collection!r}; nothing deleted (find ids with `latewise search`)"
            )
    else:
        targets = index.ids(flt)
        if not targets:
            typer.echo(f"No documents in collection {collection!r} match {where}; nothing deleted.")
            return
    if not yes:
        for doc_id in targets[:10]:
            note(f"  {doc_id}")
        if len(targets) > 10:
            note(f"  ... and {len(targets) - 10} more")
    confirm_or_abort(
        f"Delete {len(targets)} document(s) from collection {collection!r}?",
        yes=yes,
        required=False,
        what="nothing deleted",
    )
    deleted = index.delete(targets)
    typer.echo(f"Deleted {deleted} document(s) from collection {collection!r}.")


def _remove_page_images(target: Target, collection: str) -> Path | None:
    """Remove the collection's page-image folder, if it is inside the database folder."""
    folder = target.image_dir(collection).resolve()
    if target.folder is None or not folder.is_dir():
        return None
    if target.folder.resolve() not in folder.parents:
        return None
    shutil.rmtree(folder)
    return folder


@app.command(
    "drop",
    epilog=(
        "Deletes the collection, its vectors and its page images. Asks for confirmation on a "
        "terminal; without a terminal on stdin it refuses unless --yes."
    ),
)
@guard
def drop_command(
    collection: Annotated[
        str,
        typer.Argument(help="The collection to delete.", metavar="COLLECTION", show_default=False),
    ],
    yes: YesOpt = False,
    path: PathOpt = None,
    host: HostOpt = None,
    port: PortOpt = None,
) -> None:
    """Delete a whole collection."""
    check_target(path, host, port)
    target = connect(path, host, port, create=False)
    index = open_index(target, collection)
    n = len(index)
    confirm_or_abort(
        f"Drop collection {collection!r} ({n} document(s)) from {target.location}?",
        yes=yes,
        required=True,
        what="nothing dropped",
    )
    index.drop()
    images = _remove_page_images(target, collection)
    removed = f"; removed its page images in {images}" if images is not None else ""
    typer.echo(f"Dropped collection {collection!r} ({n} document(s)){removed}.")


@app.command(
    "repair",
    epilog=(
        "Removes first-stage rows and stored vectors that no document claims (left by a crash "
        "or an interrupted write), and rebuilds the first stage from the documents' stored "
        "vectors when it is damaged or missing (always with --rebuild). Loads no model."
    ),
)
@guard
def repair_command(
    collection: Annotated[
        str,
        typer.Argument(help="The collection to repair.", metavar="COLLECTION"),
    ] = DEFAULT_COLLECTION,
    path: PathOpt = None,
    host: HostOpt = None,
    port: PortOpt = None,
    rebuild: Annotated[
        bool, typer.Option("--rebuild", help="Rebuild the first stage even if it looks intact.")
    ] = False,
) -> None:
    """Repair a collection after a crash: remove what no document claims, rebuild what is
    damaged."""
    check_target(path, host, port)
    target = connect(path, host, port, create=False)
    index = open_index(target, collection)
    result = index.repair(rebuild=rebuild)
    done = []
    if result["orphans"]:
        done.append(
            f"removed {result['orphans']} record(s) no document claims (first-stage rows and "
            "stored vectors left by a crash)"
        )
    if result["rebuilt"]:
        done.append(
            f"rebuilt the first stage ({result['rows']} rows) from the stored vectors of "
            f"{result['documents']} document(s)"
        )
    if done:
        typer.echo(f"Repaired collection {collection!r}: " + "; ".join(done) + ".")
    else:
        typer.echo(f"Collection {collection!r} needed no repair ({result['documents']} documents).")


# -- explain ---------------------------------------------------------------------------------------


@app.command(
    "explain",
    epilog=(
        "For text, prints the document token each query token matched and its similarity "
        "(--out FILE.json or FILE.txt saves it). For a page (ColPali), --out map.png draws the "
        "similarity map over the page: the mean over query tokens, or query token --token N."
    ),
)
@guard
def explain_command(
    query: Annotated[
        str, typer.Argument(help="The query text.", metavar="QUERY", show_default=False)
    ],
    doc_id: Annotated[
        str,
        typer.Argument(help="The document id (see `search`).", metavar="ID", show_default=False),
    ],
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help="Write the explanation: .png heatmap (pages), .json or .txt.",
            dir_okay=False,
            metavar="FILE",
        ),
    ] = None,
    token: Annotated[
        int | None,
        typer.Option(
            "--token",
            help="With a .png: draw the map of this query token only.",
            min=0,
            metavar="N",
        ),
    ] = None,
    collection: CollectionOpt = DEFAULT_COLLECTION,
    path: PathOpt = None,
    host: HostOpt = None,
    port: PortOpt = None,
) -> None:
    """Why a document matches a query: matched words, or a heatmap over a page."""
    if not query.strip():
        raise CliError("the query is empty: give the text to explain", EXIT_USAGE)
    if token is not None and (out is None or out.suffix.lower() != ".png"):
        raise CliError("--token selects the map drawn into --out FILE.png; give one", EXIT_USAGE)
    check_target(path, host, port)
    target = connect(path, host, port, create=False)
    known = collections(target)
    index = open_index(target, collection, known)
    if not index.get([doc_id]):
        raise CliError(
            f"no document with id {doc_id!r} in collection {collection!r} "
            "(find ids with `latewise search` or `latewise list`)"
        )
    _loading(index, known)
    explanation = index.explain(query, doc_id, out=out, token=token)
    typer.echo(str(explanation))
    if out is not None:
        note(f"Wrote {out}")
    elif explanation.similarity_maps is not None:
        note("Tip: --out map.png draws where the query matched on the page.")
