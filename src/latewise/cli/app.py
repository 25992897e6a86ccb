"""The Typer application: options shared by the commands, exit codes, error handling.

Importing this module is cheap (Typer only): Chroma, torch and the encoders load inside the
commands that need them, and only those.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import sys
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, ParamSpec

import typer

from latewise.__about__ import __version__
from latewise.errors import InvalidInputError, LatewiseError
from latewise.store.client import DEFAULT_PATH, DEFAULT_PORT

if TYPE_CHECKING:
    from chromadb.api import ClientAPI

    from latewise.encoders import Encoder
    from latewise.index import LateInteractionIndex

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_COLLECTION",
    "DEFAULT_ENCODER",
    "DEFAULT_PATH",
    "DEFAULT_PORT",
    "ENV_PATH",
    "EXIT_ERROR",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "CliError",
    "app",
    "is_interactive",
    "main",
]

#: Everything done.
EXIT_OK = 0
#: An error, or some of the files given to ``index`` could not be indexed.
EXIT_ERROR = 1
#: A usage error: bad option values, malformed JSON, paths that do not exist.
EXIT_USAGE = 2
#: Interrupted with Ctrl-C.
EXIT_INTERRUPTED = 130

#: The collection used when ``--collection`` is not given.
DEFAULT_COLLECTION = "latewise"
#: The encoder of a new collection when ``--encoder`` is not given: all-MiniLM-L6-v2 as
#: zero-shot ColBERT, bundled by ``latewise[minilm]``, so indexing works offline.
DEFAULT_ENCODER = "minilm"
ENV_PATH = "LATEWISE_PATH"

_P = ParamSpec("_P")

#: Library argument names and the options that set them, for messages that speak CLI.
_OPTION_NAMES = {
    "chunk_size": "--chunk-size",
    "chunk_overlap": "--chunk-overlap",
    "pool_factor": "--pool-factor",
    "batch_size": "--batch-size",
    "compression": "--compression",
    "dpi": "--dpi",
}


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
        "inspect, list, delete and explain results.\n\n"
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


# -- options shared by the commands --------------------------------------------------------------

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
YesOpt = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


QueryArg = Annotated[
    str, typer.Argument(help="The query text.", metavar="QUERY", show_default=False)
]


def require_query(query: str, purpose: str) -> None:
    """A usage error for an empty (or blank) query; ``purpose`` ends the message."""
    if not query.strip():
        raise CliError(f"the query is empty: give the text to {purpose}", EXIT_USAGE)


def count_option(*flags: str, help_text: str, minimum: int = 1, show_default: bool = False) -> Any:
    """An option (``flags``, e.g. ``"--limit", "-n"``) taking an integer ``N >= minimum``."""
    return typer.Option(*flags, help=help_text, min=minimum, metavar="N", show_default=show_default)


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
    """Run the command line (the ``latewise`` console script, ``python -m latewise`` and
    ``python -m latewise.cli``)."""
    app(prog_name="latewise")


# -- logging ---------------------------------------------------------------------------------------


class _CliLogHandler(logging.Handler):
    """The stderr handler the CLI installs (remembers the level it replaced).

    Writes to the current ``sys.stderr`` (test runners swap it between runs), through tqdm
    when a progress bar may be on screen, so the bar is redrawn below the message.
    """

    def __init__(self, previous_level: int, verbose: bool) -> None:
        super().__init__()
        self.previous_level = previous_level
        fmt = "%(levelname)s %(name)s: %(message)s" if verbose else "warning: %(message)s"
        self.setFormatter(logging.Formatter(fmt))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = self.format(record)
            tqdm_module = sys.modules.get("tqdm")
            if tqdm_module is not None:
                tqdm_module.tqdm.write(message, file=sys.stderr)
            else:
                sys.stderr.write(message + "\n")
        except Exception:  # logging must never break the command
            self.handleError(record)


def _configure_logging(verbose: bool) -> None:
    """Warnings of latewise (a large file, a skipped one) as ``warning:`` lines on stderr;
    ``--verbose``: INFO logs with logger names. Undone on the next run in this process (tests
    invoke the app many times)."""
    package = logging.getLogger("latewise")
    for handler in list(package.handlers):
        if isinstance(handler, _CliLogHandler):
            package.removeHandler(handler)
            package.setLevel(handler.previous_level)
    handler = _CliLogHandler(package.level, verbose)
    package.addHandler(handler)
    package.setLevel(logging.INFO if verbose else logging.WARNING)


# -- errors ----------------------------------------------------------------------------------------


def _speak_cli(message: str) -> tuple[str, bool]:
    """Library argument names replaced by the options that set them; whether any was."""
    found = False
    for name, option in _OPTION_NAMES.items():
        message, n = re.subn(rf"(?<![\w-]){name}(?![\w-])", option, message)
        found = found or n > 0
    return message, found


def guard(fn: Callable[_P, None]) -> Callable[_P, None]:
    """Turn user-facing failures into one ``error:`` line on stderr and an exit code.

    :class:`CliError`, :class:`~latewise.errors.LatewiseError` and ``OSError`` are user mistakes
    or environment problems: no traceback unless ``--verbose``. An invalid value of an option
    (reported by the library under its argument name) is a usage error naming the option.
    Anything else is a bug and propagates with its traceback.
    """

    @functools.wraps(fn)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> None:
        try:
            fn(*args, **kwargs)
        except CliError as exc:
            fail(str(exc), exc.exit_code)
        except InvalidInputError as exc:
            message, is_option = _speak_cli(str(exc))
            fail(message, EXIT_USAGE if is_option else EXIT_ERROR)
        except LatewiseError as exc:
            fail(str(exc), EXIT_ERROR)
        except BrokenPipeError:
            raise  # `latewise search ... | head`: Typer exits quietly
        except OSError as exc:
            fail(str(exc), EXIT_ERROR)
        except KeyboardInterrupt:
            fail("interrupted", EXIT_INTERRUPTED)

    return wrapper


def fail(message: str, code: int) -> NoReturn:
    """Print ``error: message`` (and the traceback with ``--verbose``) and exit with ``code``."""
    if _STATE.verbose and sys.exc_info()[0] is not None:
        typer.echo(traceback.format_exc().rstrip(), err=True)
    lines = message.strip().splitlines() or ["unknown error"]
    typer.echo(f"error: {lines[0]}", err=True)
    for line in lines[1:]:
        typer.echo(f"  {line}", err=True)
    raise typer.Exit(code)


def note(message: str, *, quiet: bool = False) -> None:
    """Progress and hints go to stderr, so stdout holds only results."""
    if not quiet:
        typer.echo(message, err=True)


def is_interactive() -> bool:
    """Whether a person can answer a prompt (stdin is a terminal)."""
    try:
        return sys.stdin.isatty()
    except (AttributeError, ValueError):
        return False


def confirm_or_abort(question: str, *, yes: bool, required: bool, what: str) -> None:
    """Ask ``question`` on a terminal unless ``yes``.

    Args:
        question: the yes/no question.
        yes: ``--yes`` was given.
        required: without a terminal, refuse unless ``--yes`` (for irreversible commands);
            otherwise go ahead.
        what: what is left untouched when the answer is no (``"nothing deleted"``).
    """
    if yes:
        return
    if not is_interactive():
        if required:
            raise CliError(
                f"refusing without confirmation: stdin is not a terminal; pass --yes to "
                f"{question[0].lower()}{question[1:].rstrip('?')}",
                EXIT_USAGE,
            )
        return
    if not typer.confirm(question, default=False):
        raise CliError(f"aborted; {what}")


def parse_json_object(value: str | None, option: str) -> dict[str, Any] | None:
    """The JSON object an option holds (``None`` when it was not given)."""
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


# -- where the data lives --------------------------------------------------------------------------


@dataclass
class Target:
    """Where the data lives: a Chroma client and how to describe it."""

    client: ClientAPI
    location: str
    folder: Path | None  # the embedded database folder (None for a server)
    image_root: Path  # page images of a collection go to image_root / "pages" / collection

    def image_dir(self, collection: str) -> Path:
        """The folder of the collection's page images."""
        from latewise.ingest.conventions import page_image_dir

        return page_image_dir(self.image_root, collection)


