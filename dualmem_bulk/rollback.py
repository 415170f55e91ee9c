"""Undo a run (``rollback``) or keep its result (``finalize``).

Rollback restores the state before the run and proves it: the restored store's digest (in-place
runs) or the untouched source's digest (copy runs) is recomputed and compared with the
snapshot's. It first checks the snapshot itself (every row's checksum recomputed from its
fields, and the journal's digest) and refuses, changing nothing, if the snapshot is unsound.

- copy: remove the staging store and the target this run created; the source was only read.
- in-place Parquet: put the legacy backup directory back (or rebuild it from the snapshot).
- in-place Lance: restore the tagged pre-migration version (or rebuild from the snapshot).

Every step looks at what is on disk before it acts, so a crashed rollback is simply run again;
the journal stays ``rolling-back`` (and records the steps done) until the proof succeeds.
Finalize is the operator's "keep the new store": recorded first, only then are the in-place
backup (or Lance tag) and, on request, the snapshot removed.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import lance
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from dualmem_bulk._fs import fsync_path, fsync_tree, remove, source_identity, write_json
from dualmem_bulk.checksum import TableDigest, row_checksums
from dualmem_bulk.errors import (
    InputError,
    RunLocked,
    SourceError,
    UsageError,
    VerificationFailed,
)
from dualmem_bulk.export import DEFAULT_BATCH_SIZE
from dualmem_bulk.journal import Journal, RunLock, lock_holder
from dualmem_bulk.online_finalize import end_dual_writing
from dualmem_bulk.progress import NULL_PROGRESS, Progress
from dualmem_bulk.schema import DUAL_NAME, SNAPSHOT_SCHEMA, schema_identity
from dualmem_bulk.status import iso
from dualmem_bulk.stores import TargetFormat, detect_store
from dualmem_bulk.stores.legacy import legacy_digest, write_legacy
from dualmem_bulk.stores.snapshot import QUARANTINE, SNAPSHOT, Snapshot
from dualmem_bulk.stores.staging import remove_strays

__all__ = ["ROLLBACK_REPORT", "FinalizeReport", "RollbackReport", "finalize_plan",
           "finalize_run", "rollback_plan", "rollback_run"]

ROLLBACK_REPORT = "rollback.json"
_LISTED = 5


@dataclass
class RollbackReport:
    """What a rollback did and what it proved; ``as_dict()`` is the ``--json`` output."""

    status: str
    """``rolled-back`` when done; ``rolling-back`` in the report of a failed proof."""
    run_dir: str
    mode: str
    """``copy``, ``in-place`` or ``online``."""
    state_before: str
    """The run's state when the rollback started."""
    source: str
    """The source (copy) or the legacy store converted in place."""
    target: str
    store_format: str | None = None
    """In-place runs: ``parquet`` or ``lance``."""
    snapshot_checked: bool = False
    """Every snapshot row's checksum and the snapshot digest were checked first."""
    snapshot_rows: int | None = None
    snapshot_digest: str | None = None
    removed: list[str] = field(default_factory=list)
    """What the run wrote and the rollback removed."""
    restored_from: str | None = None
    """In-place runs: the backup, the Lance version or the snapshot the store came back from."""
    proven_rows: int | None = None
    proven_digest: str | None = None
    """Digest recomputed from the restored store (in-place) or the source (copy) after the
    rollback; equal to ``snapshot_digest`` when the rollback succeeded."""
    source_untouched: bool | None = None
    """The legacy data is as it was before the run (proven by digest when there is a
    snapshot; by file sizes and times for a copy run that had not finished its export)."""
    notes: list[str] = field(default_factory=list)
    steps: list[str] = field(default_factory=list)
    """Steps done, as recorded in the journal (across re-runs of a crashed rollback)."""
    elapsed_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


@dataclass
class FinalizeReport:
    """What finalize recorded and removed; ``as_dict()`` is the ``--json`` output."""

    status: str
    run_dir: str
    mode: str
    target: str
    removed: list[str] = field(default_factory=list)
    snapshot_dropped: bool = False
    finalized_at: str = ""
    """When the run was finalized (ISO 8601)."""
    legacy_kept: str | None = None
    """Online runs: the legacy store, if it is kept (it takes no more writes)."""

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


def _hidden(path: Path, suffix: str) -> Path:
    return path.with_name(f".{path.name}.dualmem-{suffix}")


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


