"""Chroma clients: made, described and reopened in one place.

The index, the CLI and the LlamaIndex retriever's ``persist`` all go through here, so a
collection is reached the same way whoever opens it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from latewise.errors import InvalidInputError, StoreError

if TYPE_CHECKING:
    from chromadb.api import ClientAPI

__all__ = [
    "DEFAULT_PATH",
    "DEFAULT_PORT",
    "client_from_description",
    "describe_client",
    "make_client",
    "parse_server",
]

#: The embedded database folder used when no path is given.
DEFAULT_PATH = ".latewise"
#: The port of a Chroma server when ``server`` names only a host.
DEFAULT_PORT = 8000


def parse_server(server: str) -> tuple[str, int]:
    """``"host:port"`` (or ``"host"``, port 8000) as ``(host, port)``."""
    host, _, port = str(server).strip().rpartition(":")
    if not host:
        host, port = port, str(DEFAULT_PORT)
    try:
        number = int(port)
    except ValueError:
        number = -1
    if not host or not 0 < number < 65536:
        raise InvalidInputError(
            f"server must be 'host:port' (e.g. 'localhost:8000'), got {server!r}"
        )
    return host, number


def make_client(
    path: str | Path | None = None, *, server: str | None = None, ephemeral: bool = False
) -> ClientAPI:
    """A Chroma client (telemetry off): embedded in ``path`` (created if missing; ``./.latewise``
    when nothing is given), a server at ``server`` ("host:port", checked with a heartbeat), or in
    memory (``ephemeral``).

    Raises:
        InvalidInputError: several of ``path``, ``server`` and ``ephemeral``, or ``path`` names
            a file.
        StoreError: the server cannot be reached or the folder cannot be opened.
    """
    import chromadb
    from chromadb.config import Settings

    if sum(x is not None and x is not False for x in (path, server, ephemeral)) > 1:
        raise InvalidInputError("pass one of path=, server= or ephemeral=True, not several")
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
                f"cannot reach the Chroma server at {host}:{port} ({exc}); start one with "
                f"`chroma run --path DIR --host {host} --port {port}`"
            ) from exc
        return client
    folder = Path(path if path is not None else DEFAULT_PATH).expanduser()
    if folder.exists() and not folder.is_dir():
        raise InvalidInputError(
            f"path={str(folder)!r} is a file, not a database folder; pass a folder (it is "
            "created if missing)"
        )
    try:
        folder.mkdir(parents=True, exist_ok=True)
        return chromadb.PersistentClient(path=str(folder), settings=settings)
    except Exception as exc:  # a damaged or foreign folder, a newer Chroma's files, no rights
        raise StoreError(f"cannot open the Chroma database at {folder}: {exc}") from exc


def describe_client(client: ClientAPI, path: str | Path | None = None) -> dict[str, Any]:
    """What reopens ``client`` in another process: ``{"type": "persistent", "path": ...}`` or
    ``{"type": "http", "host", "port", "ssl", "tenant", "database"}``.

    Raises:
        InvalidInputError: an in-memory client (nothing to reopen).
    """
    if path is not None:
        return {"type": "persistent", "path": str(Path(path).resolve())}
    settings = client.get_settings()
    if settings.is_persistent and settings.persist_directory:
        return {"type": "persistent", "path": str(Path(settings.persist_directory).resolve())}
    if settings.chroma_server_host:
        return {
            "type": "http",
            "host": settings.chroma_server_host,
            "port": int(settings.chroma_server_http_port or DEFAULT_PORT),
            "ssl": bool(settings.chroma_server_ssl_enabled),
            "tenant": getattr(client, "tenant", None),
            "database": getattr(client, "database", None),
        }
    raise InvalidInputError(
        "the Chroma client is in memory only (ephemeral), so there is nothing to reopen; use "
        "path= or a Chroma server client to persist"
    )


def client_from_description(location: dict[str, Any]) -> ClientAPI:
    """Reopen a client described by :func:`describe_client`."""
    kind = location.get("type")
    if kind == "persistent":
        return make_client(location["path"])
    if kind == "http":
        import chromadb
        from chromadb.config import Settings

        kwargs: dict[str, Any] = {k: location[k] for k in ("tenant", "database") if location.get(k)}
        return chromadb.HttpClient(
            host=location["host"],
            port=int(location["port"]),
            ssl=bool(location.get("ssl", False)),
            settings=Settings(anonymized_telemetry=False),
            **kwargs,
        )
    raise InvalidInputError(f"unknown Chroma client description {location!r}")
