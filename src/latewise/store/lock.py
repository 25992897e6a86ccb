"""The inter-process write lock of an embedded Chroma folder.

Chroma's embedded client is single-process: two processes writing one folder corrupt its index
files. Every latewise write to an embedded folder therefore holds ``<folder>/latewise.lock``
(a ``filelock.FileLock``); a second writer waits up to ``timeout`` seconds and then gets a
:class:`~latewise.errors.ConcurrentWriteError` naming the folder, the process holding it and
the fix (a Chroma server, which takes many writers). A Chroma server needs no lock.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from latewise.errors import ConcurrentWriteError

__all__ = ["LOCK_NAME", "WriteLock"]

LOCK_NAME = "latewise.lock"
_HOLDER_NAME = "latewise.lock.pid"


class WriteLock:
    """Exclusive write access to an embedded folder, across processes and threads.

    Re-entrant within one thread (a write inside a write holds it once).

    Args:
        folder: the embedded Chroma folder.
        timeout: seconds to wait for another process's write to finish.
    """

    def __init__(self, folder: str | Path, timeout: float = 60.0) -> None:
        from filelock import FileLock

        self.folder = Path(folder)
        self.timeout = timeout
        self._file = FileLock(str(self.folder / LOCK_NAME), thread_local=False)
        self._thread = threading.RLock()

    def holder(self) -> int | None:
        """The process id recorded by the current holder, when known."""
        try:
            return int((self.folder / _HOLDER_NAME).read_text().strip())
        except (OSError, ValueError):
            return None

    @contextmanager
    def __call__(self) -> Iterator[None]:
        from filelock import Timeout

        with self._thread:
            outer = not self._file.is_locked
            try:
                self._file.acquire(timeout=self.timeout)
            except Timeout:
                pid = self.holder()
                raise ConcurrentWriteError(
                    f"another process is writing to the embedded Chroma folder {str(self.folder)!r}"
                    f"{f' (process {pid})' if pid else ''} and did not finish within "
                    f"{self.timeout:g} s. An embedded folder takes one writing process at a time; "
                    "wait for it, or serve the folder with a Chroma server (`chroma run --path "
                    "DIR`) and connect every process to it (client=chromadb.HttpClient(...) / "
                    "--host/--port) for several writers"
                ) from None
            try:
                if outer:
                    (self.folder / _HOLDER_NAME).write_text(str(os.getpid()))
                yield
            finally:
                self._file.release()
