"""The reports of :mod:`dualmem_bulk.rundir.reports` and :mod:`dualmem_bulk.rundir.run_report`:
``as_dict()`` is each command's ``--json`` output and what the journal keeps, so its keys are a
contract. Each report comes from a real operation on real files; its keys are compared with the
keys measured before the reports moved into the run directory's owner (a key renamed, dropped
or added fails here: add a new key to the list on purpose)."""

from __future__ import annotations

import json
from dataclasses import FrozenInstanceError
from pathlib import Path
from typing import Any

import pytest

from dualmem_bulk import (
    CutoverReport,
    InspectReport,
    OfflineConfig,
    OnlineConfig,
    OnlineReport,
    RunReport,
    StatusReport,
    finalize_run,
    inspect_path,
    request_cutover,
    rollback_run,
    run_offline,
    run_online,
    run_status,
    verify_run,
)
from dualmem_bulk.generate import generate_batches, write_generated
from dualmem_bulk.rundir.files import QUARANTINE, REPORT, SNAPSHOT
from dualmem_bulk.rundir.journal import Journal
from dualmem_bulk.stores.memory_store import MemoryStore

FIXTURES = Path(__file__).resolve().parents[1] / "data" / "fixtures"

RUN = ["status", "source", "source_kind", "target", "target_format", "run_dir", "engine",
       "workers", "units", "nodes_in", "nodes_total", "nodes_this_invocation", "snapshot_rows",
       "nodes_converted", "quarantined", "quarantine_codes", "quarantine_path",
       "quarantine_sample", "source_details", "snapshot_digest", "target_digest", "verified",
       "elapsed_s", "nodes_per_s", "phases_s", "phases", "estimated_disk_bytes", "estimated_s",
       "estimate", "decision", "decision_reason"]
ONLINE = ["status", "store", "target", "run_dir", "phase", "nodes_copied",
          "nodes_copied_this_invocation", "copy_s", "copy_nodes_per_s", "workers",
          "changes_applied", "catch_up_rounds", "lag_at_pause", "changes_in_pause", "pause_ms",
          "verified", "rows", "digest", "resumed", "elapsed_s", "notes"]
VERIFY = ["ok", "run_dir", "target", "snapshot_rows", "target_rows", "recorded_digest",
          "snapshot_digest", "target_digest", "recomputed_digest", "mismatched", "mismatches",
          "read_back", "elapsed_s", "not_checked"]
ROLLBACK = ["status", "run_dir", "mode", "state_before", "source", "target", "store_format",
            "snapshot_checked", "snapshot_rows", "snapshot_digest", "removed", "restored_from",
            "proven_rows", "proven_digest", "source_untouched", "notes", "steps", "elapsed_s"]
FINALIZE = ["status", "run_dir", "mode", "target", "removed", "snapshot_dropped", "finalized_at",
            "legacy_kept"]
STATUS = ["run_dir", "mode", "state", "phase", "running", "lock_holder", "source", "target",
          "nodes_done", "nodes_total", "rate_nodes_per_s", "eta_s", "last_checkpoint",
          "units_committed", "batches_done", "batches_total", "snapshot_digest",
          "target_digest", "rollback_possible", "last_event"]
