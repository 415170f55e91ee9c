"""The offline commands: ``generate`` (synthetic legacy data), ``convert`` and ``export``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Literal

import typer

from dualmem_bulk.cli.calls import call, call_with_progress, confirm, emit, usage
from dualmem_bulk.cli.options import (
    EngineOpt,
    JsonOpt,
    QuietOpt,
    SchedulerOpt,
    SpaceOpt,
    WorkersOpt,
    YesOpt,
)
from dualmem_bulk.cli.text import run_lines

__all__ = ["convert", "export", "generate"]


def generate(
    out: Annotated[Path, typer.Argument(
        help="File to write (.parquet or .jsonl), or for engram-wal the data root directory "
             "to create (new or empty).")],
    nodes: Annotated[int, typer.Option(min=0, help="Number of Memory nodes.")] = 10_000,
    seed: Annotated[int, typer.Option(help="Same seed, same bytes.")] = 0,
    fmt: Annotated[
        Literal["parquet", "jsonl", "engram-wal"],
        typer.Option("--format", help="Output format: parquet, jsonl (Memory serde JSON lines) "
                                      "or engram-wal (an Engram data root of WAL files)."),
    ] = "parquet",
    as_json: JsonOpt = False,
) -> None:
    """Write realistic synthetic legacy Memory data, for trials and benchmarks.

    With --format engram-wal, OUT becomes an Engram data root: the memories as EpisodeStore
    records in <space>/wal/wal-<16 hex>.log files of a few memory spaces.

    Example: dualmem-bulk generate memories.parquet --nodes 200000 --seed 7

    Example: dualmem-bulk generate engram-data --nodes 200000 --format engram-wal
    """
    from dualmem_bulk.generate import write_generated

    started = time.perf_counter()
    rows = call(lambda: write_generated(out, nodes, seed, fmt=fmt), as_json)
    elapsed = time.perf_counter() - started
    emit({"status": "done", "path": str(out), "nodes": rows, "format": fmt,
          "elapsed_s": round(elapsed, 3)}, as_json,
         [f"wrote {rows:,} nodes to {out} ({fmt}) in {elapsed:.1f} s"])


def convert(
    source: Annotated[Path, typer.Argument(help="Legacy source: Parquet file/dir, JSON lines, "
                                                "an Engram data root, or a legacy store.")],
    target: Annotated[Path | None, typer.Argument(
        help="DualMemoryNode store to create (omit with --in-place).")] = None,
    in_place: Annotated[bool, typer.Option(
        help="Convert the legacy store SOURCE (a Lance or Parquet dataset) in place.")] = False,
    run_dir: Annotated[
        Path | None, typer.Option(help="Run directory (default: TARGET.run).")
    ] = None,
    target_format: Annotated[
        Literal["lance", "parquet"], typer.Option(help="Target store format.")
    ] = "lance",
    batch_size: Annotated[int | None, typer.Option(
        min=1, help="Rows per batch, one commit each (default 16,384).")] = None,
    strict: Annotated[bool, typer.Option(help="Fail (exit 3) on any invalid row.")] = False,
    dry_run: Annotated[bool, typer.Option(
        help="Validate, convert a sample into a temporary directory to estimate time and disk, "
             "check the free space and say go or no-go (exit 6); leaves nothing.")] = False,
    keep_free: Annotated[int, typer.Option(
        min=0, metavar="BYTES", help="With --dry-run: bytes each filesystem must still have "
                                     "free after the run, or no-go.")] = 0,
    space: SpaceOpt = None,
    checkpoint_every: Annotated[int | None, typer.Option(
        min=1, help="Commit and checkpoint after at least N nodes (default: every batch).")
    ] = None,
    restart: Annotated[bool, typer.Option(
        help="Discard the run in the run directory (not a finalized one) and start again; "
             "asks first unless --yes.")] = False,
    yes: YesOpt = False,
    workers: WorkersOpt = None,
    engine: EngineOpt = "local",
    scheduler: SchedulerOpt = None,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Convert a legacy Memory source into a new DualMemoryNode store, then verify it.

    The run directory keeps a journal, a Parquet snapshot of the source (for rollback), the
    quarantine of invalid rows, and the report. Re-running the same command resumes a run that
    was interrupted or crashed; Ctrl-C stops at the next checkpoint (exit 4).

    Example: dualmem-bulk convert memories.parquet nodes.lance --json

    Example: dualmem-bulk convert memories/ nodes.lance --engine dask --workers 4
    """
    from dualmem_bulk.offline.dry_run import NO_GO_EXIT
    from dualmem_bulk.offline.run import DEFAULT_BATCH_SIZE, OfflineConfig, run_offline

    if in_place and target not in (None, source):
        usage("--in-place converts SOURCE itself; do not give a TARGET", as_json)
    if target is None and not in_place:
        usage("missing TARGET (or pass --in-place to convert SOURCE itself)", as_json)
    config = OfflineConfig(
        source=source, target=target or source, run_dir=run_dir, target_format=target_format,
        in_place=in_place,
        batch_size=batch_size or DEFAULT_BATCH_SIZE, strict=strict, dry_run=dry_run,
        spaces=tuple(space or ()), checkpoint_every=checkpoint_every, restart=restart,
        workers=workers, engine=engine, scheduler=scheduler,
    )
    if restart and not yes:
        question = call(lambda: _restart_question(config.resolved_run_dir), as_json)
        if question:
            call(lambda: confirm(question, "--restart --yes"), as_json)
    report = call_with_progress(lambda progress: run_offline(config, progress, keep_free),
                                as_json, quiet)
    emit(report.as_dict(), as_json, run_lines(report, dry_run))
    if report.decision == "no-go":
        raise typer.Exit(NO_GO_EXIT)


def _restart_question(run_dir: Path) -> str | None:
    """What ``--restart`` would discard, as a question (``None``: no run there, or a finalized
    one, which the run refuses)."""
    from dualmem_bulk.rundir.journal import Journal

    if not Journal.exists(run_dir):
        return None
    journal = Journal.open(run_dir)
    try:
        if journal.state == "finalized":
            return None
        created = " and the target it created" if journal.values["target_created"] else ""
        return (f"Discard the {journal.state} run in {run_dir} (its journal, snapshot, "
                f"quarantine{created}: {journal.values['target']}) and start again?")
    finally:
        journal.close()


def export(
    source: Annotated[Path, typer.Argument(help="Legacy source: Parquet, JSON lines or an "
                                                "Engram data root.")],
    snapshot: Annotated[Path, typer.Argument(help="Snapshot Parquet file to create.")],
    space: SpaceOpt = None,
    strict: Annotated[bool, typer.Option(help="Fail (exit 3) on any invalid row or damaged "
                                              "record.")] = False,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Export and validate a source into a snapshot Parquet file (the first phase of convert),
    for operators who want to look at it first; rejected rows go to SNAPSHOT.quarantine.parquet.

    Example: dualmem-bulk export /var/lib/engram-data snapshot.parquet --space default
    """
    from dualmem_bulk.offline.export import export_snapshot

    spaces = tuple(space or ())
    report = call_with_progress(lambda progress: export_snapshot(
        source, snapshot, spaces=spaces, strict=strict, progress=progress), as_json, quiet)
    emit(report.as_dict(), as_json, [
        f"exported {report.snapshot_rows:,} of {report.nodes_in:,} nodes to {snapshot} in "
        f"{report.elapsed_s:.1f} s; {report.quarantined:,} quarantined",
        f"snapshot digest {report.snapshot_digest}",
    ])
