"""Undo a run (``rollback``): restore the state before the run and prove it.

The proof: the restored store's digest (in-place runs) or the untouched source's digest (copy
runs) is recomputed and compared with the snapshot's. A rollback first checks the snapshot
itself (every row's checksum recomputed from its fields, and the journal's digest) and
refuses, changing nothing, if the snapshot is unsound.

- copy: remove the staging store and the target this run created; the source was only read.
- in-place Parquet: put the legacy backup directory back (or rebuild it from the snapshot).
- in-place Lance: restore the tagged pre-migration version (or rebuild from the snapshot).
- online: serve the legacy store again (it has every write) and remove the dual store.

This module holds what every mode does (:class:`Rollback`); each mode's own steps are a
subclass (:mod:`~dualmem_bulk.run.rollback_offline`, :mod:`~dualmem_bulk.run.rollback_online`),
picked by :mod:`dualmem_bulk.run.modes`. Every step looks at what is on disk before it acts, so
a crashed rollback is simply run again; the journal stays ``rolling-back`` (and records the
steps done) until the proof succeeds.
"""

from __future__ import annotations

import os
import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from dualmem_bulk._fs import fsync_path, remove, write_json
from dualmem_bulk.checksum import TableDigest, row_checksums
from dualmem_bulk.errors import InputError, UsageError, VerificationFailed
from dualmem_bulk.progress import Progress
from dualmem_bulk.rundir.files import QUARANTINE, ROLLBACK_REPORT, SNAPSHOT, TMP_GLOB, beside
from dualmem_bulk.rundir.journal import Journal
from dualmem_bulk.rundir.reports import RollbackReport
from dualmem_bulk.schema import SNAPSHOT_SCHEMA
from dualmem_bulk.sources.scan import legacy_digest
from dualmem_bulk.stores import DEFAULT_BATCH_SIZE
from dualmem_bulk.stores.snapshot import Snapshot

__all__ = ["Rollback", "refuse_finalized"]

_LISTED = 5


def refuse_finalized(run_dir: Path, journal: Journal) -> None:
    """A finalized run is not rolled back (:class:`~dualmem_bulk.errors.UsageError`)."""
    if journal.state == "finalized":
        kept = ("; its snapshot still holds the legacy rows" if (run_dir / SNAPSHOT).exists()
                else "")
        raise UsageError(f"{run_dir}: the run is finalized (the new store was kept), so it can "
                         f"no longer be rolled back{kept}; to migrate again, convert into a "
                         "new target with its own run directory")


class Rollback(ABC):
    """One invocation of a rollback, under the run's lock; a subclass undoes its mode's run
    (:meth:`undo`) and says what it would do (:meth:`plan`)."""

    proven = "untouched source"
    """What the digest proven after the rollback is of, for the journal's event."""

    def __init__(self, run_dir: Path, journal: Journal, progress: Progress) -> None:
        self.run_dir, self.journal, self.progress = run_dir, journal, progress
        config = journal.config
        self.source = Path(config.get("source", ""))
        self.spaces = tuple(config.get("spaces") or ())
        self.batch_size = int(config.get("batch_size") or DEFAULT_BATCH_SIZE)
        self.target = Path(journal.values["target"] or "")
        staging = journal.values["staging"]
        self.staging = Path(staging) if staging else None
        self.snapshot: dict[str, Any] | None = journal.values["snapshot"]
        self.report = RollbackReport(
            status="rolling-back", run_dir=str(run_dir), mode=journal.mode,
            state_before=journal.values["rollback_from"] or journal.state, source=str(self.source),
            target=str(self.target), store_format=journal.values["store_format"],
            steps=list(journal.values["rollback_steps"]))
        if self.snapshot is not None:
            self.report.snapshot_rows = self.snapshot["rows"]
            self.report.snapshot_digest = self.snapshot["digest"]

    @staticmethod
    @abstractmethod
    def plan(journal: Journal) -> str:
        """What the rollback would do to the run's stores, in one sentence (for the prompt)."""

    @abstractmethod
    def undo(self) -> None:
        """The mode's own steps, after the common ones; each recorded with :meth:`_step`."""

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
        trash = beside(path, "trash")
        remove(trash)
        if path.exists():
            os.replace(path, trash)
            fsync_path(path.parent)
            remove(trash)
            self.report.removed.append(str(path))
            self._step(f"removed {path}")

    def go(self, started: float) -> RollbackReport:
        """Roll back (or say it is done already) and record the report."""
        journal = self.journal
        refuse_finalized(self.run_dir, journal)
        if journal.state == "rolled-back":
            stored: dict[str, Any] = journal.values["rollback"]
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
        for leftover in self.run_dir.glob(f"**/{TMP_GLOB}"):
            remove(leftover)
        if self.snapshot is None:  # the parts of an unfinished export are no snapshot
            for name in (SNAPSHOT, QUARANTINE):
                if (self.run_dir / name).exists():
                    self._remove(self.run_dir / name)
        self.undo()
        self.report.status = "rolled-back"
        self.report.elapsed_s = round(time.perf_counter() - started, 3)
        journal.set_state("rolled-back", self._summary(), rollback=self.report.as_dict(),
                          target_created=False, swapped=False)
        write_json(self.run_dir / ROLLBACK_REPORT, self.report.as_dict())
        return self.report

    def _summary(self) -> str:
        if not self.report.proven_digest:
            return "removed what the run wrote"
        return f"{self.proven}: {self.report.proven_rows} rows, digest equal to the snapshot's"

    def _target_is_ours(self) -> bool:
        """Whether the copy target is this run's: recorded, or renamed into place just before
        a crash that kept the journal from saying so (complete units, no staging left)."""
        if self.journal.values["target_created"]:
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
