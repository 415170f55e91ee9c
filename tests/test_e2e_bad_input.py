"""Bad input is not a bug: each class gets its documented exit code and one line naming the path
and the problem, never exit 70 or a traceback, and a refusal leaves nothing half-done. Real
files, real subprocesses."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import journal_value


def cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dualmem_bulk", *map(str, args)],
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=300)


def refused(done: subprocess.CompletedProcess[str], code: int, *words: str) -> None:
    """Exit ``code``, one line on stderr holding ``words``, no traceback."""
    lines = done.stderr.strip().splitlines()
    assert done.returncode == code, done.stderr
    assert "Traceback" not in done.stderr and len(lines) == 1, done.stderr
    for word in words:
        assert word in lines[0], lines[0]


def listing(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir())


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bad") / "m.parquet"
    assert cli("generate", path, "--nodes", "300").returncode == 0
    return path


@pytest.fixture(scope="module")
def finished(source: Path) -> tuple[Path, Path]:
    """A finished conversion: its target and run directory (copied before any damage)."""
    target = source.parent / "n.lance"
    assert cli("convert", source, target, "--quiet").returncode == 0
    return target, source.parent / "n.lance.run"


def _garbage(path: Path) -> None:
    path.write_bytes(os.urandom(4096))


def _half(path: Path) -> None:
    with path.open("r+b") as fh:
        fh.truncate(path.stat().st_size // 2)


def _empty(path: Path) -> None:
    path.write_bytes(b"")


@pytest.mark.parametrize("damage", [_garbage, _half, _empty], ids=["garbage", "half", "empty"])
def test_a_damaged_journal_is_refused_by_every_command(
        finished: tuple[Path, Path], source: Path, tmp_path: Path, damage: object) -> None:
    target, original = finished
    run_dir = tmp_path / "n.lance.run"
    shutil.copytree(original, run_dir)
    (run_dir / "lock").unlink()
    assert callable(damage)
    damage(run_dir / "journal.sqlite")
    before = (run_dir / "journal.sqlite").read_bytes()
    for args in (["status", run_dir], ["verify", run_dir], ["inspect", run_dir],
                 ["rollback", run_dir, "--yes"], ["finalize", run_dir, "--yes"],
                 ["convert", source, target, "--run-dir", run_dir],
                 ["convert", source, target, "--run-dir", run_dir, "--restart", "--yes"]):
        done = cli(*args)
        refused(done, 3, "journal.sqlite", "journal is")
        assert listing(run_dir) == ["journal.sqlite", "report.json", "snapshot.parquet"], args
        assert (run_dir / "journal.sqlite").read_bytes() == before
    assert target.exists() and journal_value(original, "state") == "done"


def _truncated(good: bytes) -> bytes:
    return good[: len(good) // 2]


def _footer_too_long(good: bytes) -> bytes:
    """The footer length says more bytes than the file holds."""
    length = struct.unpack("<I", good[-8:-4])[0]
    return good[:-8] + struct.pack("<I", length + 10_000_000) + b"PAR1"


@pytest.mark.parametrize("damage", [_truncated, _footer_too_long])
def test_inspect_refuses_a_damaged_parquet_file_as_convert_does(
        source: Path, tmp_path: Path, damage: object) -> None:
    assert callable(damage)
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(damage(source.read_bytes()))
    refused(cli("inspect", bad), 3, str(bad), "not a readable Parquet file")
    refused(cli("convert", bad, tmp_path / "n.lance"), 3, str(bad))
    refused(cli("export", bad, tmp_path / "s.parquet"), 3, str(bad))
    assert listing(tmp_path) == ["bad.parquet"]


def test_a_date_outside_the_ns_range_is_quarantined(source: Path, tmp_path: Path) -> None:
    table = pq.read_table(source)
    seconds = table.column("created_at").cast(pa.int64()).to_numpy() // 10**9
    seconds[7] = 253_402_300_799  # 9999-12-31T23:59:59Z: fits seconds, not nanoseconds
    column = pa.array(seconds, pa.timestamp("s", tz="UTC"))
    wide = table.set_column(table.schema.get_field_index("created_at"),
                            pa.field("created_at", column.type, nullable=False), column)
    bad = tmp_path / "wide.parquet"
    pq.write_table(wide, bad)
    info = cli("inspect", bad)
    assert info.returncode == 0, info.stderr
    assert "row 7: created_at is outside the timestamp[ns] range" in info.stdout
    assert "timestamp_out_of_range  1" in info.stdout
    done = cli("convert", bad, tmp_path / "n.lance", "--quiet")
    assert done.returncode == 0, done.stderr
    assert "299 of 300 nodes converted" in done.stdout and "1 quarantined" in done.stdout
    strict = cli("convert", bad, tmp_path / "s.lance", "--strict", "--quiet")
    refused(strict, 3, "created_at is outside")
    assert not (tmp_path / "s.lance").exists() and not (tmp_path / "s.lance.run").exists()


def test_a_provenance_struct_missing_fields_is_a_schema_mismatch(source: Path,
                                                                 tmp_path: Path) -> None:
    table = pq.read_table(source)
    at = table.schema.get_field_index("embedding_provenance")
    prov = table.column(at).combine_chunks()
    kept = [f for f in prov.type if f.name not in ("model_version", "metadata")]
    short = pa.StructArray.from_arrays([prov.field(f.name) for f in kept], fields=kept,
                                       mask=prov.is_null())
    bad = tmp_path / "short.parquet"
    pq.write_table(table.set_column(at, pa.field("embedding_provenance", short.type), short), bad)
    for args in (["inspect", bad], ["convert", bad, tmp_path / "n.lance"],
                 ["export", bad, tmp_path / "s.parquet"]):
        refused(cli(*args), 3, str(bad), "'embedding_provenance'")
    assert listing(tmp_path) == ["short.parquet"]


def test_a_name_too_long_is_refused(source: Path, tmp_path: Path) -> None:
    long = tmp_path / ("n" * 300 + ".lance")
    refused(cli("convert", source, long), 3, "File name too long")
    refused(cli("inspect", long), 3, "File name too long")
    assert listing(tmp_path) == []


def test_a_run_directory_that_is_a_file_is_refused(source: Path, tmp_path: Path) -> None:
    taken = tmp_path / "n.lance.run"
    taken.write_text("an operator's file\n")
    refused(cli("convert", source, tmp_path / "n.lance"), 2, str(taken), "is a file")
    assert listing(tmp_path) == ["n.lance.run"] and taken.read_text() == "an operator's file\n"


@pytest.fixture()
def unwritable(tmp_path: Path) -> Iterator[Path]:
    """A directory nothing can be created in. Root ignores permission bits, so as root the
    directory is made immutable (``chattr +i``: EPERM for root too)."""
    folder = tmp_path / "locked"
    folder.mkdir()
    root = os.geteuid() == 0
    if root:
        subprocess.run(["chattr", "+i", str(folder)], check=True)
    else:
        folder.chmod(0o555)
    try:
        yield folder
    finally:
        if root:
            subprocess.run(["chattr", "-i", str(folder)], check=True)
        folder.chmod(0o755)


def test_an_operating_system_refusal_is_one_line(source: Path, unwritable: Path) -> None:
    denied = ("Operation not permitted" if os.geteuid() == 0 else "Permission denied")
    refused(cli("convert", source, unwritable / "n.lance"), 2, str(unwritable), denied)
    refused(cli("export", source, unwritable / "s.parquet"), 3, str(unwritable))
    refused(cli("generate", unwritable / "g.parquet", "--nodes", "5"), 3, str(unwritable))
    assert listing(unwritable) == []
