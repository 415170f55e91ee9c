"""Where an offline run's stores are: what an in-place run records of its store before it
starts, the finished store put in place (renamed from its staging name, or published into a
Lance store converted in place), and what ``restart`` removes."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import lance

from dualmem_bulk._fs import fault_point, fsync_path, remove
from dualmem_bulk.errors import SourceError, TargetExists, UsageError
from dualmem_bulk.offline.config import OfflineConfig
from dualmem_bulk.progress import Progress
from dualmem_bulk.rundir.files import LOCK, PRE_MIGRATION_TAG, legacy_backup
from dualmem_bulk.rundir.journal import Journal
from dualmem_bulk.rundir.keys import JournalValues
from dualmem_bulk.stores import detect_store
from dualmem_bulk.stores.staging import LanceInPlace, StagedWriter, data_files, remove_strays

__all__ = ["discard", "discard_question", "in_place_meta", "place"]


def in_place_meta(config: OfflineConfig) -> JournalValues:
    """What an in-place run must know to convert and to roll back its store."""
    store = config.source
    fmt = detect_store(store)
    if fmt is None or not store.is_dir():
        raise UsageError(f"{store}: in_place needs a legacy store directory (a Lance "
                         "dataset or a directory of Parquet files)", "in_place")
    if fmt != config.target_format:
        raise UsageError(f"{store} is a {fmt} store; pass target_format {fmt} to convert "
                         "it in place", "target_format")
    meta: JournalValues = {"mode": "in-place", "store_format": fmt}
    if fmt == "lance":
        meta["pre_migration_version"] = int(lance.dataset(str(store)).version)
        meta["pre_migration_tag"] = PRE_MIGRATION_TAG
        meta["store_files"] = data_files(store)  # the run's strays are the others
    return meta


def discard(config: OfflineConfig, run_dir: Path, staging: Path, journal: Journal,
            progress: Progress) -> None:
    """``restart``: remove what this run wrote (staging, target, snapshot), keep the lock."""
    if journal.mode == "in-place" and journal.state not in (
        "planned", "exporting", "rolled-back"
    ):
        raise UsageError(f"{run_dir}: the store is being converted in place; roll the "
                         "run back first (dualmem-bulk rollback), then restart", "restart")
    if (before := journal.values["store_files"]) is not None:  # an in-place Lance run's
        remove_strays(config.source, before,
                      journal.batches() if journal.values["published_version"] else None)
    remove(staging)
    if journal.values["target_created"]:
        remove(config.target)
    for entry in run_dir.iterdir():
        if entry.name != LOCK:
            remove(entry)
    progress.message(f"discarded the previous run in {run_dir}")


def discard_question(run_dir: Path) -> str | None:
    """What a restart would discard in ``run_dir``, as a question for the operator (``None``:
    no run there, or a finalized one, which the run refuses)."""
    if not Journal.exists(run_dir):
        return None
    journal = Journal.open(run_dir)
    try:
        if journal.state == "finalized":
            return None
        created = " and the target it created" if journal.values["target_created"] else ""
        return (f"Discard the {journal.state} run in {run_dir} (its journal, snapshot, "
                f"quarantine{created}: {journal.values['target']}) and start again?")
    finally:
        journal.close()


def place(config: OfflineConfig, staging: Path, journal: Journal,
          writer: Callable[[], StagedWriter]) -> None:
    """Put the finished store where it belongs; every step can be repeated after a crash."""
    target = config.target
    mode = journal.mode
    if journal.values["pre_migration_version"] is not None:  # a Lance store in place
        if journal.values["published_version"] is None:
            in_place = writer()
            assert isinstance(in_place, LanceInPlace)
            version = in_place.publish(journal.batches())
            journal.set(published_version=version, swapped=True)  # durable, then reported
        # Fragments of attempts that never counted (a killed task, a part redone without
        # its duplicates) are in no version: remove them.
        if (before := journal.values["store_files"]) is not None:
            remove_strays(config.source, before, journal.batches())
        return
    if mode == "in-place":
        backup = legacy_backup(target)
        if target.exists() and staging.exists() and not backup.exists():
            os.replace(target, backup)
            fsync_path(target.parent)
        journal.set(legacy_backup=str(backup.resolve()))
    if staging.exists():
        if target.exists():
            raise TargetExists(target)
        os.replace(staging, target)
        fsync_path(target.parent)
        fault_point("store-swap")
        journal.set(swapped=True)
    elif not target.exists():
        raise SourceError(staging, "the converted store is missing; roll back or re-run "
                                   "with restart", "restart")
