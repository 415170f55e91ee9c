"""The Dask engine: the export's partitions, the conversion's units and verification's pieces
as Dask tasks.

Without a scheduler address a local cluster of ``workers`` processes (one thread each: per-row
BLAKE3 holds the GIL) is started and always shut down; with one, the
tasks go to that existing cluster, which is left running. A task is the same module-level
function the local engine runs, on a spec naming the files to read, so the cluster's workers
must see the run directory and the target at the same paths as the driver. Tasks are submitted
with ``pure=False`` (a spec run twice is two tasks) and retried; a worker that dies is replaced
and its task run again elsewhere, and since the driver commits only what a task returned, the
data file an interrupted attempt left behind is never part of the target.
"""

from __future__ import annotations

import logging
import os
import socket
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Generic, Protocol, TypeVar, runtime_checkable

import distributed
from distributed import Client, LocalCluster, WorkerPlugin

from dualmem_bulk.engines.local import released, worker_init
from dualmem_bulk.errors import Interrupted, SourceError, UsageError

__all__ = ["RETRIES", "DaskPool", "NeedsPaths", "UnreadableOnWorker", "run_task"]

S = TypeVar("S")
R = TypeVar("R")

RETRIES = 2
"""Times a task that raised is run again (a worker dying is handled by the scheduler: its tasks
are rescheduled, up to ``distributed.scheduler.allowed-failures`` times)."""
_HTTP = "127.0.0.1:0"
"""The local scheduler's HTTP server (dashboard, health) on a free local port: the default,
8787, warns when taken (by another cluster or run), and tests turn warnings into errors."""
_AHEAD_PER_WORKER = 2
"""Tasks in flight per worker thread: one running, one queued, so that a worker is never idle
while the driver commits."""


@runtime_checkable
class NeedsPaths(Protocol):
    """A task spec naming the files and directories its worker must see."""

    @property
    def needs(self) -> tuple[Path, ...]:
        """Paths the task reads, or writes into."""
        ...


class UnreadableOnWorker(Exception):
    """A worker cannot read a file its task needs (a path the cluster does not share)."""

    def __init__(self, worker: str, path: str, problem: str) -> None:
        super().__init__(worker, path, problem)  # the args rebuild it when unpickled
        self.worker, self.path, self.problem = worker, path, problem

    def __str__(self) -> str:
        return f"worker {self.worker} cannot read {self.path}: {self.problem}"


def _worker_name() -> str:
    try:
        return f"{distributed.get_worker().address} on {socket.gethostname()}"
    except ValueError:  # not in a Dask worker (called directly)
        return f"pid {os.getpid()} on {socket.gethostname()}"


def run_task(fn: Callable[[S], R], spec: S) -> R:
    """Run one task on a worker as the local pool does (memory released after it), once the
    paths the spec ``needs`` are visible here: a worker that cannot see them is named."""
    for path in spec.needs if isinstance(spec, NeedsPaths) else ():
        if not os.access(path, os.R_OK):
            problem = "no such file or directory" if not path.exists() else "permission denied"
            raise UnreadableOnWorker(_worker_name(), str(path), problem)
    return released((fn, spec))


class _DriverWorkers(WorkerPlugin):
    """Set up the workers of a local cluster as the local pool's: Ctrl-C left to the driver,
    two malloc arenas, quiet garbage collection, and death with the driver (a worker outliving
    a killed driver would keep writing into the store being resumed)."""

    def __init__(self, driver: int) -> None:
        self.driver = driver

    def setup(self, worker: distributed.Worker) -> None:
        if os.getppid() == self.driver:  # a worker process the driver started
            worker_init(self.driver)


class _Future(Generic[R]):
    """A Dask future whose result raises this project's errors."""

    def __init__(self, future: distributed.Future[R]) -> None:
        self._future = future

    def done(self) -> bool:
        return bool(self._future.done())

    def result(self, timeout: float | None = None) -> R:
        try:
            result: R = self._future.result(timeout)
            return result
        except UnreadableOnWorker as exc:
            raise SourceError(exc.path, f"worker {exc.worker} cannot read it ({exc.problem}); "
                                        "the cluster's workers must see the run directory and "
                                        "the target at the same paths as this process") from exc
        except distributed.KilledWorker as exc:
            raise Interrupted(f"Dask workers kept dying on one task ({exc}); run the same "
                              "command again to resume") from exc


class DaskPool:
    """A Dask client, on a local cluster of ``workers`` processes or on the cluster at
    ``scheduler``; connected lazily on first use, closed by :meth:`close`."""

    def __init__(self, workers: int, scheduler: str | None = None) -> None:
        if scheduler is None and workers < 1:
            raise UsageError(f"workers must be at least 1 with engine dask, got {workers}",
                             "workers", "engine")
        self.workers = workers
        """Task slots: the local cluster's processes, or the existing cluster's threads."""
        self.scheduler = scheduler
        self.inline = False
        self._cluster: LocalCluster | None = None
        self._client: Client | None = None

    def __enter__(self) -> DaskPool:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close(cancel=kind is not None)

    def start(self) -> None:
        """Start the local cluster, or connect to the scheduler."""
        if self._client is not None:
            return
        try:
            if self.scheduler is None:
                self._cluster = LocalCluster(
                    n_workers=self.workers, threads_per_worker=1, processes=True,
                    dashboard_address=_HTTP, silence_logs=logging.ERROR)
                self._client = Client(self._cluster, set_as_default=False)
                self._client.register_plugin(_DriverWorkers(os.getpid()))
            else:
                self._client = Client(self.scheduler, set_as_default=False)
                self.workers = sum(self._client.nthreads().values())
        except OSError as exc:
            self.close()
            where = self.scheduler or "a local cluster"
            raise UsageError(f"cannot start the Dask engine on {where}: {exc}") from exc

    def close(self, cancel: bool = False) -> None:
        """Disconnect; shut the local cluster down (an existing cluster keeps running).
        Tasks still queued are dropped either way: their results would go nowhere."""
        client, cluster = self._client, self._cluster
        self._client = self._cluster = None
        try:
            if client is not None:
                client.close()
        finally:
            if cluster is not None:
                cluster.close()

    def _submit(self, fn: Callable[[S], R], spec: S) -> _Future[R]:
        self.start()
        assert self._client is not None
        return _Future(self._client.submit(run_task, fn, spec, pure=False, retries=RETRIES))

    def submit(self, fn: Callable[[S], R], spec: S) -> _Future[R]:
        """Run ``fn(spec)`` on the cluster."""
        return self._submit(fn, spec)

    def ordered(self, fn: Callable[[S], R], specs: Iterable[S]) -> Iterator[tuple[S, R]]:
        """Yield ``(spec, fn(spec))`` in the order of ``specs``, with at most two tasks per
        worker thread submitted ahead of the consumer."""
        self.start()
        ahead = _AHEAD_PER_WORKER * max(self.workers, 1)
        pending: deque[tuple[S, _Future[R]]] = deque()
        items = iter(specs)
        for spec in items:
            pending.append((spec, self._submit(fn, spec)))
            if len(pending) >= ahead:
                break
        while pending:
            spec, future = pending.popleft()
            result = future.result()
            for nxt in items:
                pending.append((nxt, self._submit(fn, nxt)))
                break
            yield spec, result

