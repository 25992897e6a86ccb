"""The scoring worker pool and per-thread scratch buffers.

With torch's OpenMP backend every op forks and joins its threads; on a busy machine a preempted
thread stalls the whole op at that join (measured here: 3-5x slower medians under load). Instead,
the blocks of a scoring call are spread over ``torch.get_num_threads()`` Python worker threads
whose own torch ops are single-threaded: no joins between blocks, and a worker that falls behind
simply takes fewer blocks. The caller's and the process's torch thread settings are left as they
were.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import weakref
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any

import torch

__all__ = ["SCRATCH", "Scratch", "ScratchPerThread", "run_tasks"]

logger = logging.getLogger(__name__)


class Scratch:
    """Reusable scratch tensors of one thread, grown on demand and never shrunk."""

    __slots__ = ("__weakref__", "store")

    def __init__(self) -> None:
        self.store: dict[tuple[str, torch.dtype], torch.Tensor] = {}

    def get(
        self, name: str, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device
    ) -> torch.Tensor:
        numel = 1
        for s in shape:
            numel *= s
        key = (name, dtype)
        buf = self.store.get(key)
        if buf is None or buf.numel() < numel or buf.device != device:
            # A normal tensor even when first needed inside ``torch.inference_mode()``: an
            # inference tensor could not be written by a later call outside inference mode.
            with torch.inference_mode(False):
                buf = torch.empty(max(numel, 1), dtype=dtype, device=device)
            self.store[key] = buf
        return buf[:numel].view(shape)


class ScratchPerThread:
    """One :class:`Scratch` per thread (freed with the thread), with a total for accounting."""

    def __init__(self) -> None:
        self._local = threading.local()
        self._all: weakref.WeakSet[Scratch] = weakref.WeakSet()
        self._lock = threading.Lock()

    def here(self) -> Scratch:
        scratch: Scratch | None = getattr(self._local, "scratch", None)
        if scratch is None:
            scratch = Scratch()
            self._local.scratch = scratch
            with self._lock:
                self._all.add(scratch)
        return scratch

    def nbytes(self) -> int:
        with self._lock:
            stores = [list(s.store.values()) for s in self._all]
        return sum(t.numel() * t.element_size() for store in stores for t in store)


_WORKER_PREFIX = "latewise-maxsim"
_POOL_LOCK = threading.Lock()
_POOL: tuple[int, int, ThreadPoolExecutor] | None = None  # (pid, size, executor)


@functools.lru_cache(maxsize=1)
def _openmp_backend() -> bool:
    # Per-thread thread counts exist only with OpenMP (torch's default CPU backend).
    return "parallel backend: OpenMP" in torch.__config__.parallel_info()


def _init_worker() -> None:
    torch.get_num_threads()  # this thread's lazy torch init first, or it would undo the next line
    torch.set_num_threads(1)


def _start_pool(size: int) -> ThreadPoolExecutor | None:
    ready = threading.Barrier(size + 1)
    executor = ThreadPoolExecutor(size, thread_name_prefix=_WORKER_PREFIX, initializer=_init_worker)
    for _ in range(size):  # each task blocks until all have started: one per worker thread
        executor.submit(ready.wait, 30.0)
    try:
        ready.wait(30.0)
    except threading.BrokenBarrierError:
        logger.warning("could not start %d scoring threads; scoring on the calling thread", size)
        executor.shutdown(wait=False)
        return None
    finally:
        # The workers' set_num_threads(1) also set torch's process-wide default: put it back.
        torch.set_num_threads(size)
    logger.debug("started %d single-threaded MaxSim workers", size)
    return executor


def _worker_pool() -> ThreadPoolExecutor | None:
    """The shared pool of ``torch.get_num_threads()`` workers, or None to run inline."""
    global _POOL
    size = torch.get_num_threads()
    if (
        size <= 1
        or not _openmp_backend()
        or threading.current_thread().name.startswith(_WORKER_PREFIX)
    ):
        return None
    with _POOL_LOCK:
        pool = _POOL
        if pool is not None and pool[0] == os.getpid() and pool[1] == size:
            return pool[2]
        if pool is not None and pool[0] == os.getpid():
            pool[2].shutdown(wait=False)  # the thread count changed
        executor = _start_pool(size)
        _POOL = None if executor is None else (os.getpid(), size, executor)
        return executor


def run_tasks(tasks: Sequence[Any], fn: Callable[[Any], None], device: torch.device) -> None:
    """Run ``fn`` on every task: on the single-threaded scoring workers when the device is the
    CPU and there are several tasks (each task should be cache-sized work), else inline."""
    pool = _worker_pool() if len(tasks) > 1 and device.type == "cpu" else None
    if pool is None:
        for task in tasks:
            fn(task)
    else:
        # Grad and inference mode are thread-local: a caller inside ``torch.inference_mode()``
        # hands the workers inference tensors that only inference mode may write into.
        inference = torch.is_inference_mode_enabled()

        def run(task: Any) -> None:
            with torch.inference_mode(inference):
                fn(task)

        futures = [pool.submit(run, task) for task in tasks]
        # Wait for all (not just until the first error): a task still running later would
        # write into buffers the next call reuses.
        wait(futures)
        for future in futures:
            future.result()


#: The scratch buffers of every scoring thread (the kernel's tiles and similarity blocks).
SCRATCH = ScratchPerThread()
