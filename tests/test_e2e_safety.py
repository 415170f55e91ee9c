"""Operator safety through real subprocesses: a finalized store is never deleted by the tool;
``finalize`` and ``convert --restart`` ask on a terminal (a real pseudo-terminal here) and need
``--yes`` without one; a refused run directory is left as it was (no new ``lock`` file)."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import journal_value


def cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dualmem_bulk", *map(str, args)],
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=300)


def on_terminal(answer: str, *args: str | Path) -> subprocess.CompletedProcess[str]:
    """Run the CLI with a pseudo-terminal as stdin, answering its question with ``answer``."""
    main, secondary = pty.openpty()
    try:
        os.write(main, answer.encode() + (b"" if answer == "\x04" else b"\n"))
        return subprocess.run([sys.executable, "-m", "dualmem_bulk", *map(str, args)],
                              capture_output=True, text=True, stdin=secondary, timeout=300)
    finally:
        os.close(main)
        os.close(secondary)


def tree(path: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``path`` with its size and modification time: any change shows (but
    the lock, which every migrator that takes it rewrites)."""
    return {str(p.relative_to(path)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(path.rglob("*")) if p.is_file() and p.name != "lock"}


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("safety") / "m.parquet"
    assert cli("generate", path, "--nodes", "300").returncode == 0
    return path


def converted(source: Path, root: Path) -> tuple[Path, Path]:
    target = root / "n.lance"
    done = cli("convert", source, target, "--quiet")
    assert done.returncode == 0, done.stderr
    return target, root / "n.lance.run"


def test_restart_never_deletes_a_finalized_store(source: Path, tmp_path: Path) -> None:
    target, run_dir = converted(source, tmp_path)
    assert cli("finalize", run_dir, "--yes").returncode == 0
    before, journal_before = tree(target), tree(run_dir)
    for args in (["--restart", "--yes"], ["--restart"], []):
        refused = cli("convert", source, target, *args)
        assert refused.returncode == 2, refused.stderr
        assert "finalized" in refused.stderr and "new target" in refused.stderr
        assert "--restart" not in refused.stderr  # the old message suggested it
        assert len(refused.stderr.strip().splitlines()) == 1
    assert tree(target) == before and tree(run_dir) == journal_before
    assert journal_value(run_dir, "state") == "finalized"
    rollback = cli("rollback", run_dir, "--yes")
    assert rollback.returncode == 2 and "--restart" not in rollback.stderr


def test_finalize_asks_on_a_terminal_and_needs_yes_without_one(source: Path,
                                                               tmp_path: Path) -> None:
    target, run_dir = converted(source, tmp_path)
    no_terminal = cli("finalize", run_dir, "--drop-snapshot")
    assert no_terminal.returncode == 2 and "--yes" in no_terminal.stderr
    declined = on_terminal("n", "finalize", run_dir, "--drop-snapshot")
    assert declined.returncode == 2 and "Finalize" in declined.stderr
    ended = on_terminal("\x04", "finalize", run_dir, "--json")  # end of input at the prompt
    assert ended.returncode == 2 and json.loads(ended.stdout)["error_type"] == "UsageError"
    assert journal_value(run_dir, "state") == "done"
    assert (run_dir / "snapshot.parquet").exists()
    accepted = on_terminal("y", "finalize", run_dir, "--drop-snapshot")
    assert accepted.returncode == 0, accepted.stderr
    assert journal_value(run_dir, "state") == "finalized"
    assert not (run_dir / "snapshot.parquet").exists() and target.exists()
    again = cli("finalize", run_dir)  # nothing left to remove: nothing to ask
    assert again.returncode == 0, again.stderr


def test_restart_asks_on_a_terminal_and_needs_yes_without_one(source: Path,
                                                              tmp_path: Path) -> None:
    target, run_dir = converted(source, tmp_path)
    before = tree(target)
    no_terminal = cli("convert", source, target, "--restart")
    assert no_terminal.returncode == 2 and "--restart --yes" in no_terminal.stderr
    declined = on_terminal("n", "convert", source, target, "--restart")
    assert declined.returncode == 2 and "Discard" in declined.stderr
    assert tree(target) == before and journal_value(run_dir, "state") == "done"
    accepted = on_terminal("y", "convert", source, target, "--restart", "--quiet")
    assert accepted.returncode == 0, accepted.stderr
    assert "discarded the previous run" in accepted.stderr
    assert tree(target) != before and journal_value(run_dir, "state") == "done"
    yes = cli("convert", source, target, "--restart", "--yes", "--quiet")
    assert yes.returncode == 0, yes.stderr


def test_the_restart_question_names_what_it_discards(source: Path, tmp_path: Path) -> None:
    """The library words the question the CLI asks; a finalized run, which a restart
    refuses, and a directory that holds no run have nothing to discard."""
    from dualmem_bulk.offline.place import discard_question

    assert discard_question(tmp_path / "n.lance.run") is None
    target, run_dir = converted(source, tmp_path)
    question = discard_question(run_dir)
    assert question is not None and question.startswith(f"Discard the done run in {run_dir}")
    assert f"the target it created: {target})" in question
    assert cli("finalize", run_dir, "--yes").returncode == 0
    assert discard_question(run_dir) is None


def test_a_refused_run_directory_is_left_as_it_was(source: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "busy.run"
    run_dir.mkdir()
    (run_dir / "notes.txt").write_text("the operator's own file\n")
    refused = cli("convert", source, tmp_path / "n.lance", "--run-dir", run_dir)
    assert refused.returncode == 2 and "holds no journal" in refused.stderr
    assert sorted(p.name for p in run_dir.iterdir()) == ["notes.txt"]  # no new lock file
    assert not (tmp_path / "n.lance").exists()
