"""The ``latewise`` command line: index files, search them, inspect, delete and explain.

A thin layer over :class:`~latewise.index.LateInteractionIndex`::

    latewise index docs/ report.pdf            # a new collection uses the bundled MiniLM (offline)
    latewise search "why do cats purr" -k 5     # a table; --json for one JSON object per line
    latewise info                               # collections, encoders, counts, size on disk
    latewise delete --where '{"file_name": "old.md"}' --yes
    latewise explain "why do cats purr" "<id from search>" --out why.json

Every command works on an embedded Chroma database in ``./.latewise`` (or ``--path DIR``, or
``$LATEWISE_PATH``) or on a Chroma server (``--host H --port P``), and on the collection
``latewise`` unless ``--collection`` says otherwise. An existing collection is always opened with
the encoder stored with it.

Exit status: 0 on success; 1 when something failed (an error, or some files could not be indexed
while the others were); 2 for a usage error (bad option values, bad JSON, missing paths). Errors are
one line on stderr starting with ``error:``; ``latewise -v ...`` logs progress at INFO level and
shows the traceback of an error.

Importing this module is cheap: torch, transformers and Chroma load inside the commands.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import shutil
import sys
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, ParamSpec

import typer

from latewise.__about__ import __version__
from latewise.errors import LatewiseError

if TYPE_CHECKING:
    from chromadb.api import ClientAPI

    from latewise.index import LateInteractionIndex
    from latewise.ingest import IngestReport
    from latewise.types import Hit

logger = logging.getLogger(__name__)

__all__ = ["EXIT_ERROR", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_USAGE", "app", "main"]

#: Everything done.
EXIT_OK = 0
#: An error, or some of the files given to ``index`` could not be indexed.
EXIT_ERROR = 1
#: A usage error: bad option values, malformed JSON, paths that do not exist.
EXIT_USAGE = 2
#: Interrupted with Ctrl-C.
EXIT_INTERRUPTED = 130

#: The embedded database folder when neither ``--path`` nor ``$LATEWISE_PATH`` is given
#: (the same default as :class:`~latewise.index.LateInteractionIndex`).
DEFAULT_PATH = ".latewise"
#: The collection used when ``--collection`` is not given.
DEFAULT_COLLECTION = "latewise"
#: The encoder of a new collection when ``--encoder`` is not given: all-MiniLM-L6-v2 as
#: zero-shot ColBERT, bundled by ``latewise[minilm]``, so indexing works offline.
DEFAULT_ENCODER = "minilm"
#: The Chroma server port when only ``--host`` is given.
DEFAULT_PORT = 8000
ENV_PATH = "LATEWISE_PATH"

_P = ParamSpec("_P")


class CliError(Exception):
    """A user-facing failure: printed as one ``error:`` line, exits with ``exit_code``."""

    def __init__(self, message: str, exit_code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass
class _State:
    verbose: bool = False


_STATE = _State()

app = typer.Typer(
    name="latewise",
    help=(
        "Late-interaction retrieval (BERT, ColBERT, ColPali) on Chroma: index files, search them, "
        "inspect, delete and explain results.\n\n"
        "Data lives in an embedded Chroma database in ./.latewise (--path DIR or $LATEWISE_PATH "
        "to change it) or on a Chroma server (--host/--port). A new collection uses the bundled "
        "MiniLM encoder unless --encoder names another; an existing one reuses its stored "
        "encoder.\n\n"
        "Exit status: 0 success, 1 error (or some files failed to index), 2 usage error."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


# -- options shared by the commands ---------------------------------------------------------------

CollectionOpt = Annotated[
    str,
    typer.Option(
        "--collection", "-c", help="The collection to use.", show_default=True, metavar="NAME"
    ),
]
PathOpt = Annotated[
    Path | None,
    typer.Option(
        "--path",
        help=(
            "Folder of the embedded Chroma database [default: $LATEWISE_PATH, else ./.latewise]."
        ),
        show_default=False,
        file_okay=False,
        metavar="DIR",
    ),
]
HostOpt = Annotated[
    str | None,
    typer.Option(
        "--host", help="Use the Chroma server on this host instead of --path.", metavar="HOST"
    ),
]
PortOpt = Annotated[
    int | None,
    typer.Option(
        "--port",
        help=f"Port of the Chroma server [default: {DEFAULT_PORT} when --host is given].",
        min=1,
        max=65535,
        show_default=False,
        metavar="PORT",
    ),
]
WhereOpt = Annotated[
    str | None,
    typer.Option(
        "--where",
        help='A metadata filter as JSON, e.g. \'{"file_name": "a.md"}\' or '
        '\'{"page": {"$lte": 3}}\'.',
        metavar="JSON",
    ),
]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"latewise {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose", "-v", help="Log progress at INFO level and show tracebacks of errors."
        ),
    ] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Show the version and exit."
        ),
    ] = False,
) -> None:
    """Late-interaction retrieval (BERT, ColBERT, ColPali) on Chroma."""
    _STATE.verbose = verbose
    _configure_logging(verbose)


def main() -> None:
    """Run the command line (the ``latewise`` console script and ``python -m latewise``)."""
    app()


# -- plumbing -----------------------------------------------------------------------------------


class _CliLogHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The stderr handler ``--verbose`` installs (remembers the level it replaced)."""

    def __init__(self, previous_level: int) -> None:
        super().__init__(sys.stderr)
        self.previous_level = previous_level
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))


