"""An online run's dual store against its source at one pinned position, every dual-store
checksum recomputed from the node's fields: the proof of the cut-over, of ``verify`` on an
online run, and of a rollback after the cut-over (does the legacy store hold what the dual
store holds?).

- a live MemoryStore: both stores at one change-log position (:func:`compare_at_pin`);
- an Engram data root: the WAL's replay at one WAL position (:func:`compare_wal`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

from dualmem_bulk.checksum import TableDigest, episode_checksums, identity_digest, row_checksums
from dualmem_bulk.progress import NULL_PROGRESS, Progress
from dualmem_bulk.rundir.journal import Journal
from dualmem_bulk.sources.engram_wal import WalReport, read_engram_wal
from dualmem_bulk.sources.engram_wal_feed import Position, legacy_columns
from dualmem_bulk.stores.dual import Applied, DualStore, apply_through
from dualmem_bulk.stores.memory_store import MemoryStore

__all__ = ["Pinned", "WalPinned", "compare_at_pin", "compare_wal", "describe_identity"]

_VERIFY_BATCH = 4_096

P = TypeVar("P", covariant=True)
"""The position: a change number (MemoryStore) or a :data:`Position` (Engram WAL)."""


@dataclass(frozen=True)
class Pinned(Generic[P]):
    """Both sides' digests at one position (of a MemoryStore's change log, as such)."""

    position: P
    source: TableDigest
    """The source's digest: the legacy store's, scanned in the read transaction that pinned
    the position, or the WAL replay's."""
    recomputed: TableDigest
    """The dual store's digest, every checksum recomputed from the node's fields."""
    stored: TableDigest
    """The dual store's digest over its stored checksum column."""
    source_identity: TableDigest
    """The source's identity digest (row and ``space``/``episode`` checksums)."""
    target_identity: TableDigest
    """The dual store's identity digest, recomputed from every node's fields."""

    @property
    def same(self) -> bool:
        """Whether all three digests agree, and both identity digests."""
        return (self.source == self.recomputed == self.stored
                and self.source_identity == self.target_identity)

    def describe(self, store: Path, target: Path) -> str:
        """What was compared, for an error message."""
        return (f"at change {self.position} {store} has {self.source.rows} rows (digest "
                f"{self.source.hex}), {target} {self.recomputed.rows} {self._target_digests()}")

    def _target_digests(self) -> str:
        """The dual store's digests and the identity clause, for :meth:`describe`."""
        return (f"(digest recomputed from the fields {self.recomputed.hex}, stored "
                f"{self.stored.hex})" + describe_identity(self.source_identity,
                                                          self.target_identity))


@dataclass(frozen=True)
class WalPinned(Pinned[Position]):
    """The WAL replay's and the dual store's digests at one WAL position."""

    report: WalReport
    """The replay's counts and damage (as the offline reader reports them)."""

    def describe(self, store: Path, target: Path) -> str:
        """What was compared, for an error message (``store`` is the Engram data root)."""
        return (f"at WAL position {self.position} the replay of {store} has {self.source.rows} "
                f"memories (digest {self.source.hex}), {target} {self.recomputed.rows} nodes "
                + self._target_digests())


def describe_identity(source: TableDigest, target: TableDigest) -> str:
    """The clause of an error message for differing identity digests (``""`` if equal)."""
    if source == target:
        return ""
    return (f"; their space/episode columns differ (identity digests {source.hex} and "
            f"{target.hex})")


def compare_at_pin(legacy: MemoryStore, dual: DualStore, journal: Journal,
                   on_apply: Callable[[Applied], None] = lambda _: None,
                   progress: Progress = NULL_PROGRESS) -> Pinned[int]:
    """Pin the change-log position, apply the log up to it (each step journalled) and scan the
    legacy store's digest, all in one read transaction; then recompute the dual store's.

    The caller holds the run's writer lock, so nothing else changes the dual store meanwhile.
    """
    with legacy.snapshot():
        position = legacy.change_position()
        apply_through(legacy, dual, journal, position, on_apply)
        source, identity = TableDigest(), TableDigest()
        for batch in legacy.scan(_VERIFY_BATCH):
            sums = row_checksums(batch)
            source += TableDigest.of(sums)
            identity += identity_digest(sums, episode_checksums(batch))
            progress.advance(batch.num_rows)
    recomputed, stored, target_identity = dual.digests(_VERIFY_BATCH)
    return Pinned(position, source, recomputed, stored, identity, target_identity)


def compare_wal(root: Path, dual: DualStore, position: Position,
                progress: Progress = NULL_PROGRESS) -> WalPinned:
    """Replay the WAL at ``position`` and compare its digest with the dual store's; call it
    under the run's writer lock, with the dual store at ``position``."""
    source = read_engram_wal(root, _VERIFY_BATCH, upto=position)
    digest, identity = TableDigest(), TableDigest()
    for part in source:
        batch = legacy_columns(part.batch)
        sums = row_checksums(batch)
        digest += TableDigest.of(sums)
        identity += identity_digest(sums, episode_checksums(batch))
        progress.advance(batch.num_rows)
    recomputed, stored, target_identity = dual.digests(_VERIFY_BATCH)
    return WalPinned(position, digest, recomputed, stored, identity, target_identity,
                     report=source.report)
