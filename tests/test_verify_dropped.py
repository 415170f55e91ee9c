"""``verify`` after ``finalize --drop-snapshot``: it checks what it still can (checksums
recomputed from the fields, conversion rules, digests against the journal) and says what it
could not check; a changed target still fails (exit 1). Real stores, real subprocesses."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import lance
import pyarrow as pa
import pytest


def cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dualmem_bulk", *map(str, args)],
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=300)


@pytest.fixture()
def dropped(tmp_path: Path) -> tuple[Path, Path]:
    """A finalized Lance run whose snapshot was dropped."""
    source, target = tmp_path / "m.parquet", tmp_path / "n.lance"
    assert cli("generate", source, "--nodes", "300").returncode == 0
    assert cli("convert", source, target, "--quiet").returncode == 0
    done = cli("finalize", f"{target}.run", "--drop-snapshot", "--yes")
    assert done.returncode == 0, done.stderr
    run_dir = tmp_path / "n.lance.run"
    assert not (run_dir / "snapshot.parquet").exists()
    return target, run_dir


def test_verify_checks_what_remains_and_says_what_it_could_not(
        dropped: tuple[Path, Path]) -> None:
    _target, run_dir = dropped
    done = cli("verify", run_dir, "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["ok"] and report["target_rows"] == report["snapshot_rows"] == 300
    assert report["target_digest"] == report["recomputed_digest"] == report["recorded_digest"]
    assert any("snapshot" in what for what in report["not_checked"])
    text = cli("verify", run_dir)
    assert text.returncode == 0 and "verified what remains" in text.stdout
    assert "not checked:" in text.stdout


def test_a_changed_field_is_still_found(dropped: tuple[Path, Path]) -> None:
    target, run_dir = dropped
    table = lance.dataset(str(target)).to_table()
    content = table.column("content").to_pylist()
    content[5] = (content[5] or "") + " (edited)"
    edited = table.set_column(table.schema.get_field_index("content"),
                              table.schema.field("content"), pa.array(content, pa.utf8()))
    lance.write_dataset(edited, str(target), mode="overwrite", schema=table.schema)
    done = cli("verify", run_dir, "--json")
    assert done.returncode == 1, done.stderr
    report = json.loads(done.stdout)
    assert report["mismatched"] == 1 and report["mismatches"][0]["id"] == \
        table.column("episode_id")[5].as_py()


def test_a_row_added_is_still_found(dropped: tuple[Path, Path]) -> None:
    target, run_dir = dropped
    first = lance.dataset(str(target)).to_table().slice(0, 1)
    lance.write_dataset(first, str(target), mode="append")  # one node twice: each row is sound
    done = cli("verify", run_dir, "--json")
    assert done.returncode == 1, done.stderr
    report = json.loads(done.stdout)
    assert report["target_rows"] == 301 and "digests differ" in report["mismatches"][0]["problem"]
