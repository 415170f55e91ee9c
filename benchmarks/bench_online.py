"""Online migration: what the service feels, against the same service without a migration.

A writer process (``--writes-per-s`` stores, a third of them updates) and a reader process
(random ``retrieve`` calls) use the CompatibilityAdapter over a ``BENCH_ONLINE_NODES`` (default
100,000) node MemoryStore; each records its call latencies. ``baseline`` runs them for a few
seconds with no migration; ``online`` runs them while ``dualmem-bulk migrate --online`` copies,
catches up and cuts over, and reports the latencies during the migration (p50, p99), the
cut-over pause and the copy throughput, then ``AFTER_S`` seconds served by the new store
(writes acknowledged in the legacy store's log, applied to Lance in batches; reads from Lance
plus the pending writes), then ``AFTER_S`` seconds after ``finalize`` (writes acknowledged in
the pending store; the legacy store no longer written), each checked against issue 15's
targets as ratios to the baseline of the same run: write p50 <= 3x, read p50 <= 3x, write p99
<= 50 ms. Run: ``make bench`` (or ``pytest benchmarks -k online -o python_files='bench_*.py'``).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from conftest import RESULTS, record

from dualmem_bulk import CompatibilityAdapter, Memory, MemoryStore

NODES = int(os.environ.get("BENCH_ONLINE_NODES", "100000"))
BASELINE_S = 8.0
AFTER_S = float(os.environ.get("BENCH_ONLINE_AFTER_S", "10"))
WRITES_PER_S = 100
READS_PER_S = 500


def _memory(i: int, memory_id: str) -> Memory:
    vector = np.random.default_rng(i).standard_normal(768).astype(np.float32)
    return Memory.with_vector(vector, id=memory_id, activation=0.5, confidence=0.5,
                              last_access=i, access_count=i, created_at=i, content=f"op {i}")


def _worker(role: str, store: Path, run_dir: Path, stop: Path, out: Path) -> None:
    """Call the adapter at a steady rate until ``stop`` exists; dump (start, latency) pairs."""
    with MemoryStore(store, create=False) as base:
        ids = base.all_ids()
    rng = random.Random(role)
    period = 1 / (WRITES_PER_S if role == "writer" else READS_PER_S)
    samples: list[tuple[float, float, bool]] = []
    with CompatibilityAdapter(store, run_dir, busy_timeout_ms=30_000) as adapter:
        i = 0
        while not stop.exists():
            started = time.time()
            mark = time.perf_counter()
            if role == "writer":
                target = rng.choice(ids) if i % 3 == 0 else f"bench-{i}"
                adapter.store(_memory(i, target))
            else:
                adapter.retrieve(rng.choice(ids))
            samples.append((started, time.perf_counter() - mark, adapter.legacy_mode))
            i += 1
            time.sleep(max(0.0, period - (time.perf_counter() - mark)))
    out.write_text(json.dumps(samples))


def _start(role: str, store: Path, run_dir: Path, stop: Path, out: Path
           ) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, __file__, role, str(store), str(run_dir), str(stop),
                             str(out)], cwd=Path(__file__).parent)


def _stats(samples: list[list[Any]], since: float, until: float) -> dict[str, float]:
    ms = np.array([s[1] for s in samples if since <= s[0] < until]) * 1000
    if len(ms) == 0:
        return {"calls": 0}
    return {"calls": len(ms), "p50_ms": round(float(np.percentile(ms, 50)), 2),
            "p99_ms": round(float(np.percentile(ms, 99)), 2),
            "max_ms": round(float(ms.max()), 1)}


class _Service:
    def __init__(self, workdir: Path, store: Path) -> None:
        self.dir = workdir / f"service-{time.time_ns()}"
        self.dir.mkdir()
        self.store = self.dir / "memories.sqlite"
        shutil.copy(store, self.store)
        self.run_dir = self.dir / "nodes.lance.run"
        self.stop = self.dir / "stop"
        self.procs = {role: _start(role, self.store, self.run_dir, self.stop,
                                   self.dir / f"{role}.json") for role in ("writer", "reader")}

    def finish(self) -> dict[str, list[list[Any]]]:
        self.stop.touch()
        for proc in self.procs.values():
            assert proc.wait(timeout=120) == 0
        return {role: json.loads((self.dir / f"{role}.json").read_text())
                for role in self.procs}

    def cleanup(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def test_service_baseline(benchmark: Any, workdir: Path, store: Path) -> None:
    service = _Service(workdir, store)
    time.sleep(1.0)  # let both processes start
    since = time.time()
    benchmark.pedantic(lambda: time.sleep(BASELINE_S), rounds=1, iterations=1)
    until = time.time()
    samples = service.finish()
    service.cleanup()
    record("service_no_migration", NODES, until - since,
           writes=_stats(samples["writer"], since, until),
           reads=_stats(samples["reader"], since, until))


def test_online_migration(benchmark: Any, workdir: Path, store: Path) -> None:
    service = _Service(workdir, store)
    time.sleep(1.0)
    target = service.dir / "nodes.lance"
    since = time.time()

    def migrate() -> dict[str, Any]:
        done = subprocess.run([sys.executable, "-m", "dualmem_bulk", "migrate", "--online",
                               str(service.store), str(target), "--json"],
                              capture_output=True, check=True)
        report: dict[str, Any] = json.loads(done.stdout)
        return report

    report = benchmark.pedantic(migrate, rounds=1, iterations=1)
    until = time.time()
    time.sleep(AFTER_S)  # then served by the new store
    subprocess.run([sys.executable, "-m", "dualmem_bulk", "finalize", str(service.run_dir),
                    "--yes", "--json"], capture_output=True, check=True)
    finalized = time.time()
    time.sleep(AFTER_S)  # then the new store alone takes the writes
    samples = service.finish()
    after = {role: [s for s in samples[role] if s[0] >= until and not s[2]]
             for role in samples}
    service.cleanup()
    record("online_copy", report["nodes_copied"], report["copy_s"],
           pause_ms=report["pause_ms"], changes_in_pause=report["changes_in_pause"],
           changes_applied=report["changes_applied"], migration_s=round(until - since, 1))
    record("service_during_migration", NODES, until - since,
           writes=_stats(samples["writer"], since, until),
           reads=_stats(samples["reader"], since, until))
    phases = {"after_cutover": (until, until + AFTER_S),
              "after_finalize": (finalized, finalized + AFTER_S)}
    ratios = {}
    for phase, (start, end) in phases.items():
        writes, reads = (_stats(after[role], start, end) for role in ("writer", "reader"))
        record(f"service_{phase}", NODES, AFTER_S, writes=writes, reads=reads)
        base = RESULTS.get("service_no_migration")
        if base is None:
            continue  # run alone: no baseline of this run to compare with
        ratios[phase] = {"write_p50_x": round(writes["p50_ms"] / base["writes"]["p50_ms"], 2),
                         "read_p50_x": round(reads["p50_ms"] / base["reads"]["p50_ms"], 2),
                         "write_p99_ms": writes["p99_ms"]}
        record(f"{phase}_vs_legacy", NODES, AFTER_S, **ratios[phase])
    for phase in ratios.values():
        assert phase["write_p50_x"] <= 3 and phase["write_p99_ms"] <= 50, ratios
        assert phase["read_p50_x"] <= 3, ratios


if __name__ == "__main__":
    _worker(sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4]),
            Path(sys.argv[5]))