def _refuse_finalized(run_dir: Path, journal: Journal) -> None:
    if journal.state == "finalized":
        kept = ("; its snapshot still holds the legacy rows" if (run_dir / SNAPSHOT).exists()
                else "")
        raise UsageError(f"{run_dir}: the run is finalized (the new store was kept), so it can "
                         f"no longer be rolled back{kept}; to migrate again, convert into a "
                         "new target with its own run directory")


def rollback_plan(run_dir: Path) -> str:
    """What ``rollback`` would do to ``run_dir``'s stores, in one sentence (for the prompt)."""
    journal = Journal.open(run_dir)
    try:
        _refuse_finalized(run_dir, journal)
        config = journal.get("config") or {}
        if journal.state == "rolled-back":
            return f"{run_dir} is already rolled back; nothing will change"
        if journal.get("mode") == "online":
            return (f"serve the legacy store {config.get('source')} again (it has every "
                    f"write) and remove {journal.get('target')}")
        if journal.get("mode") == "in-place":
            return (f"restore the {journal.get('store_format')} store {config.get('source')} to "
                    "its state before the run, and remove what the run wrote")
        return (f"remove {journal.get('target')} and its staging store (as far as this run "
                f"created them) and check that {config.get('source')} is unchanged")
    finally:
        journal.close()


