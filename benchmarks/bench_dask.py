"""The local engine against Dask on the same data, in the same run.

- ``engine_local``: ``run_offline`` with the local engine's default workers (one per core but
  one, none under 50,000 nodes).
- ``engine_dask_N``: ``run_offline(engine="dask", workers=N)``: a local cluster of N worker
  processes, started and shut down within the measured time.

Each run records its phases (the driver's export, the conversion, the verification) and the
bytes it moved per node (snapshot and target on disk), the figures the scaling estimate in
the Dask section of ``benchmarks/RESULTS.md`` is built from. Every run must give the same
target digest.
``BENCH_NODES`` sets the size (default 100,000 here).

    BENCH_NODES=200000 make bench  # or: pytest benchmarks/bench_dask.py -o python_files=bench_*.py
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import generated, record

from dualmem_bulk.offline.run import OfflineConfig, run_offline

NODES = int(os.environ.get("BENCH_NODES", "100000"))
DIGESTS: set[str] = set()


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() \
        else path.stat().st_size


@pytest.mark.parametrize(("engine", "workers"), [("local", None), ("dask", 1), ("dask", 2)])
def test_engine(benchmark: Any, workdir: Path, fresh: Path, engine: str, workers: int | None
                ) -> None:
    source = generated(workdir, NODES)
    target = fresh / "nodes.lance"
    reports = []

    def run() -> None:
        reports.append(run_offline(OfflineConfig(source=source, target=target,
                                                 engine=engine,  # type: ignore[arg-type]
                                                 workers=workers)))

    started = time.perf_counter()
    benchmark.pedantic(run, rounds=1, iterations=1)
    seconds = time.perf_counter() - started
    report = reports[-1]
    assert report.verified
    DIGESTS.add(report.target_digest)
    assert len(DIGESTS) == 1, "the engines disagree"
    name = f"engine_{engine}" + ("" if workers is None else f"_{workers}")
    record(name, NODES, seconds, workers=report.workers, phases_s=report.phases_s,
           export_nodes_per_s=report.phases["export"]["nodes_per_s"],  # exports and converts
           snapshot_bytes_per_node=round(_size(fresh / "nodes.lance.run" / "snapshot.parquet")
                                         / NODES),
           target_bytes_per_node=round(_size(target) / NODES),
           digest=report.target_digest[:16])
