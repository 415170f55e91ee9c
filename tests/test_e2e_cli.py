"""The CLI through real subprocesses: outputs, files, exit codes."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import lance
import pytest

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "data" / "fixtures"
COMMANDS = ["generate", "convert", "export", "status", "verify", "inspect", "rollback",
            "finalize"]


def cli(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dualmem_bulk", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, stdin=subprocess.DEVNULL,
                          timeout=300)


def as_json(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert done.stdout.count("\n") == 1, done.stdout
    data = json.loads(done.stdout)
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("gen") / "memories.parquet"
    done = cli("generate", path, "--nodes", "3000", "--seed", "7")
    assert done.returncode == 0, done.stderr
    return path


def test_generate_is_deterministic(tmp_path: Path, generated: Path) -> None:
    again = tmp_path / "again.parquet"
    assert cli("generate", again, "--nodes", "3000", "--seed", "7").returncode == 0
    assert again.read_bytes() == generated.read_bytes()
    other = tmp_path / "other.parquet"
    assert cli("generate", other, "--nodes", "3000", "--seed", "8").returncode == 0
    assert other.read_bytes() != generated.read_bytes()


def test_convert_verify_inspect(tmp_path: Path, generated: Path) -> None:
    target = tmp_path / "nodes.lance"
    done = cli("convert", generated, target, "--json", "--batch-size", "1000")
    assert done.returncode == 0, done.stderr
    report = as_json(done)
    for key in ("status", "nodes_in", "nodes_converted", "quarantined", "snapshot_digest",
                "target_digest", "elapsed_s", "nodes_per_s", "run_dir"):
        assert key in report
    assert report["status"] == "done"
    assert report["nodes_in"] == report["nodes_converted"] == 3000
    assert report["snapshot_digest"] == report["target_digest"]
    assert re.fullmatch(r"[0-9a-f]{64}", report["target_digest"])
    run_dir = tmp_path / "nodes.lance.run"
    assert Path(report["run_dir"]) == run_dir
    assert (run_dir / "snapshot.parquet" / "part-000000.parquet").is_file()
    snapshot = as_json(cli("inspect", run_dir / "snapshot.parquet", "--json"))
    assert snapshot["kind"].startswith("snapshot") and snapshot["nodes"] == 3000
    assert snapshot["digest"] == report["snapshot_digest"]
    assert "export:" in done.stderr  # plain progress lines when not on a terminal

    verified = cli("verify", run_dir, "--json")
    assert verified.returncode == 0, verified.stderr
    assert as_json(verified)["ok"] is True

    info = as_json(cli("inspect", target, "--json"))
    assert info["nodes_by_type"] == {"Episode": 3000}
    assert info["digest"] == report["target_digest"]
    assert info["schema"] == "engram.DualMemoryNode v1"
    assert as_json(cli("inspect", generated, "--json"))["digest"] == report["snapshot_digest"]

    ds = lance.dataset(str(target))
    victim = ds.to_table(columns=["episode_id"], limit=1).column(0)[0].as_py()
    ds.update({"confidence": "0.123"}, where=f"episode_id = '{victim}'")
    failed = cli("verify", run_dir, "--json")
    assert failed.returncode == 1
    result = as_json(failed)
    assert result["ok"] is False and result["mismatched"] == 1
    assert result["mismatches"][0]["id"] == victim
    text = cli("verify", run_dir)
    assert text.returncode == 1 and victim in text.stdout


def test_parquet_target_and_jsonl_source(tmp_path: Path) -> None:
    out = tmp_path / "nodes"
    done = cli("convert", FIXTURES / "clean.jsonl", out, "--target-format", "parquet", "--json")
    assert done.returncode == 0, done.stderr
    expected = json.loads((FIXTURES / "expected.json").read_text())
    digest = expected["files"]["clean.jsonl"]["digest"]
    assert as_json(done)["target_digest"] == digest
    assert sorted(p.suffix for p in out.iterdir()) == [".parquet"]


def _file(tmp: Path, name: str, data: bytes | None) -> Path:
    if data is not None:
        (tmp / name).write_bytes(data)
    return tmp / name


@pytest.mark.parametrize(
    ("name", "data", "needle"),
    [
        ("missing.parquet", None, "no such file"),
        ("t.parquet", (FIXTURES / "clean.parquet").read_bytes()[:5000], "t.parquet"),
        ("x.bin", b"\x00\x01garbage", "neither Parquet"),
        ("e.jsonl", b"", "empty file"),
    ],
    ids=["missing", "truncated", "unknown-format", "empty"],
)
def test_bad_input_exit_3_nothing_written(tmp_path: Path, name: str, data: bytes | None,
                                          needle: str) -> None:
    src = _file(tmp_path, name, data)
    done = cli("convert", src, tmp_path / "n.lance")
    assert done.returncode == 3
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and lines[0].startswith("error:")
    assert sorted(p.name for p in tmp_path.iterdir()) == ([name] if data is not None else [])
    report = as_json(cli("convert", src, tmp_path / "n.lance", "--json"))
    assert report["status"] == "error" and report["exit_code"] == 3 and needle in report["error"]


def test_strict_and_dry_run(tmp_path: Path) -> None:
    invalid = FIXTURES / "invalid.parquet"
    strict = cli("convert", invalid, tmp_path / "n.lance", "--strict")
    assert strict.returncode == 3 and "--strict" in strict.stderr
    assert not (tmp_path / "n.lance").exists() and not (tmp_path / "n.lance.run").exists()
    dry = cli("convert", invalid, tmp_path / "n.lance", "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    report = as_json(dry)
    assert report["status"] == "dry-run" and report["quarantined"] > 0
    assert report["estimated_disk_bytes"] > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    assert cli("convert", "a", "b", "--no-such-option").returncode == 2
    assert cli("convert", "a", "b", "--batch-size", "0").returncode == 2
    assert cli("convert", "a", "b", "--target-format", "csv").returncode == 2
    assert cli("frobnicate").returncode == 2


def test_existing_target_refused(tmp_path: Path) -> None:
    (tmp_path / "n.lance").mkdir()
    done = cli("convert", FIXTURES / "clean.parquet", tmp_path / "n.lance")
    assert done.returncode == 3 and "already exists" in done.stderr


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_with_example_and_is_documented(command: str) -> None:
    done = cli(command, "--help")
    assert done.returncode == 0
    assert "Example" in done.stdout
    assert f"dualmem-bulk {command}" in (ROOT / "README.md").read_text()


def test_console_script_matches_module() -> None:
    script = Path(sys.executable).with_name("dualmem-bulk")
    done = subprocess.run([str(script), "--help"], capture_output=True, text=True)
    assert done.returncode == 0
    assert all(c in done.stdout for c in COMMANDS)


def test_generate_refuses_a_directory(tmp_path: Path) -> None:
    done = cli("generate", tmp_path, "--nodes", "5")
    assert done.returncode == 2 and "is a directory" in done.stderr
    assert list(tmp_path.iterdir()) == []
