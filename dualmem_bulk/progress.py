"""Progress reporting as a protocol with a null default; only the CLI draws bars."""

from __future__ import annotations

from typing import Protocol

__all__ = ["NULL_PROGRESS", "NullProgress", "Progress"]


class Progress(Protocol):
    """Receives phase starts and node counts from a long-running operation."""

    def phase(self, name: str, total: int | None) -> None:
        """A new phase begins; ``total`` nodes are expected when known."""

    def advance(self, nodes: int) -> None:
        """``nodes`` more nodes are done in the current phase."""

    def done(self) -> None:
        """The operation has ended (successfully or not)."""

    def message(self, text: str) -> None:
        """Something the operator should read (a resumed run, a lock taken over)."""


class NullProgress:
    """Progress that shows nothing: the default for library callers."""

    def phase(self, name: str, total: int | None) -> None:
        """Ignore the phase."""

    def advance(self, nodes: int) -> None:
        """Ignore the count."""

    def done(self) -> None:
        """Nothing to close."""

    def message(self, text: str) -> None:
        """Drop the message."""


NULL_PROGRESS: Progress = NullProgress()
