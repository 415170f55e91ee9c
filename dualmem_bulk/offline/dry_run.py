"""``convert --dry-run``: validate the whole source, convert a measured sample of it, and say
whether the run fits (go) or not (no-go).

The estimate is measured, not guessed: the first :data:`SAMPLE_ROWS` rows of the source, in the
source's own format (JSON lines stay JSON lines, Parquet keeps its types; other sources are
sampled as Parquet of their valid rows), go through the real conversion (export, convert,
write, verify, one process) into a temporary directory next to the target. Its wall time and
the bytes it wrote, scaled to the source's rows, are the estimate, except that the snapshot of a
Parquet source keeps the source's own bytes (:mod:`dualmem_bulk.stores.snapshot_bytes`): those
are the source files' sizes, not the sample's copies scaled. Then the free space of the
target's and the run directory's filesystems must hold the estimate plus
:data:`HEADROOM` plus what the operator asks to keep free. The temporary directory is removed
whatever happens: a dry run leaves nothing behind.
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from dualmem_bulk.errors import InvalidRows, TargetExists
from dualmem_bulk.offline.config import OfflineConfig
from dualmem_bulk.progress import Progress
from dualmem_bulk.rundir.files import SNAPSHOT
from dualmem_bulk.rundir.run_report import RunReport, finish
from dualmem_bulk.schema import LEGACY_SCHEMA
from dualmem_bulk.sources.parquet import parquet_files
from dualmem_bulk.sources.scan import Scan, open_checked

__all__ = ["HEADROOM", "NO_GO_EXIT", "SAMPLE_ROWS", "dry_run"]

SAMPLE_ROWS = 10_000
"""Rows converted to measure time and disk (all of them when the source has fewer)."""
HEADROOM = 0.10
"""Fraction added to the estimated bytes before comparing with the free space."""
NO_GO_EXIT = 6
"""Exit code of a dry run that says no-go."""


def _du(path: Path) -> int:
    """Bytes of the files under ``path`` (0 if absent)."""
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _du_files(files: list[Path]) -> int:
    return sum(f.stat().st_size for f in files)


def _kept_bytes(run_dir: Path) -> int:
    """Bytes of the copies of a Parquet source's files kept as the snapshot (0: none)."""
    return _du_files(sorted((run_dir / SNAPSHOT).glob("source-*.parquet")))  # copy_name


def _existing(path: Path) -> Path:
    """``path`` or its nearest existing ancestor (where it would be created)."""
    path = path.absolute()
    while not path.exists() and path.parent != path:
        path = path.parent
    return path


def _sample_parquet(source: Path, out: Path, rows: int) -> int:
    """The first ``rows`` rows of a Parquet source, file by file with each file's schema."""
    out.mkdir()
    taken = 0
    for i, file in enumerate(parquet_files(source)):
        if taken >= rows:
            break
        handle = pq.ParquetFile(file)
        table = pa.Table.from_batches(
            itertools.islice(handle.iter_batches(batch_size=rows - taken), 1),
            schema=handle.schema_arrow)
        pq.write_table(table, out / f"part-{i:05d}.parquet")
        taken += table.num_rows
    return taken


def _sample_jsonl(source: Path, out: Path, rows: int) -> int:
    """The first ``rows`` non-blank lines of a JSON lines source, byte for byte."""
    taken = 0
    with source.open("rb") as src, out.open("wb") as dst:
        for line in src:
            if taken >= rows:
                break
            dst.write(line)
            taken += bool(line.strip())
    return taken


def _sample_valid(batches: list[pa.RecordBatch], out: Path) -> int:
    """Valid rows kept from the scan, as a legacy Parquet file (sources of other kinds)."""
    table = pa.Table.from_batches(
        [b.select(LEGACY_SCHEMA.names) for b in batches], schema=LEGACY_SCHEMA)
    pq.write_table(table, out)
    return int(table.num_rows)