def default_folder() -> Path:
    """``$LATEWISE_PATH``, else ``./.latewise``, as an absolute path."""
    return Path(os.environ.get(ENV_PATH) or DEFAULT_PATH).expanduser().resolve()


def check_target(path: Path | None, host: str | None, port: int | None) -> None:
    """Usage errors of ``--path``/``--host``/``--port``, found before anything is opened."""
    if (host is not None or port is not None) and path is not None:
        raise CliError(
            "--path names an embedded database and --host/--port a server: give one or the other",
            EXIT_USAGE,
        )


def connect(path: Path | None, host: str | None, port: int | None, *, create: bool) -> Target:
    """Open the embedded database (``create``: make the folder if needed) or the server."""
    from latewise.errors import StoreError
    from latewise.store.client import make_client

    check_target(path, host, port)
    if host is not None or port is not None:
        server = f"{host or 'localhost'}:{port or DEFAULT_PORT}"
        try:
            client = make_client(server=server)
        except StoreError as exc:
            raise CliError(str(exc).replace("fix the address", "fix --host/--port")) from exc
        # Page images stay on this machine; the server holds everything else.
        return Target(client, f"Chroma server at {server}", None, default_folder())
    folder = path.expanduser().resolve() if path is not None else default_folder()
    if folder.exists() and not folder.is_dir():
        raise CliError(
            f"{folder} is a file, not a database folder; pass another --path", EXIT_USAGE
        )
    if not create and not folder.exists():
        raise CliError(
            f"no latewise database at {folder}: index files first (latewise index PATH...), or "
            f"point --path (or ${ENV_PATH}) at an existing one"
        )
    return Target(make_client(folder), f"embedded Chroma at {folder}", folder, folder)


