"""Chroma clients: make one, describe where one points, and reopen it from that description.

Three places hold a collection: an embedded database in a folder (``PersistentClient``), a
Chroma server (``HttpClient``) and memory (``EphemeralClient``). :func:`make_client` builds the
client for each; :func:`describe_client` says which one a client is as a small JSON-ready dict
(never credentials or headers), and :func:`client_from_description` reopens it, so that a
retriever saved by one process can be reopened by another.

An embedded folder is reached through an :class:`EmbeddedClient`: every call holds the folder's
lock (shared to read, exclusive to write) and runs on this process's current Chroma client of
the folder, which is reopened when another process wrote meanwhile (see
:mod:`latewise.store.lock` for why Chroma needs that).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlparse

from latewise.errors import InvalidInputError, StoreError
from latewise.store.lock import FolderLock, folder_lock

if TYPE_CHECKING:
    from chromadb.api import ClientAPI

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_PATH",
    "DEFAULT_PORT",
    "EmbeddedClient",
    "EmbeddedCollection",
    "client_from_description",
    "describe_client",
    "embedded_folder",
    "guard_client",
    "make_client",
    "open_client",
]

#: The embedded database's folder when neither a path, a server nor ``ephemeral`` is given.
DEFAULT_PATH = ".latewise"
#: The port of ``chroma run`` when a server address names none.
DEFAULT_PORT = 8000

_TYPES = ("persistent", "http", "ephemeral")


def make_client(
    path: str | Path | None = None,
    *,
    server: str | None = None,
    ephemeral: bool = False,
    lock_timeout: float = 60.0,
) -> ClientAPI:
    """A Chroma client for a folder, a server or memory (telemetry off).

    Args:
        path: folder of an embedded database (created if missing); ``./.latewise`` when neither
            ``server`` nor ``ephemeral`` is given.
        server: a Chroma server as ``"host:port"``, ``"host"`` (port 8000) or a URL
            (``"http://host:port"``, ``"https://host"``).
        ephemeral: an in-memory database (nothing persists; clients in one process share it).
        lock_timeout: an embedded folder is reached through an :class:`EmbeddedClient`, safe to
            share between processes: each call waits up to this many seconds for another
            process's write.

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
        folder.mkdir(parents=True, exist_ok=True)
        embedded = EmbeddedClient(folder, lock_timeout)
        embedded.heartbeat()  # opens the folder now, so a damaged one fails here
    except OSError as exc:
        raise StoreError(f"cannot open the Chroma database at {folder}: {exc}") from exc
    return cast("ClientAPI", embedded)


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
        return cast("ClientAPI", EmbeddedClient(folder))
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


#: Client and collection methods that only read; every other method is taken for a write.
_CLIENT_READS = frozenset(
    {
        "count_collections",
        "get_collection",
        "get_database",
        "get_max_batch_size",
        "get_tenant",
        "get_user_identity",
        "get_version",
        "heartbeat",
        "list_collections",
        "list_databases",
    }
)
_COLLECTION_READS = frozenset({"count", "get", "get_indexing_status", "peek", "query", "search"})
_COLLECTION_WRITES = frozenset({"add", "delete", "modify", "update", "upsert"})
#: The wrappers' own attributes.
_OWN = frozenset({"_col", "_epoch", "_function", "_name", "_state", "_timeout", "folder"})
#: Plain values read without touching the folder.
_CLIENT_VALUES = frozenset({"database", "get_settings", "tenant"})


def _persistent(folder: Path) -> ClientAPI:
    import chromadb
    from chromadb.config import Settings

    settings = Settings(anonymized_telemetry=False)
    return chromadb.PersistentClient(path=str(folder), settings=settings)


def _unshare(folder: Path) -> None:
    """Make the next ``PersistentClient`` of ``folder`` start a new Chroma system.

    Chroma shares one system (and its in-memory indexes) between the clients of one folder in a
    process; a stale one must not be handed out again. Its clients keep working on it.
    """
    from chromadb.api.shared_system_client import SharedSystemClient

    SharedSystemClient._identifier_to_system.pop(str(folder), None)
    SharedSystemClient._identifier_to_refcount.pop(str(folder), None)


