"""The report every long operation returns: counts, digests, timings (``as_dict()`` is the
``--json`` output)."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

from dualmem_bulk.progress import Progress

__all__ = ["RunReport", "finish"]


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
    snapshot_rows: int = 0
    nodes_converted: int = 0
    quarantined: int = 0
    quarantine_reasons: dict[str, int] = field(default_factory=dict)
    quarantine_sample: list[dict[str, Any]] = field(default_factory=list)
    source_details: dict[str, Any] = field(default_factory=dict)
    snapshot_digest: str = ""
    target_digest: str = ""
    verified: bool = False
    elapsed_s: float = 0.0
    nodes_per_s: float = 0.0
    phases_s: dict[str, float] = field(default_factory=dict)
    estimated_disk_bytes: int | None = None
    estimated_s: float | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


def finish(report: RunReport, started: float, progress: Progress) -> RunReport:
    """Stamp elapsed time and throughput (nodes read per second), and close the progress."""
    report.elapsed_s = round(time.perf_counter() - started, 3)
    report.nodes_per_s = round(report.nodes_in / report.elapsed_s, 1) if report.elapsed_s else 0.0
    progress.done()
    return report