def collections(target: Target) -> dict[str, dict[str, Any]]:
    """The latewise collections of ``target``: name -> stored configuration."""
    from latewise.store import list_latewise_collections

    return list_latewise_collections(target.client)


def unknown_collection(name: str, known: Mapping[str, Any], target: Target) -> CliError:
    """The error for a collection that does not exist, naming those that do."""
    if known:
        return CliError(
            f"collection {name!r} does not exist in {target.location}; existing collections: "
            f"{', '.join(known)} (choose one with --collection)"
        )
    return CliError(
        f"collection {name!r} does not exist in {target.location}, which holds no latewise "
        f"collections yet; create it with: latewise index PATH... --collection {name}"
    )


#: ``torch``: ``search`` and ``explain`` load the full model even when a query runtime exists.
QUERY_RUNTIME_ENV = "LATEWISE_QUERY_RUNTIME"


def open_index(
    target: Target,
    collection: str,
    known: Mapping[str, Any] | None = None,
    *,
    queries_only: bool = False,
) -> LateInteractionIndex:
    """Open an existing collection, or explain which ones exist. Its stored encoder loads only
    when something must be encoded; ``queries_only``: the torch-free query runtime written for
    its encoder, when there is one (see :func:`query_runtime`)."""
    from latewise.index import LateInteractionIndex

    known = collections(target) if known is None else known
    if collection not in known:
        raise unknown_collection(collection, known, target)
    encoder = query_runtime(known[collection]) if queries_only else None
    return LateInteractionIndex(
        encoder, client=target.client, collection=collection, image_dir=target.image_dir(collection)
    )


def open_collection(
    collection: str,
    path: Path | None,
    host: str | None,
    port: int | None,
    *,
    queries_only: bool = False,
) -> tuple[Target, dict[str, dict[str, Any]], LateInteractionIndex]:
    """Connect to an existing database and open ``collection`` in it: the target, its
    collections (name -> stored configuration) and the index."""
    check_target(path, host, port)
    target = connect(path, host, port, create=False)
    known = collections(target)
    return target, known, open_index(target, collection, known, queries_only=queries_only)


def query_runtime(config: Mapping[str, Any]) -> Encoder | None:
    """The query runtime written for the encoder of a collection (its stored ``config``), or
    ``None`` (load the model): see :func:`~latewise.encoders.query.find_query_runtime`;
    ``LATEWISE_QUERY_RUNTIME=torch`` always loads the model."""
    fingerprint = config.get("fingerprint")
    if os.environ.get(QUERY_RUNTIME_ENV, "").strip().lower() == "torch" or not fingerprint:
        return None
    from latewise.encoders.query import find_query_runtime

    return find_query_runtime(fingerprint)


def save_query_runtime(index: LateInteractionIndex) -> None:
    """Write the query runtime of the index's encoder for the next ``search``, if a model was
    loaded (see :func:`~latewise.encoders.query.save_query_runtime`)."""
    if index.encoder_loaded:  # nothing was encoded otherwise: no model to export from
        from latewise.encoders.query import save_query_runtime as save

        save(index.encoder)


def note_loading(index: LateInteractionIndex, known: Mapping[str, Any] | None = None) -> None:
    """Say which model is about to load (it takes seconds), unless an encoder (the query
    runtime) is already there."""
    if index.encoder_loaded:
        return
    source = (known or {}).get(index.name, {}).get("encoder_source", "?")
    note(f"Loading the encoder of collection {index.name!r} ({source})...")


def encoder_argument(encoder: str) -> str:
    """A local checkpoint folder as an absolute path (so the collection can be reopened from any
    folder); anything else (a hub id, ``minilm``) as given."""
    candidate = Path(encoder).expanduser()
    return str(candidate.resolve()) if candidate.exists() else encoder
