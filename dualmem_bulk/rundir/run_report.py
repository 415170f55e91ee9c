"""What a migration run reports: the offline run's :class:`RunReport` (also the dry run's and
the export's) and the online run's :class:`OnlineReport`. Each is kept in the journal (key
``report``) as the run goes and written to ``report.json`` at its end; ``as_dict()`` is the
``--json`` output."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from dualmem_bulk.progress import Progress

__all__ = ["OnlineReport", "RunReport", "finish"]


@dataclass
class RunReport:
    """What a run did: counts, digests, timings; ``as_dict()`` is the ``--json`` output."""

    status: str
    source: str
    source_kind: str
    target: str
    target_format: str
    run_dir: str
    engine: str = "local"
    """Where the tasks ran: ``local`` or ``dask``."""
    workers: int = 0
    """Worker processes (local) or Dask worker threads that ran the tasks; 0: the driver."""
    units: int = 0
    """Committed units: the source's partitions (each one snapshot part and one fragment)."""
    nodes_in: int = 0
    """Source rows read (valid or not), over the whole run."""
    nodes_total: int = 0
    """The run's source rows: ``nodes_in`` once the export is complete."""
    nodes_this_invocation: int = 0
    """Nodes this invocation exported (a copy run: exported, converted and written in one
    pass) or converted (an in-place run); less than ``nodes_total`` when it resumed a run."""
    snapshot_rows: int = 0
    nodes_converted: int = 0
    quarantined: int = 0
    quarantine_codes: dict[str, int] = field(default_factory=dict)
    """Quarantined rows per reason code (a row with two codes counts under each)."""
    quarantine_path: str | None = None
    """Where the quarantined rows are (a Parquet file or directory); ``None`` if none."""
    quarantine_sample: list[dict[str, Any]] = field(default_factory=list)
    source_details: dict[str, Any] = field(default_factory=dict)
    snapshot_digest: str = ""
    target_digest: str = ""
    verified: bool = False
    elapsed_s: float = 0.0
    """Wall time of this invocation, waits and throttling included."""
    nodes_per_s: float = 0.0
    """``nodes_this_invocation / elapsed_s``."""
    phases_s: dict[str, float] = field(default_factory=dict)
    """Wall time of each phase run by this invocation."""
    phases: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per phase run by this invocation: ``nodes`` it processed, its wall ``seconds`` and
    ``nodes_per_s`` (their ratio; ``None`` when it processed no node)."""
    estimated_disk_bytes: int | None = None
    estimated_s: float | None = None
    estimate: dict[str, Any] | None = None
    """Dry run: the measured sample and the free space it was compared with."""
    decision: str | None = None
    """Dry run: ``go`` or ``no-go``."""
    decision_reason: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, stored: dict[str, Any]) -> RunReport:
        """A report kept in a journal (fields an older version wrote and this one dropped are
        ignored)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in stored.items() if k in names})

    def phase(self, name: str, nodes: int, seconds: float) -> None:
        """Record a phase: the nodes it processed over its own wall time."""
        self.phases_s[name] = round(seconds, 3)
        self.phases[name] = {"nodes": nodes, "seconds": round(seconds, 3),
                             "nodes_per_s": round(nodes / seconds, 1) if nodes and seconds
                             else None}


def finish(report: RunReport, started: float, progress: Progress,
           this_invocation: int | None = None) -> RunReport:
    """Stamp elapsed time, the nodes of the run and of this invocation (default: every node
    read) and their rate, and close the progress."""
    report.elapsed_s = round(time.perf_counter() - started, 3)
    report.nodes_total = max(report.nodes_total, report.nodes_in)
    done = report.nodes_in if this_invocation is None else this_invocation
    report.nodes_this_invocation = min(done, report.nodes_total)
    report.nodes_per_s = (round(report.nodes_this_invocation / report.elapsed_s, 1)
                          if report.elapsed_s else 0.0)
    progress.done()
    return report


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

