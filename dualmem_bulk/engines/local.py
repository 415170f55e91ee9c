"""Independent tasks in worker processes, results handed back in task order.

Per-row BLAKE3 and Python around it hold the GIL, so threads cannot use a second core (a
per-row BLAKE3 loop hashed 208K rows/s on one thread and 104K with 16); processes can. A task is
a picklable spec for a module-level function that reads its own input from disk and returns
something small (digests, fragment metadata), so nothing large crosses the process boundary.
With no worker process the tasks run in the calling process: no start-up cost, same code path.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import multiprocessing
import os
import signal
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from types import TracebackType
from typing import TypeVar

import pyarrow as pa

__all__ = ["AUTO_MIN_ROWS", "WorkerPool", "default_workers", "quiet_gc", "release_memory",
           "released", "tune_malloc", "worker_init"]

S = TypeVar("S")
R = TypeVar("R")

AUTO_MIN_ROWS = 50_000
"""Below this many rows a run stays in one process: starting a worker (importing Arrow, Polars
and Lance) takes about a second, which a small run does not win back."""
MAX_AUTO_WORKERS = 8

_AHEAD_PER_WORKER = 2
_PR_SET_PDEATHSIG = 1
_M_ARENA_MAX = -8
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD = 1 << 20


def tune_malloc() -> None:
    """At most two glibc malloc arenas, and every block of 1 MiB or more its own mapping. Lance
    (whose allocations go through glibc) gives each reader thread an arena by default, and freed
    memory scattered over them is not returned: reading 8 fragments of 16,384 nodes held
    397 MiB afterwards with the default and 217 MiB with two arenas. glibc also raises its mmap
    threshold to 32 MiB once large blocks are freed, after which a unit's buffers stay in the
    heap: a fixed 1 MiB threshold cut the peak RSS of a 1M-node run (driver and one worker) from
    1,060-1,074 MiB to 929-951 MiB, with no time difference beyond the noise (3 runs each).
    Call it before Lance starts its threads.

    Arrow's buffers go to jemalloc rather than its default mimalloc, which kept more of what a
    partition task freed: two tasks of 65,536 nodes peaked at 426-435 MiB RSS against 485-516
    MiB, at the same CPU time (2 runs each; the system allocator: 399-408 MiB but 20-50% more
    CPU). Builds without jemalloc keep their default."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None)
        libc.mallopt(_M_ARENA_MAX, 2)
        libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)
    with contextlib.suppress(NotImplementedError):
        pa.set_memory_pool(pa.jemalloc_memory_pool())


_GC_THRESHOLD = (100_000, 50, 1000)


@contextlib.contextmanager
def quiet_gc() -> Iterator[None]:
    """Collect garbage rarely and never scan what exists already (the imported modules). The
    per-row loops create millions of short-lived objects, and each full collection walked every
    object of Arrow, Polars and Lance: exporting 200K nodes took 5.0 s with the defaults and
    3.7-4.0 s with this."""
    before = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(*_GC_THRESHOLD)
    try:
        yield
    finally:
        gc.set_threshold(*before)
        gc.unfreeze()


def release_memory() -> None:
    """Hand freed memory back to the system: Arrow's allocator and glibc's keep it otherwise,
    and a worker that converts and verifies units in turn then grows to the sum of both peaks
    (measured: 755 MiB a worker; 200-400 MiB with this after every task)."""
    pa.default_memory_pool().release_unused()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).malloc_trim(0)


_RELEASE_ABOVE = 400 << 20
"""Release only above this RSS: memory handed back is faulted in again by the next task, which
cost 15% of a run's time when done after every task (200K nodes, 2 workers: 6.6 s against
7.9 s) for 65 MiB less peak RSS."""


def _rss() -> int:
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return 0


def released(call: tuple[Callable[[S], R], S]) -> R:
    """Run one task, then hand freed memory back to the system if the process grew past
    what a task needs (the local and Dask workers both run tasks through this)."""
    fn, spec = call
    try:
        return fn(spec)
    finally:
        if _rss() > _RELEASE_ABOVE:
            release_memory()


def default_workers(rows: int, *, driver_busy: bool = True) -> int:
    """Worker processes for ``rows`` when the user did not say: none for small runs; else one
    per core, less the one a ``driver_busy`` caller keeps (a conversion's export). On 2 cores,
    1M nodes: 1 worker beside the exporting driver took as long as 2, with 0.4 GiB less RSS."""
    if rows < AUTO_MIN_ROWS:
        return 0
    return max(1, min(os.cpu_count() or 1, MAX_AUTO_WORKERS) - int(driver_busy))


def worker_init(driver: int) -> None:
    """Leave Ctrl-C to the driver (it stops after the commit in flight) and die with it: a
    worker outliving a killed driver would keep writing into the store being resumed, and
    would hold the driver's stdout open."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    tune_malloc()
    gc.freeze()
    gc.set_threshold(*_GC_THRESHOLD)
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL))
    if os.getppid() != driver:  # the driver died while this worker was starting
        os._exit(1)


class WorkerPool:
    """``workers`` processes (0: the caller alone), started lazily on first use."""

    def __init__(self, workers: int) -> None:
        if workers < 0:
            raise ValueError(f"workers must be at least 0, got {workers}")
        self.workers = workers
        self.inline = workers == 0
        """Tasks run in the calling process."""
        self._executor: ProcessPoolExecutor | None = None

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close(cancel=kind is not None)

    def close(self, cancel: bool = False) -> None:
        """Stop the workers; with ``cancel``, drop queued tasks (running ones finish)."""
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=cancel)
            self._executor = None

    def start(self) -> None:
        """Start the worker processes now (they import while the caller works on)."""
        if not self.inline and self._executor is None:
            self._executor = ProcessPoolExecutor(
                self.workers, mp_context=multiprocessing.get_context("spawn"),
                initializer=worker_init, initargs=(os.getpid(),))
            for _ in range(self.workers):  # spawn every worker now, not on first submit
                self._executor.submit(os.getpid)

    def submit(self, fn: Callable[[S], R], spec: S) -> Future[R]:
        """Run ``fn(spec)`` beside the ordered tasks (at once, here, without workers)."""
        if self.inline:
            done: Future[R] = Future()
            try:
                done.set_result(released((fn, spec)))
            except Exception as exc:
                done.set_exception(exc)
            return done
        self.start()
        assert self._executor is not None
        return self._executor.submit(released, (fn, spec))

    def ordered(self, fn: Callable[[S], R], specs: Iterable[S]) -> Iterator[tuple[S, R]]:
        """Yield ``(spec, fn(spec))`` in the order of ``specs``, with at most two tasks per
        worker submitted ahead of the consumer (one running, one queued, so that a worker is
        never idle while the consumer commits). A task's exception is raised at its place in
        the order."""
        if self.inline:
            for spec in specs:
                yield spec, released((fn, spec))
            return
        self.start()
        assert self._executor is not None
        pending: deque[tuple[S, Future[R]]] = deque()
        items = iter(specs)
        for spec in items:
            pending.append((spec, self._executor.submit(released, (fn, spec))))
            if len(pending) >= _AHEAD_PER_WORKER * self.workers:
                break
        while pending:
            spec, future = pending.popleft()
            result = future.result()
            nxt = next(items, None)
            if nxt is not None:
                pending.append((nxt, self._executor.submit(released, (fn, nxt))))
            yield spec, result
