"""The Dask engine: the local engine's output byte for byte, through killed workers, a killed
and resumed driver (on either engine), an existing cluster, and without the extra installed."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import assert_bit_equal, fingerprint, kill_after_units, legacy_table
from distributed import Client, LocalCluster, Worker, WorkerPlugin
from test_e2e_crash import start, wait_for
from test_offline_place import legacy_store
from typer.testing import CliRunner

from dualmem_bulk import rollback_run
from dualmem_bulk.cli import app
from dualmem_bulk.engines import DASK_HINT, open_pool
from dualmem_bulk.engines.dask import DaskPool, UnreadableOnWorker, run_task
from dualmem_bulk.errors import SourceError, UsageError
from dualmem_bulk.generate import write_generated
from dualmem_bulk.offline.partition_task import PartitionTask, export_partition
from dualmem_bulk.offline.run import OfflineConfig, run_offline
from dualmem_bulk.rundir.run_report import RunReport
from dualmem_bulk.sources.parquet import ParquetPart
from dualmem_bulk.sources.scan import scan_source
from dualmem_bulk.stores import TargetStore

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "data" / "fixtures"
EXPECTED = json.loads((FIXTURES / "expected.json").read_text())["files"]


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    """A local cluster of 2 worker processes, shared by the tests that pass ``--scheduler``."""
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address="127.0.0.1:0", silence_logs=logging.ERROR) as local:
        yield str(local.scheduler_address)


def _convert(src: Path, target: Path, **options: Any) -> tuple[RunReport, pa.Table]:
    report = run_offline(OfflineConfig(source=src, target=target, **options))
    assert report.status == "done" and report.verified
    return report, pa.Table.from_batches(list(TargetStore(target).batches(1000)))


def _same_as_local(src: Path, tmp_path: Path, fmt: str, batch_size: int,
                   **dask: Any) -> RunReport:
    """Convert ``src`` with both engines; the target rows must be equal bit for bit."""
    local, want = _convert(src, tmp_path / f"local-{fmt}-{batch_size}", target_format=fmt,
                           batch_size=batch_size, workers=0)
    report, got = _convert(src, tmp_path / f"dask-{fmt}-{batch_size}", target_format=fmt,
                           batch_size=batch_size, engine="dask", **dask)
    assert report.engine == "dask" and local.engine == "local"
    assert report.target_digest == local.target_digest == local.snapshot_digest
    assert report.nodes_converted == local.nodes_converted
    assert_bit_equal(got, want)
    return report


@pytest.mark.parametrize("name", ["clean.parquet", "extreme.parquet", "invalid.parquet",
                                  "clean.jsonl"])
@pytest.mark.parametrize(("fmt", "batch_size"), [("lance", 4), ("parquet", 7)])
def test_fixtures_are_the_local_engines_output(cluster: str, tmp_path: Path, name: str,
                                               fmt: str, batch_size: int) -> None:
    report = _same_as_local(FIXTURES / name, tmp_path, fmt, batch_size, scheduler=cluster)
    assert report.target_digest == EXPECTED[name]["digest"]
    assert report.workers == 2  # the cluster's worker threads


def test_engram_wal_spaces_and_episodes_are_the_local_engines(cluster: str,
                                                              tmp_path: Path) -> None:
    root = FIXTURES / "engram-wal" / "engram-data"
    report = _same_as_local(root, tmp_path, "lance", 5, scheduler=cluster)
    assert report.nodes_converted > 5


def test_a_local_cluster_of_any_size_gives_the_same_output(
        tmp_path: Path, sample_rows: list[dict[str, Any]]) -> None:
    rows = sample_rows + [{"id": f"m{i}", "content": f"c{i}" * (i % 50)} for i in range(3000)]
    src = tmp_path / "src.parquet"
    pq.write_table(legacy_table(rows), src, row_group_size=600)
    for workers, batch_size in ((1, 700), (2, 450)):
        report = _same_as_local(src, tmp_path / str(workers), "lance", batch_size,
                                workers=workers)
        assert report.workers == workers and report.nodes_converted == len(rows)


def _task_log(path: Path) -> WorkerPlugin:
    """A worker plugin that appends a line to ``path`` each time a task starts executing or
    finishes on a worker (key, state, worker address, pid). Defined in a function, so it is
    pickled by value: the workers need not import the tests."""

    class TaskLog(WorkerPlugin):
        def setup(self, worker: Worker) -> None:
            self.worker = worker

        def transition(self, key: Any, start: str, finish: str, **kwargs: Any) -> None:
            if finish in ("executing", "memory"):
                line = json.dumps({"key": str(key), "state": finish, "pid": os.getpid(),
                                   "worker": self.worker.address})
                with path.open("a") as fh:
                    fh.write(line + "\n")

    return TaskLog()


def _die_if_busy(record: Path) -> Any:
    """A function for ``Client.run``: on a worker executing a task, record the task and the
    worker in ``record`` and SIGKILL the worker at once (it runs in the worker's event loop, so
    the task cannot have reported its result: it is still executing)."""

    def die(dask_worker: Worker) -> bool:
        busy = sorted(str(ts.key) for ts in dask_worker.state.executing)
        if not busy:
            return False
        record.write_text(json.dumps({"key": busy[0], "pid": os.getpid(),
                                      "worker": dask_worker.address}))
        os.kill(os.getpid(), signal.SIGKILL)
        return True

    return die


class _KillABusyWorker:
    """Progress that, once the first partition is committed, SIGKILLs a worker while it
    executes a partition task (see :func:`_die_if_busy`)."""

    def __init__(self, scheduler: str, record: Path) -> None:
        self.scheduler, self.record, self.after = scheduler, record, 0

    def phase(self, name: str, total: int | None) -> None:
        self.name = name

    def advance(self, nodes: int) -> None:
        if self.name != "export" or not nodes:
            return
        if self.record.exists():
            self.after += 1
            return
        with Client(self.scheduler, set_as_default=False) as client:
            deadline = time.monotonic() + 30
            while not self.record.exists():
                assert time.monotonic() < deadline, "no worker was executing a task"
                for address in sorted(client.scheduler_info()["workers"]):
                    with contextlib.suppress(Exception):  # the killed worker does not answer
                        client.run(_die_if_busy(self.record), workers=[address])
                    if self.record.exists():
                        return
                time.sleep(0.005)

    def done(self) -> None:
        pass

    def message(self, text: str) -> None:
        pass


def test_a_worker_killed_while_running_a_task(cluster: str, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """The killed worker held a running partition task; the task ran again on another worker
    and its partition's rows are in the target exactly once; the output is the local
    engine's."""
    src = tmp_path / "src.parquet"
    write_generated(src, 6000, seed=3, batch_size=300)  # 20 partitions
    local, _rows = _convert(src, tmp_path / "local.lance", batch_size=300, workers=0)
    units: dict[str, int] = {}
    submit = DaskPool._submit

    def recorded(self: DaskPool, fn: Any, spec: Any) -> Any:
        future = submit(self, fn, spec)
        if isinstance(spec, PartitionTask):
            units[str(future._future.key)] = spec.unit
        return future

    monkeypatch.setattr(DaskPool, "_submit", recorded)
    log, record = tmp_path / "tasks.jsonl", tmp_path / "killed.json"
    killer = _KillABusyWorker(cluster, record)
    target = tmp_path / "dask.lance"
    with Client(cluster, set_as_default=False) as client:
        client.register_plugin(_task_log(log), name="task-log")
        try:
            report = run_offline(OfflineConfig(source=src, target=target, batch_size=300,
                                               engine="dask", scheduler=cluster), killer)
        finally:
            client.unregister_worker_plugin("task-log")
        client.wait_for_workers(2, timeout=60)  # the nanny replaced the worker
        killed = json.loads(record.read_text())
        assert killed["pid"] not in client.run(os.getpid).values()
    assert killer.after >= 10  # killed with most units still to come

    key = killed["key"]
    assert key in units, "the killed worker was running a partition task"
    runs = [json.loads(line) for line in log.read_text().splitlines()]
    runs = [r for r in runs if r["key"] == key]
    on_killed = [r["state"] for r in runs if r["pid"] == killed["pid"]]
    assert on_killed == ["executing"]  # started there, never finished there
    retried = [r for r in runs if r["pid"] != killed["pid"]]
    assert [r["state"] for r in retried] == ["executing", "memory"]  # run again, elsewhere
    assert retried[0]["worker"] != killed["worker"]

    assert report.verified and report.target_digest == local.target_digest
    digest, ids, stored, recomputed = fingerprint(target)
    base = fingerprint(tmp_path / "local.lance")
    assert digest == base[0] and ids == base[1] and stored == base[2] == recomputed
    unit_ids = _piece_ids(target, units[key])
    assert unit_ids and unit_ids == _piece_ids(tmp_path / "local.lance", units[key])
    counts = Counter(ids)
    assert all(counts[i] == 1 for i in unit_ids)  # the retried unit's rows, exactly once


