"""``cli/calls.py``: a library error names configuration fields; the CLI shows their flags,
with the same exit code, on stderr and in the ``--json`` error object."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from dualmem_bulk.cli.calls import flag, flagged
from dualmem_bulk.errors import DualmemError, InvalidRows, RunChanged, SourceError, UsageError
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
