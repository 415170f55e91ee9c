"""The ``dualmem-bulk`` command line: each command builds a config, calls one library function,
prints its report (text, or one JSON object with ``--json``) and exits with a documented code.

Exit codes: 0 success, 1 verification found differences, 2 usage error, 3 invalid input
(nothing written), 4 interrupted (resumable), 5 another migrator holds the run, 70 internal error.
"""

from __future__ import annotations

import json
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from dualmem_bulk import __version__
from dualmem_bulk.cli_progress import CliProgress
from dualmem_bulk.cli_text import Command, Group, readable, run_lines, status_lines
from dualmem_bulk.errors import DualmemError

app = typer.Typer(cls=Group, no_args_is_help=True)
_err = Console(stderr=True)
T = TypeVar("T")
INTERNAL_ERROR = 70
INVALID_INPUT = 3

JsonOpt = Annotated[bool, typer.Option(
    "--json", help="Print one JSON object on stdout, errors included.")]
QuietOpt = Annotated[bool, typer.Option(
    "--quiet", "-q", help="No progress output on stderr (errors and notes still).")]
YesOpt = Annotated[bool, typer.Option("--yes", help="Do it without asking.")]
SpaceOpt = Annotated[
    list[str] | None,
    typer.Option("--space", metavar="NAME", help="Memory space of an Engram data root "
                                                 "(repeatable; default: every space)."),
]

WorkersOpt = Annotated[int | None, typer.Option(
    min=0, help="Worker processes beside this one; 0 does everything in this process (the "
                "least memory). Default: one per core less the one this process keeps busy; "
                "none under 50,000 nodes. With --engine dask: the local cluster's workers "
                "(at least 1; not with --scheduler). The output is the same for any number.")]
EngineOpt = Annotated[Literal["local", "dask"], typer.Option(
    help="Where the tasks run: local processes, or a Dask cluster (needs "
         "pip install 'dualmem-bulk\\[dask]'). The output is the same.")]
SchedulerOpt = Annotated[str | None, typer.Option(
    metavar="ADDRESS",
    help="With --engine dask: the scheduler of an existing cluster (tcp://HOST:8786), whose "
         "workers must see the run's paths; default: a local cluster of --workers processes.")]


def _show_version(value: bool) -> None:
    if value:
        print(f"dualmem-bulk {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: Annotated[bool, typer.Option(
        "--version", callback=_show_version, is_eager=True,
        help="Print the version and exit.")] = False) -> None:
    """Migrate Engram Memory stores to DualMemoryNode: fast, crash-safe, verifiable."""


def _snapshot_rows(run_dir: Path) -> int:
    """Nodes in a run's snapshot (0 if unknown): sizes the worker pool of ``verify``."""
    from dualmem_bulk.journal import Journal

    if not Journal.exists(run_dir):
        return 0
    journal = Journal.open(run_dir)
    try:
        snapshot = journal.get("snapshot")
    finally:
        journal.close()
    return int(snapshot["rows"]) if snapshot else 0


def _fail(message: str, exit_code: int, error_type: str, as_json: bool,
          label: str = "error") -> typer.Exit:
    """Say what went wrong in one line on stderr (and, with ``--json``, one
    ``{"status": "error", ...}`` object on stdout); the exit to raise."""
    _err.print(f"[bold red]{label}:[/] {escape(message)}", highlight=False, soft_wrap=True)
    if as_json:
        print(json.dumps({"status": "error", "error": message, "exit_code": exit_code,
                          "error_type": error_type, "tool_version": __version__},
                         sort_keys=True))
    return typer.Exit(exit_code)


def _run(call: Callable[[], T], as_json: bool) -> T:
    """Run a library call, turning its errors into one line and an exit code. An operating
    system's refusal (permission denied, a name too long...) is not a bug: exit 3."""
    try:
        return call()
    except DualmemError as exc:
        raise _fail(str(exc), exc.exit_code, type(exc).__name__, as_json) from exc
    except KeyboardInterrupt:
        raise _fail("interrupted", 4, "KeyboardInterrupt", as_json) from None
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        raise _fail(f"{where}{exc.strerror or exc}", INVALID_INPUT, type(exc).__name__,
                    as_json) from exc
    except Exception as exc:  # an unexpected failure: say so, keep the traceback
        traceback.print_exc()
        raise _fail(str(exc), INTERNAL_ERROR, type(exc).__name__, as_json,
                    "internal error") from exc


def _with_progress(call: Callable[[CliProgress], T], as_json: bool, quiet: bool) -> T:
    """:func:`_run` with a progress display that is always closed."""
    progress = CliProgress(_err, quiet)

    def closed() -> T:  # the display ends before an error's line, which comes last
        try:
            return call(progress)
        finally:
            progress.done()

    return _run(closed, as_json)


def _usage(text: str, as_json: bool) -> None:
    raise _fail(text, 2, "UsageError", as_json, "usage error")


def _emit(data: dict[str, Any], as_json: bool, lines: list[str]) -> None:
    if as_json:
        print(json.dumps({**data, "tool_version": __version__}, sort_keys=True, default=str))
    else:
        for line in lines:
            print(line)