def _filesystems(config: OfflineConfig, target_bytes: int, run_bytes: int,
                 keep_free: int) -> tuple[list[dict[str, Any]], list[str]]:
    """Free space where the target and the run directory go, against what they need."""
    needs: dict[int, dict[str, Any]] = {}
    for what, path, size in (("target", config.target.parent, target_bytes),
                             ("run directory", config.resolved_run_dir, run_bytes)):
        where = _existing(path)
        device = os.stat(where).st_dev
        entry = needs.setdefault(device, {"path": str(where), "for": [], "needed_bytes": 0,
                                          "free_bytes": shutil.disk_usage(where).free})
        entry["for"].append(what)
        entry["needed_bytes"] += int(size * (1 + HEADROOM))
    problems = []
    for entry in needs.values():
        entry["needed_bytes"] += keep_free
        if entry["free_bytes"] < entry["needed_bytes"]:
            problems.append(
                f"{entry['path']} ({' and '.join(entry['for'])}) has {entry['free_bytes']:,} "
                f"bytes free; the run needs about {entry['needed_bytes']:,}")
    return list(needs.values()), problems


def dry_run(config: OfflineConfig, convert: Callable[[OfflineConfig], RunReport],
            progress: Progress, started: float, keep_free: int = 0) -> RunReport:
    """Validate the source, measure a sample conversion (``convert``: the real conversion, in
    one process) and decide go or no-go."""
    if config.target.exists() and not config.in_place:
        raise TargetExists(config.target)
    report = RunReport(status="dry-run", source=str(config.source), source_kind="",
                       target=str(config.target), target_format=config.target_format,
                       run_dir=str(config.resolved_run_dir), engine=config.engine)
    source = open_checked(config.source, config.spaces, config.batch_size, config.strict,
                          report)
    progress.phase("validate", source.total_rows)
    kept: list[pa.RecordBatch] = []
    held = 0
    scan = time.perf_counter()
    for batch, _rejected in Scan(source, config.batch_size, report).batches(progress):
        report.nodes_converted += batch.num_rows
        if held < SAMPLE_ROWS and batch.num_rows:
            kept.append(batch.slice(0, SAMPLE_ROWS - held))
            held += kept[-1].num_rows
    report.phase("validate", report.nodes_in, time.perf_counter() - scan)
    if config.strict and report.quarantine_sample:
        first = report.quarantine_sample[0]
        raise InvalidRows(report.quarantined,
                          f"{first['source']} row {first['row']}: {first['reason']}")
    parent = _existing(config.target.parent)
    with tempfile.TemporaryDirectory(prefix=".dualmem-dry-run-", dir=parent) as tmp:
        work = Path(tmp)
        if source.kind == "parquet":
            sample, basis = work / "sample", "parquet rows of the source"
            rows = _sample_parquet(config.source, sample, SAMPLE_ROWS)
        elif source.kind == "jsonl":
            sample, basis = work / "sample.jsonl", "json lines of the source"
            rows = _sample_jsonl(config.source, sample, SAMPLE_ROWS)
        else:
            sample, basis = work / "sample.parquet", "valid rows of the source, as parquet"
            rows = _sample_valid(kept, sample)
        del kept
        target, run_dir = work / config.target.name, work / "run"
        mark = time.perf_counter()
        measured = convert(type(config)(
            source=sample, target=target, run_dir=run_dir, target_format=config.target_format,
            batch_size=config.batch_size, checkpoint_every=config.checkpoint_every, workers=0))
        sample_s = time.perf_counter() - mark
        target_bytes, run_bytes = _du(target), _du(run_dir)
        sample_kept = _kept_bytes(run_dir) if source.kind == "parquet" else 0
    report.phase("sample", measured.nodes_in, sample_s)
    scale = report.nodes_in / rows if rows else 0.0
    est_target = int(target_bytes * scale)
    kept_bytes = _du_files(parquet_files(config.source)) if sample_kept else 0  # copied whole
    est_run = int((run_bytes - sample_kept) * scale) + kept_bytes
    report.estimated_disk_bytes = est_target + est_run
    report.estimated_s = round(sample_s * scale, 1)
    space, problems = _filesystems(config, est_target, est_run, keep_free)
    report.estimate = {
        "basis": basis, "sample_rows": rows, "sample_s": round(sample_s, 3),
        "sample_target_bytes": target_bytes, "sample_run_dir_bytes": run_bytes,
        "sample_kept_bytes": sample_kept, "target_bytes": est_target, "run_dir_bytes": est_run,
        "kept_bytes": kept_bytes, "workers": 0,
        "headroom": HEADROOM, "keep_free_bytes": keep_free, "filesystems": space,
    }
    report.decision = "no-go" if problems else "go"
    report.decision_reason = "; ".join(problems) if problems else (
        f"the estimated {report.estimated_disk_bytes:,} bytes (+{HEADROOM:.0%}) fit on every "
        "filesystem the run writes to")
    return finish(report, started, progress)