def _configure_logging(verbose: bool) -> None:
    """``--verbose``: latewise's INFO logs to stderr. Undone on the next run in this process
    (tests invoke the app many times)."""
    package = logging.getLogger("latewise")
    for handler in list(package.handlers):
        if isinstance(handler, _CliLogHandler):
            package.removeHandler(handler)
            package.setLevel(handler.previous_level)
    if verbose:
        package.addHandler(_CliLogHandler(package.level))
        package.setLevel(logging.INFO)


def _guard(fn: Callable[_P, None]) -> Callable[_P, None]:
    """Turn user-facing failures into one ``error:`` line on stderr and an exit code.

    :class:`CliError`, :class:`~latewise.errors.LatewiseError` and ``OSError`` are user mistakes
    or environment problems: no traceback unless ``--verbose``. Anything else is a bug and
    propagates with its traceback.
    """

    @functools.wraps(fn)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> None:
        try:
            fn(*args, **kwargs)
        except CliError as exc:
            _fail(str(exc), exc.exit_code)
        except LatewiseError as exc:
            _fail(str(exc), EXIT_ERROR)
        except BrokenPipeError:
            raise  # `latewise search ... | head`: Typer exits quietly
        except OSError as exc:
            _fail(str(exc), EXIT_ERROR)
        except KeyboardInterrupt:
            _fail("interrupted", EXIT_INTERRUPTED)

    return wrapper


def _fail(message: str, code: int) -> NoReturn:
    if _STATE.verbose and sys.exc_info()[0] is not None:
        typer.echo(traceback.format_exc().rstrip(), err=True)
    lines = message.strip().splitlines() or ["unknown error"]
    typer.echo(f"error: {lines[0]}", err=True)
    for line in lines[1:]:
        typer.echo(f"  {line}", err=True)
    raise typer.Exit(code)


def _note(message: str, *, quiet: bool = False) -> None:
    """Progress and hints go to stderr, so stdout holds only results."""
    if not quiet:
        typer.echo(message, err=True)


def _parse_json_object(value: str | None, option: str) -> dict[str, Any] | None:
    if value is None:
        return None
    try:
        data = json.loads(value)
    except json.JSONDecodeError as exc:
        raise CliError(
            f"{option} is not valid JSON ({exc.msg} at column {exc.colno}): {value}; quote it "
            f"for the shell, e.g. {option} '{{\"year\": 2024}}'",
            EXIT_USAGE,
        ) from exc
    if not isinstance(data, dict):
        raise CliError(
            f"{option} must be a JSON object such as '{{\"year\": 2024}}', got "
            f"{type(data).__name__}: {value}",
            EXIT_USAGE,
        )
    return data


