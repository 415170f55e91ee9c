"""A legacy source read through validation: valid rows with their BLAKE3 checksums and the
table digest, rejected rows tallied by reason code. The export writes what this yields into the
snapshot and the quarantine (:mod:`dualmem_bulk.offline.export`); :func:`scan_source` writes
nothing (``inspect``), nor does :func:`legacy_digest` (the digest of a legacy store that a
rollback proves)."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from dualmem_bulk._threads import prefetched
from dualmem_bulk.checksum import TableDigest, row_checksums
from dualmem_bulk.errors import SourceDamaged, UsageError
from dualmem_bulk.progress import NULL_PROGRESS, Progress
from dualmem_bulk.quarantine import reason_codes
from dualmem_bulk.rundir.run_report import RunReport, finish
from dualmem_bulk.schema import SNAPSHOT_SCHEMA
from dualmem_bulk.sources import Rejected
from dualmem_bulk.sources.detect import Source, open_source
from dualmem_bulk.sources.validate import SeenIds, validate_batch
from dualmem_bulk.stores import DEFAULT_BATCH_SIZE

if TYPE_CHECKING:
    from dualmem_bulk.engines import TaskPool

__all__ = ["CHUNK_ROWS", "SAMPLE", "LegacyScan", "Scan", "Tally", "legacy_digest", "open_checked",
           "scan_source"]

CHUNK_ROWS = 4_096
"""Rows read, validated, hashed and written to the snapshot at a time (one snapshot row group),
whatever the batch size: memory grows with it. A whole run on 200K nodes in one process peaked
at 668 MiB RSS with 4,096-row chunks and 882 MiB with 16,384, in the same time."""
SAMPLE = 20
"""Rejected rows listed in a report (all of them are in the quarantine file)."""


class Tally:
    """Rows read, rows rejected per reason code (a row once per code), the first rejected
    rows."""

    def __init__(self) -> None:
        self.nodes_in = self.quarantined = 0
        self.reasons: Counter[str] = Counter()
        self.sample: list[dict[str, Any]] = []

    def add(self, nodes_in: int, rejected: Sequence[Rejected]) -> None:
        """Count ``nodes_in`` rows read, of which ``rejected`` were quarantined."""
        self.nodes_in += nodes_in
        self.quarantined += len(rejected)
        for r in rejected:
            codes = reason_codes(r.reason)
            self.reasons.update(codes)
            if len(self.sample) < SAMPLE:
                self.sample.append({"source": r.source, "row": r.row, "id": r.id,
                                    "reason_code": ";".join(codes), "reason": r.reason})


class Scan:
    """Streams a source through validation: valid rows with their checksums, the table digest,
    the rejected rows tallied in the report."""

    def __init__(self, source: Source, batch_size: int, report: RunReport) -> None:
        self.source, self.report = source, report
        self.chunk = min(batch_size, CHUNK_ROWS)
        self.digest = TableDigest()
        self.tally = Tally()

    def batches(self, progress: Progress, check: Callable[[], None] = lambda: None
                ) -> Iterator[tuple[pa.RecordBatch, list[Rejected]]]:
        """Yield (snapshot batch with checksums, rejected rows) per source batch; ``check`` runs
        before each batch (it raises to stop the scan)."""
        seen = SeenIds()
        for chunk in prefetched(self.source.batches(self.chunk)):
            check()
            checked = validate_batch(chunk, seen)
            sums = row_checksums(checked.good)
            self.digest += TableDigest.of(sums)
            n_in = chunk.batch.num_rows + len(chunk.rejected)
            self.tally.add(n_in, checked.rejected)
            self.report.nodes_in, self.report.quarantined = (self.tally.nodes_in,
                                                             self.tally.quarantined)
            progress.advance(n_in)
            yield checked.good.append_column(SNAPSHOT_SCHEMA.field("checksum"), sums), list(
                checked.rejected
            )
        self.report.quarantine_codes = dict(self.tally.reasons.most_common())
        self.report.quarantine_sample = self.tally.sample
        self.report.snapshot_digest = self.digest.hex
        self.report.snapshot_rows = self.digest.rows


def open_checked(path: Path, spaces: tuple[str, ...], batch_size: int, strict: bool,
                 report: RunReport, pool: TaskPool | None = None) -> Source:
    """Open the source (indexing a WAL's files on ``pool``); with ``strict``, refuse one with
    damage found while indexing it."""
    if batch_size < 1:
        raise UsageError(f"batch_size must be at least 1, got {batch_size}", "batch_size")
    source = open_source(path, spaces or None, batch_size, pool)
    report.source_kind = source.kind
    report.source_details = source.describe()
    if strict and (damage := source.damage()):
        raise SourceDamaged(damage)
    return source


def scan_source(path: Path, batch_size: int = DEFAULT_BATCH_SIZE,
                progress: Progress = NULL_PROGRESS, spaces: tuple[str, ...] = ()) -> RunReport:
    """Validate and checksum a legacy source without writing anything (``inspect``, dry runs).

    ``snapshot_digest`` is the digest the snapshot of a conversion of this source would have.
    """
    report = RunReport(status="scanned", source=str(path), source_kind="",
                       target="", target_format="", run_dir="")
    source = open_checked(path, spaces, batch_size, False, report)
    progress.phase("scan", source.total_rows)
    started = time.perf_counter()
    for batch, _rejected in Scan(source, batch_size, report).batches(progress):
        report.nodes_converted += batch.num_rows
    return finish(report, started, progress)


@dataclass(frozen=True)
class LegacyScan:
    """Digest of a legacy store's valid rows, and how many rows validation rejected."""

    digest: TableDigest
    quarantined: int


def legacy_digest(path: Path, *, batch_size: int = DEFAULT_BATCH_SIZE,
                  spaces: tuple[str, ...] = (), progress: Progress = NULL_PROGRESS) -> LegacyScan:
    """The digest of the legacy store or source at ``path`` (Parquet, Lance, JSON lines, WAL)
    as a snapshot of it would have: valid rows only, through the export's validation."""
    report = scan_source(path, batch_size, progress, spaces)
    return LegacyScan(TableDigest.from_hex(report.snapshot_rows, report.snapshot_digest),
                      report.quarantined)
