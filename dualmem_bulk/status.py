"""Where a run stands, read from its journal without disturbing the migrator working on it."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from dualmem_bulk.journal import Journal, lock_holder

__all__ = ["ROLLBACK_POSSIBLE", "run_status"]

ROLLBACK_POSSIBLE = frozenset(
    {"planned", "exporting", "converting", "verifying", "done", "failed", "rolling-back"}
)
"""States from which ``rollback`` can restore the state before the run."""


def run_status(run_dir: Path) -> dict[str, Any]:
    """State, progress, last checkpoint, rate, ETA (if running), lock holder, rollback."""
    journal = Journal.open(run_dir)
    try:
        state = journal.state
        snapshot = journal.get("snapshot") or {}
        records = journal.batches()
        events = journal.events()
        total = snapshot.get("rows")
        done = sum(r.rows for r in records)
        busy = sum(r.seconds for r in records)
        holder = lock_holder(run_dir)
        running = holder is not None
        rate = done / busy if busy else None
        eta = None
        if running and rate and total is not None and state == "converting":
            eta = round((total - done) / rate, 1)
        last = records[-1].committed_at if records else None
        online: dict[str, Any] = {}
        if journal.get("mode") == "online":  # no snapshot and no units: copy and change log
            report = journal.get("report") or {}
            online = {"serving": journal.get("serving", "legacy"),
                      "changes_applied": report.get("changes_applied"),
                      "cutover_pause_ms": report.get("pause_ms")}
            done = int((journal.get("online_copied") or {}).get("rows") or 0)
        return {
            "run_dir": str(run_dir),
            "mode": journal.get("mode", "copy"),
            "state": state,
            "phase": journal.get("phase"),
            "running": running,
            "lock_holder": holder,
            "source": (journal.get("config") or {}).get("source"),
            "target": journal.get("target"),
            "nodes_total": total,
            "nodes_done": done,
            "units_committed": len(records),
            "batches_done": records[-1].end_group if records else 0,
            "batches_total": snapshot.get("groups"),
            "last_checkpoint": _iso(last) if last else None,
            "nodes_per_s": round(rate, 1) if rate else None,
            "eta_s": eta,
            "snapshot_digest": snapshot.get("digest"),
            "target_digest": journal.committed().hex if records else None,
            "rollback_possible": state in ROLLBACK_POSSIBLE,
            "last_event": {"at": _iso(events[-1][0]), "state": events[-1][1],
                           "detail": events[-1][2]} if events else None,
            **online,
        }
    finally:
        journal.close()


def _iso(at: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))
