"""The export phase: stream a source through validation into a snapshot (legacy schema +
per-row checksums) and a quarantine of rejected rows. Also ``scan_source`` (the same pass,
writing nothing) and ``export_snapshot`` (the phase on its own, for ``dualmem-bulk export``)."""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from dualmem_bulk._fs import atomic_path
from dualmem_bulk._threads import InOrderWorker, prefetched
from dualmem_bulk.checksum import TableDigest, row_checksums
from dualmem_bulk.errors import InvalidRows, SourceDamaged, TargetExists, UsageError
from dualmem_bulk.progress import NULL_PROGRESS, Progress
from dualmem_bulk.quarantine import reason_codes
from dualmem_bulk.rundir.run_report import RunReport, finish
from dualmem_bulk.schema import QUARANTINE_SCHEMA, SNAPSHOT_SCHEMA
from dualmem_bulk.schema.validate import SeenIds, validate_batch
from dualmem_bulk.sources import Rejected
from dualmem_bulk.sources.detect import Source, open_source
from dualmem_bulk.stores import PARQUET_OPTIONS

if TYPE_CHECKING:
    from dualmem_bulk.engines import TaskPool

__all__ = ["CHUNK_ROWS", "DEFAULT_BATCH_SIZE", "SAMPLE", "Exporter", "Tally", "export_snapshot",
           "open_checked", "quarantine_table", "scan_source"]

DEFAULT_BATCH_SIZE = 16_384
"""Rows per batch (the commit unit): ~55 MB of embeddings, enough to amortise each commit."""
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


class Exporter:
    """Streams the source through validation into the snapshot and quarantine files."""

    def __init__(self, source: Source, batch_size: int, report: RunReport) -> None:
        self.source, self.report = source, report
        self.chunk = min(batch_size, CHUNK_ROWS)
        self.digest = TableDigest()
        self.tally = Tally()

    def batches(self, progress: Progress, check: Callable[[], None] = lambda: None
                ) -> Iterator[tuple[pa.RecordBatch, list[Rejected]]]:
        """Yield (snapshot batch with checksums, rejected rows) per source batch; ``check`` runs
        before each batch (it raises to stop the export)."""
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

    def write(self, snapshot: Path, quarantine: Path, strict: bool, progress: Progress,
              check: Callable[[], None] = lambda: None,
              on_batch: Callable[[pa.RecordBatch], None] = lambda _batch: None) -> None:
        """Write the snapshot (and the quarantine, if any row is rejected), each atomically;
        ``on_batch`` sees each snapshot batch (one row group each), in order."""
        with contextlib.ExitStack() as stack:
            tmp = stack.enter_context(atomic_path(snapshot))
            writer = stack.enter_context(pq.ParquetWriter(tmp, SNAPSHOT_SCHEMA, **PARQUET_OPTIONS))
            rejects: pq.ParquetWriter | None = None
            background = stack.enter_context(InOrderWorker())  # exits before the writer closes
            for batch, rejected in self.batches(progress, check):
                if batch.num_rows:
                    background.submit(writer.write_batch, batch)
                    on_batch(batch)
                if rejected and strict:
                    first = rejected[0]
                    raise InvalidRows(self.report.quarantined,
                                      f"{first.source} row {first.row}: {first.reason}")
                if rejected:
                    if rejects is None:  # opened last, so it is closed (and renamed) first
                        rejects = stack.enter_context(pq.ParquetWriter(
                            stack.enter_context(atomic_path(quarantine)), QUARANTINE_SCHEMA))
                    rejects.write_table(quarantine_table(rejected))
            background.drain()  # every batch written before the footer
            writer.add_key_value_metadata({
                "dualmem.snapshot.rows": str(self.digest.rows),
                "dualmem.snapshot.digest": self.digest.hex,
            })


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
    for batch, _rejected in Exporter(source, batch_size, report).batches(progress):
        report.nodes_converted += batch.num_rows
    return finish(report, started, progress)


def quarantine_table(rows: Sequence[Rejected]) -> pa.Table:
    """Rejected rows as a quarantine table (``reason_code`` from each row's reason)."""
    columns = {name: [getattr(r, name) for r in rows] for name in QUARANTINE_SCHEMA.names
               if name != "reason_code"}
    columns["reason_code"] = [";".join(reason_codes(r.reason)) for r in rows]
    return pa.table(columns, schema=QUARANTINE_SCHEMA)


def export_snapshot(source: Path, snapshot: Path, *, spaces: tuple[str, ...] = (),
                    strict: bool = False, batch_size: int = DEFAULT_BATCH_SIZE,
                    progress: Progress = NULL_PROGRESS) -> RunReport:
    """The first phase alone: validate ``source`` into a snapshot Parquet file (legacy schema +
    checksums), rejected rows into ``SNAPSHOT.quarantine.parquet``. Nothing else is written."""
    started = time.perf_counter()
    if snapshot.exists():
        raise TargetExists(snapshot)
    report = RunReport(status="running", source=str(source), source_kind="",
                       target=str(snapshot), target_format="snapshot", run_dir="")
    opened = open_checked(source, spaces, batch_size, strict, report)
    progress.phase("export", opened.total_rows)
    quarantine = snapshot.with_name(snapshot.stem + ".quarantine.parquet")
    mark = time.perf_counter()
    Exporter(opened, batch_size, report).write(snapshot, quarantine, strict, progress)
    report.phase("export", report.nodes_in, time.perf_counter() - mark)
    report.quarantine_path = str(quarantine) if report.quarantined else None
    report.status = "done"
    return finish(report, started, progress)
