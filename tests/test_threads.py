"""Background reading and writing keep order, surface failures, and stop when abandoned."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from dualmem_bulk._threads import InOrderWorker, prefetched


def test_prefetched_keeps_order_and_runs_elsewhere() -> None:
    threads: set[str] = set()

    def produce() -> Iterator[int]:
        for i in range(100):
            threads.add(threading.current_thread().name)
            yield i

    assert list(prefetched(produce(), depth=3)) == list(range(100))
    assert threads == {"dualmem-prefetch"}


def test_prefetched_raises_where_the_producer_failed() -> None:
    def produce() -> Iterator[int]:
        yield 1
        yield 2
        raise OSError(28, "No space left on device")

    got: list[int] = []
    with pytest.raises(OSError, match="No space left"):
        for item in prefetched(produce()):
            got.append(item)
    assert got == [1, 2]


def test_prefetched_stops_the_producer_when_abandoned() -> None:
    produced: list[int] = []

    def produce() -> Iterator[int]:
        for i in range(10_000):
            produced.append(i)
            yield i

    stream = prefetched(produce(), depth=1)
    assert next(stream) == 0
    stream.close()
    time.sleep(0.3)
    assert len(produced) < 10


def test_in_order_worker_keeps_order_and_raises_first_failure() -> None:
    done: list[int] = []

    def write(i: int) -> None:
        time.sleep(0.001 * (5 - i % 5))
        if i == 7:
            raise ValueError("bad batch 7")
        done.append(i)

    with pytest.raises(ValueError, match="bad batch 7"), InOrderWorker(depth=2) as worker:
        for i in range(20):
            worker.submit(write, i)
    assert done[:7] == list(range(7))
    assert 7 not in done


def test_in_order_worker_reports_the_first_failure_not_its_consequences() -> None:
    """A full disk fails one write; the writes queued behind it then fail on the closed file.
    The full disk is what the caller must see (it makes the run resumable, exit 4)."""
    closed = threading.Event()

    def write(i: int) -> None:
        if closed.is_set():
            raise RuntimeError("operation on closed file")
        if i == 3:
            closed.set()
            raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"), InOrderWorker(depth=2) as worker:
        for i in range(4):
            worker.submit(write, i)
        worker.submit(write, 4)  # queued behind the failure
        worker.submit(write, 5)
