"""The inter-process lock of an embedded Chroma folder, and the freshness of this process's view.

Chroma's embedded client is single-process: each process keeps the folder's HNSW indexes in
memory and never re-reads what another process wrote. Measured with chromadb 1.5.9, two
processes adding to one folder even one at a time (an exclusive lock around every write)
lose rows for good: a process whose in-memory index is stale writes it back over the other's
rows, and every later read of the embeddings fails with Chroma's ``Error finding id``. A process
that only reads sees a stale index and fails the same way.

So every latewise access to an embedded folder goes through :class:`FolderLock` (one per folder
and process):

- **writes** hold ``<folder>/latewise.lock`` exclusively (a ``filelock.FileLock``); a second
  writer waits up to ``timeout`` seconds and then gets a :class:`~latewise.errors.
  ConcurrentWriteError` naming the folder, the process holding it and the fix (a Chroma
  server, which takes many writers);
- **reads** hold the same file shared (``fcntl.flock``; where that is missing, exclusively),
  so they never overlap another process's write;
- a writer stamps ``<folder>/latewise.lock.token`` with a fresh token before its first change
  (:meth:`FolderLock.mark_written`). A process that takes the lock and finds a token other than
  the one its client saw reopens its client first (the ``refresh`` callback), so it neither
  reads nor writes back a stale index.

A Chroma server needs none of this: it is one process however many clients it has.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

from latewise.errors import ConcurrentWriteError, StoreError

logger = logging.getLogger(__name__)

__all__ = ["LOCK_NAME", "FolderLock", "WriteLock", "folder_lock"]

LOCK_NAME = "latewise.lock"
_HOLDER_NAME = "latewise.lock.pid"
_TOKEN_NAME = "latewise.lock.token"
_GATE_NAME = "latewise.lock.gate"
_POLL = (0.001, 0.02)  # first and longest pause between tries of a taken lock, seconds

try:  # shared locks where the platform has them
    import fcntl

    _SHARED = True
except ImportError:  # pragma: no cover - Windows
    _SHARED = False


class FolderLock:
    """Shared (read) and exclusive (write) access to one embedded folder, across processes and
    the threads of this process; see the module docstring. Get it with :func:`folder_lock`.

    Within this process, reads share, a write excludes everything, a waiting write keeps new
    reads out, and a write inside a write, a read inside a write and a read inside a read (same
    thread) hold it once; a write inside a read of the same thread raises.

    Args:
        folder: the embedded Chroma folder (created if missing).
    """

    def __init__(self, folder: Path) -> None:
        from filelock import FileLock

        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self._file = FileLock(str(folder / LOCK_NAME), thread_local=False)
        self._cond = threading.Condition()
        self._readers = 0  # threads of this process reading now
        self._busy = False  # a thread is taking the process-wide read hold
        self._writer: int | None = None  # the thread writing now
        self._depth = 0
        self._waiting_writers = 0
        self._shared_fd: int | None = None
        self._seen: str | None = None  # the token this process's client reflects
        self._stamped = False  # whether the current write hold stamped a new token
        self._refresh: list[Callable[[], None]] = []
        self._local = threading.local()  # .reads: this thread's read depth

    # -- freshness ----------------------------------------------------------------------------

    def on_stale(self, refresh: Callable[[], None]) -> None:
        """Call ``refresh`` (under the lock) when another process wrote since this one looked.

        The first lock taken after this call refreshes too, since a client opened before may
        already be stale.
        """
        self._refresh.append(refresh)
        self._seen = None

    def token(self) -> str:
        """The folder's write token ("" before latewise's first write to it)."""
        try:
            return (self.folder / _TOKEN_NAME).read_text().strip()
        except OSError:
            return ""

    def _freshen(self) -> None:
        token = self.token()
        if token != self._seen:
            if self._seen is not None:
                logger.debug("%s was written by another process; reopening", self.folder)
            for refresh in self._refresh:
                refresh()
            self._seen = token

    def mark_written(self) -> None:
        """Stamp the folder with a new token before this thread's first change in its write hold,
        so other processes reopen before their next access (a write that only read changes
        nothing and stamps nothing).

        Raises:
            StoreError: this thread does not hold the folder for a write.
        """
        if self._writer != threading.get_ident():
            raise StoreError(f"a change to {str(self.folder)!r} was made outside a write hold")
        if self._stamped:
            return
        token = uuid.uuid4().hex
        tmp = self.folder / f"{_TOKEN_NAME}.{os.getpid()}"
        tmp.write_text(token)
        os.replace(tmp, self.folder / _TOKEN_NAME)
        self._seen, self._stamped = token, True

    def holder(self) -> int | None:
        """The id of the process writing now, when known."""
        try:
            return int((self.folder / _HOLDER_NAME).read_text().strip())
        except (OSError, ValueError):
            return None

    # -- locking ------------------------------------------------------------------------------

    def _timeout(self, timeout: float, reading: bool) -> ConcurrentWriteError:
        pid = self.holder()
        if pid == os.getpid():
            who = "another thread of this process"
        else:
            who = f"process {pid}" if pid else "another process"
        doing = "read" if reading else "write to"
        return ConcurrentWriteError(
            f"could not {doing} the embedded Chroma folder {str(self.folder)!r} within "
            f"{timeout:g} s: {who} is writing to it (or, for a write, reading it). An embedded "
            "folder takes one writing process at a time and no reads during a write; wait for "
            "it (raise lock_timeout), or serve the folder with a Chroma server (`chroma run "
            "--path DIR`) and connect every process to it (client=chromadb.HttpClient(...) / "
            "--server host:port) for several writers"
        )

    def _wait_in_process(self, ready: Callable[[], bool], deadline: float) -> bool:
        while not ready():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self._cond.wait(left)
        return True

    @contextmanager
    def write(self, timeout: float) -> Iterator[None]:
        """Hold the folder exclusively (re-entrant within a thread).

        Raises:
            ConcurrentWriteError: the lock stayed taken for ``timeout`` seconds.
        """
        me = threading.get_ident()
        deadline = time.monotonic() + timeout
        if getattr(self._local, "reads", 0):
            raise StoreError(
                f"a write to {str(self.folder)!r} was started inside a read of it on the same "
                "thread; finish the read first"
            )
        with self._cond:
            if self._writer == me:
                self._depth += 1
                nested = True
            else:
                nested = False
                self._waiting_writers += 1
                try:
                    free = self._wait_in_process(
                        lambda: self._writer is None and not self._readers and not self._busy,
                        deadline,
                    )
                finally:
                    self._waiting_writers -= 1
                if not free:
                    self._cond.notify_all()
                    raise self._timeout(timeout, reading=False)
                self._writer, self._depth = me, 1
        if nested:
            try:
                yield
            finally:
                with self._cond:
                    self._depth -= 1
            return
        try:
            self._acquire_exclusive(deadline, timeout)
            try:
                self._freshen()
                self._stamped = False
                (self.folder / _HOLDER_NAME).write_text(str(os.getpid()))
            except BaseException:
                self._release_exclusive()
                raise
        except BaseException:
            with self._cond:
                self._writer, self._depth = None, 0
                self._cond.notify_all()
            raise
        try:
            yield
        finally:
            self._release_exclusive()
            with self._cond:
                self._writer, self._depth = None, 0
                self._cond.notify_all()

    @contextmanager
    def read(self, timeout: float) -> Iterator[None]:
        """Hold the folder shared (free inside this thread's own write).

        Raises:
            ConcurrentWriteError: a write held the folder for ``timeout`` seconds.
        """
        me = threading.get_ident()
        deadline = time.monotonic() + timeout
        depth = getattr(self._local, "reads", 0)
        if depth:  # a read inside a read of this thread holds it once
            self._local.reads = depth + 1
            try:
                yield
            finally:
                self._local.reads = depth
            return
        with self._cond:
            if self._writer == me:
                first = None
            else:
                free = self._wait_in_process(
                    lambda: self._writer is None and not self._waiting_writers and not self._busy,
                    deadline,
                )
                if not free:
                    raise self._timeout(timeout, reading=True)
                first = self._readers == 0
                if first:
                    self._busy = True
                else:
                    self._readers += 1
        if first is None:
            yield
            return
        if first:
            try:
                self._acquire_shared(deadline, timeout)
                try:
                    self._freshen()
                except BaseException:
                    self._release_shared()
                    raise
            except BaseException:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()
                raise
            with self._cond:
                self._busy = False
                self._readers += 1
                self._cond.notify_all()
        self._local.reads = 1
        try:
            yield
        finally:
            self._local.reads = 0
            with self._cond:
                self._readers -= 1
                if not self._readers:
                    self._release_shared()
                self._cond.notify_all()

    # -- the process-wide holds ------------------------------------------------------------------

    def _acquire_exclusive(self, deadline: float, timeout: float) -> None:
        from filelock import Timeout

        gate = self._open(_GATE_NAME) if _SHARED else None
        try:
            if gate is not None and not _poll(gate, fcntl.LOCK_EX, deadline):
                raise self._timeout(timeout, reading=False)
            try:
                self._file.acquire(timeout=_left(deadline), poll_interval=_POLL[0] * 5)
            except Timeout:
                raise self._timeout(timeout, reading=False) from None
        finally:
            if gate is not None:
                os.close(gate)  # lets readers queue for the shared hold again

    def _release_exclusive(self) -> None:
        try:
            (self.folder / _HOLDER_NAME).write_text("")
        finally:
            self._file.release()

    def _acquire_shared(self, deadline: float, timeout: float) -> None:
        if not _SHARED:  # pragma: no cover - Windows: reads are exclusive too
            from filelock import Timeout

            try:
                self._file.acquire(timeout=_left(deadline), poll_interval=_POLL[0] * 5)
            except Timeout:
                raise self._timeout(timeout, reading=True) from None
            return
        gate = self._open(_GATE_NAME)
        try:  # a writer waiting holds the gate: queue behind it
            if not _poll(gate, fcntl.LOCK_SH, deadline):
                raise self._timeout(timeout, reading=True)
            fd = self._open(LOCK_NAME)
            if not _poll(fd, fcntl.LOCK_SH, deadline):
                os.close(fd)
                raise self._timeout(timeout, reading=True)
            self._shared_fd = fd
        finally:
            os.close(gate)

    def _release_shared(self) -> None:
        if not _SHARED:  # pragma: no cover - Windows
            self._file.release()
            return
        if self._shared_fd is not None:
            os.close(self._shared_fd)  # closing drops the flock
            self._shared_fd = None

    def _open(self, name: str) -> int:
        return os.open(self.folder / name, os.O_RDWR | os.O_CREAT, 0o644)


def _left(deadline: float) -> float:
    return max(0.0, deadline - time.monotonic())


def _poll(fd: int, mode: int, deadline: float) -> bool:
    """Take ``flock(mode)`` on ``fd`` before ``deadline``; whether it was taken."""
    pause = _POLL[0]
    while True:
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(min(pause, _left(deadline)))
            pause = min(pause * 2, _POLL[1])


_locks: dict[Path, FolderLock] = {}
_locks_guard = threading.Lock()


def folder_lock(folder: str | Path) -> FolderLock:
    """The :class:`FolderLock` of ``folder`` in this process (one per folder)."""
    key = Path(folder).expanduser().resolve()
    with _locks_guard:
        lock = _locks.get(key)
        if lock is None:
            lock = _locks[key] = FolderLock(key)
        return lock


def _forget_locks() -> None:  # a forked child holds none of its parent's locks
    global _locks_guard
    _locks.clear()
    _locks_guard = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_locks)


class WriteLock:
    """A handle on a folder's :class:`FolderLock` with a timeout: ``with lock():`` writes,
    ``with lock.read():`` reads.

    Args:
        folder: the embedded Chroma folder.
        timeout: seconds to wait for another process's write (or, for a write, reads) to finish.
    """

    def __init__(self, folder: str | Path, timeout: float = 60.0) -> None:
        self.lock = folder_lock(folder)
        self.folder = self.lock.folder
        self.timeout = timeout

    def holder(self) -> int | None:
        """The process id recorded by the current writer, when known."""
        return self.lock.holder()

    def __call__(self) -> AbstractContextManager[None]:
        return self.lock.write(self.timeout)

    def read(self) -> AbstractContextManager[None]:
        """Hold the folder for a read."""
        return self.lock.read(self.timeout)
