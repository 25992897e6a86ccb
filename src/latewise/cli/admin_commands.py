"""The commands that inspect and maintain collections: info, list, delete, drop, repair.

None of them loads a model or imports torch.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Annotated

import typer

from latewise.cli.app import (
    DEFAULT_COLLECTION,
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
    count_option,
    guard,
    note,
    open_collection,
    open_index,
    parse_json_object,
    unknown_collection,
)
from latewise.cli.output import collection_block, disk_usage, human_bytes

__all__ = ["delete_command", "drop_command", "info_command", "list_command", "repair_command"]


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
                    "options": config.get("encoder_options") or {},
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
        count_option(
            "--limit",
            "-n",
            help_text="Show at most N documents [default: all].",
            show_default=True,
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
    _, _, index = open_collection(collection, path, host, port)
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
    _, _, index = open_collection(collection, path, host, port)
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
    target, _, index = open_collection(collection, path, host, port)
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
    _, _, index = open_collection(collection, path, host, port)
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
