"""The ``explain`` command: why a document matches a query (matched words, or a page heatmap)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from latewise.cli.app import (
    DEFAULT_COLLECTION,
    EXIT_USAGE,
    CliError,
    CollectionOpt,
    HostOpt,
    PathOpt,
    PortOpt,
    QueryArg,
    app,
    guard,
    note,
    note_loading,
    open_collection,
    require_query,
)

__all__ = ["explain_command"]


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
    query: QueryArg,
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
    require_query(query, "explain")
    if token is not None and (out is None or out.suffix.lower() != ".png"):
        raise CliError("--token selects the map drawn into --out FILE.png; give one", EXIT_USAGE)
    _, known, index = open_collection(collection, path, host, port, queries_only=True)
    if not index.get([doc_id]):
        raise CliError(
            f"no document with id {doc_id!r} in collection {collection!r} "
            "(find ids with `latewise search` or `latewise list`)"
        )
    note_loading(index, known)
    explanation = index.explain(query, doc_id, out=out, token=token)
    typer.echo(str(explanation))
    if out is not None:
        note(f"Wrote {out}")
    elif explanation.similarity_maps is not None:
        note("Tip: --out map.png draws where the query matched on the page.")
