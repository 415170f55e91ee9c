"""Graceful stop on SIGINT/SIGTERM: the first signal asks the run to stop at the next
checkpoint; the second one stops it at once (the journal keeps it resumable either way)."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType

__all__ = ["StopRequest", "stop_on_signals"]


class StopRequest:
    """Set when a stop was asked for; the run checks it between batches."""

    def __init__(self) -> None:
        self.signal: str | None = None

    @property
    def requested(self) -> bool:
        """Whether the first signal has arrived."""
        return self.signal is not None


@contextlib.contextmanager
def stop_on_signals() -> Iterator[StopRequest]:
    """Install the handlers for the duration (main thread only; elsewhere a no-op)."""
    stop = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def handler(signum: int, _frame: FrameType | None) -> None:
        if stop.requested:
            raise KeyboardInterrupt(f"second {signal.Signals(signum).name}: stopping at once")
        stop.signal = signal.Signals(signum).name

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
