"""The online commands: ``migrate --online`` and ``cutover``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dualmem_bulk.cli.calls import call, call_with_progress, emit, usage
from dualmem_bulk.cli.options import JsonOpt, QuietOpt

__all__ = ["cutover", "migrate"]


def migrate(
    store: Annotated[Path, typer.Argument(
        help="The live legacy MemoryStore (SQLite file), or an Engram data root.")],
    target: Annotated[Path, typer.Argument(help="DualMemoryNode Lance dataset to create.")],
    online: Annotated[bool, typer.Option(
        "--online", help="Migrate while the service keeps using STORE (required).")] = False,
    run_dir: Annotated[
        Path | None, typer.Option(help="Run directory (default: TARGET.run).")
    ] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Rows of the first copy batch.")] = 2_000,
    target_batch_s: Annotated[float, typer.Option(
        min=0.01, help="Adapt copy batches to take about this many seconds.")] = 0.5,
    max_rate: Annotated[float | None, typer.Option(
        min=1, help="Copy at most this many nodes per second.")] = None,
    cutover_lag: Annotated[int, typer.Option(
        min=0, help="Cut over once at most this many changes are not yet applied.")] = 200,
    postpone_cutover: Annotated[bool, typer.Option(
        help="Keep catching up until `dualmem-bulk cutover RUN_DIR` is run.")] = False,
    workers: Annotated[int | None, typer.Option(
        min=0, help="Worker processes copying a MemoryStore's rowid ranges beside this one; 0: "
                    "this process alone. Default: one per core less one, none under 50,000 "
                    "nodes. The copy is the same for any number.")] = None,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Migrate a live MemoryStore into a new DualMemoryNode store, then cut over.

    Copies the store in checkpointed batches while the service writes, applies its change log
    until the lag is small, then holds the service's writes for a short pause, applies the last
    changes, compares digests and records the cut-over: CompatibilityAdapter processes switch
    to the new store. From an Engram data root, the WAL's new records are the changes and the
    cut-over proves the new store equal to the WAL's replay at a position. Touch RUN_DIR/pause
    to hold the copy between batches. Re-running the same command resumes; rollback stays
    possible until finalize.

    Example: dualmem-bulk migrate --online memories.sqlite nodes.lance --json
    """
    from dualmem_bulk.online.run import OnlineConfig, run_online

    if not online:
        usage("migrate needs --online (an offline migration is `dualmem-bulk convert`)",
              as_json)
    config = OnlineConfig(store=store, target=target, run_dir=run_dir, batch_size=batch_size,
                          target_batch_s=target_batch_s, max_rate=max_rate,
                          cutover_lag=cutover_lag, postpone_cutover=postpone_cutover,
                          workers=workers)
    r = call_with_progress(lambda progress: run_online(config, progress), as_json, quiet)
    emit(r.as_dict(), as_json, [
        f"{r.status}: {r.nodes_copied:,} nodes copied in {r.copy_s:.1f} s "
        f"({r.copy_nodes_per_s:,.0f} nodes/s), {r.changes_applied:,} changes applied in "
        f"{r.catch_up_rounds:,} rounds",
        f"cut-over pause {r.pause_ms} ms ({r.changes_in_pause} changes applied in it, lag "
        f"{r.lag_at_pause} when it began); {r.rows:,} nodes, digest {r.digest}"
        if r.pause_ms is not None else
        f"equal to the WAL's replay at the applied position: {r.rows:,} nodes, digest "
        f"{r.digest}; switch the service's reads to the new store", *r.notes,
        f"run directory {config.resolved_run_dir}",
    ])


def cutover(
    run_dir: Annotated[Path, typer.Argument(help="Run directory of an online migration.")],
    as_json: JsonOpt = False,
) -> None:
    """Ask an online migration started with --postpone-cutover to cut over now.

    Example: dualmem-bulk cutover nodes.lance.run
    """
    from dualmem_bulk.online.cutover import request_cutover

    report = call(lambda: request_cutover(run_dir), as_json)
    emit(report.as_dict(), as_json, [f"{run_dir}: cut-over {report.status}"])
