"""Where a conversion's tasks run: ``local`` (worker processes beside the driver, or the driver
alone) or ``dask`` (a Dask distributed cluster, local or existing).

Both engines run the same module-level task functions
(:func:`dualmem_bulk.offline.partition_task.export_partition`,
:func:`dualmem_bulk.verify.verify_piece`) and
hand their small results back to the driver, which stays the target's only committer; journal,
resume, status, verify and rollback do not depend on the engine.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import Literal, Protocol, TypeVar

from dualmem_bulk.engines.local import WorkerPool, default_workers
from dualmem_bulk.errors import UsageError

__all__ = ["DASK_HINT", "ENGINES", "Engine", "TaskFuture", "TaskPool", "open_pool", "require_dask"]

Engine = Literal["local", "dask"]
ENGINES: tuple[Engine, ...] = ("local", "dask")
DASK_HINT = "pip install 'dualmem-bulk[dask]'"
"""What to run to get the Dask engine."""

S = TypeVar("S")
R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)


class TaskFuture(Protocol[R_co]):
    """A task's result to come (a ``concurrent.futures.Future`` or a wrapped Dask future)."""

    def result(self, timeout: float | None = None) -> R_co:
        """Wait for the result; raise the task's exception."""
        ...

    def done(self) -> bool:
        """Whether the task has finished."""
        ...


class TaskPool(Protocol):
    """What the offline run and verification need from an engine's pool."""

    workers: int
    """How many tasks run at once (0: in the calling process)."""
    inline: bool
    """Tasks run in the calling process."""

    def __enter__(self) -> TaskPool: ...

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None: ...

    def start(self) -> None:
        """Start the workers now (they start while the caller works on)."""

    def close(self, cancel: bool = False) -> None:
        """Stop the workers; with ``cancel``, drop queued tasks."""

    def submit(self, fn: Callable[[S], R], spec: S) -> TaskFuture[R]:
        """Run ``fn(spec)`` beside the ordered tasks."""
        ...

    def ordered(self, fn: Callable[[S], R], specs: Iterable[S]) -> Iterator[tuple[S, R]]:
        """Yield ``(spec, fn(spec))`` in the order of ``specs``, a bounded number of tasks
        ahead of the consumer; a task's exception is raised at its place in the order."""
        ...


def require_dask() -> None:
    """Fail with a usage error (exit 2) saying how to install the extra when Dask is missing."""
    try:
        import dask  # noqa: F401
        import distributed  # noqa: F401
    except ImportError as exc:
        raise UsageError(f"engine dask needs the dask extra ({exc}): {DASK_HINT}",
                         "engine") from exc


def open_pool(engine: Engine, workers: int | None, scheduler: str | None = None, *,
              rows: int = 0, driver_busy: bool = True) -> TaskPool:
    """The pool of ``engine``: ``workers`` local processes (0: this one alone), or a Dask
    client on a local cluster of ``workers`` processes or on the cluster at ``scheduler``.
    ``workers=None`` sizes it for ``rows`` (:func:`~dualmem_bulk.engines.local.default_workers`; at
    least one for Dask); an existing cluster brings its own workers."""
    if engine == "local":
        if scheduler is not None:
            raise UsageError("scheduler needs engine dask", "scheduler", "engine")
        return WorkerPool(default_workers(rows, driver_busy=driver_busy)
                          if workers is None else workers)
    if engine != "dask":
        raise UsageError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
    if scheduler is not None and workers is not None:
        raise UsageError("workers sizes a local Dask cluster; with scheduler the existing "
                         "cluster's processes run the tasks", "workers", "scheduler")
    require_dask()
    from dualmem_bulk.engines.dask import DaskPool

    if scheduler is not None:
        return DaskPool(0, scheduler)
    return DaskPool(max(1, default_workers(rows, driver_busy=driver_busy))
                    if workers is None else workers)