class _Rollback:
    """One invocation of a rollback, under the run's lock."""

    def __init__(self, run_dir: Path, journal: Journal, progress: Progress) -> None:
        self.run_dir, self.journal, self.progress = run_dir, journal, progress
        config = journal.get("config") or {}
        self.source = Path(config.get("source", ""))
        self.spaces = tuple(config.get("spaces") or ())
        self.batch_size = int(config.get("batch_size") or DEFAULT_BATCH_SIZE)
        self.target = Path(journal.get("target") or "")
        staging = journal.get("staging")
        self.staging = Path(staging) if staging else None
        self.snapshot: dict[str, Any] | None = journal.get("snapshot")
        self.report = RollbackReport(
            status="rolling-back", run_dir=str(run_dir), mode=journal.get("mode", "copy"),
            state_before=journal.get("rollback_from", journal.state), source=str(self.source),
            target=str(self.target), store_format=journal.get("store_format"),
            steps=list(journal.get("rollback_steps", [])))
        if self.snapshot is not None:
            self.report.snapshot_rows = self.snapshot["rows"]
            self.report.snapshot_digest = self.snapshot["digest"]

    def _step(self, text: str) -> None:
        """Record a finished step durably (the journal), then in the report."""
        self.report.steps.append(text)
        self.journal.set(rollback_steps=self.report.steps)

    def _fail(self, message: str) -> VerificationFailed:
        """Record a failed proof (journal event, ``rollback.json``); the run stays
        ``rolling-back``, so the rollback can be run again once the cause is dealt with."""
        self.report.notes.append(message)
        self.journal.set_state("rolling-back", message)
        write_json(self.run_dir / ROLLBACK_REPORT, self.report.as_dict())
        return VerificationFailed(message)

    def _remove(self, path: Path) -> None:
        """Remove a store: renamed aside first (the path never shows half a store), then
        deleted."""
        trash = _hidden(path, "trash")
        remove(trash)
        if path.exists():
            os.replace(path, trash)
            fsync_path(path.parent)
            remove(trash)
            self.report.removed.append(str(path))
            self._step(f"removed {path}")

    def go(self, started: float) -> RollbackReport:
        journal = self.journal
        _refuse_finalized(self.run_dir, journal)
        if journal.state == "rolled-back":
            stored: dict[str, Any] = journal.get("rollback")
            write_json(self.run_dir / ROLLBACK_REPORT, stored)
            self.progress.message(f"{self.run_dir}: already rolled back, nothing to do")
            return RollbackReport(**stored)
        if self.snapshot is not None:
            self._check_snapshot()
        if journal.state != "rolling-back":
            ours = self._target_is_ours()
            journal.set_state("rolling-back", f"rollback from {journal.state}",
                              rollback_from=journal.state, rollback_target_ours=ours,
                              rollback_steps=[])
        if self.staging is not None and self.staging.exists():
            self._remove(self.staging)
        for leftover in self.run_dir.glob("**/.*.tmp-*"):
            remove(leftover)
        if self.snapshot is None:  # the parts of an unfinished export are no snapshot
            for name in (SNAPSHOT, QUARANTINE):
                if (self.run_dir / name).exists():
                    self._remove(self.run_dir / name)
        if self.report.mode == "in-place":
            self._in_place()
        elif self.report.mode == "online":
            self._online()
        else:
            self._copy()
        self.report.status = "rolled-back"
        self.report.elapsed_s = round(time.perf_counter() - started, 3)
        journal.set_state("rolled-back", self._summary(), rollback=self.report.as_dict(),
                          target_created=False, swapped=False)
        write_json(self.run_dir / ROLLBACK_REPORT, self.report.as_dict())
        return self.report

    def _summary(self) -> str:
        if not self.report.proven_digest:
            return "removed what the run wrote"
        what = "restored store" if self.report.mode == "in-place" else "untouched source"
        return f"{what}: {self.report.proven_rows} rows, digest equal to the snapshot's"

    def _target_is_ours(self) -> bool:
        """Whether the copy target is this run's: recorded, or renamed into place just before
        a crash that kept the journal from saying so (complete units, no staging left)."""
        if self.journal.get("target_created"):
            return True
        records = self.journal.batches()
        return bool(self.snapshot is not None and records and self.target.exists()
                    and not (self.staging and self.staging.exists())
                    and records[-1].end_group == self.snapshot["groups"])

    def _check_snapshot(self) -> None:
        """Every row's checksum recomputed from its fields, and the digest against the journal's;
        any difference refuses the rollback before anything is changed."""
        assert self.snapshot is not None
        path = self.run_dir / SNAPSHOT
        expected = TableDigest.from_hex(self.snapshot["rows"], self.snapshot["digest"])
        advice = (f"nothing was changed. Put back a sound copy of {path} (or fix what damaged "
                  "it) and run rollback again")
        if not path.exists():
            raise VerificationFailed(f"{path}: the snapshot is missing, so the state before the "
                                     f"run cannot be proven; {advice}")
        stored, bad = TableDigest(), 0
        first: list[str] = []
        try:
            snap = Snapshot(path)
            self.progress.phase("check snapshot", snap.num_rows)
            for batch in snap.batches(self.batch_size, SNAPSHOT_SCHEMA.names):
                sums = batch.column("checksum")
                same = pc.equal(row_checksums(batch), sums).fill_null(False)
                if not pc.all(same).as_py():
                    wrong = batch.column("id").filter(pc.invert(same)).to_pylist()
                    bad += len(wrong)
                    first += wrong[: _LISTED - len(first)]
                stored += TableDigest.of(sums)
                self.progress.advance(batch.num_rows)
        except (OSError, pa.ArrowException, KeyError, ValueError, TypeError) as exc:
            raise VerificationFailed(f"{path}: the snapshot is unreadable ({exc}); "
                                     f"{advice}") from exc
        if bad:
            raise VerificationFailed(f"{path}: {bad} row(s) differ from their stored checksum "
                                     f"(first: {', '.join(map(repr, first))}); {advice}")
        if stored != expected:
            raise VerificationFailed(
                f"{path}: the snapshot holds {stored.rows} rows with digest {stored.hex}, the "
                f"journal recorded {expected.rows} rows with digest {expected.hex}; {advice}")
        self.report.snapshot_checked = True

    def _copy(self) -> None:
        if self.journal.get("rollback_target_ours"):
            self._remove(self.target)
        elif self.target.exists():
            self.report.notes.append(f"{self.target} was not created by this run; left alone")
        if not self.source.exists():
            self.report.source_untouched = False
            raise self._fail(f"{self.source}: the source is gone; the run only read it, so "
                             "something else removed it. Its rows as exported are in "
                             f"{self.run_dir / SNAPSHOT}")
        same_files = source_identity(self.source) == self.journal.get("source_identity")
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

    def _online(self) -> None:
        """Online run: the legacy store has every write. After a cut-over, prove that it holds
        what the dual store holds (digests at one change-log position, see
        :func:`~dualmem_bulk.online_cutover.prove_legacy`) and serve it again, both under the dual
        store's writer lock; then remove the dual store."""
        from dualmem_bulk.online_cutover import prove_legacy

        if self.journal.get("serving") == "dual":
            proof = prove_legacy(self.run_dir, self.source, self.target)
            if not proof.same:
                raise self._fail(proof.describe(self.source, self.target) + "; the service "
                                 "stays on the dual store and nothing was removed")
            self.report.proven_rows, self.report.proven_digest = (proof.source.rows,
                                                                  proof.source.hex)
            self._step("the legacy store holds what the dual store held; serving it again")
        if self.journal.get("rollback_target_ours"):
            self._remove(self.target)

    def _prove(self, path: Path, what: str) -> None:
        """Recompute the digest of the legacy store or source at ``path``; it must equal the
        snapshot's, or the rollback fails loudly (and stays re-runnable)."""
        assert self.snapshot is not None
        expected = TableDigest.from_hex(self.snapshot["rows"], self.snapshot["digest"])
        try:
            scan = legacy_digest(path, batch_size=self.batch_size, spaces=self.spaces,
                                 progress=self.progress)
        except InputError as exc:
            raise self._fail(f"{path}: the {what} cannot be read back ({exc}); the snapshot "
                             f"{self.run_dir / SNAPSHOT} holds its rows") from exc
        self.report.proven_rows, self.report.proven_digest = scan.digest.rows, scan.digest.hex
        if scan.digest != expected:
            self.report.source_untouched = False
            raise self._fail(
                f"{path}: the {what} holds {scan.digest.rows} valid rows with digest "
                f"{scan.digest.hex}, the snapshot {expected.rows} rows with digest "
                f"{expected.hex}: it is not the state before the run. The snapshot "
                f"{self.run_dir / SNAPSHOT} holds the rows as exported; the run stays "
                "rolling-back")
        self._step(f"{what} digest equals the snapshot's")

    def _in_place(self) -> None:
        store = self.source
        if self.snapshot is None:  # the store is replaced only after the export
            if self.journal.get("swapped"):
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
            lost = int((self.journal.get("report") or {}).get("quarantined") or 0)
            if lost:
                self.report.notes.append(
                    f"{lost} quarantined row(s) are not in the snapshot and were not restored; "
                    f"they are in {self.run_dir / QUARANTINE}")
        if self.report.store_format == "lance":
            self._drop_tag(store)

    def _restore_parquet(self, store: Path) -> None:
        """Put the backup directory back (or a rebuild from the snapshot): the dual store is
        moved aside first, so the store path holds either store whole, or briefly none."""
        backup = Path(self.journal.get("legacy_backup") or _hidden(store, "legacy"))
        rebuilt = _hidden(store, "restore")
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
        for leftover in (rebuilt, _hidden(store, "trash")):  # of a crashed rollback
            remove(leftover)
        self._step(f"legacy store in place at {store}")

    def _restore_lance(self, store: Path) -> None:
        """Restore the pre-migration version as the latest (a new version, instant), or write
        the snapshot's rows as one if that version is gone."""
        if store.exists() and not _store_is_dual(store):
            self.report.notes.append(f"{store} already holds the legacy store")
            return
        version = self.journal.get("pre_migration_version")
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
        before = self.journal.get("store_files")
        if before is not None and (store / "_versions").is_dir():
            published = self.journal.batches() if self.journal.get("published_version") else None
            if strays := remove_strays(store, before, published):
                self._step(f"removed {strays} data file(s) the run wrote but never published")
        tag = self.journal.get("pre_migration_tag")
        if tag and (store / "_versions").is_dir():
            ds = lance.dataset(str(store))
            if tag in ds.tags.list():
                ds.tags.delete(tag)
                self.report.removed.append(f"tag {tag} of {store}")
                self._step(f"removed tag {tag}")


