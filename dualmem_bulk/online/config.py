"""What an online migration is asked to do (its configuration) and what it reports, apart from
the drivers that run it (:mod:`dualmem_bulk.online.run`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from dualmem_bulk.rundir.files import default_run_dir
from dualmem_bulk.schema import DUAL_SCHEMA, LEGACY_SCHEMA, fingerprint
from dualmem_bulk.sources.engram_wal import is_engram_root

__all__ = ["OnlineConfig", "OnlineReport"]


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


@dataclass
class OnlineReport:
    """What an online run did; ``as_dict()`` is the ``migrate --online --json`` output."""

    status: str
    """``done`` (cut over), ``running`` while under way."""
    store: str
    target: str
    run_dir: str
    phase: str = "copying"
    nodes_copied: int = 0
    """Nodes copied by the run, every invocation included."""
    nodes_copied_this_invocation: int = 0
    copy_s: float = 0.0
    """Wall time of the copy over every invocation, the ``--max-rate`` throttle's sleeps
    included (``copy_nodes_per_s`` = ``nodes_copied / copy_s``)."""
    copy_nodes_per_s: float = 0.0
    workers: int | None = None
    """Worker processes that copied this invocation's rowid ranges (0: the driver alone;
    ``None``: no range copied, or an Engram data root)."""
    changes_applied: int = 0
    """Ids upserted or deleted from the change log (after collapsing), pause included."""
    catch_up_rounds: int = 0
    lag_at_pause: int | None = None
    """Change-log entries not yet applied when the cut-over pause began."""
    changes_in_pause: int | None = None
    pause_ms: float | None = None
    """How long the service's writers were held at the cut-over."""
    verified: bool = False
    """Source and target digests (recomputed from the fields) were equal at the cut-over."""
    rows: int | None = None
    digest: str | None = None
    resumed: int = 0
    """How many times this run was resumed."""
    elapsed_s: float = 0.0
    """Wall time of this invocation."""
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)

