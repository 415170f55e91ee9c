"""The rollback of an offline run: a copy run's target removed and its source proven untouched;
an in-place run's legacy store put back (its backup, its Lance pre-migration version, or a
rebuild from the snapshot) and proven equal to the snapshot."""

from __future__ import annotations

import os
from pathlib import Path

import lance
import pyarrow.parquet as pq

from dualmem_bulk._fs import fsync_path, fsync_tree, remove, source_identity
from dualmem_bulk.run.rollback import Rollback
from dualmem_bulk.rundir.files import QUARANTINE, SNAPSHOT, beside, legacy_backup
from dualmem_bulk.rundir.journal import Journal
from dualmem_bulk.schema import DUAL_NAME, schema_identity
from dualmem_bulk.stores import TargetFormat, detect_store
from dualmem_bulk.stores.legacy import write_legacy
from dualmem_bulk.stores.staging import remove_strays

__all__ = ["CopyRollback", "InPlaceRollback"]


def _store_is_dual(path: Path) -> bool | None:
    """Whether the store at ``path`` holds DualMemoryNode data (``None``: no store there)."""
    fmt = detect_store(path)
    if fmt == "lance":
        schema = lance.dataset(str(path)).schema
    elif fmt == "parquet":
        schema = pq.read_schema(sorted(path.glob("*.parquet"))[0])
    else:
        return None if not path.exists() else False
    identity = schema_identity(schema)
    return bool(identity and identity[0] == DUAL_NAME) or "node_type" in schema.names


class CopyRollback(Rollback):
    """A copy run: remove the target this run created; the source was only read."""

    @staticmethod
    def plan(journal: Journal) -> str:
        return (f"remove {journal.values['target']} and its staging store (as far as this run "
                f"created them) and check that {journal.config.get('source')} is unchanged")

    def undo(self) -> None:
        if self.journal.values["rollback_target_ours"]:
            self._remove(self.target)
        elif self.target.exists():
            self.report.notes.append(f"{self.target} was not created by this run; left alone")
        if not self.source.exists():
            self.report.source_untouched = False
            raise self._fail(f"{self.source}: the source is gone; the run only read it, so "
                             "something else removed it. Its rows as exported are in "
                             f"{self.run_dir / SNAPSHOT}")
        same_files = source_identity(self.source) == self.journal.values["source_identity"]
        if self.snapshot is None:
            self.report.source_untouched = same_files
            if not same_files:
                raise self._fail(
                    f"{self.source}: its files changed (size or mtime) since the run started; "
                    "the run only read them and its export had not finished, so there is no "
                    "snapshot to compare the contents with")
            return
        self._prove(self.source, "source")
        self.report.source_untouched = True
        if not same_files:
            self.report.notes.append(f"{self.source}: file sizes or times changed since the "
                                     "run started, but its rows are the snapshot's")


class InPlaceRollback(Rollback):
    """An in-place run: the legacy store back at its path, proven equal to the snapshot."""

    proven = "restored store"

    @staticmethod
    def plan(journal: Journal) -> str:
        return (f"restore the {journal.values['store_format']} store {journal.config.get('source')}"
                " to its state before the run, and remove what the run wrote")

    def undo(self) -> None:
        store = self.source
        if self.snapshot is None:  # the store is replaced only after the export
            if self.journal.values["swapped"]:
                raise self._fail(f"{store}: the journal says the store was replaced, but the run "
                                 "has no snapshot to restore it from")
            self.report.source_untouched = True
            if self.report.store_format == "lance":
                self._drop_tag(store)
            return
        if self.report.store_format == "lance":
            self._restore_lance(store)
        else:
            self._restore_parquet(store)
        self._prove(store, "restored store")
        self.report.source_untouched = True
        if self.report.restored_from == "the snapshot":
            lost = int(self.journal.values["report"].get("quarantined") or 0)
            if lost:
                self.report.notes.append(
                    f"{lost} quarantined row(s) are not in the snapshot and were not restored; "
                    f"they are in {self.run_dir / QUARANTINE}")
        if self.report.store_format == "lance":
            self._drop_tag(store)

    def _restore_parquet(self, store: Path) -> None:
        """Put the backup directory back (or a rebuild from the snapshot): the dual store is
        moved aside first, so the store path holds either store whole, or briefly none."""
        backup = Path(self.journal.values["legacy_backup"] or legacy_backup(store))
        rebuilt = beside(store, "restore")
        if _store_is_dual(store):
            self._remove(store)
        if store.exists():
            self.report.notes.append(f"{store} already holds the legacy store")
        elif backup.exists():
            os.replace(backup, store)
            fsync_path(store.parent)
            self.report.restored_from = f"the backup {backup}"
        else:
            if not rebuilt.exists():
                self._rebuild(rebuilt, "parquet")
            os.replace(rebuilt, store)
            fsync_path(store.parent)
            self.report.restored_from = "the snapshot"
        for leftover in (rebuilt, beside(store, "trash")):  # of a crashed rollback
            remove(leftover)
        self._step(f"legacy store in place at {store}")

    def _restore_lance(self, store: Path) -> None:
        """Restore the pre-migration version as the latest (a new version, instant), or write
        the snapshot's rows as one if that version is gone."""
        if store.exists() and not _store_is_dual(store):
            self.report.notes.append(f"{store} already holds the legacy store")
            return
        version = self.journal.values["pre_migration_version"]
        ds = lance.dataset(str(store)) if store.exists() else None
        if ds is not None and version in {int(v["version"]) for v in ds.versions()}:
            ds.checkout_version(version).restore()  # type: ignore[no-untyped-call]
            fsync_tree(store)
            self.report.restored_from = f"version {version}"
        else:
            self._rebuild(store, "lance")
            self.report.restored_from = "the snapshot"
        self._step(f"legacy store restored at {store} from {self.report.restored_from}")

    def _rebuild(self, path: Path, fmt: TargetFormat) -> None:
        write_legacy(self.run_dir / SNAPSHOT, path, fmt, batch_size=self.batch_size,
                     progress=self.progress)
        self._step(f"rebuilt the legacy store from the snapshot at {path}")

    def _drop_tag(self, store: Path) -> None:
        """The pre-migration tag is not needed once the store is back (its data is the latest
        version again); dropping it lets Lance's cleanup reclaim the dual versions. The data
        files the run wrote but never published (no version has them) are removed."""
        before = self.journal.values["store_files"]
        if before is not None and (store / "_versions").is_dir():
            published = self.journal.batches() if self.journal.values["published_version"] else None
            if strays := remove_strays(store, before, published):
                self._step(f"removed {strays} data file(s) the run wrote but never published")
        tag = self.journal.values["pre_migration_tag"]
        if tag and (store / "_versions").is_dir():
            ds = lance.dataset(str(store))
            if tag in ds.tags.list():
                ds.tags.delete(tag)
                self.report.removed.append(f"tag {tag} of {store}")
                self._step(f"removed tag {tag}")