def rollback_run(run_dir: Path, progress: Progress = NULL_PROGRESS) -> RollbackReport:
    """Restore the state before the run in ``run_dir`` and prove it (see the module docstring).

    Raises :class:`~dualmem_bulk.errors.UsageError` for a finalized run,
    :class:`~dualmem_bulk.errors.VerificationFailed` if the snapshot is unsound (nothing
    changed) or the restored state differs from it, and
    :class:`~dualmem_bulk.errors.RunLocked` while a migrator works on the run.
    """
    started = time.perf_counter()
    if not Journal.exists(run_dir):
        raise SourceError(run_dir, "not a run directory (no journal.sqlite)")
    with RunLock(run_dir) as lock:
        if lock.took_over:
            progress.message(lock.took_over)
        journal = Journal.open(run_dir)
        try:
            return _Rollback(run_dir, journal, progress).go(started)
        finally:
            journal.close()
            progress.done()


_NOT_DONE = {
    "rolling-back": "a rollback was started and did not finish; run `dualmem-bulk rollback "
                    "{run_dir}` again to finish it",
    "rolled-back": "the run was rolled back; there is no new store to keep",
}


def _refuse_unfinished(run_dir: Path, state: str) -> None:
    if state not in ("done", "finalized"):
        why = _NOT_DONE.get(state, "the run is {state}, not done; finish it first (run the "
                                   "same convert command again to resume), or undo it with "
                                   "`dualmem-bulk rollback {run_dir}`")
        raise UsageError(f"{run_dir}: " + why.format(state=state, run_dir=run_dir))