@app.command(cls=Command)
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
    rows = _run(lambda: write_generated(out, nodes, seed, fmt=fmt), as_json)
    elapsed = time.perf_counter() - started
    _emit({"status": "done", "path": str(out), "nodes": rows, "format": fmt,
           "elapsed_s": round(elapsed, 3)}, as_json,
          [f"wrote {rows:,} nodes to {out} ({fmt}) in {elapsed:.1f} s"])


@app.command(cls=Command)
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
    from dualmem_bulk.dry_run import NO_GO_EXIT
    from dualmem_bulk.offline import DEFAULT_BATCH_SIZE, OfflineConfig, run_offline

    if in_place and target not in (None, source):
        _usage("--in-place converts SOURCE itself; do not give a TARGET", as_json)
    if target is None and not in_place:
        _usage("missing TARGET (or pass --in-place to convert SOURCE itself)", as_json)
    config = OfflineConfig(
        source=source, target=target or source, run_dir=run_dir, target_format=target_format,
        in_place=in_place,
        batch_size=batch_size or DEFAULT_BATCH_SIZE, strict=strict, dry_run=dry_run,
        spaces=tuple(space or ()), checkpoint_every=checkpoint_every, restart=restart,
        workers=workers, engine=engine, scheduler=scheduler,
    )
    if restart and not yes:
        question = _run(lambda: _restart_question(config.resolved_run_dir), as_json)
        if question:
            _run(lambda: _confirm(question, "--restart --yes"), as_json)
    report = _with_progress(lambda progress: run_offline(config, progress, keep_free),
                            as_json, quiet)
    _emit(report.as_dict(), as_json, run_lines(report, dry_run))
    if report.decision == "no-go":
        raise typer.Exit(NO_GO_EXIT)


@app.command(cls=Command)
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
    from dualmem_bulk.export import export_snapshot

    spaces = tuple(space or ())
    report = _with_progress(lambda progress: export_snapshot(
        source, snapshot, spaces=spaces, strict=strict, progress=progress), as_json, quiet)
    _emit(report.as_dict(), as_json, [
        f"exported {report.snapshot_rows:,} of {report.nodes_in:,} nodes to {snapshot} in "
        f"{report.elapsed_s:.1f} s; {report.quarantined:,} quarantined",
        f"snapshot digest {report.snapshot_digest}",
    ])


@app.command(cls=Command)
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
    from dualmem_bulk.engines import open_pool
    from dualmem_bulk.verify import VerifyReport, verify_run

    def check(progress: CliProgress) -> VerifyReport:
        with open_pool(engine, workers, scheduler, rows=_snapshot_rows(run_dir),
                       driver_busy=False) as pool:
            return verify_run(run_dir, progress, pool=pool)

    report = _with_progress(check, as_json, quiet)
    lines = [report.summary()]
    lines += [f"  not checked: {what}" for what in report.not_checked]
    lines += [f"  {m['id']!r}: {m['problem']}" for m in report.mismatches]
    if report.mismatched > len(report.mismatches):
        lines.append(f"  ... and {report.mismatched - len(report.mismatches)} more")
    _emit({"status": "ok" if report.ok else "differs", **report.as_dict()}, as_json, lines)
    if not report.ok:
        raise typer.Exit(1)


@app.command(cls=Command)
def status(
    run_dir: Annotated[Path, typer.Argument(help="The run directory of a conversion.")],
    as_json: JsonOpt = False,
) -> None:
    """Say where a run stands: state, progress, last checkpoint, rate, ETA, lock holder, and
    whether rollback is still possible.

    Example: dualmem-bulk status nodes.lance.run
    """
    from dualmem_bulk.status import run_status

    info = _run(lambda: run_status(run_dir), as_json)
    _emit(info, as_json, status_lines(info))