class _Folder:
    """This process's current Chroma client of one folder, reopened when another process wrote."""

    def __init__(self, lock: FolderLock) -> None:
        self.lock = lock
        self.client: ClientAPI | None = None
        self.epoch = 0
        lock.on_stale(self.reopen)

    def reopen(self) -> None:
        """Drop the (possibly stale) client and open the folder afresh (under the lock)."""
        old, self.client = self.client, None
        if old is not None:
            try:
                old.close()  # type: ignore[attr-defined]  # Client has it, ClientAPI does not
            except Exception as exc:  # closing a client that is going away anyway
                logger.debug("closing the previous client of %s: %s", self.lock.folder, exc)
        _unshare(self.lock.folder)
        try:
            self.client = _persistent(self.lock.folder)
        except Exception as exc:  # a damaged or foreign folder, a newer Chroma's files, no rights
            raise StoreError(
                f"cannot open the Chroma database at {self.lock.folder}: {exc}"
            ) from exc
        self.epoch += 1

    def current(self) -> ClientAPI:
        if self.client is None:  # only after a failed reopen
            self.reopen()
        assert self.client is not None
        return self.client


#: The file Chroma creates in an embedded folder when it is first opened.
_DATABASE_FILE = "chroma.sqlite3"
_folders: dict[Path, _Folder] = {}
_folders_guard = threading.Lock()


def _folder(path: Path) -> _Folder:
    lock = folder_lock(path)
    with _folders_guard:
        state = _folders.get(lock.folder)
        if state is None or state.lock is not lock:  # a new lock after a fork
            state = _folders[lock.folder] = _Folder(lock)
        return state


def _chroma_failure(folder: Path, exc: BaseException) -> StoreError:
    return StoreError(
        f"Chroma failed on the embedded folder {str(folder)!r} ({exc}): its vector indexes do "
        "not match its records. That happens when another program wrote the folder without "
        "latewise's lock (a plain chromadb client, or an older latewise in another process). "
        "Run index.repair() (or `latewise repair`) to rebuild the first stage from the stored "
        "documents, and use a Chroma server (`chroma run --path DIR`) when several processes "
        "write"
    )


class _Guarded:
    """Shared by the client and collection wrappers: run a call under the folder's lock."""

    _state: _Folder
    _timeout: float

    def _run(self, reads: bool, fn: Any) -> Any:
        from chromadb.errors import InternalError

        lock = self._state.lock
        if reads and not (lock.folder / _DATABASE_FILE).exists():
            reads = False  # opening a new folder creates Chroma's database: a write
        with lock.read(self._timeout) if reads else lock.write(self._timeout):
            if not reads:
                lock.mark_written()
            try:
                return fn()
            except InternalError as exc:
                raise _chroma_failure(self._state.lock.folder, exc) from exc


class EmbeddedClient(_Guarded):
    """A Chroma ``PersistentClient`` on ``folder`` that is safe to use from several processes.

    Every call holds the folder's :class:`~latewise.store.lock.FolderLock` (shared to read,
    exclusive to write) and runs on this process's current client of the folder, reopened when
    another process wrote meanwhile; collections it returns do the same. Anything else a
    ``ClientAPI`` offers is passed through.

    Args:
        folder: the embedded Chroma folder.
        timeout: seconds a call waits for another process's write (a write: also for reads).
    """

    def __init__(self, folder: str | Path, timeout: float = 60.0) -> None:
        self._state = _folder(Path(folder))
        self._timeout = float(timeout)
        self.folder = self._state.lock.folder

    def __repr__(self) -> str:
        return f"EmbeddedClient({str(self.folder)!r})"

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in _OWN:  # the latter: not set up yet (copies)
            raise AttributeError(name)
        if name in _CLIENT_VALUES or name.startswith("_"):
            return self._run(True, lambda: getattr(self._state.current(), name))
        reads = name in _CLIENT_READS

        def call(*args: Any, **kwargs: Any) -> Any:
            run = lambda: getattr(self._state.current(), name)(*args, **kwargs)  # noqa: E731
            return self._wrap(self._run(reads, run))

        return call

    def _wrap(self, value: Any) -> Any:
        from chromadb.api.models.Collection import Collection

        if isinstance(value, Collection):
            return EmbeddedCollection(self, value)
        return value

    def get_or_create_collection(self, name: str, **kwargs: Any) -> EmbeddedCollection:
        """The collection ``name``, created if missing (a write only when it is created)."""
        from chromadb.errors import NotFoundError

        try:
            got = self._run(
                True,
                lambda: self._state.current().get_collection(
                    name, embedding_function=kwargs.get("embedding_function")
                ),
            )
        except NotFoundError:
            got = self._run(
                False, lambda: self._state.current().get_or_create_collection(name, **kwargs)
            )
        return EmbeddedCollection(self, got)


