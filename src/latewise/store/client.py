"""Chroma clients: make one, describe where one points, and reopen it from that description.

Three places hold a collection: an embedded database in a folder (``PersistentClient``), a
Chroma server (``HttpClient``) and memory (``EphemeralClient``). :func:`make_client` builds the
client for each; :func:`describe_client` says which one a client is as a small JSON-ready dict
(never credentials or headers), and :func:`client_from_description` reopens it, so that a
retriever saved by one process can be reopened by another.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from latewise.errors import InvalidInputError, StoreError

if TYPE_CHECKING:
    from chromadb.api import ClientAPI

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_PATH",
    "DEFAULT_PORT",
    "client_from_description",
    "describe_client",
    "make_client",
]

#: The embedded database's folder when neither a path, a server nor ``ephemeral`` is given.
DEFAULT_PATH = ".latewise"
#: The port of ``chroma run`` when a server address names none.
DEFAULT_PORT = 8000

_TYPES = ("persistent", "http", "ephemeral")


def make_client(
    path: str | Path | None = None, *, server: str | None = None, ephemeral: bool = False
) -> ClientAPI:
    """A Chroma client for a folder, a server or memory (telemetry off).

    Args:
        path: folder of an embedded database (created if missing); ``./.latewise`` when neither
            ``server`` nor ``ephemeral`` is given.
        server: a Chroma server as ``"host:port"``, ``"host"`` (port 8000) or a URL
            (``"http://host:port"``, ``"https://host"``).
        ephemeral: an in-memory database (nothing persists; clients in one process share it).

    Raises:
        InvalidInputError: more than one of ``path``, ``server`` and ``ephemeral``, a server
            address that cannot be read, or a path that names a file.
        StoreError: the server does not answer, or the folder cannot be opened by Chroma.
    """
    given = [
        name
        for name, on in (
            ("path", path is not None),
            ("server", server is not None),
            ("ephemeral", ephemeral),
        )
        if on
    ]
    if len(given) > 1:
        raise InvalidInputError(
            f"pass one of path=, server= or ephemeral=True, not several (got {', '.join(given)})"
        )
    if ephemeral:
        return client_from_description({"type": "ephemeral"})
    if server is not None:
        address = _parse_server(server)
        try:
            client = client_from_description({"type": "http", **address})
            client.heartbeat()
        except Exception as exc:  # any failure here means "no usable server there"
            host, port = address["host"], address["port"]
            raise StoreError(
                f"cannot reach the Chroma server at {host}:{port} ({exc}); start one with "
                f"`chroma run --path DIR --host {host} --port {port}`, or fix the address"
            ) from exc
        return client
    folder = Path(path or DEFAULT_PATH).expanduser()
    if folder.exists() and not folder.is_dir():
        raise InvalidInputError(
            f"path={str(folder)!r} is a file, not a database folder; pass a folder (it is "
            "created if missing)"
        )
    try:
        return client_from_description({"type": "persistent", "path": str(folder)})
    except Exception as exc:  # a damaged or foreign folder, a newer Chroma's files, no rights
        raise StoreError(f"cannot open the Chroma database at {folder}: {exc}") from exc


def describe_client(client: ClientAPI) -> dict[str, Any]:
    """Where ``client`` keeps its data, as :func:`client_from_description` reads it.

    Returns:
        ``{"type": "persistent", "path": <absolute folder>}``, ``{"type": "http", "host",
        "port", "ssl", "tenant", "database"}`` or ``{"type": "ephemeral"}``. Credentials and
        headers are never included: reopen such a server with your own client.

    Raises:
        InvalidInputError: a server client that names no host.
    """
    settings = client.get_settings()
    impl = str(settings.chroma_api_impl or "")
    if impl.endswith("FastAPI"):
        if not settings.chroma_server_host:
            raise InvalidInputError(
                f"this Chroma server client ({type(client).__name__}) names no host; pass the "
                "client itself where it is needed"
            )
        return {
            "type": "http",
            "host": settings.chroma_server_host,
            "port": int(settings.chroma_server_http_port or DEFAULT_PORT),
            "ssl": bool(settings.chroma_server_ssl_enabled),
            "tenant": getattr(client, "tenant", None),
            "database": getattr(client, "database", None),
        }
    if settings.is_persistent and settings.persist_directory:
        return {"type": "persistent", "path": str(Path(settings.persist_directory).resolve())}
    return {"type": "ephemeral"}


def client_from_description(description: Mapping[str, Any]) -> ClientAPI:
    """The Chroma client :func:`describe_client` described.

    Raises:
        InvalidInputError: an unknown ``type``, or a description without its fields (``path``
            for ``"persistent"``, ``host`` for ``"http"``).
    """
    import chromadb
    from chromadb.config import Settings

    kind = description.get("type")
    settings = Settings(anonymized_telemetry=False)
    if kind == "ephemeral":
        return chromadb.EphemeralClient(settings=settings)
    if kind == "persistent":
        if not description.get("path"):
            raise InvalidInputError("a 'persistent' Chroma description needs its 'path'")
        folder = Path(str(description["path"])).expanduser()
        folder.mkdir(parents=True, exist_ok=True)
        return chromadb.PersistentClient(path=str(folder), settings=settings)
    if kind == "http":
        if not description.get("host"):
            raise InvalidInputError("an 'http' Chroma description needs its 'host'")
        kwargs: dict[str, Any] = {
            key: description[key] for key in ("tenant", "database") if description.get(key)
        }
        return chromadb.HttpClient(
            host=str(description["host"]),
            port=int(description.get("port") or DEFAULT_PORT),
            ssl=bool(description.get("ssl", False)),
            settings=settings,
            **kwargs,
        )
    raise InvalidInputError(f"unknown Chroma client type {kind!r}; expected one of {list(_TYPES)}")


def _parse_server(server: str) -> dict[str, Any]:
    """``host``, ``port`` and ``ssl`` from ``"host[:port]"`` or ``"http[s]://host[:port]"``."""
    text = server.strip()
    parsed = urlparse(text if "://" in text else f"http://{text}")
    try:
        port = parsed.port
    except ValueError as exc:
        raise InvalidInputError(f"server {server!r} has an invalid port ({exc})") from exc
    if (
        parsed.scheme not in ("http", "https")
        or not parsed.hostname
        or parsed.path not in ("", "/")
    ):
        raise InvalidInputError(
            f"server must be 'host:port' or 'http(s)://host:port', got {server!r}"
        )
    ssl = parsed.scheme == "https"
    return {"host": parsed.hostname, "port": port or (443 if ssl else DEFAULT_PORT), "ssl": ssl}
