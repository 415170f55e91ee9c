"""The offline run: export + validate to a Parquet snapshot, convert in batches, write, verify.

Layout of the run directory (``TARGET.run`` unless given)::

    run.json            what the run is: source, target, config, digests, state
    snapshot.parquet    every valid source row, legacy schema + checksum (kept for rollback)
    quarantine.parquet  every rejected row with its file, row and reason (only if any)
    report.json         the final report (also printed by ``convert --json``)

Memory stays bounded by the batch size: every phase streams.
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from dualmem_bulk import __version__
from dualmem_bulk._fs import atomic_path, remove, write_json
from dualmem_bulk.checksum import TableDigest, row_checksums
from dualmem_bulk.convert import to_dual
from dualmem_bulk.errors import (
    InvalidRows,
    SourceDamaged,
    TargetExists,
    UsageError,
    VerificationFailed,
)
from dualmem_bulk.progress import NULL_PROGRESS, Progress
from dualmem_bulk.schema import (
    DUAL_SCHEMA,
    LEGACY_SCHEMA,
    QUARANTINE_SCHEMA,
    SNAPSHOT_SCHEMA,
    fingerprint,
)
from dualmem_bulk.schema.validate import SeenIds, validate_batch
from dualmem_bulk.sources import Rejected
from dualmem_bulk.sources.detect import Source, open_source
from dualmem_bulk.stores import (
    PARQUET_OPTIONS,
    TargetFormat,
    open_parquet,
    parquet_batches,
    write_store,
)
from dualmem_bulk.verify import verify_run

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "OfflineConfig",
    "RunReport",
    "export_snapshot",
    "run_offline",
    "scan_source",
]

DEFAULT_BATCH_SIZE = 16_384
"""Rows per batch: ~55 MB of embeddings, enough to amortise per-batch overhead (see RESULTS.md)."""

SNAPSHOT = "snapshot.parquet"
QUARANTINE = "quarantine.parquet"
RUN_FILE = "run.json"
REPORT = "report.json"

_BYTES_PER_NODE_ESTIMATE = 2 * (768 * 4 + 300)
"""Disk estimate for a dry run: snapshot + target, each ~3.4 KB a node before compression."""


@dataclass(frozen=True, kw_only=True)
class OfflineConfig:
    """What an offline conversion reads, writes and how."""

    source: Path
    """Legacy source: Parquet file or directory, or Memory JSON lines."""
    target: Path
    """The DualMemoryNode store to create; must not exist yet."""
    run_dir: Path | None = None
    """Where the snapshot, quarantine and reports go; default ``TARGET.run``."""
    target_format: TargetFormat = "lance"
    """``lance`` (a Lance dataset) or ``parquet`` (a directory of Parquet files)."""
    batch_size: int = DEFAULT_BATCH_SIZE
    """Rows per batch; memory use grows with it, not with the node count."""
    strict: bool = False
    """Fail (exit 3) on any invalid row, before anything is written to the target."""
    dry_run: bool = False
    """Validate and estimate only; write nothing."""
    spaces: tuple[str, ...] = ()
    """Memory spaces to read from an Engram data root (default: every space)."""

    @property
    def resolved_run_dir(self) -> Path:
        """The run directory actually used."""
        return self.run_dir or self.target.with_name(self.target.name + ".run")


@dataclass
class RunReport:
    """What a run did: counts, digests, timings; ``as_dict()`` is the ``--json`` output."""

    status: str
    source: str
    source_kind: str
    target: str
    target_format: str
    run_dir: str
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


def _reason_kind(reason: str) -> str:
    """Group reasons for the summary: the text up to the first digit, colon or parenthesis."""
    head = reason.split(";")[0]
    for i, ch in enumerate(head):
        if ch.isdigit() or ch in ":(":
            return head[:i].strip() or head
    return head


class _Export:
    """Streams the source through validation into the snapshot and quarantine files."""

    def __init__(self, source: Source, batch_size: int, report: RunReport) -> None:
        self.source, self.batch_size, self.report = source, batch_size, report
        self.digest = TableDigest()
        self.reasons: Counter[str] = Counter()

    def _note(self, rejected: tuple[Rejected, ...]) -> None:
        for r in rejected:
            self.reasons[_reason_kind(r.reason)] += 1
            if len(self.report.quarantine_sample) < 20:
                self.report.quarantine_sample.append(
                    {"source": r.source, "row": r.row, "id": r.id, "reason": r.reason}
                )

    def batches(self, progress: Progress) -> Iterator[tuple[pa.RecordBatch, list[Rejected]]]:
        """Yield (snapshot batch with checksums, rejected rows) per source batch."""
        seen = SeenIds()
        for chunk in self.source.batches(self.batch_size):
            checked = validate_batch(chunk, seen)
            sums = row_checksums(checked.good)
            self.digest += TableDigest.of(sums)
            self._note(checked.rejected)
            n_in = chunk.batch.num_rows + len(chunk.rejected)
            self.report.nodes_in += n_in
            self.report.quarantined += len(checked.rejected)
            progress.advance(n_in)
            yield checked.good.append_column(SNAPSHOT_SCHEMA.field("checksum"), sums), list(
                checked.rejected
            )
        self.report.quarantine_reasons = dict(self.reasons.most_common())
        self.report.snapshot_digest = self.digest.hex
        self.report.snapshot_rows = self.digest.rows

    def write(self, snapshot: Path, quarantine: Path, strict: bool, progress: Progress) -> None:
        """Write the snapshot (and the quarantine, if any row is rejected), each atomically."""
        with contextlib.ExitStack() as stack:
            tmp = stack.enter_context(atomic_path(snapshot))
            writer = stack.enter_context(pq.ParquetWriter(tmp, SNAPSHOT_SCHEMA, **PARQUET_OPTIONS))
            rejects: pq.ParquetWriter | None = None
            for batch, rejected in self.batches(progress):
                if batch.num_rows:
                    writer.write_batch(batch)
                if rejected and strict:
                    first = rejected[0]
                    raise InvalidRows(self.report.quarantined,
                                      f"{first.source} row {first.row}: {first.reason}")
                if rejected:
                    if rejects is None:  # opened last, so it is closed (and renamed) first
                        rejects = stack.enter_context(pq.ParquetWriter(
                            stack.enter_context(atomic_path(quarantine)), QUARANTINE_SCHEMA))
                    rejects.write_table(_quarantine_table(rejected))
            writer.add_key_value_metadata({
                "dualmem.snapshot.rows": str(self.digest.rows),
                "dualmem.snapshot.digest": self.digest.hex,
            })


def _open(path: Path, spaces: tuple[str, ...], batch_size: int, strict: bool,
          report: RunReport) -> Source:
    """Open the source; with ``strict``, refuse one with damage found while indexing it."""
    if batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {batch_size}")
    source = open_source(path, spaces or None, batch_size)
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
    source = _open(path, spaces, batch_size, False, report)
    progress.phase("scan", source.total_rows)
    started = time.perf_counter()
    for batch, _rejected in _Export(source, batch_size, report).batches(progress):
        report.nodes_converted += batch.num_rows
    return _finish(report, started, progress)


def _quarantine_table(rows: list[Rejected]) -> pa.Table:
    columns = {name: [getattr(r, name) for r in rows] for name in QUARANTINE_SCHEMA.names}
    return pa.table(columns, schema=QUARANTINE_SCHEMA)


def _converted(snapshot: Path, batch_size: int, digest: list[TableDigest],
               progress: Progress) -> Iterator[pa.RecordBatch]:
    """DualMemoryNode batches from the snapshot, reusing its checksums."""
    for batch in parquet_batches(open_parquet(snapshot), batch_size):
        sums = batch.column("checksum")
        legacy = pa.RecordBatch.from_arrays(
            [batch.column(n) for n in LEGACY_SCHEMA.names], schema=LEGACY_SCHEMA
        )
        digest[0] += TableDigest.of(sums)
        progress.advance(batch.num_rows)
        yield to_dual(legacy, sums)


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
    opened = _open(source, spaces, batch_size, strict, report)
    progress.phase("export", opened.total_rows)
    quarantine = snapshot.with_name(snapshot.stem + ".quarantine.parquet")
    _Export(opened, batch_size, report).write(snapshot, quarantine, strict, progress)
    report.status = "done"
    return _finish(report, started, progress)


def _prepare(config: OfflineConfig) -> Path:
    run_dir = config.resolved_run_dir
    if config.target.exists():
        raise TargetExists(config.target)
    if run_dir.exists() and any(run_dir.iterdir()):
        raise UsageError(
            f"{run_dir}: run directory already exists; remove it, or pass --run-dir"
        )
    return run_dir


def run_offline(config: OfflineConfig, progress: Progress = NULL_PROGRESS) -> RunReport:
    """Convert ``config.source`` into a new DualMemoryNode store at ``config.target``.

    Raises an :class:`~dualmem_bulk.errors.InputError` (nothing written) for a bad source,
    and :class:`~dualmem_bulk.errors.VerificationFailed` if the written store does not verify.
    """
    started = time.perf_counter()
    run_dir = _prepare(config)
    report = RunReport(
        status="running",
        source=str(config.source),
        source_kind="",
        target=str(config.target),
        target_format=config.target_format,
        run_dir=str(run_dir),
    )
    source = _open(config.source, config.spaces, config.batch_size, config.strict, report)
    export = _Export(source, config.batch_size, report)
    progress.phase("validate" if config.dry_run else "export", source.total_rows)
    if config.dry_run:
        for batch, _rejected in export.batches(progress):
            report.nodes_converted += batch.num_rows
        if config.strict and report.quarantine_sample:
            first = report.quarantine_sample[0]
            raise InvalidRows(report.quarantined,
                              f"{first['source']} row {first['row']}: {first['reason']}")
        report.status = "dry-run"
        report.estimated_disk_bytes = report.nodes_converted * _BYTES_PER_NODE_ESTIMATE
        return _finish(report, started, progress, estimate=True)

    created = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        export.write(run_dir / SNAPSHOT, run_dir / QUARANTINE, config.strict, progress)
    except BaseException:
        if created:
            remove(run_dir)
        raise
    report.phases_s["export"] = round(time.perf_counter() - started, 3)
    _record_run(run_dir, config, report, state="converting")

    mark = time.perf_counter()
    progress.phase("convert", export.digest.rows)
    target_digest = [TableDigest()]
    write_store(config.target, config.target_format, DUAL_SCHEMA,
                _converted(run_dir / SNAPSHOT, config.batch_size, target_digest, progress))
    report.nodes_converted = target_digest[0].rows
    report.target_digest = target_digest[0].hex
    report.phases_s["convert"] = round(time.perf_counter() - mark, 3)
    _record_run(run_dir, config, report, state="verifying")

    mark = time.perf_counter()
    verdict = verify_run(run_dir, progress, batch_size=config.batch_size)
    report.phases_s["verify"] = round(time.perf_counter() - mark, 3)
    report.verified = verdict.ok
    report.status = "done" if verdict.ok else "verify-failed"
    _finish(report, started, progress)
    _record_run(run_dir, config, report, state=report.status)
    write_json(run_dir / REPORT, report.as_dict())
    if not verdict.ok:
        raise VerificationFailed(verdict.summary())
    return report


def _finish(report: RunReport, started: float, progress: Progress,
            estimate: bool = False) -> RunReport:
    report.elapsed_s = round(time.perf_counter() - started, 3)
    report.nodes_per_s = round(report.nodes_in / report.elapsed_s, 1) if report.elapsed_s else 0.0
    if estimate and report.elapsed_s:
        # A full run reads, writes twice and verifies: about 4x a validating pass, measured.
        report.estimated_s = round(4 * report.elapsed_s, 1)
    progress.done()
    return report


def _record_run(run_dir: Path, config: OfflineConfig, report: RunReport, state: str) -> None:
    write_json(run_dir / RUN_FILE, {
        "tool": f"dualmem-bulk {__version__}",
        "state": state,
        "source": str(config.source.resolve()),
        "source_kind": report.source_kind,
        "target": str(config.target.resolve()),
        "target_format": config.target_format,
        "batch_size": config.batch_size,
        "strict": config.strict,
        "legacy_schema": fingerprint(LEGACY_SCHEMA),
        "dual_schema": fingerprint(DUAL_SCHEMA),
        "snapshot_rows": report.snapshot_rows,
        "snapshot_digest": report.snapshot_digest,
        "target_digest": report.target_digest,
        "quarantined": report.quarantined,
    })
