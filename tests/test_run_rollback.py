"""Rollback and finalize of copy-mode runs, on real files and through real processes: after a
finished run, after a SIGKILL, a crashed rollback re-run, a damaged snapshot, the confirmation,
the lock, and finalize."""

from __future__ import annotations

import json
import os
import pty
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from conftest import kill_after_units, read_snapshot

from dualmem_bulk import finalize_run, rollback_run, run_status
from dualmem_bulk.errors import UsageError, VerificationFailed
from dualmem_bulk.generate import write_generated
from dualmem_bulk.offline.run import OfflineConfig, run_offline
from dualmem_bulk.rundir.journal import Journal
from dualmem_bulk.sources.scan import scan_source


def cli(*args: str | Path, stdin: int | None = subprocess.DEVNULL
        ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dualmem_bulk", *map(str, args)],
                          capture_output=True, text=True, stdin=stdin, timeout=300)


def as_json(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    data = json.loads(done.stdout)
    assert isinstance(data, dict)
    return data


def state(run_dir: Path) -> str:
    journal = Journal.open(run_dir)
    try:
        return journal.state
    finally:
        journal.close()


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("small") / "memories.parquet"
    write_generated(path, 2000, seed=3)
    return path


@pytest.fixture(scope="module")
def large(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("large") / "memories.parquet"
    write_generated(path, 40_000, seed=4, batch_size=1000)
    return path


def converted(src: Path, tmp_path: Path, fmt: str = "lance") -> tuple[Path, Path]:
    target = tmp_path / "nodes.out"
    report = run_offline(OfflineConfig(source=src, target=target, target_format=fmt,  # type: ignore[arg-type]
                                       batch_size=500))
    assert report.status == "done"
    return target, tmp_path / "nodes.out.run"


@pytest.mark.parametrize("fmt", ["lance", "parquet"])
def test_rollback_of_a_finished_run(small: Path, tmp_path: Path, fmt: str) -> None:
    before = small.read_bytes()
    target, run_dir = converted(small, tmp_path, fmt)
    report = rollback_run(run_dir)
    assert not target.exists() and not (tmp_path / ".nodes.out.dualmem-partial").exists()
    assert report.status == "rolled-back" and report.state_before == "done"
    assert report.snapshot_checked and report.source_untouched
    assert report.proven_digest == report.snapshot_digest == scan_source(small).snapshot_digest
    assert report.proven_rows == 2000 and report.removed == [str(target.resolve())]
    assert small.read_bytes() == before
    assert state(run_dir) == "rolled-back"
    assert json.loads((run_dir / "rollback.json").read_text()) == report.as_dict()
    status = run_status(run_dir)
    assert status.state == "rolled-back" and not status.rollback_possible
    again = rollback_run(run_dir)  # a second rollback changes nothing
    assert again.as_dict() == report.as_dict()


def test_rollback_after_sigkill_with_partitions_committed(large: Path, tmp_path: Path) -> None:
    target, run_dir = tmp_path / "nodes.lance", tmp_path / "nodes.lance.run"
    kill_after_units(["convert", str(large), str(target),
         "--batch-size", "1000"], run_dir, 2)
    status = as_json(cli("status", run_dir, "--json"))
    assert status["state"] == "exporting" and not status["running"]
    assert status["units_committed"] >= 2 and status["rollback_possible"]
    assert (tmp_path / ".nodes.lance.dualmem-partial").exists()
    assert len(list((run_dir / "snapshot.parquet").glob("part-*.parquet"))) >= 2

    done = cli("rollback", run_dir, "--yes", "--json")
    assert done.returncode == 0, done.stderr
    report = as_json(done)
    assert report["status"] == "rolled-back" and report["state_before"] == "exporting"
    assert report["source_untouched"] is True
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nodes.lance.run"]
    assert as_json(cli("status", run_dir, "--json"))["state"] == "rolled-back"


def test_rollback_of_a_run_killed_during_its_export(large: Path, tmp_path: Path) -> None:
    target, run_dir = tmp_path / "nodes.lance", tmp_path / "nodes.lance.run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "dualmem_bulk", "convert", str(large), str(target)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not any(run_dir.glob("snapshot.parquet/.part-000000.parquet.tmp-*")):
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.01)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    report = rollback_run(run_dir)
    assert report.state_before == "exporting" and report.source_untouched is True
    assert not report.snapshot_checked and report.proven_digest is None
    assert not any(run_dir.glob("**/.*.tmp-*")) and not target.exists()
    assert state(run_dir) == "rolled-back"


def test_a_crashed_rollback_is_run_again(small: Path, tmp_path: Path) -> None:
    target, run_dir = converted(small, tmp_path)
    trash = tmp_path / ".nodes.out.dualmem-trash"
    os.replace(target, trash)  # crashed between moving the target aside and deleting it
    journal = Journal.open(run_dir)
    journal.set_state("rolling-back", "rollback from done", rollback_from="done",
                      rollback_target_ours=True, rollback_steps=[])
    journal.close()
    report = rollback_run(run_dir)
    assert report.status == "rolled-back" and report.state_before == "done"
    assert not trash.exists() and not target.exists()
    assert report.proven_digest == report.snapshot_digest
    assert state(run_dir) == "rolled-back"


def test_the_target_is_recognised_when_the_crash_hid_it(small: Path, tmp_path: Path) -> None:
    """Renamed into place, then killed before the journal said so: still this run's target."""
    target, run_dir = converted(small, tmp_path)
    journal = Journal.open(run_dir)
    journal.set_state("converting", "as after a crash", phase="converting", target_created=False)
    journal.close()
    rollback_run(run_dir)
    assert not target.exists()


def _rewrite_snapshot(run_dir: Path, change: str) -> None:
    """Damage the snapshot: one bit of one row's field in the kept source bytes (the snapshot
    part of a Parquet source is a sidecar naming them), or one row gone from the part."""
    path = run_dir / "snapshot.parquet" / "part-000000.parquet"  # the small source's only part
    table, kept = pq.read_table(path), pq.ParquetFile(path).metadata.metadata
    if change == "field":
        copy = run_dir / "snapshot.parquet" / kept[b"dualmem.snapshot.copy"].decode()
        rows = pq.read_table(copy)
        counts = rows.column("access_count").to_numpy().copy()
        counts[7] ^= 1  # one bit of one row's field; its stored checksum stays
        rows = rows.set_column(rows.schema.get_field_index("access_count"),
                               rows.schema.field("access_count"),
                               pa.array(counts, rows.schema.field("access_count").type))
        pq.write_table(rows, copy, row_group_size=pq.ParquetFile(copy).metadata.row_group(0)
                       .num_rows)
        return
    # a whole row gone: every remaining row is sound, the digest is not
    table = table.filter(pc.not_equal(table.column("id"), table.column("id")[3]))
    pq.write_table(table.replace_schema_metadata(kept), path)


@pytest.mark.parametrize("change", ["field", "row"])
def test_a_damaged_snapshot_refuses_and_changes_nothing(small: Path, tmp_path: Path,
                                                        change: str) -> None:
    target, run_dir = converted(small, tmp_path)
    _rewrite_snapshot(run_dir, change)
    listing = sorted(p.name for p in target.rglob("*"))
    done = cli("rollback", run_dir, "--yes", "--json")
    assert done.returncode == 1, done.stderr
    error = as_json(done)["error"]
    assert "snapshot.parquet" in error and "nothing was changed" in error
    if change == "field":
        victim = read_snapshot(run_dir / "snapshot.parquet").column("id")[7].as_py()
        assert "1 row(s) differ" in error and repr(victim) in error
    else:
        assert "1999 rows" in error and "2000 rows" in error
    assert sorted(p.name for p in target.rglob("*")) == listing
    assert state(run_dir) == "done" and not (run_dir / "rollback.json").exists()


def test_a_changed_source_fails_the_proof(small: Path, tmp_path: Path) -> None:
    src = tmp_path / "src.parquet"
    src.write_bytes(small.read_bytes())
    target, run_dir = converted(src, tmp_path)
    table = pq.read_table(src)
    pq.write_table(table.slice(1), src)
    with pytest.raises(VerificationFailed, match=r"src\.parquet: the source holds 1999 valid"):
        rollback_run(run_dir)
    assert not target.exists()
    assert state(run_dir) == "rolling-back"
    assert json.loads((run_dir / "rollback.json").read_text())["source_untouched"] is False
    pq.write_table(table, src)  # the operator puts the source back: the re-run proves it
    assert rollback_run(run_dir).source_untouched is True


def test_without_yes_and_without_a_terminal_it_refuses(small: Path, tmp_path: Path) -> None:
    target, run_dir = converted(small, tmp_path)
    done = cli("rollback", run_dir)
    assert done.returncode == 2
    assert "pass --yes" in done.stderr and "Nothing was changed" in done.stderr
    assert target.exists() and state(run_dir) == "done"


def _on_terminal(args: list[str], answer: bytes) -> tuple[int, str]:
    """Run the CLI with a pseudo-terminal as stdin, answer its question, return (code, stderr)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "dualmem_bulk", *args], stdin=slave,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    os.close(slave)
    try:
        os.write(master, answer)
        _out, err = proc.communicate(timeout=120)
    finally:
        os.close(master)
    return proc.returncode, err


def test_on_a_terminal_it_asks(small: Path, tmp_path: Path) -> None:
    target, run_dir = converted(small, tmp_path)
    code, err = _on_terminal(["rollback", str(run_dir)], b"n\n")
    assert code == 2 and "Roll back: remove" in err and "not confirmed" in err
    assert target.exists() and state(run_dir) == "done"
    code, err = _on_terminal(["rollback", str(run_dir)], b"y\n")
    assert code == 0, err
    assert not target.exists() and state(run_dir) == "rolled-back"


def test_finalize_then_rollback_is_refused(small: Path, tmp_path: Path) -> None:
    target, run_dir = converted(small, tmp_path)
    done = cli("finalize", run_dir, "--yes", "--json")
    assert done.returncode == 0, done.stderr
    assert as_json(done)["status"] == "finalized" and as_json(done)["snapshot_dropped"] is False
    assert state(run_dir) == "finalized" and (run_dir / "snapshot.parquet").exists()
    assert not run_status(run_dir).rollback_possible
    refused = cli("rollback", run_dir, "--yes")
    assert refused.returncode == 2 and "finalized" in refused.stderr
    assert target.exists()
    with pytest.raises(UsageError, match="finalized"):
        rollback_run(run_dir)


def test_finalize_drop_snapshot(small: Path, tmp_path: Path) -> None:
    target, run_dir = converted(small, tmp_path)
    done = cli("finalize", run_dir, "--drop-snapshot", "--yes")
    assert done.returncode == 0, done.stderr
    assert "snapshot.parquet" in done.stdout
    assert not (run_dir / "snapshot.parquet").exists() and target.exists()
    journal = Journal.open(run_dir)
    assert journal.state == "finalized" and journal.values["finalize"]["snapshot_dropped"]
    journal.close()


def test_finalize_later_drops_the_snapshot(small: Path, tmp_path: Path) -> None:
    _target, run_dir = converted(small, tmp_path)
    assert not finalize_run(run_dir).snapshot_dropped
    report = finalize_run(run_dir, drop_snapshot=True)
    assert report.snapshot_dropped and report.removed == [str(run_dir / "snapshot.parquet")]


@pytest.mark.parametrize(("current", "advice"), [
    ("converting", "rollback"), ("rolling-back", "again to finish it"),
    ("rolled-back", "no new store to keep"),
])
def test_finalize_needs_a_finished_run(small: Path, tmp_path: Path, current: str,
                                       advice: str) -> None:
    _target, run_dir = converted(small, tmp_path)
    journal = Journal.open(run_dir)
    journal.set_state(current)  # type: ignore[arg-type]
    journal.close()
    with pytest.raises(UsageError, match=advice):
        finalize_run(run_dir)
    assert (run_dir / "snapshot.parquet").exists() and state(run_dir) == current


_HOLD = """
import sys, time
from pathlib import Path
from dualmem_bulk.rundir.journal import RunLock
with RunLock(Path(sys.argv[1])):
    print("locked", flush=True)
    time.sleep(120)
"""


def test_rollback_while_another_process_holds_the_run(small: Path, tmp_path: Path) -> None:
    target, run_dir = converted(small, tmp_path)
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(run_dir)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        done = cli("rollback", run_dir, "--yes")
        assert done.returncode == 5
        assert f"pid {holder.pid}" in done.stderr and "another migrator" in done.stderr
        assert cli("finalize", run_dir).returncode == 5
    finally:
        holder.kill()
        holder.communicate()
    assert target.exists() and state(run_dir) == "done"


def test_not_a_run_directory(tmp_path: Path) -> None:
    done = cli("rollback", tmp_path / "nope", "--yes")
    assert done.returncode == 3 and "no journal.sqlite" in done.stderr
    assert not (tmp_path / "nope").exists()
