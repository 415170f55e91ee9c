"""Where a run stands, read from its journal without disturbing the migrator working on it: a
:class:`~dualmem_bulk.rundir.reports.StatusReport`.

The same keys in every phase of offline and online runs: ``state``, ``phase``, ``nodes_done``,
``nodes_total``, ``rate_nodes_per_s``, ``eta_s`` (numbers; ``None`` only before the first
checkpoint, or a total no checkpoint has counted yet), ``last_checkpoint`` (ISO 8601),
``lock_holder`` and ``rollback_possible``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from dualmem_bulk.rundir.journal import Journal, lock_holder
from dualmem_bulk.rundir.reports import StatusReport

__all__ = ["ROLLBACK_POSSIBLE", "iso", "offline_progress", "online_extra", "online_progress",
           "status_of"]

ROLLBACK_POSSIBLE = frozenset(
    {"planned", "exporting", "converting", "verifying", "done", "failed", "rolling-back"}
)
"""States from which ``rollback`` can restore the state before the run."""

Figures = dict[str, Any]
"""Some of the keys of a status: the progress keys, or the keys of one mode."""


def status_of(run_dir: Path, journal: Journal, progress: Figures, extra: Figures
              ) -> StatusReport:
    """State, progress (the mode's :func:`offline_progress` or :func:`online_progress`), last
    checkpoint, lock holder, whether rollback is possible, then the mode's ``extra`` keys."""
    state = journal.state
    snapshot = journal.values["snapshot"] or {}
    records = journal.batches()
    events = journal.events()
    holder = lock_holder(run_dir)
    status: Figures = {
        "run_dir": str(run_dir),
        "mode": journal.mode,
        "state": state,
        "phase": journal.values["phase"],
        "running": holder is not None,
        "lock_holder": holder,
        "source": journal.config.get("source"),
        "target": journal.values["target"],
        **progress,
        "units_committed": len(records),
        "batches_done": records[-1].end_group if records else 0,
        "batches_total": snapshot.get("groups"),
        "snapshot_digest": snapshot.get("digest"),
        "target_digest": journal.committed().hex if records else None,
        "rollback_possible": state in ROLLBACK_POSSIBLE,
        "last_event": {"at": iso(events[-1][0]), "state": events[-1][1],
                       "detail": events[-1][2]} if events else None,
        **extra,
    }
    return StatusReport(**status)


def _figures(done: int | None, total: int | None, rate: float | None, last: float | None
             ) -> Figures:
    """The progress keys."""
    eta = None
    if total is not None and done is not None:
        eta = 0.0 if done >= total else (round((total - done) / rate, 1) if rate else None)
    return {"nodes_done": done, "nodes_total": total,
            "rate_nodes_per_s": None if rate is None else round(rate, 1), "eta_s": eta,
            "last_checkpoint": iso(last) if last is not None else None}


def offline_progress(journal: Journal) -> Figures:
    """While the export runs, source rows read of the source's rows (each recorded partition
    counts); once it is done, nodes converted of the snapshot's. The rate is the nodes recorded
    since this invocation's phase began over the wall time to the last checkpoint (partitions
    run side by side, so their own seconds overlap)."""
    records, events = journal.batches(), journal.events()
    snapshot_rows = (journal.values["snapshot"] or {}).get("rows")
    if snapshot_rows is None:
        counts = [int(stats["nodes_in"]) for stats in journal.exported()]
        total = journal.values["source_rows"]
    else:
        counts, total = [r.rows for r in records], snapshot_rows
    if not records:
        return _figures(None if total is None else 0, total, None, None)
    last = records[-1].committed_at
    began = max((at for at, state, _ in events
                 if state in ("exporting", "converting") and at <= last),
                default=records[0].committed_at)
    recent = [n for r, n in zip(records, counts, strict=False) if r.committed_at >= began]
    wall = last - began
    rate = sum(recent) / wall if recent and wall > 0 else None
    return _figures(sum(counts), total, rate, last)


def online_progress(journal: Journal) -> Figures:
    """An online run checkpoints its copy in the journal; the copy's total is the live store's
    row count while copying (an Engram data root's is only known to the migrator), and the
    copied rows once the copy is done."""
    report = journal.values["report"]
    copied = int(journal.values["online_copied"].get("rows") or 0)
    copying = journal.values["phase"] == "copying"
    total = _live_rows(journal) if copying else copied
    last = journal.values["checkpoint_at"] if copied or not copying else None
    seconds = float(report.get("copy_s") or 0.0)
    rate = copied / seconds if copied and seconds > 0 else (0.0 if copied == 0 else None)
    return _figures(copied, total, rate, last)


def _live_rows(journal: Journal) -> int | None:
    """Rows of the live SQLite MemoryStore (``None`` for an Engram data root)."""
    from dualmem_bulk.stores.memory_store import MemoryStore

    config = journal.config
    if config.get("kind") == "engram-wal" or not config.get("source"):
        return None
    store = MemoryStore(Path(config["source"]), create=False)
    try:
        return store.count()
    finally:
        store.close()


def online_extra(journal: Journal) -> Figures:
    """What only an online run has: which store serves, the changes applied, the pause."""
    report = journal.values["report"]
    return {"serving": journal.values["serving"],
            "changes_applied": report.get("changes_applied"),
            "cutover_pause_ms": report.get("pause_ms")}


def iso(at: float) -> str:
    """A Unix time as ISO 8601 UTC (``2026-12-02T10:00:00Z``)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))
