"""The commands on a file or store: ``inspect`` and ``index``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dualmem_bulk.cli.calls import call, call_with_progress, emit
from dualmem_bulk.cli.options import JsonOpt, QuietOpt, SpaceOpt
from dualmem_bulk.cli.text import readable

__all__ = ["index", "inspect"]


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
    info = call_with_progress(lambda progress: inspect_path(path, progress, spaces), as_json,
                              quiet).as_dict()
    emit(info, as_json, readable(info))


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

    r = call(lambda: build_index(target, run_dir), as_json)
    emit(r.as_dict(), as_json, [f"indexed: {r.rows:,} rows of {r.target} in {r.seconds:.1f} s "
                                f"({r.kind}, {r.partitions} partitions, version {r.version})"])
