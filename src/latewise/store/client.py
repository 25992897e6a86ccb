"""Chroma clients: made, described and reopened in one place.

The index, the CLI and the LlamaIndex retriever's ``persist`` all go through here, so a
collection is reached the same way whoever opens it.

An embedded folder is reached through an :class:`EmbeddedClient`: every call holds the folder's
lock (shared to read, exclusive to write) and runs on this process's current Chroma client of
the folder, which is reopened when another process wrote meanwhile (see
:mod:`latewise.store.lock` for why Chroma needs that).
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from latewise.errors import InvalidInputError, StoreError
from latewise.store.lock import FolderLock, folder_lock

if TYPE_CHECKING:
    from chromadb.api import ClientAPI

__all__ = [
    "EmbeddedClient",
    "EmbeddedCollection",
    "client_from_description",
    "describe_client",
    "embedded_folder",
    "guard_client",
    "make_client",
    "parse_server",
]

logger = logging.getLogger(__name__)

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
    path: str | Path | None = None,
    *,
    server: str | None = None,
    ephemeral: bool = False,
    lock_timeout: float = 60.0,
) -> ClientAPI:
    """A Chroma client: embedded in ``path``, a server at ``server`` ("host:port"), or in memory.

    An embedded client is an :class:`EmbeddedClient`: safe to share a folder between processes
    (each call holds the folder's lock, waiting up to ``lock_timeout`` seconds for another
    process's write).

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
    if path is None:
        raise InvalidInputError("make_client needs path=, server= or ephemeral=True")
    folder = Path(path).expanduser()
    if folder.exists() and not folder.is_dir():
        raise InvalidInputError(
            f"path={str(folder)!r} is a file, not a database folder; pass a folder (it is "
            "created if missing)"
        )
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot create the Chroma database folder {folder}: {exc}") from exc
    embedded = EmbeddedClient(folder, lock_timeout)
    embedded.heartbeat()  # opens the folder now, so a damaged one fails here
    return cast("ClientAPI", embedded)


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