def finalize_run(run_dir: Path, drop_snapshot: bool = False,
                 remove_legacy: bool = False) -> FinalizeReport:
    """Keep the new store of a ``done`` run: record it (rollback is then refused), remove the
    in-place legacy backup (or the Lance pre-migration tag), and with ``drop_snapshot`` the
    snapshot too, only after the decision is durable. An online run's service then writes to
    the new store alone and the change log is trimmed (:mod:`dualmem_bulk.online_finalize`);
    ``remove_legacy`` removes its legacy store. Repeatable: a finalized run accepts
    ``drop_snapshot`` and ``remove_legacy`` later."""
    if not Journal.exists(run_dir):
        raise SourceError(run_dir, "not a run directory (no journal.sqlite)")
    with RunLock(run_dir):
        journal = Journal.open(run_dir)
        try:
            state = journal.state
            _refuse_unfinished(run_dir, state)
            if state == "done":
                journal.set_state("finalized", "the new store is kept", finalized_at=time.time())
            report = FinalizeReport(status="finalized", run_dir=str(run_dir),
                                    mode=journal.get("mode", "copy"),
                                    target=str(journal.get("target")),
                                    finalized_at=iso(journal.get("finalized_at")),
                                    removed=list((journal.get("finalize") or {}).get("removed",
                                                                                     [])))
            _finalize_in_place(journal, report)
            report.legacy_kept, removed = end_dual_writing(run_dir, journal,
                                                           remove_legacy=remove_legacy)
            report.removed += removed
            snapshot = run_dir / SNAPSHOT
            if drop_snapshot and snapshot.exists():
                remove(snapshot)
                fsync_path(run_dir)
                report.removed.append(str(snapshot))
            report.snapshot_dropped = not snapshot.exists()
            journal.set(finalize=report.as_dict())
            return report
        finally:
            journal.close()


def _finalize_in_place(journal: Journal, report: FinalizeReport) -> None:
    """Remove what only a rollback of an in-place run needed: the backup directory, the tag."""
    if journal.get("mode") != "in-place":
        return
    store = Path((journal.get("config") or {}).get("source", ""))
    backup = journal.get("legacy_backup")
    if backup and Path(backup).exists():
        remove(Path(backup))
        fsync_path(Path(backup).parent)
        report.removed.append(backup)
    tag = journal.get("pre_migration_tag")
    if tag and (store / "_versions").is_dir():
        ds = lance.dataset(str(store))
        if tag in ds.tags.list():
            ds.tags.delete(tag)
            report.removed.append(f"tag {tag} of {store}")


def finalize_plan(run_dir: Path, drop_snapshot: bool = False,
                  remove_legacy: bool = False) -> str | None:
    """What ``finalize`` would do that cannot be undone, in one sentence (for the prompt);
    ``None`` if nothing (a finalized run whose snapshot is kept or already gone). Refuses as
    :func:`finalize_run` does."""
    if not Journal.exists(run_dir):
        raise SourceError(run_dir, "not a run directory (no journal.sqlite)")
    holder = lock_holder(run_dir)
    if holder is not None:
        raise RunLocked(run_dir, holder)
    journal = Journal.open(run_dir)
    try:
        state = journal.state
        _refuse_unfinished(run_dir, state)
        dropped = drop_snapshot and (run_dir / SNAPSHOT).exists()
        legacy = ([f"the legacy store {(journal.get('config') or {}).get('source')}"]
                  if remove_legacy and journal.get("mode") == "online" else [])
        if state == "finalized":
            removes = [f"the snapshot {run_dir / SNAPSHOT}"] if dropped else []
            removes += legacy
            return f"remove {' and '.join(removes)}" if removes else None
        removes = ["the in-place legacy backup"] if journal.get("mode") == "in-place" else []
        removes += [f"the snapshot {run_dir / SNAPSHOT}"] if dropped else []
        removes += legacy
        return (f"keep {journal.get('target')} for good (rollback will be refused)"
                + (f" and remove {' and '.join(removes)}" if removes else ""))
    finally:
        journal.close()
