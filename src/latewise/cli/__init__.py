"""The ``latewise`` command line: index files, search them, inspect, list, delete and explain.

A thin layer over :class:`~latewise.index.LateInteractionIndex`::

    latewise index docs/ report.pdf            # a new collection uses the bundled MiniLM (offline)
    latewise index docs/ --sync                 # ... and forget files that were deleted
    latewise search "why do cats purr" -k 5     # a table with the matched passage; --json lines
    latewise info                               # collections, encoders, counts, size on disk
    latewise list --where '{"file_name": "a.md"}'
    latewise delete --where '{"file_name": "old.md"}' --yes
    latewise drop old-collection --yes
    latewise repair                             # after a crash: reclaim orphaned records
    latewise explain "why do cats purr" "<id from search>" --out why.json

Every command works on an embedded Chroma database in ``./.latewise`` (or ``--path DIR``, or
``$LATEWISE_PATH``) or on a Chroma server (``--host H --port P``), and on the collection
``latewise`` unless ``--collection`` says otherwise. An existing collection is always opened with
the encoder stored with it, loaded only by the commands that encode (index, search, explain).

Exit status: 0 on success; 1 when something failed (an error, or some files could not be indexed
while the others were); 2 for a usage error (bad option values, bad JSON, missing paths, an empty
query), found before anything is loaded. Errors are one line on stderr starting with
``error:``; ``latewise -v ...`` logs progress at INFO level and shows the traceback of an error.

Layout: :mod:`latewise.cli.app` (the Typer app, shared options, exit codes, error handling),
:mod:`latewise.cli.commands` (the commands), :mod:`latewise.cli.output` (tables, snippets,
JSON). Importing this package is cheap: torch, transformers and Chroma load inside the commands.
"""

from __future__ import annotations

from latewise.cli import commands as _commands  # noqa: F401  (registers the commands)
from latewise.cli.app import (
    DEFAULT_COLLECTION,
    DEFAULT_ENCODER,
    DEFAULT_PATH,
    DEFAULT_PORT,
    ENV_PATH,
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    CliError,
    app,
    main,
)

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
    "main",
]
