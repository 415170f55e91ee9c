"""Overlap I/O with compute: run an iterator in a background thread a few items ahead.

Arrow, Parquet and Lance release the GIL while they read, decode and encode, so a reader
thread keeps the disk busy while the main thread validates and hashes the previous batch.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

__all__ = ["InOrderWorker", "prefetched"]

T = TypeVar("T")
_DONE = object()


def prefetched(items: Iterator[T], depth: int = 1) -> Iterator[T]:
    """Yield ``items`` as produced by a background thread, at most ``depth`` ahead.

    An exception in the producer is raised in the consumer at the same point of the stream;
    when the consumer stops early, the producer stops at its next item.
    """
    slots: queue.Queue[object] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        slots.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            slots.put(_DONE)
        except BaseException as exc:  # handed to the consumer, raised there
            slots.put(exc)

    worker = threading.Thread(target=produce, name="dualmem-prefetch", daemon=True)
    worker.start()
    try:
        while True:
            item = slots.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item  # type: ignore[misc]
    finally:
        stop.set()
        while worker.is_alive():
            with contextlib.suppress(queue.Empty):
                slots.get(timeout=0.1)
        worker.join()


class InOrderWorker:
    """Runs calls in one background thread, in order, with at most ``depth`` waiting: the
    main thread hashes the next batch while the previous one is being written. Leaving the
    ``with`` block waits for every call and raises the first failure."""

    def __init__(self, depth: int = 1) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dualmem-write")
        self._pending: deque[Future[Any]] = deque()
        self._depth = depth

    def __enter__(self) -> InOrderWorker:
        return self

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        """Queue ``fn(*args)``; blocks while ``depth`` calls are already waiting."""
        self._pending.append(self._pool.submit(fn, *args))
        while len(self._pending) > self._depth:
            self._pending.popleft().result()

    def drain(self) -> None:
        """Wait for every queued call; raise the first failure."""
        while self._pending:
            self._pending.popleft().result()

    def __exit__(self, kind: type[BaseException] | None, *exc: object) -> None:
        try:
            if kind is None:
                self.drain()
            else:  # already failing: the queued calls finish or fail quietly, the first error
                for pending in self._pending:  # (a full disk, say) is the one reported
                    pending.exception()
                self._pending.clear()
        finally:
            self._pool.shutdown(wait=True)
