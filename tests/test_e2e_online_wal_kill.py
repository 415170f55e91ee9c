"""``migrate --online DATA_ROOT`` in real subprocesses killed with SIGKILL mid-copy and again
mid-catch-up while a writer keeps appending to the WAL; resumed, cut over on request, equal to
the offline replay of the final data root."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from conftest import journal_value

from dualmem_bulk import verify_run
from dualmem_bulk.generate import write_generated
from dualmem_bulk.sources.engram_wal_feed import WalFeed
from tests.wal_appender import Appender, assert_same_nodes, reference

_WAIT_S = 120.0  # generous bound on each wait (a stuck run fails, it is not a timing check)


def _wait(what: str, check: Callable[[], bool],
          proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + _WAIT_S
    while not check():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the migrator exited ({proc.returncode}) before {what}: "
                                 f"{proc.stderr.read().decode() if proc.stderr else ''}")
        assert time.monotonic() < deadline, f"waited {_WAIT_S} s for {what}"
        time.sleep(0.05)


def _migrate(root: Path, target: Path, *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "dualmem_bulk", "migrate", "--online", str(root), str(target),
         "--postpone-cutover", "--batch-size", "200", "--json", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "NO_COLOR": "1"})


def _kill(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    for stream in (proc.stdout, proc.stderr):
        if stream:
            stream.close()


class _Writer(threading.Thread):
    """Engram's side: new memories, deletes and re-adds, appended until stopped."""

    def __init__(self, root: Path) -> None:
        super().__init__(daemon=True)
        self.appender, self.stopped, self.written = Appender(root), threading.Event(), 0

    def run(self) -> None:
        w = self.appender
        while not self.stopped.is_set():
            i = self.written
            w.store("default", f"live_{i}")
            if i % 5 == 4:
                w.delete("default", f"live_{i - 2}")
            if i % 25 == 24:
                w.store("default", f"live_{i - 2}", what="re-added")
            self.written += 1
            time.sleep(0.002)


def test_online_wal_survives_sigkill_in_copy_and_catch_up(tmp_path: Path) -> None:
    root, target = tmp_path / "engram-data", tmp_path / "nodes.lance"
    run_dir = target.with_name("nodes.lance.run")
    write_generated(root, 4_000, 9, fmt="engram-wal")

    first = _migrate(root, target, "--max-rate", "1500")
    _wait("some pages copied", lambda: ((journal_value(run_dir, "online_copied") or {})
                                         .get("rows", 0) >= 600), first)
    _kill(first)
    assert journal_value(run_dir, "phase") == "copying"

    writer = _Writer(root)
    writer.start()
    second = _migrate(root, target)
    _wait("catch-up rounds", lambda: (journal_value(run_dir, "report") or {})
          .get("catch_up_rounds", 0) >= 3, second)
    _kill(second)
    time.sleep(0.2)  # the writer goes on while no migrator runs
    writer.stopped.set()
    writer.join()

    third = _migrate(root, target)
    feed = WalFeed(root)
    feed.advance()
    _wait("the final WAL position applied",
          lambda: journal_value(run_dir, "online_applied") == feed.position, third)
    subprocess.run([sys.executable, "-m", "dualmem_bulk", "cutover", str(run_dir)], check=True,
                   capture_output=True)
    _, err = third.communicate(timeout=_WAIT_S)
    assert third.returncode == 0, err.decode()

    report = journal_value(run_dir, "report")
    assert report["status"] == "done" and report["resumed"] == 2 and report["verified"]
    digest, expected = reference(root, tmp_path / "ref.lance")
    assert (report["digest"], report["rows"]) == (digest, expected.num_rows)
    assert_same_nodes(target, expected)
    assert writer.written > 0 and verify_run(run_dir).ok
