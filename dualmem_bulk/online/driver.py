"""What every online run does, whatever its source (a MemoryStore:
:mod:`dualmem_bulk.online.store`; an Engram data root: :mod:`dualmem_bulk.online.wal`): open or
resume the journal, honour a stop request and the pause file between batches, run the copy,
the catch-up and the cut-over, and record a failure."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Unpack

from dualmem_bulk._fs import remove, write_json
from dualmem_bulk._signals import StopRequest
from dualmem_bulk._version import __version__
from dualmem_bulk.driver import Driver
from dualmem_bulk.errors import Interrupted, RunChanged, TargetExists, UsageError
from dualmem_bulk.online.config import OnlineConfig
from dualmem_bulk.progress import Progress
from dualmem_bulk.rundir.files import LOCK, PAUSE, REPORT
from dualmem_bulk.rundir.journal import Journal
from dualmem_bulk.rundir.keys import JournalValues, RangeRecord
from dualmem_bulk.rundir.run_report import OnlineReport
from dualmem_bulk.stores.dual import DualStore, writer_lock

__all__ = ["OnlineDriver"]


class OnlineDriver(Driver, ABC):
    """One invocation of an online run, under the run lock."""

    def __init__(self, config: OnlineConfig, run_dir: Path, progress: Progress,
                 stop: StopRequest) -> None:
        super().__init__(run_dir, progress, stop)
        self.config = config
        self.dual = DualStore(config.target)
        self.journal = self._open_journal()
        self.report = OnlineReport(**self.journal.values["report"])
        self.report.nodes_copied_this_invocation = 0

    def _open_journal(self) -> Journal:
        config, run_dir = self.config, self.run_dir
        if Journal.exists(run_dir):
            journal = Journal.open(run_dir)
            if journal.mode != "online":
                raise UsageError(f"{run_dir}: holds an offline run; choose another run_dir",
                                 "run_dir")
            if journal.state in ("rolling-back", "rolled-back", "finalized"):
                raise UsageError(f"{run_dir}: this run is {journal.state}; choose another "
                                 "run_dir (or remove it) to migrate again", "run_dir")
            if journal.config != config.identity():
                raise RunChanged(run_dir, "the store or target changed")
            stored = journal.values["report"]
            stored["resumed"] += journal.state != "done"
            journal.set(report=stored)
            self.progress.message(f"resuming the online run in {run_dir} "
                                  f"({journal.values['phase']})")
            return journal
        self._refuse_foreign((LOCK, PAUSE))
        if config.target.exists():
            raise TargetExists(config.target)
        pin = self._pin()
        report = OnlineReport(status="running", store=str(config.store),
                              target=str(config.target), run_dir=str(run_dir))
        journal = Journal.open(run_dir, create=True)
        journal.set_state("converting", f"online run created at change {pin}", mode="online",
                          phase="copying", config=config.identity(),
                          target=str(config.target.resolve()), serving="legacy",
                          online_pin=pin, online_applied=pin,
                          online_copied={"rows": 0}, online_version=None,
                          tool=__version__, created_at=time.time(), report=report.as_dict())
        return journal

    @abstractmethod
    def _pin(self) -> Any:
        """The source position the copy starts from."""

    def close(self) -> None:
        """Close the journal."""
        self.journal.close()

    def _save(self, *, copied_range: RangeRecord | None = None,
              **values: Unpack[JournalValues]) -> None:
        """Record progress (durably, before it is reported), and when (``status``)."""
        progress: JournalValues = {"report": self.report.as_dict(), "checkpoint_at": time.time(),
                                   **values}
        self.journal.set(copied_range=copied_range, **progress)

    def _between_batches(self, where: str) -> None:
        """Honour a stop request and the pause file."""
        announced = False
        while True:
            self._check_stop(where)
            if not (self.run_dir / PAUSE).exists():
                return
            if not announced:  # in the journal's events too, so `status` shows it
                note = f"paused: {self.run_dir / PAUSE} exists; remove it to go on"
                self.journal.set_state(self.journal.state, note)
                self.progress.message(note)
                announced = True
            time.sleep(self.config.poll_s)

    def go(self, started: float) -> OnlineReport:
        """Run the phases not done yet (copy, catch-up, cut-over); the run's report."""
        if self.journal.state == "done":
            self.progress.message(f"{self.run_dir}: already cut over, nothing to resume")
            write_json(self.run_dir / REPORT, self.report.as_dict())
            return self.report
        try:
            if self.journal.values["phase"] == "copying":
                self._copy()
            self._catch_up()
            self._cutover()
        except (Interrupted, KeyboardInterrupt):
            raise
        except Exception as exc:
            self._failed(exc, report=self.report.as_dict())
            raise
        self.report.elapsed_s = round(time.perf_counter() - started, 3)
        self._save()
        write_json(self.run_dir / REPORT, self.report.as_dict())
        return self.report

    def _restore(self) -> None:
        """Undo a Lance commit the journal did not record (the migrator died in between)."""
        version = self.journal.values["online_version"]
        with writer_lock(self.run_dir):
            if version is None:
                remove(self.config.target)  # created by this run: it was absent at the start
            else:
                self.dual.restore(version)

    def _caught_up(self, pending: int, *, idle: bool) -> bool:
        """After a catch-up round leaving ``pending`` entries: whether to cut over now. With
        ``--postpone-cutover`` it waits for the request, polling while there is nothing to do."""
        if pending > self.config.cutover_lag:
            return False
        if not self.config.postpone_cutover or self.journal.values["cutover_requested"]:
            return True
        if self.journal.values["phase"] != "awaiting-cutover":
            self.report.phase = "awaiting-cutover"
            self._save(phase="awaiting-cutover")
            self.progress.message(f"caught up; waiting for `dualmem-bulk cutover {self.run_dir}`")
        if idle:
            time.sleep(self.config.poll_s)
        return False

    @abstractmethod
    def _copy(self) -> None:
        """Copy the source at the pinned position into the new dataset."""

    @abstractmethod
    def _catch_up(self) -> None:
        """Apply the source's changes until the lag is small (or a cut-over is requested)."""

    @abstractmethod
    def _cutover(self) -> None:
        """Prove the target equal to the source and record the cut-over."""