class EmbeddedCollection(_Guarded):
    """A collection of an :class:`EmbeddedClient`: every call holds the folder's lock and runs on
    the collection as this process's current client sees it (looked up again after a reopen)."""

    def __init__(self, owner: EmbeddedClient, collection: Any) -> None:
        self._state = owner._state
        self._timeout = owner._timeout
        self._name = str(collection.name)
        self._function = getattr(collection, "_embedding_function", None)
        self._col = collection
        self._epoch = self._state.epoch

    def __repr__(self) -> str:
        return f"EmbeddedCollection({self._name!r})"

    def _current(self) -> Any:
        """The collection in the current client (call under the lock)."""
        if self._epoch != self._state.epoch:
            self._col = self._state.current().get_collection(
                self._name, embedding_function=self._function
            )
            self._epoch = self._state.epoch
        return self._col

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in _OWN:
            raise AttributeError(name)
        if name not in _COLLECTION_READS and name not in _COLLECTION_WRITES:
            value = self._run(True, lambda: getattr(self._current(), name))
            if not callable(value):
                return value
        reads = name in _COLLECTION_READS

        def call(*args: Any, **kwargs: Any) -> Any:
            out = self._run(reads, lambda: getattr(self._current(), name)(*args, **kwargs))
            if name == "modify" and "name" in kwargs and kwargs["name"]:
                self._name = str(kwargs["name"])
            return out

        return call

    @property
    def name(self) -> str:
        """The collection's name."""
        return self._name


def embedded_folder(client: Any) -> Path | None:
    """The folder of an embedded (persistent) Chroma client; ``None`` for others."""
    if isinstance(client, EmbeddedClient):
        return client.folder
    try:
        settings = client.get_settings()
    except Exception:  # not a Chroma client we know how to read
        return None
    local = str(getattr(settings, "chroma_api_impl", "")).endswith(
        ("RustBindingsAPI", "SegmentAPI")
    )
    if local and getattr(settings, "is_persistent", False) and settings.persist_directory:
        return Path(settings.persist_directory)
    return None


def guard_client(client: ClientAPI, lock_timeout: float = 60.0) -> ClientAPI:
    """``client`` made safe to share its folder between processes: an embedded (persistent)
    client becomes an :class:`EmbeddedClient` of its folder (which opens the folder afresh, so
    this process's later writes cannot be undone by the stale indexes the given client may hold);
    any other client (a server's, an in-memory one) is returned as it is."""
    if isinstance(client, EmbeddedClient):
        return client
    folder = embedded_folder(client)
    if folder is None:
        return client
    return cast("ClientAPI", EmbeddedClient(folder, lock_timeout))


def open_client(
    client: ClientAPI | None, path: str | Path | None, *, ephemeral: bool, lock_timeout: float
) -> tuple[ClientAPI, Path | None, Any]:
    """The client an index works through, its folder, and what each of its writes holds.

    The client is ``client`` made safe to share (:func:`guard_client`), or a new one of ``path``
    (default :data:`DEFAULT_PATH`; in memory with ``ephemeral``); the folder is ``None`` unless
    the index made it; on an embedded folder every write holds the folder's
    :class:`~latewise.store.lock.WriteLock` (a context manager factory), elsewhere nothing.

    Raises:
        InvalidInputError: more than one of ``client``, ``path`` and ``ephemeral``.
    """
    from contextlib import nullcontext

    from latewise.store.lock import WriteLock

    if client is not None and (path is not None or ephemeral):
        raise InvalidInputError("pass either client=, path= or ephemeral=True, not several")
    folder = None if client is not None or ephemeral else Path(path or DEFAULT_PATH)
    made = (
        guard_client(client, lock_timeout)
        if client is not None
        else make_client(folder, ephemeral=ephemeral, lock_timeout=lock_timeout)
    )
    locked = embedded_folder(made)
    return made, folder, WriteLock(locked, lock_timeout) if locked else nullcontext
