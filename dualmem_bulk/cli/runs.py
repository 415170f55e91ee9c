"""The commands on a run directory: ``verify``, ``status``, ``rollback`` and ``finalize``
(:mod:`dualmem_bulk.run.modes` does each for the run's mode)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dualmem_bulk.cli.calls import call, call_with_progress, confirm, emit
from dualmem_bulk.cli.options import (
    EngineOpt,
    JsonOpt,
    QuietOpt,
    SchedulerOpt,
    WorkersOpt,
    YesOpt,
)
from dualmem_bulk.cli.text import status_lines

__all__ = ["finalize", "rollback", "status", "verify"]


def verify(
    run_dir: Annotated[Path, typer.Argument(help="The run directory of a conversion.")],
    workers: WorkersOpt = None,
    engine: EngineOpt = "local",
    scheduler: SchedulerOpt = None,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Recompute every target row's checksum and compare with the snapshot; exit 1 if any differ.

    Example: dualmem-bulk verify nodes.lance.run --json
    """
    from dualmem_bulk.run.modes import verify_run

    report = call_with_progress(lambda progress: verify_run(
        run_dir, progress, engine=engine, workers=workers, scheduler=scheduler), as_json, quiet)
    lines = [report.summary()]
    lines += [f"  not checked: {what}" for what in report.not_checked]
    lines += [f"  {m['id']!r}: {m['problem']}" for m in report.mismatches]
    if report.mismatched > len(report.mismatches):
        lines.append(f"  ... and {report.mismatched - len(report.mismatches)} more")
    emit({"status": "ok" if report.ok else "differs", **report.as_dict()}, as_json, lines)
    if not report.ok:
        raise typer.Exit(1)


def status(
    run_dir: Annotated[Path, typer.Argument(help="The run directory of a conversion.")],
    as_json: JsonOpt = False,
) -> None:
    """Say where a run stands: state, progress, last checkpoint, rate, ETA, lock holder, and
    whether rollback is still possible.

    Example: dualmem-bulk status nodes.lance.run
    """
    from dualmem_bulk.run.modes import run_status

    info = call(lambda: run_status(run_dir), as_json)
    emit(info.as_dict(), as_json, status_lines(info))


def rollback(
    run_dir: Annotated[Path, typer.Argument(help="The run directory of the run to undo.")],
    yes: YesOpt = False,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Undo a run: restore the state before it, and prove it with the snapshot's digest.

    A copy run's target and staging store are removed and its source is checked unchanged; an
    in-place run's legacy store is put back (its backup, its Lance pre-migration version, or a
    rebuild from the snapshot). Works on finished, failed or crashed runs and finishes a
    crashed rollback; refused once the run is finalized, and refused with exit 1 (nothing
    changed) if the snapshot fails its checksums. Asks first unless --yes is given.

    Example: dualmem-bulk rollback nodes.lance.run --yes
    """
    from dualmem_bulk.run.modes import rollback_plan, rollback_run

    plan = call(lambda: rollback_plan(run_dir), as_json)
    if not yes:
        call(lambda: confirm(f"Roll back: {plan}?", "--yes"), as_json)
    report = call_with_progress(lambda progress: rollback_run(run_dir, progress), as_json,
                                quiet)
    r = report
    lines = [f"{r.status}: {r.run_dir} ({r.mode} run, was {r.state_before}) in {r.elapsed_s:.1f} s"]
    lines += [f"  removed {path}" for path in r.removed]
    if r.restored_from:
        lines.append(f"  restored {r.source} from {r.restored_from}")
    if r.proven_digest:
        lines.append(f"  {r.proven_rows:,} rows, digest {r.proven_digest} = the snapshot's")
    if r.mode == "copy" and r.source_untouched:
        lines.append(f"  source {r.source} untouched")
    lines += [f"  note: {note}" for note in r.notes]
    emit(r.as_dict(), as_json, lines)


def finalize(
    run_dir: Annotated[Path, typer.Argument(help="The run directory of a finished run.")],
    drop_snapshot: Annotated[bool, typer.Option(
        help="Also remove the snapshot, once the decision is recorded.")] = False,
    remove_legacy: Annotated[bool, typer.Option(
        help="Online runs: also remove the legacy store.")] = False,
    yes: YesOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Keep the new store of a finished run: record the decision, then remove the in-place
    legacy backup (or Lance pre-migration tag). Rollback is refused from then on. For an
    online run the service then writes to the new store alone, the change log is trimmed, and
    the legacy store is kept unless --remove-legacy. Asks first unless --yes is given (it
    cannot be undone).

    Example: dualmem-bulk finalize nodes.lance.run --drop-snapshot --yes
    """
    from dualmem_bulk.run.modes import finalize_plan, finalize_run

    plan = call(lambda: finalize_plan(run_dir, drop_snapshot, remove_legacy), as_json)
    if plan and not yes:
        call(lambda: confirm(f"Finalize: {plan}?", "--yes"), as_json)
    report = call(lambda: finalize_run(run_dir, drop_snapshot, remove_legacy), as_json)
    lines = [f"finalized: {report.run_dir} keeps {report.target}; rollback is no longer possible"]
    lines += [f"  removed {path}" for path in report.removed]
    if report.legacy_kept:
        lines.append(f"  the legacy store {report.legacy_kept} is kept (it takes no more "
                     "writes); remove it with finalize --remove-legacy")
    if not report.snapshot_dropped:
        lines.append("  the snapshot is kept; remove it with finalize --drop-snapshot")
    emit(report.as_dict(), as_json, lines)
