"""What an online migration is asked to do (its configuration), apart from the drivers that run
it (:mod:`dualmem_bulk.online.run`) and what it reports
(:class:`~dualmem_bulk.rundir.run_report.OnlineReport`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dualmem_bulk.rundir.files import default_run_dir
from dualmem_bulk.schema import DUAL_SCHEMA, LEGACY_SCHEMA, fingerprint
from dualmem_bulk.sources.engram_wal import is_engram_root

__all__ = ["OnlineConfig"]


@dataclass(frozen=True, kw_only=True)
class OnlineConfig:
    """What an online migration reads, writes and how fast."""

    store: Path
    """The live legacy MemoryStore (SQLite file) the service keeps using, or an Engram data
    root whose WAL Engram keeps appending to."""
    target: Path
    """The DualMemoryNode Lance dataset to create; must not exist yet (unless this run's)."""
    run_dir: Path | None = None
    """Journal, locks and report; default ``TARGET.run``."""
    batch_size: int = 2_000
    """Rowids of the first copy range (rows of the first batch from an Engram data root);
    later ranges adapt to ``target_batch_s``."""
    target_batch_s: float = 0.5
    """Size the copy ranges so that one is committed about this often (a task then takes
    this times the workers; the pause file is checked between ranges)."""
    workers: int | None = None
    """Worker processes copying ranges beside the driver (0: the driver alone; ``None``: one
    per core less one, none under 50,000 nodes)."""
    max_rate: float | None = None
    """Copy at most this many nodes per second (``None``: as fast as it goes)."""
    cutover_lag: int = 200
    """Cut over once the target is at most this many change-log entries behind."""
    postpone_cutover: bool = False
    """Keep catching up until ``dualmem-bulk cutover RUN_DIR`` asks for the cut-over."""
    poll_s: float = 0.2
    """Sleep between catch-up rounds when there is nothing to do, and while paused."""

    @property
    def resolved_run_dir(self) -> Path:
        """The run directory actually used."""
        return self.run_dir or default_run_dir(self.target)

    @property
    def wal_source(self) -> bool:
        """Whether ``store`` is an Engram data root (its WAL is the change feed)."""
        return is_engram_root(self.store)

    def identity(self) -> dict[str, Any]:
        """What must not change between a run and its resumption."""
        return {"mode": "online", "source": str(self.store.resolve()),
                "target": str(self.target.resolve()),
                "schemas": [fingerprint(LEGACY_SCHEMA), fingerprint(DUAL_SCHEMA)],
                **({"kind": "engram-wal"} if self.wal_source else {})}
