"""Digest comparisons at a pinned change-log position, for the online run's cut-over (is the
target the store?) and for a rollback after it (does the legacy store hold what the dual store
holds?), and the operator's request for a postponed cut-over."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from dualmem_bulk.checksum import TableDigest, episode_checksums, identity_digest, row_checksums
from dualmem_bulk.errors import UsageError
from dualmem_bulk.progress import NULL_PROGRESS, Progress
from dualmem_bulk.rundir.journal import Journal
from dualmem_bulk.rundir.keys import JournalValues, change_number
from dualmem_bulk.rundir.reports import CutoverReport
from dualmem_bulk.stores.dual import ROUND, Applied, DualStore, apply_changes, writer_lock
from dualmem_bulk.stores.memory_store import MemoryStore

__all__ = ["Pinned", "compare_at_pin", "describe_identity", "prove_legacy", "request_cutover"]

_VERIFY_BATCH = 4_096


@dataclass(frozen=True)
class Pinned:
    """Both sides' digests at one change-log position."""

    position: int
    source: TableDigest
    """The legacy store's digest, scanned in the read transaction that pinned the position."""
    recomputed: TableDigest
    """The dual store's digest, every checksum recomputed from the node's fields."""
    stored: TableDigest
    """The dual store's digest over its stored checksum column."""
    source_identity: TableDigest
    """The legacy store's identity digest (row and ``space``/``episode`` checksums)."""
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
                f"{self.source.hex}), {target} {self.recomputed.rows} (digest recomputed from "
                f"the fields {self.recomputed.hex}, stored {self.stored.hex})"
                + describe_identity(self.source_identity, self.target_identity))


def describe_identity(source: TableDigest, target: TableDigest) -> str:
    """The clause of an error message for differing identity digests (``""`` if equal)."""
    if source == target:
        return ""
    return (f"; their space/episode columns differ (identity digests {source.hex} and "
            f"{target.hex})")


def compare_at_pin(legacy: MemoryStore, dual: DualStore, journal: Journal,
                   on_apply: Callable[[Applied], None] = lambda _: None,
                   progress: Progress = NULL_PROGRESS) -> Pinned:
    """Pin the change-log position, apply the log up to it (each step journalled) and scan the
    legacy store's digest, all in one read transaction; then recompute the dual store's.

    The caller holds the run's writer lock, so nothing else changes the dual store meanwhile.
    """
    with legacy.snapshot():
        position = legacy.change_position()
        while (after := change_number(journal.values["online_applied"])) < position:
            applied = apply_changes(legacy, dual, after, limit=ROUND, upto=position)
            values: JournalValues = {"online_applied": applied.position}
            if applied.version is not None:
                values["online_version"] = applied.version
            journal.set(**values)
            on_apply(applied)
        source, identity = TableDigest(), TableDigest()
        for batch in legacy.scan(_VERIFY_BATCH):
            sums = row_checksums(batch)
            source += TableDigest.of(sums)
            identity += identity_digest(sums, episode_checksums(batch))
            progress.advance(batch.num_rows)
    recomputed, stored, target_identity = dual.digests(_VERIFY_BATCH)
    return Pinned(position, source, recomputed, stored, identity, target_identity)


def prove_legacy(run_dir: Path, store: Path, target: Path) -> Pinned:
    """For a rollback after the cut-over: under the writer lock (dual writes wait, legacy
    writes go on), compare the stores at a pinned position and, only if they agree, serve the
    legacy store again (journal ``serving = legacy``, ``rollback_proof``)."""
    journal = Journal.open(run_dir)
    legacy = MemoryStore(store, create=False)
    try:
        with writer_lock(run_dir):
            pinned = compare_at_pin(legacy, DualStore(target), journal)
            if pinned.same:
                journal.set(serving="legacy", rollback_proof={
                    "rows": pinned.source.rows, "digest": pinned.source.hex,
                    "position": pinned.position})
            return pinned
    finally:
        legacy.close()
        journal.close()


def request_cutover(run_dir: Path) -> CutoverReport:
    """Ask the online migrator of ``run_dir`` (started with ``postpone_cutover``) to cut over;
    the request is durable, so a migrator resumed later sees it too."""
    journal = Journal.open(run_dir)
    try:
        if journal.mode != "online":
            raise UsageError(f"{run_dir}: not an online run")
        if journal.state == "done":
            return CutoverReport("done", str(run_dir))
        journal.set(cutover_requested=True)
        return CutoverReport("requested", str(run_dir), journal.values["phase"])
    finally:
        journal.close()
