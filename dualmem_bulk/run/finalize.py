"""Keep a run's result (``finalize``): the decision is recorded first, and only then is what
only a rollback needed removed: the in-place backup (or Lance tag) and, on request, the
snapshot. :mod:`dualmem_bulk.run.modes` runs these steps for the run's mode (an online run's
are in :mod:`dualmem_bulk.online.finalize`)."""

from __future__ import annotations

import time
from pathlib import Path

import lance

from dualmem_bulk._fs import fsync_path, remove
from dualmem_bulk.errors import UsageError
from dualmem_bulk.run.status import iso
from dualmem_bulk.rundir.files import SNAPSHOT
from dualmem_bulk.rundir.journal import Journal, State
from dualmem_bulk.rundir.reports import FinalizeReport

__all__ = ["drop_backup", "drop_snapshot", "record_finalized", "refuse_unfinished"]

_NOT_DONE = {
    "rolling-back": "a rollback was started and did not finish; run `dualmem-bulk rollback "
                    "{run_dir}` again to finish it",
    "rolled-back": "the run was rolled back; there is no new store to keep",
}


def refuse_unfinished(run_dir: Path, state: State) -> None:
    """Only a ``done`` (or already finalized) run is finalized."""
    if state not in ("done", "finalized"):
        why = _NOT_DONE.get(state, "the run is {state}, not done; finish it first (run the "
                                   "same convert command again to resume), or undo it with "
                                   "`dualmem-bulk rollback {run_dir}`")
        raise UsageError(f"{run_dir}: " + why.format(state=state, run_dir=run_dir))


def record_finalized(run_dir: Path, journal: Journal) -> FinalizeReport:
    """Record the decision (rollback is refused from then on) and start the report with what
    earlier invocations removed."""
    state = journal.state
    refuse_unfinished(run_dir, state)
    if state == "done":
        journal.set_state("finalized", "the new store is kept", finalized_at=time.time())
    at = journal.values["finalized_at"]
    return FinalizeReport(status="finalized", run_dir=str(run_dir), mode=journal.mode,
                          target=str(journal.values["target"]),
                          finalized_at=iso(time.time() if at is None else at),
                          removed=list(journal.values["finalize"].get("removed", [])))


def drop_backup(journal: Journal, report: FinalizeReport) -> None:
    """Remove what only a rollback of an in-place run needed: the backup directory, the tag."""
    store = Path(journal.config.get("source", ""))
    backup = journal.values["legacy_backup"]
    if backup and Path(backup).exists():
        remove(Path(backup))
        fsync_path(Path(backup).parent)
        report.removed.append(backup)
    tag = journal.values["pre_migration_tag"]
    if tag and (store / "_versions").is_dir():
        ds = lance.dataset(str(store))
        if tag in ds.tags.list():
            ds.tags.delete(tag)
            report.removed.append(f"tag {tag} of {store}")


def drop_snapshot(run_dir: Path, report: FinalizeReport, drop: bool) -> None:
    """Remove the snapshot if asked (``drop``); say whether it is gone."""
    snapshot = run_dir / SNAPSHOT
    if drop and snapshot.exists():
        remove(snapshot)
        fsync_path(run_dir)
        report.removed.append(str(snapshot))
    report.snapshot_dropped = not snapshot.exists()
