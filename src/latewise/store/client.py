"""Chroma clients: an embedded database in a folder, a server, or in memory.

One definition for every part of latewise that opens Chroma (the index, the command line):
telemetry off, the embedded folder created on demand, a server checked before it is used.
Importing this module is cheap; Chroma loads when a client is made.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from latewise.errors import InvalidInputError, StoreError

if TYPE_CHECKING:
    from chromadb.api import ClientAPI

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_PATH", "DEFAULT_PORT", "make_client", "parse_server"]

#: The embedded database folder used when no path is given.
DEFAULT_PATH = ".latewise"
#: The port of a Chroma server when ``server`` names only a host.
DEFAULT_PORT = 8000


def parse_server(server: str) -> tuple[str, int]:
    """Split ``"host:port"`` (or ``"host"``, port 8000) into its parts.

    Raises:
        InvalidInputError: the port is not a number in 1-65535, or the host is empty.
    """
    host, sep, port_text = server.strip().rpartition(":")
    if not sep:
        host, port_text = server.strip(), str(DEFAULT_PORT)
    if not host:
        raise InvalidInputError(f"server must be 'host:port', got {server!r}")
    try:
        port = int(port_text)
    except ValueError:
        port = 0
    if not 1 <= port <= 65535:
        raise InvalidInputError(
            f"server must be 'host:port' with a port in 1-65535, got {server!r}"
        )
    return host, port


def make_client(
    path: str | Path | None = None, *, server: str | None = None, ephemeral: bool = False
) -> ClientAPI:
    """A Chroma client with telemetry off.

    Args:
        path: the folder of an embedded database (``PersistentClient``), created if missing;
            ``./.latewise`` when neither ``server`` nor ``ephemeral`` is given.
        server: ``"host:port"`` of a Chroma server (``HttpClient``); it must answer a heartbeat.
        ephemeral: an in-memory database (``EphemeralClient``) that nothing persists.

    Raises:
        InvalidInputError: more than one of ``path``, ``server`` and ``ephemeral``, or a
            malformed ``server``.
        StoreError: the server does not answer, or the folder is not a Chroma database.
    """
    if sum((path is not None, server is not None, bool(ephemeral))) > 1:
        raise InvalidInputError("give one of path=, server= or ephemeral=True, not several")
    import chromadb
    from chromadb.config import Settings

    settings = Settings(anonymized_telemetry=False)
    if ephemeral:
        return chromadb.EphemeralClient(settings=settings)
    if server is not None:
        host, port = parse_server(server)
        try:
            client = chromadb.HttpClient(host=host, port=port, settings=settings)
            client.heartbeat()
        except Exception as exc:  # any failure here means "no usable server there"
            raise StoreError(
                f"cannot reach the Chroma server at {host}:{port} ({exc}). Start one with "
                f"`chroma run --path DIR --host {host} --port {port}`, or fix the address"
            ) from exc
        return client
    folder = Path(path if path is not None else DEFAULT_PATH).expanduser()
    if folder.exists() and not folder.is_dir():
        raise StoreError(f"{folder} is a file, not a database folder")
    folder.mkdir(parents=True, exist_ok=True)
    try:
        return chromadb.PersistentClient(path=str(folder), settings=settings)
    except Exception as exc:  # a damaged or foreign folder, a newer Chroma's files
        raise StoreError(f"cannot open the Chroma database at {folder}: {exc}") from exc