STATUS_ONLINE = [*STATUS, "serving", "changes_applied", "cutover_pause_ms"]
STORE = ["path", "kind", "schema", "nodes", "nodes_by_type", "digest"]
SNAPSHOT_KEYS = ["path", "kind", "schema", "nodes", "digest"]
QUARANTINE_KEYS = ["path", "kind", "rows", "codes", "reasons"]
LEGACY = ["path", "kind", "schema", "nodes", "valid", "quarantined", "quarantine_codes",
          "rejected", "digest"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """An offline run with rejected rows (Lance), one into Parquet, and a cut-over online run."""
    tmp = tmp_path_factory.mktemp("reports")
    lance_run = run_offline(OfflineConfig(source=FIXTURES / "invalid.parquet",
                                          target=tmp / "q.lance", workers=0))
    parquet_run = run_offline(OfflineConfig(source=FIXTURES / "invalid.jsonl",
                                            target=tmp / "q.parquet", target_format="parquet",
                                            workers=0))
    store = tmp / "m.sqlite"
    with MemoryStore(store) as live:
        for batch in generate_batches(120, 5, 60):
            live.store_batch(batch)
    online = run_online(OnlineConfig(store=store, target=tmp / "o.lance", batch_size=50,
                                     workers=0))
    return {"tmp": tmp, "lance": lance_run, "parquet": parquet_run, "online": online,
            "store": store}


def test_the_run_reports_keys_and_what_the_journal_and_report_json_keep(runs: dict[str, Any]
                                                                         ) -> None:
    report: RunReport = runs["lance"]
    assert report.status == "done" and report.quarantined > 0
    assert list(report.as_dict()) == RUN
    run_dir = Path(report.run_dir)
    assert json.loads((run_dir / REPORT).read_text()) == report.as_dict()
    journal = Journal.open(run_dir)
    try:
        assert journal.values["report"] == report.as_dict()
    finally:
        journal.close()
    assert RunReport.from_dict(report.as_dict()) == report
    online: OnlineReport = runs["online"]
    assert online.status == "done" and online.verified
    assert list(online.as_dict()) == ONLINE
    assert json.loads((Path(online.run_dir) / REPORT).read_text()) == online.as_dict()


def test_a_dry_runs_report_has_the_run_reports_keys(runs: dict[str, Any]) -> None:
    tmp: Path = runs["tmp"]
    report = run_offline(OfflineConfig(source=FIXTURES / "clean.parquet",
                                       target=tmp / "dry.lance", dry_run=True))
    assert report.status == "dry-run" and report.decision in ("go", "no-go")
    assert list(report.as_dict()) == RUN


def test_status_is_typed_and_its_keys_are_todays(runs: dict[str, Any]) -> None:
    offline = run_status(Path(runs["lance"].run_dir))
    assert isinstance(offline, StatusReport)
    assert offline.mode == "copy" and offline.state == "done" and offline.rollback_possible
    assert offline.nodes_done == offline.nodes_total == runs["lance"].snapshot_rows
    assert offline.serving is None  # an online run's key: absent from an offline run's dict
    assert list(offline.as_dict()) == STATUS
    online = run_status(Path(runs["online"].run_dir))
    assert online.mode == "online" and online.serving == "dual" and online.nodes_done == 120
    assert online.cutover_pause_ms is not None
    assert list(online.as_dict()) == STATUS_ONLINE
    with pytest.raises(FrozenInstanceError):
        online.state = "failed"  # type: ignore[misc]


def test_verify_finalize_and_cutover_reports_keys(runs: dict[str, Any]) -> None:
    run_dir = Path(runs["parquet"].run_dir)
    verified = verify_run(run_dir)
    assert verified.ok and list(verified.as_dict()) == VERIFY
    finalized = finalize_run(run_dir)
    assert finalized.status == "finalized" and list(finalized.as_dict()) == FINALIZE
    done = request_cutover(Path(runs["online"].run_dir))
    assert done.as_dict() == {"status": "done", "run_dir": runs["online"].run_dir,
                              "detail": "already cut over"}
    requested = CutoverReport("requested", "r.run", "awaiting-cutover")
    assert list(requested.as_dict()) == ["status", "run_dir", "phase"]


def test_rollback_reports_keys(tmp_path: Path) -> None:
    source = tmp_path / "m.parquet"
    write_generated(source, 200, seed=2)
    run = run_offline(OfflineConfig(source=source, target=tmp_path / "n.lance", workers=0))
    rolled = rollback_run(Path(run.run_dir))
    assert rolled.status == "rolled-back" and list(rolled.as_dict()) == ROLLBACK


def _inspected(path: Path) -> InspectReport:
    report = inspect_path(path)
    assert isinstance(report, InspectReport) and report.path == str(path)
    return report


def test_inspect_is_typed_and_its_keys_by_kind_are_todays(runs: dict[str, Any]) -> None:
    lance_run: RunReport = runs["lance"]
    run_dir = Path(lance_run.run_dir)
    described = _inspected(run_dir)
    assert described.kind == "run directory" and described.status == run_status(run_dir)
    assert list(described.as_dict()) == ["path", "kind", *STATUS]
    assert described.nodes is None and described.digest is None
    online = _inspected(Path(runs["online"].run_dir))
    assert list(online.as_dict()) == ["path", "kind", *STATUS_ONLINE]

    store = _inspected(Path(lance_run.target))
    assert store.kind == "dual-store (lance)" and store.nodes == lance_run.nodes_converted
    assert store.digest == lance_run.target_digest
    assert list(store.as_dict()) == [*STORE, "version", "fragments"]
    parquet = _inspected(Path(runs["parquet"].target))
    assert list(parquet.as_dict()) == [*STORE, "files"]

    snapshot = _inspected(run_dir / SNAPSHOT)
    assert snapshot.digest == lance_run.snapshot_digest
    assert list(snapshot.as_dict()) == [*SNAPSHOT_KEYS, "parts"]
    part = _inspected(sorted((run_dir / SNAPSHOT).glob("part-*.parquet"))[0])
    assert list(part.as_dict()) == SNAPSHOT_KEYS
    quarantine = _inspected(run_dir / QUARANTINE)
    assert quarantine.details["rows"] == lance_run.quarantined
    assert list(quarantine.as_dict()) == [*QUARANTINE_KEYS, "parts"]
    part = _inspected(sorted((run_dir / QUARANTINE).glob("part-*.parquet"))[0])
    assert list(part.as_dict()) == QUARANTINE_KEYS

    legacy = _inspected(FIXTURES / "invalid.parquet")
    assert legacy.kind == "legacy source (parquet)" and legacy.digest == lance_run.snapshot_digest
    assert list(legacy.as_dict()) == LEGACY
    wal = _inspected(FIXTURES / "engram-wal" / "engram-data")
    assert wal.kind == "Engram data root (WAL)"
    assert list(wal.as_dict()) == [*LEGACY, "spaces", "totals", "damage"]
