"""The proof a rollback after the cut-over needs (does the legacy store hold what the dual store
holds? :func:`~dualmem_bulk.verify.pinned.compare_at_pin`), and the operator's request for a
postponed cut-over."""

from __future__ import annotations

from pathlib import Path

from dualmem_bulk.errors import UsageError
from dualmem_bulk.rundir.journal import Journal
from dualmem_bulk.rundir.reports import CutoverReport
from dualmem_bulk.stores.dual import DualStore, writer_lock
from dualmem_bulk.stores.memory_store import MemoryStore
from dualmem_bulk.verify.pinned import Pinned, compare_at_pin

__all__ = ["prove_legacy", "request_cutover"]


def prove_legacy(run_dir: Path, store: Path, target: Path) -> Pinned[int]:
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