@dataclass
class _Target:
    """Where the data lives: a Chroma client and how to describe it."""

    client: ClientAPI
    location: str
    folder: Path | None  # the embedded database folder (None for a server)
    image_root: Path  # page images of a collection go to image_root / "pages" / collection

    def image_dir(self, collection: str) -> Path:
        return self.image_root / "pages" / collection


def _default_folder() -> Path:
    return Path(os.environ.get(ENV_PATH) or DEFAULT_PATH).expanduser().resolve()


def _connect(path: Path | None, host: str | None, port: int | None, *, create: bool) -> _Target:
    """Open the embedded database (``create``: make the folder if needed) or the server."""
    import chromadb
    from chromadb.config import Settings

    settings = Settings(anonymized_telemetry=False)
    if host is not None or port is not None:
        if path is not None:
            raise CliError(
                "--path names an embedded database and --host/--port a server: give one or the "
                "other",
                EXIT_USAGE,
            )
        host = host or "localhost"
        port = port or DEFAULT_PORT
        try:
            client = chromadb.HttpClient(host=host, port=port, settings=settings)
            client.heartbeat()
        except Exception as exc:  # any failure here means "no usable server there"
            raise CliError(
                f"cannot reach the Chroma server at {host}:{port} ({exc}). Start one with "
                f"`chroma run --path DIR --host {host} --port {port}`, or fix --host/--port"
            ) from exc
        # Page images stay on this machine; the server holds everything else.
        return _Target(client, f"Chroma server at {host}:{port}", None, _default_folder())
    folder = path.expanduser().resolve() if path is not None else _default_folder()
    if folder.exists() and not folder.is_dir():
        raise CliError(
            f"{folder} is a file, not a database folder; pass another --path", EXIT_USAGE
        )
    if not create and not folder.exists():
        raise CliError(
            f"no latewise database at {folder}: index files first (latewise index PATH...), or "
            f"point --path (or ${ENV_PATH}) at an existing one"
        )
    folder.mkdir(parents=True, exist_ok=True)
    try:
        client = chromadb.PersistentClient(path=str(folder), settings=settings)
    except Exception as exc:  # a damaged or foreign folder, a newer Chroma's files
        raise CliError(f"cannot open the Chroma database at {folder}: {exc}") from exc
    return _Target(client, f"embedded Chroma at {folder}", folder, folder)


def _collections(target: _Target) -> dict[str, dict[str, Any]]:
    from latewise.store.chroma import list_latewise_collections

    return list_latewise_collections(target.client)


def _unknown_collection(name: str, known: Mapping[str, Any], target: _Target) -> CliError:
    if known:
        return CliError(
            f"collection {name!r} does not exist in {target.location}; existing collections: "
            f"{', '.join(known)} (choose one with --collection)"
        )
    return CliError(
        f"collection {name!r} does not exist in {target.location}, which holds no latewise "
        f"collections yet; create it with: latewise index PATH... --collection {name}"
    )


def _open_index(target: _Target, collection: str) -> LateInteractionIndex:
    """Open an existing collection with its stored encoder, or explain which ones exist."""
    from latewise.index import LateInteractionIndex

    known = _collections(target)
    if collection not in known:
        raise _unknown_collection(collection, known, target)
    source = known[collection].get("encoder_source", "?")
    _note(f"Loading the encoder of collection {collection!r} ({source})...")
    return LateInteractionIndex.open(
        collection, client=target.client, image_dir=target.image_dir(collection)
    )


def _encoder_argument(encoder: str) -> str:
    """A local checkpoint folder as an absolute path (so the collection can be reopened from any
    folder); anything else (a hub id, ``minilm``) as given."""
    candidate = Path(encoder).expanduser()
    return str(candidate.resolve()) if candidate.exists() else encoder


