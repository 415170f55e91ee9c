"""Every name a run gives a file: in its run directory, and beside the store it converts.

A run directory (default ``TARGET.run``) holds::

    lock                the migrator's lock (pid, host, start time of the holder)
    journal.sqlite      the run's state, checkpoints and events (:mod:`dualmem_bulk.rundir.journal`)
    snapshot.parquet/   every valid source row, legacy schema + checksum (kept for rollback)
    quarantine.parquet/ every rejected row with its file, row and reason (only if any)
    report.json         the final report of ``convert`` or ``migrate --online``
    rollback.json       the report of the last rollback
    dual.lock           online runs: the dual store's writer lock (one Lance committer)
    pending.sqlite      online runs after finalize: writes not yet in the Lance store
    pause               online runs: present while the operator holds the copy

Beside a store (hidden, so a listing of the directory shows only whole stores): the staging
store being built (``.NAME.dualmem-partial``), an in-place Parquet run's legacy backup
(``.NAME.dualmem-legacy``), and a rollback's store moved aside to be deleted
(``.NAME.dualmem-trash``) or rebuilt from the snapshot (``.NAME.dualmem-restore``).

This module imports nothing of the package, so any module may take its names from here.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["DUAL_LOCK", "JOURNAL", "LOCK", "PAUSE", "PENDING", "PRE_MIGRATION_TAG",
           "QUARANTINE", "REPORT", "ROLLBACK_REPORT", "SNAPSHOT", "TMP_GLOB", "beside",
           "default_run_dir", "legacy_backup", "staging_path"]

LOCK = "lock"
JOURNAL = "journal.sqlite"
SNAPSHOT = "snapshot.parquet"
"""The snapshot's name in a run directory."""
QUARANTINE = "quarantine.parquet"
"""The quarantine's name in a run directory: every rejected row, with file, row and reason."""
REPORT = "report.json"
ROLLBACK_REPORT = "rollback.json"
DUAL_LOCK = "dual.lock"
PENDING = "pending.sqlite"
PAUSE = "pause"
TMP_GLOB = ".*.tmp-*"
"""What an atomic write leaves if it is killed before its rename (:func:`~dualmem_bulk._fs.
atomic_path`)."""
PRE_MIGRATION_TAG = "dualmem-pre-migration"
"""The Lance tag an in-place run puts on the store's last legacy version."""


def default_run_dir(target: Path) -> Path:
    """The run directory of a run into ``target`` when none is given: ``TARGET.run``."""
    return target.with_name(target.name + ".run")


def beside(store: Path, suffix: str) -> Path:
    """A hidden name beside ``store`` for what a run keeps there (``.NAME.dualmem-SUFFIX``)."""
    return store.with_name(f".{store.name}.dualmem-{suffix}")


def staging_path(target: Path) -> Path:
    """Where the store is built before it is renamed onto ``target``."""
    return beside(target, "partial")


def legacy_backup(store: Path) -> Path:
    """Where an in-place Parquet run keeps the legacy store until it is finalized."""
    return beside(store, "legacy")
