"""The contract scripts rely on, through real subprocesses: with ``--json`` every command prints
exactly one JSON object on stdout (usage errors and internal errors included) carrying
``tool_version``; ISO 8601 timestamps; ``--version``; ``--quiet``; shell completion; help text
without type placeholders."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer

from dualmem_bulk import __version__
from dualmem_bulk.cli.calls import call

COMMANDS = ["generate", "convert", "export", "status", "verify", "inspect", "rollback",
            "finalize", "migrate", "cutover"]
ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


def cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dualmem_bulk", *map(str, args)],
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=300)


def one_object(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """stdout is exactly one JSON object on one line, with the tool's version."""
    assert done.stdout.count("\n") == 1, done.stdout
    data = json.loads(done.stdout)
    assert isinstance(data, dict) and data["tool_version"] == __version__
    return data


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """A generated source (300 nodes) and a finished conversion of it."""
    root = tmp_path_factory.mktemp("contract")
    source, target = root / "m.parquet", root / "n.lance"
    assert cli("generate", source, "--nodes", "300", "--json").returncode == 0
    done = cli("convert", source, target, "--json")
    assert done.returncode == 0, done.stderr
    return source, target, root / "n.lance.run"


def test_every_command_prints_one_json_object(run: tuple[Path, Path, Path],
                                              tmp_path: Path) -> None:
    source, target, run_dir = run
    outputs = {
        "generate": cli("generate", tmp_path / "g.jsonl", "--nodes", "5", "--format", "jsonl",
                        "--json"),
        "export": cli("export", source, tmp_path / "s.parquet", "--json"),
        "status": cli("status", run_dir, "--json"),
        "verify": cli("verify", run_dir, "--json"),
        "inspect": cli("inspect", target, "--json"),
        "inspect-run": cli("inspect", run_dir, "--json"),
    }
    for name, done in outputs.items():
        assert done.returncode == 0, (name, done.stderr)
        one_object(done)
    status = one_object(outputs["status"])
    assert ISO.match(status["last_checkpoint"]) and ISO.match(status["last_event"]["at"])


@pytest.mark.parametrize("args, error_type", [
    (["convert"], "MissingParameter"),                         # click: missing argument
    (["convert", "a.parquet", "--bogus"], "NoSuchOption"),     # click: unknown option
    (["convert", "a.parquet", "b.lance", "--batch-size", "0"], "BadParameter"),
    (["convert", "a.parquet"], "UsageError"),                  # the command's own check
    (["migrate", "a.sqlite", "b.lance"], "UsageError"),        # --online missing
    (["status", "/nonexistent/run"], "SourceError"),           # a refusal, exit 3
])
def test_errors_are_one_json_object_too(args: list[str], error_type: str) -> None:
    done = cli(*args, "--json")
    data = one_object(done)
    assert data["status"] == "error" and data["error_type"] == error_type
    assert data["exit_code"] == done.returncode and done.returncode in (2, 3)
    assert data["error"] and "Traceback" not in done.stderr
    assert done.stderr.strip(), "the error is said on stderr as well"


def test_an_internal_error_is_one_json_object_with_exit_70(
        capsys: pytest.CaptureFixture[str]) -> None:
    def bug() -> None:
        raise RuntimeError("an invariant broke")

    with pytest.raises(typer.Exit) as exited:
        call(bug, as_json=True)
    assert exited.value.exit_code == 70
    data = json.loads(capsys.readouterr().out)
    assert data == {"status": "error", "error": "an invariant broke", "exit_code": 70,
                    "error_type": "RuntimeError", "tool_version": __version__}


def test_finalize_reports_an_iso_timestamp(run: tuple[Path, Path, Path],
                                           tmp_path: Path) -> None:
    source, _target, _run_dir = run
    target = tmp_path / "f.lance"
    assert cli("convert", source, target, "--quiet").returncode == 0
    done = cli("finalize", f"{target}.run", "--yes", "--json")
    assert done.returncode == 0, done.stderr
    assert ISO.match(one_object(done)["finalized_at"])


def test_version() -> None:
    done = cli("--version")
    assert done.returncode == 0 and done.stdout.strip() == f"dualmem-bulk {__version__}"


def test_quiet_prints_no_progress(run: tuple[Path, Path, Path], tmp_path: Path) -> None:
    source = run[0]
    loud = cli("convert", source, tmp_path / "a.lance")
    assert loud.returncode == 0 and "nodes" in loud.stderr  # the phases' progress lines
    quiet = cli("convert", source, tmp_path / "b.lance", "--quiet")
    assert quiet.returncode == 0 and quiet.stderr == ""
    assert "converted" in quiet.stdout


def test_shell_completion() -> None:
    done = cli("--show-completion", "bash")
    assert done.returncode == 0 and "-F _dualmem_bulk_completion dualmem-bulk" in done.stdout
    env = {**os.environ, "_DUALMEM_BULK_COMPLETE": "complete_bash",
           "COMP_WORDS": "dualmem-bulk convert --re", "COMP_CWORD": "2"}
    words = subprocess.run([sys.executable, "-m", "dualmem_bulk"], capture_output=True,
                           text=True, env=env, timeout=60)
    assert words.stdout.split() == ["--restart"]


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help_has_no_type_placeholders(command: str | None) -> None:
    done = cli(*([command] if command else []), "--help")
    assert done.returncode == 0
    assert not re.search(r"<(bool|path|int|str|float|list)[^>]*>|\{[a-z_]+\}", done.stdout), \
        done.stdout
    if command in ("convert", "verify"):
        assert "local|dask" in done.stdout


def test_inspect_prints_readable_text(run: tuple[Path, Path, Path]) -> None:
    source, target, run_dir = run
    for path in (run_dir, target, source):
        done = cli("inspect", path, "--quiet")
        assert done.returncode == 0, done.stderr
        for repr_mark in ("{'", "['", "None", "True", "False"):
            assert repr_mark not in done.stdout, (path, done.stdout)
    text = cli("inspect", run_dir).stdout
    assert re.search(r"^last_event:\n  at +\S+Z$", text, re.MULTILINE), text
    assert re.search(r"^lock_holder +-$", text, re.MULTILINE), text
    assert re.search(r"^nodes_by_type:\n  Episode +300$", cli("inspect", target).stdout,
                     re.MULTILINE)