@app.command(cls=Command)
def inspect(
    path: Annotated[Path, typer.Argument(help="File, store, Engram data root or run directory.")],
    space: SpaceOpt = None,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Say what a file or store is: legacy or dual, schema version, nodes by type, digest.

    Example: dualmem-bulk inspect nodes.lance
    """
    from dualmem_bulk.inspect import inspect_path

    spaces = tuple(space or ())
    info = _with_progress(lambda progress: inspect_path(path, progress, spaces), as_json, quiet)
    _emit(info, as_json, readable(info))


@app.command(cls=Command)
def index(
    target: Annotated[Path, typer.Argument(help="A DualMemoryNode Lance store.")],
    run_dir: Annotated[Path | None, typer.Option(
        help="Its online run's directory (default: TARGET.run, if there is one).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Build the ANN index on embedding (IVF_FLAT, cosine) that search uses; again: rebuild
    it from every row. For an online run's store, under the run's writer lock.

    Example: dualmem-bulk index nodes.lance
    """
    from dualmem_bulk.vector_index import build_index

    r = _run(lambda: build_index(target, run_dir), as_json)
    _emit(r.as_dict(), as_json, [f"indexed: {r.rows:,} rows of {r.target} in {r.seconds:.1f} s "
                                 f"({r.kind}, {r.partitions} partitions, version {r.version})"])


def _confirm(question: str, flags: str) -> None:
    """Ask on a terminal; without one, or on "no", refuse (a usage error: nothing changed)."""
    from dualmem_bulk.errors import UsageError

    if not sys.stdin.isatty():
        raise UsageError(f"no terminal to ask for confirmation; pass {flags} to go ahead. "
                         "Nothing was changed")
    try:
        confirmed = typer.confirm(question, default=False, err=True)
    except typer.Abort:  # Ctrl-C or end of input at the prompt
        confirmed = False
    if not confirmed:
        raise UsageError("not confirmed; nothing was changed")


def _restart_question(run_dir: Path) -> str | None:
    """What ``--restart`` would discard, as a question (``None``: no run there, or a finalized
    one, which the run refuses)."""
    from dualmem_bulk.journal import Journal

    if not Journal.exists(run_dir):
        return None
    journal = Journal.open(run_dir)
    try:
        if journal.state == "finalized":
            return None
        created = " and the target it created" if journal.get("target_created") else ""
        return (f"Discard the {journal.state} run in {run_dir} (its journal, snapshot, "
                f"quarantine{created}: {journal.get('target')}) and start again?")
    finally:
        journal.close()


@app.command(cls=Command)
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
    from dualmem_bulk.rollback import rollback_plan, rollback_run

    plan = _run(lambda: rollback_plan(run_dir), as_json)
    if not yes:
        _run(lambda: _confirm(f"Roll back: {plan}?", "--yes"), as_json)
    report = _with_progress(lambda progress: rollback_run(run_dir, progress), as_json, quiet)
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
    _emit(r.as_dict(), as_json, lines)


@app.command(cls=Command)
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
    from dualmem_bulk.rollback import finalize_plan, finalize_run

    plan = _run(lambda: finalize_plan(run_dir, drop_snapshot, remove_legacy), as_json)
    if plan and not yes:
        _run(lambda: _confirm(f"Finalize: {plan}?", "--yes"), as_json)
    report = _run(lambda: finalize_run(run_dir, drop_snapshot, remove_legacy), as_json)
    lines = [f"finalized: {report.run_dir} keeps {report.target}; rollback is no longer possible"]
    lines += [f"  removed {path}" for path in report.removed]
    if report.legacy_kept:
        lines.append(f"  the legacy store {report.legacy_kept} is kept (it takes no more "
                     "writes); remove it with finalize --remove-legacy")
    if not report.snapshot_dropped:
        lines.append("  the snapshot is kept; remove it with finalize --drop-snapshot")
    _emit(report.as_dict(), as_json, lines)


@app.command(cls=Command)
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
    from dualmem_bulk.online import OnlineConfig, run_online

    if not online:
        _usage("migrate needs --online (an offline migration is `dualmem-bulk convert`)",
               as_json)
    config = OnlineConfig(store=store, target=target, run_dir=run_dir, batch_size=batch_size,
                          target_batch_s=target_batch_s, max_rate=max_rate,
                          cutover_lag=cutover_lag, postpone_cutover=postpone_cutover)
    r = _with_progress(lambda progress: run_online(config, progress), as_json, quiet)
    _emit(r.as_dict(), as_json, [
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


@app.command(cls=Command)
def cutover(
    run_dir: Annotated[Path, typer.Argument(help="Run directory of an online migration.")],
    as_json: JsonOpt = False,
) -> None:
    """Ask an online migration started with --postpone-cutover to cut over now.

    Example: dualmem-bulk cutover nodes.lance.run
    """
    from dualmem_bulk.online_cutover import request_cutover

    info = _run(lambda: request_cutover(run_dir), as_json)
    _emit(info, as_json, [f"{run_dir}: cut-over {info['status']}"])


def main() -> None:
    """Console-script entry point: with ``--json``, even a usage error or a bug prints one
    JSON object on stdout."""
    from dualmem_bulk._pool import tune_malloc

    tune_malloc()
    as_json = "--json" in sys.argv[1:]
    try:
        code = app(standalone_mode=False, prog_name="dualmem-bulk")
    except typer.TyperException as exc:  # usage errors, as click raises them
        code = exc.exit_code
        no_command = type(exc).__name__ == "NoArgsIsHelpError"
        if not as_json:
            exc.show()  # type: ignore[attr-defined]  # every usage error has it
        else:
            _fail("no command given" if no_command else exc.format_message(), code,
                  type(exc).__name__, as_json, "usage error")
    except typer.Abort:  # Ctrl-C or end of input at a prompt
        code = _fail("not confirmed; nothing was changed", 2, "Abort", as_json).exit_code
    except Exception as exc:  # a bug outside a library call
        traceback.print_exc()
        code = _fail(str(exc), INTERNAL_ERROR, type(exc).__name__, as_json,
                     "internal error").exit_code
    sys.exit(code if isinstance(code, int) else 0)
