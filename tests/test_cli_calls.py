"""``cli/calls.py``: a library error names configuration fields; the CLI shows their flags,
with the same exit code, on stderr and in the ``--json`` error object."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dualmem_bulk import OfflineConfig, run_offline
from dualmem_bulk.cli.calls import flag, flagged
from dualmem_bulk.errors import DualmemError, InvalidRows, RunChanged, SourceError, UsageError
from dualmem_bulk.generate import write_generated
from dualmem_bulk.rundir.files import staging_path
from dualmem_bulk.sources.detect import open_source

FIXTURES = Path(__file__).resolve().parents[1] / "data" / "fixtures"


@pytest.mark.parametrize(("error", "shown"), [
    (UsageError("batch_size must be at least 1, got 0", "batch_size"),
     "--batch-size must be at least 1, got 0"),
    (UsageError("scheduler needs engine dask", "scheduler", "engine"),
     "--scheduler needs --engine dask"),
    (UsageError("spaces applies to an Engram data root only; /d/spaces/m.parquet is parquet",
                "spaces"),
     "--space applies to an Engram data root only; /d/spaces/m.parquet is parquet"),
    (UsageError("/runs/run_dir: the run directory is a file, not a directory; pass another "
                "run_dir", "run_dir"),
     "/runs/run_dir: the run directory is a file, not a directory; pass another --run-dir"),
    (RunChanged("/r.run", "the source changed"),
     "/r.run: the source changed since this run started, so it cannot resume; re-run with "
     "--restart to start the run again from the current source"),
    (SourceError("/data/workers.parquet", "truncated"), "/data/workers.parquet: truncated"),
    (SourceError("/t/.restart.lance.dualmem-partial", "the converted store is missing; roll back "
                 "or re-run with restart", "restart"),
     "/t/.restart.lance.dualmem-partial: the converted store is missing; roll back or re-run "
     "with --restart"),
], ids=lambda v: v if isinstance(v, str) else type(v).__name__)
def test_fields_are_shown_as_flags_and_nothing_else_changes(error: DualmemError,
                                                             shown: str) -> None:
    assert flagged(error) == shown


def test_the_field_is_on_the_error() -> None:
    rows = InvalidRows(2, "a.parquet row 3: strictly bad")
    assert rows.field == "strict" and "strict was given" in str(rows)
    assert "--strict was given" in flagged(rows) and "strictly bad" in flagged(rows)
    assert "--dry-run to list them" in flagged(rows)
    assert UsageError("no terminal").field is None
    assert (flag("workers"), flag("spaces"), flag("fmt")) == ("--workers", "--space", "--format")


def test_a_library_error_names_the_field_and_the_cli_its_flag(tmp_path: Path) -> None:
    source = FIXTURES / "clean.parquet"
    with pytest.raises(UsageError, match=r"^spaces applies to an Engram data root") as raised:
        open_source(source, ["default"])
    assert raised.value.field == "spaces"
    done = subprocess.run(
        [sys.executable, "-m", "dualmem_bulk", "convert", str(source),
         str(tmp_path / "nodes.lance"), "--space", "default", "--json"],
        capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=300, check=False)
    assert done.returncode == 2, done.stderr
    report = json.loads(done.stdout)
    assert report["error"].startswith("--space applies to an Engram data root only; ")
    assert report["error_type"] == "UsageError" and report["exit_code"] == 2
    assert "error: --space applies" in done.stderr
    assert list(tmp_path.iterdir()) == []


def cli(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dualmem_bulk", *map(str, args)],
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=300,
                          env={**os.environ, **(env or {})}, check=False)


def refused(done: subprocess.CompletedProcess[str], exit_code: int) -> str:
    """The error of a refused ``--json`` command, checked to be the one line on stderr too."""
    assert done.returncode == exit_code, done.stderr
    error = json.loads(done.stdout)["error"]
    assert f"error: {error}" in done.stderr
    return str(error)


def test_a_missing_staging_store_names_restart(tmp_path: Path) -> None:
    source, target = tmp_path / "m.parquet", tmp_path / "n.lance"
    write_generated(source, 1200, seed=3, batch_size=300)
    args = ("convert", source, target, "--batch-size", "300", "--json")
    assert cli(*args, env={"DUALMEM_FAULT": "target-write:3:ENOSPC"}).returncode == 4
    shutil.rmtree(staging_path(target))  # two units committed, their store gone
    with pytest.raises(SourceError, match=r"target is missing; roll back or re-run with "
                                          r"restart$") as raised:
        run_offline(OfflineConfig(source=source, target=target, batch_size=300))
    assert raised.value.field == "restart"
    assert refused(cli(*args), 3).endswith(
        "the partly written target is missing; roll back or re-run with --restart")


def test_restarting_an_in_place_run_names_restart(tmp_path: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    write_generated(store / "part-0.parquet", 600, seed=3, batch_size=300)
    args = ("convert", store, "--in-place", "--target-format", "parquet", "--json")
    assert cli(*args).returncode == 0
    with pytest.raises(UsageError, match=r"converted in place; roll the run back first "
                                         r"\(dualmem-bulk rollback\), then restart$") as raised:
        run_offline(OfflineConfig(source=store, target=store, in_place=True,
                                  target_format="parquet", restart=True))
    assert raised.value.field == "restart"
    assert refused(cli(*args, "--restart", "--yes"), 2).endswith(
        "roll the run back first (dualmem-bulk rollback), then --restart")
