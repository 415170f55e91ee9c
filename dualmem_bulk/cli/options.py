"""The options several commands share."""

from __future__ import annotations

from typing import Annotated, Literal

import typer

__all__ = ["EngineOpt", "JsonOpt", "QuietOpt", "SchedulerOpt", "SpaceOpt", "WorkersOpt",
           "YesOpt"]

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
