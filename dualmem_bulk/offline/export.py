"""The export phase: stream a source through validation (:mod:`dualmem_bulk.sources.scan`)
into a snapshot (legacy schema + per-row checksums) and a quarantine of rejected rows; and
``export_snapshot`` (the phase on its own, for ``dualmem-bulk export``)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from dualmem_bulk._fs import atomic_path
from dualmem_bulk._threads import InOrderWorker
from dualmem_bulk.errors import InvalidRows, TargetExists
from dualmem_bulk.progress import NULL_PROGRESS, Progress
from dualmem_bulk.quarantine import reason_codes
from dualmem_bulk.rundir.run_report import RunReport, finish
from dualmem_bulk.schema import QUARANTINE_SCHEMA, SNAPSHOT_SCHEMA
from dualmem_bulk.sources import Rejected
from dualmem_bulk.sources.scan import Scan, open_checked
from dualmem_bulk.stores import DEFAULT_BATCH_SIZE, PARQUET_OPTIONS

__all__ = ["Exporter", "export_snapshot", "quarantine_table"]


class Exporter(Scan):
    """Streams the source through validation into the snapshot and quarantine files."""

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