def _human_bytes(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    value = n / 1024
    for unit in ("KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def _disk_usage(folder: Path) -> int:
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


# -- index ----------------------------------------------------------------------------------------


@app.command(
    "index",
    epilog=(
        "Text files (.txt .md .rst .html) and the text of PDFs are cut into chunks with the "
        "encoder's own tokenizer; with a ColPali encoder every PDF page and image is one page "
        "document. Re-indexing a file replaces its documents (unchanged ones are skipped). "
        "Exit status: 0 when every file was indexed; 1 when some files failed (the others are "
        "indexed, the failures listed) or on an error; 2 for a usage error."
    ),
)
@_guard
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
    quiet: Annotated[
        bool,
        typer.Option("--quiet", "-q", help="No progress bar, no summary; errors only."),
    ] = False,
) -> None:
    """Index files and folders: text files, PDFs and images."""
    from latewise.index import LateInteractionIndex

    extra = _parse_json_object(metadata, "--metadata")
    if compression is not None and compression not in (1, 2, 4):
        raise CliError(
            f"--compression must be 1, 2 or 4 (bits per dimension), got {compression}", EXIT_USAGE
        )
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise CliError(f"no such file or directory: {', '.join(missing)}", EXIT_USAGE)
    target = _connect(path, host, port, create=True)
    known = _collections(target)
    started = time.perf_counter()
    if collection in known:
        stored = known[collection].get("encoder_source", "?")
        _note(
            f"Adding to collection {collection!r} in {target.location} (encoder: {stored})",
            quiet=quiet,
        )
        chosen = _encoder_argument(encoder) if encoder is not None else None
    else:
        chosen = _encoder_argument(encoder or DEFAULT_ENCODER)
        _note(
            f"Creating collection {collection!r} in {target.location} (encoder: {chosen})",
            quiet=quiet,
        )
    index = LateInteractionIndex(
        chosen,
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
        show_progress_bar=not quiet,
        errors="collect",
    )
    elapsed = time.perf_counter() - started
    if not quiet:
        typer.echo(_index_summary(index, report, elapsed, target))
    if report.failures:
        if quiet:
            for failed, reason in report.failures:
                typer.echo(f"failed: {failed}: {reason}", err=True)
        n = len(report.failures)
        raise CliError(
            f"{n} of {n + len(report.files_ok)} file(s) could not be indexed (listed above); "
            "the others are indexed"
        )
    if not report.files_ok:
        from latewise.ingest import IMAGE_SUFFIXES, PDF_SUFFIXES, TEXT_SUFFIXES

        wanted = (
            PDF_SUFFIXES | IMAGE_SUFFIXES
            if index.encoder.modality == "image"
            else TEXT_SUFFIXES | PDF_SUFFIXES
        )
        raise CliError(
            f"found nothing to index in {', '.join(str(p) for p in paths)}: encoder "
            f"{type(index.encoder).__name__} reads {' '.join(sorted(wanted))} files"
        )


def _index_summary(
    index: LateInteractionIndex, report: IngestReport, elapsed: float, target: _Target
) -> str:
    written = index.written
    unchanged = max(report.documents - written.documents, 0)
    parts = []
    if report.texts:
        parts.append(f"{report.texts} text(s)")
    if report.pages:
        parts.append(f"{report.pages} page(s)")
    read = f" ({', '.join(parts)})" if parts else ""
    lines = [
        f"Indexed {len(report.files_ok)} file(s){read} into collection {index.name!r} "
        f"({target.location}) in {elapsed:.1f} s",
        f"  documents: {written.documents} written, {unchanged} unchanged (skipped); "
        f"{len(index)} in the collection",
        f"  vectors:   {written.vectors} ({written.rows} first-stage rows), "
        f"{_human_bytes(written.bytes)} of vectors stored",
    ]
    if report.skipped:
        shown = ", ".join(Path(p).name for p in report.skipped[:5])
        more = f" and {len(report.skipped) - 5} more" if len(report.skipped) > 5 else ""
        lines.append(f"  skipped:   {len(report.skipped)} file(s) of other types: {shown}{more}")
    if report.failures:
        lines.append(f"  failed:    {len(report.failures)} file(s)")
        lines.extend(f"    {failed}: {reason}" for failed, reason in report.failures)
    return "\n".join(lines)


# -- search ---------------------------------------------------------------------------------------


@app.command(
    "search",
    epilog=(
        "The table shows rank (1 = best), the MaxSim score, the document id (for delete and "
        "explain), its source (file, and page for pages) and a snippet. --json prints one JSON "
        "object per hit and line: rank, id, score, text, metadata, page."
    ),
)
@_guard
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
    flt = _parse_json_object(where, "--where")
    target = _connect(path, host, port, create=False)
    index = _open_index(target, collection)
    hits = index.search(query, k=k, where=flt, exact=exact)
    if json_lines:
        for hit in hits:
            typer.echo(json.dumps(_hit_json(hit), ensure_ascii=False))
        return
    if not hits:
        _note(f"No results in collection {collection!r}.")
        return
    typer.echo(_hits_table(hits))


def _hit_json(hit: Hit) -> dict[str, Any]:
    return {
        "rank": hit.rank + 1,
        "id": hit.id,
        "score": hit.score,
        "text": hit.text,
        "metadata": hit.metadata,
        "page": asdict(hit.page) if hit.page is not None else None,
    }


def _hit_source(hit: Hit) -> str:
    meta = hit.metadata
    origin = hit.page.path if hit.page is not None and hit.page.path else None
    name = meta.get("file_name") or Path(str(meta.get("source") or origin or "")).name or "-"
    page = hit.page.page if hit.page is not None else meta.get("page")
    return f"{name} p.{page}" if page is not None else str(name)


def _hit_snippet(hit: Hit) -> str:
    if hit.text is not None:
        return " ".join(hit.text.split())
    if hit.page is not None:
        size = f", {hit.page.width}x{hit.page.height} px" if hit.page.width else ""
        return f"[page image{size}]"
    return ""


def _hits_table(hits: Sequence[Hit]) -> str:
    rows = [
        (str(h.rank + 1), f"{h.score:.4f}", h.id, _hit_source(h), _hit_snippet(h)) for h in hits
    ]
    header = ("rank", "score", "id", "source", "snippet")
    widths = [max(len(header[i]), *(len(r[i]) for r in rows)) for i in range(4)]
    total = shutil.get_terminal_size((120, 24)).columns
    room = max(total - sum(widths) - 2 * 4, 30)

    def line(cells: Sequence[str]) -> str:
        snippet = cells[4] if len(cells[4]) <= room else cells[4][: room - 3] + "..."
        return "  ".join(
            [
                cells[0].rjust(widths[0]),
                cells[1].rjust(widths[1]),
                cells[2].ljust(widths[2]),
                cells[3].ljust(widths[3]),
                snippet,
            ]
        ).rstrip()

    return "\n".join([line(header), *(line(r) for r in rows)])


# -- info -----------------------------------------------------------------------------------------


@app.command("info")
@_guard
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
    from latewise.store.chroma import ChromaStore

    target = _connect(path, host, port, create=False)
    known = _collections(target)
    if collection is not None:
        if collection not in known:
            raise _unknown_collection(collection, known, target)
        known = {collection: known[collection]}
    entries = []
    for name, config in known.items():
        store = ChromaStore(target.client, name, hnsw={})
        store.open(create=False)
        entries.append(
            {
                "name": name,
                "documents": int(config.get("documents", 0)),
                "rows": store.row_count(),
                "encoder": {
                    "class": config.get("encoder_class"),
                    "source": config.get("encoder_source"),
                    "fingerprint": config.get("fingerprint", {}),
                },
                "modality": config.get("modality"),
                "settings": config.get("settings", {}),
                "format": config.get("format"),
            }
        )
    disk = _disk_usage(target.folder) if target.folder is not None else None
    if json_out:
        out = {"location": target.location, "disk_bytes": disk, "collections": entries}
        typer.echo(json.dumps(out, indent=2, sort_keys=True))
        return
    size = f" ({_human_bytes(disk)} on disk, all collections)" if disk is not None else ""
    typer.echo(f"{target.location}{size}")
    if not entries:
        typer.echo("No latewise collections yet; create one with: latewise index PATH...")
    for entry in entries:
        typer.echo("")
        typer.echo(_collection_block(entry))


def _collection_block(entry: Mapping[str, Any]) -> str:
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
    return "\n".join(
        [
            f"{entry['name']}",
            f"  encoder:     {enc['class']} from {enc['source']!r} ({entry['modality']})",
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


def _short(value: Any) -> str:
    if isinstance(value, list | tuple) and len(value) > 4:
        return f"[{len(value)} items]"
    return str(value)


# -- delete ---------------------------------------------------------------------------------------


def _interactive() -> bool:
    """Whether a person can answer a prompt (stdin is a terminal)."""
    try:
        return sys.stdin.isatty()
    except (AttributeError, ValueError):
        return False


@app.command(
    "delete",
    epilog=(
        "With both ids and --where, only the given ids that match the filter are deleted. "
        "Asks for confirmation on a terminal unless --yes; a non-interactive run (no terminal "
        "on stdin) does not ask. Exit status 1 when none of the given ids exist; a --where that "
        "matches nothing deletes nothing and exits 0."
    ),
)
@_guard
def delete_command(
    ids: Annotated[
        list[str] | None,
        typer.Argument(
            help="Ids of the documents to delete (see `search`).", metavar="ID", show_default=False
        ),
    ] = None,
    where: WhereOpt = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    collection: CollectionOpt = DEFAULT_COLLECTION,
    path: PathOpt = None,
    host: HostOpt = None,
    port: PortOpt = None,
) -> None:
    """Delete documents by id and/or by metadata filter."""
    flt = _parse_json_object(where, "--where")
    if not ids and flt is None:
        raise CliError("give the ids of the documents to delete, or --where JSON", EXIT_USAGE)
    target = _connect(path, host, port, create=False)
    index = _open_index(target, collection)
    if ids:
        found = {r.id for r in index.get(ids)}
        absent = [i for i in dict.fromkeys(ids) if i not in found]
        for doc_id in absent:
            _note(f"not found: {doc_id}")
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
    if not yes and _interactive():
        for doc_id in targets[:10]:
            _note(f"  {doc_id}")
        if len(targets) > 10:
            _note(f"  ... and {len(targets) - 10} more")
        if not typer.confirm(
            f"Delete {len(targets)} document(s) from collection {collection!r}?", default=False
        ):
            raise CliError("aborted; nothing deleted")
    deleted = index.delete(targets)
    typer.echo(f"Deleted {deleted} document(s) from collection {collection!r}.")


# -- explain --------------------------------------------------------------------------------------


@app.command(
    "explain",
    epilog=(
        "For text, prints the document token each query token matched and its similarity "
        "(--out FILE.json or FILE.txt saves it). For a page (ColPali), --out map.png draws the "
        "similarity map over the page: the mean over query tokens, or query token --token N."
    ),
)
@_guard
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
            "--token", help="With a .png: draw the map of this query token only.", metavar="N"
        ),
    ] = None,
    collection: CollectionOpt = DEFAULT_COLLECTION,
    path: PathOpt = None,
    host: HostOpt = None,
    port: PortOpt = None,
) -> None:
    """Why a document matches a query: matched words, or a heatmap over a page."""
    if token is not None and (out is None or out.suffix.lower() != ".png"):
        raise CliError("--token selects the map drawn into --out FILE.png; give one", EXIT_USAGE)
    target = _connect(path, host, port, create=False)
    index = _open_index(target, collection)
    explanation = index.explain(query, doc_id, out=out, token=token)
    typer.echo(str(explanation))
    if out is not None:
        _note(f"Wrote {out}")
    elif explanation.similarity_maps is not None:
        _note("Tip: --out map.png draws where the query matched on the page.")