def _piece_ids(target: Path, piece: int) -> list[bytes]:
    return [i for batch in TargetStore(target).piece_batches(piece, 1000)
            for i in batch.column("id").to_pylist()]


def _cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dualmem_bulk", *map(str, args)],
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=300)


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """A generated source and the local engine's conversion of it (the reference)."""
    base = tmp_path_factory.mktemp("gen")
    src = base / "memories.parquet"
    write_generated(src, 12_000, seed=9, batch_size=1000)  # 12 partitions
    target = base / "local.lance"
    done = _cli("convert", src, target, "--batch-size", "300", "--workers", "0", "--json")
    assert done.returncode == 0, done.stderr
    return src, {"report": json.loads(done.stdout), "fingerprint": fingerprint(target)}


def _processes_with(mark: str) -> list[int]:
    """Live processes whose environment holds ``mark``: a CLI run's driver and its workers."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and mark.encode() in (entry / "environ").read_bytes():
                pids.append(int(entry.name))
        except OSError:  # gone, or not ours
            pass
    return pids


def _marked_run(monkeypatch: pytest.MonkeyPatch) -> str:
    """Mark the processes of the CLI runs this test starts (their workers inherit it)."""
    mark = f"dualmem-test-{uuid.uuid4()}"
    monkeypatch.setenv("DUALMEM_TEST_RUN", mark)
    return mark


def _all_gone(mark: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while _processes_with(mark):
        assert time.monotonic() < deadline, f"left running: {_processes_with(mark)}"
        time.sleep(0.1)


@pytest.mark.parametrize(("first", "then"), [("dask", "local"), ("local", "dask"),
                                             ("dask", "dask")])
def test_a_killed_driver_resumes_on_either_engine(generated: tuple[Path, dict[str, Any]],
                                                  tmp_path: Path, first: str, then: str,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    src, reference = generated
    target = tmp_path / "nodes.lance"
    run_dir = tmp_path / "nodes.lance.run"
    args = ["convert", str(src), str(target), "--batch-size", "300"]
    mark = _marked_run(monkeypatch)
    kill_after_units([*args, "--engine", first, "--workers", "1"], run_dir, 3)
    _all_gone(mark)  # the workers died with their driver
    done = _cli(*args, "--engine", then, "--workers", "2", "--json")
    assert done.returncode == 0, done.stderr
    assert "resuming" in done.stderr
    report = json.loads(done.stdout)
    assert report["verified"] and (report["engine"], report["workers"]) == (then, 2)
    assert report["target_digest"] == reference["report"]["target_digest"]
    assert fingerprint(target) == reference["fingerprint"]


def test_ctrl_c_checkpoints_and_shuts_the_local_cluster_down(
        generated: tuple[Path, dict[str, Any]], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    src, reference = generated
    target = tmp_path / "nodes.lance"
    run_dir = tmp_path / "nodes.lance.run"
    args = ["convert", str(src), str(target), "--batch-size", "300", "--engine", "dask",
            "--workers", "2", "--json"]
    mark = _marked_run(monkeypatch)
    proc = start([sys.executable, "-m", "dualmem_bulk", *args])
    wait_for(proc, run_dir, lambda s: s.state == "exporting" and s.units_committed >= 2)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 4, err
    assert "interrupted by SIGINT" in err and json.loads(out)["status"] == "error"
    _all_gone(mark, timeout=5)  # closed, not left to die
    done = _cli(*args)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["target_digest"] == reference["report"]["target_digest"]
    _all_gone(mark, timeout=5)


def test_an_existing_scheduler_converts_and_verifies(generated: tuple[Path, dict[str, Any]],
                                                     cluster: str, tmp_path: Path) -> None:
    src, reference = generated
    target = tmp_path / "nodes.lance"
    done = _cli("convert", src, target, "--batch-size", "2000", "--engine", "dask",
                "--scheduler", cluster, "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert (report["engine"], report["workers"]) == ("dask", 2)
    assert report["target_digest"] == reference["report"]["target_digest"]
    assert fingerprint(target) == reference["fingerprint"]
    checked = _cli("verify", tmp_path / "nodes.lance.run", "--engine", "dask", "--scheduler",
                   cluster, "--json")
    assert checked.returncode == 0, checked.stderr
    assert json.loads(checked.stdout)["target_rows"] == 12_000
    with Client(cluster, set_as_default=False) as client:  # left running
        assert len(client.nthreads()) == 2
    both = _cli("verify", tmp_path / "nodes.lance.run", "--engine", "dask", "--scheduler",
                cluster, "--workers", "2")
    assert both.returncode == 2 and "--scheduler" in both.stderr


@pytest.mark.parametrize("fmt", ["lance", "parquet"])
def test_in_place_on_the_cluster_then_rollback(cluster: str, tmp_path: Path, fmt: str) -> None:
    store = legacy_store(tmp_path, fmt)
    before = scan_source(store).snapshot_digest
    report = run_offline(OfflineConfig(source=store, target=store, in_place=True,
                                       target_format=fmt,  # type: ignore[arg-type]
                                       batch_size=1000, engine="dask", scheduler=cluster))
    assert report.verified and report.target_digest == before
    assert len(TargetStore(store).pieces()) == 6
    back = rollback_run(Path(f"{store}.run"))
    assert back.status == "rolled-back" and back.proven_digest == before
    assert scan_source(store).snapshot_digest == before


def test_a_worker_that_cannot_read_the_snapshot_is_named(cluster: str, tmp_path: Path) -> None:
    missing = tmp_path / "elsewhere" / "memories.parquet"
    task = PartitionTask(0, ParquetPart(missing, 0, 1, 0, 1), tmp_path, "lance",
                         tmp_path / "staging.lance", 4096, False)
    with Client(cluster, set_as_default=False) as client:
        workers = set(client.nthreads())
        with pytest.raises(UnreadableOnWorker) as raw:
            client.submit(run_task, export_partition, task, pure=False).result()
    assert raw.value.worker.split(" on ")[0] in workers and raw.value.path == str(missing)
    assert raw.value.problem == "no such file or directory"
    with DaskPool(0, cluster) as pool, pytest.raises(SourceError) as err:
        list(pool.ordered(export_partition, [task]))
    assert err.value.exit_code == 3
    assert str(missing) in str(err.value) and "worker tcp://" in str(err.value)
    assert "same paths" in str(err.value)


def test_without_the_extra_dask_says_how_to_install_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed fails
    with pytest.raises(UsageError, match="dask extra") as err:
        open_pool("dask", 2)
    assert err.value.exit_code == 2 and DASK_HINT in str(err.value)
    src = tmp_path / "src.parquet"
    pq.write_table(legacy_table([{"id": "m0"}]), src)
    result = CliRunner().invoke(app, ["convert", str(src), str(tmp_path / "n.lance"),
                                      "--engine", "dask"])
    assert result.exit_code == 2
    assert "pip install 'dualmem-bulk[dask]'" in result.output.replace("\n", "")
    assert not (tmp_path / "n.lance.run").exists() and not (tmp_path / "n.lance").exists()


def test_an_unreachable_scheduler_fails_before_the_export(tmp_path: Path) -> None:
    src = tmp_path / "src.parquet"
    pq.write_table(legacy_table([{"id": "m0"}]), src)
    done = subprocess.run(
        [sys.executable, "-m", "dualmem_bulk", "convert", str(src), str(tmp_path / "n.lance"),
         "--engine", "dask", "--scheduler", "tcp://127.0.0.1:1"],
        capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=120,
        env={**os.environ, "DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT": "1s"})
    assert done.returncode == 2, done.stderr
    assert "cannot start the Dask engine on tcp://127.0.0.1:1" in done.stderr
    assert "export" not in done.stderr  # refused before reading the source
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src.parquet"]


def test_engine_options_that_do_not_fit() -> None:
    with pytest.raises(UsageError, match="scheduler needs engine dask"):
        open_pool("local", None, "tcp://127.0.0.1:8786")
    with pytest.raises(UsageError, match="workers must be at least 1 with engine dask"):
        open_pool("dask", 0)
    assert open_pool("dask", None).workers == 1  # a small run: one worker, not none
    for command in ("convert", "verify"):
        shown = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "300"}).output
        assert "pip install 'dualmem-bulk[dask]'" in shown and "--scheduler" in shown
