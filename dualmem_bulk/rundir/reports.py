"""What verify, rollback, finalize, cutover, status and inspect report on a run or a path;
``as_dict()`` is each command's ``--json`` output. (What a migration run reports is in
:mod:`dualmem_bulk.rundir.run_report`.)"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["CutoverReport", "FinalizeReport", "InspectReport", "RollbackReport", "StatusReport",
           "VerifyReport"]

_ONLINE_ONLY = ("serving", "changes_applied", "cutover_pause_ms")
"""The keys of an online run's status that an offline run's has not."""


@dataclass
class VerifyReport:
    """The verdict: ``ok`` only if every check passed; the first differing ids are listed."""

    ok: bool
    run_dir: str
    target: str
    snapshot_rows: int = 0
    target_rows: int = 0
    recorded_digest: str = ""
    snapshot_digest: str = ""
    target_digest: str = ""
    recomputed_digest: str = ""
    mismatched: int = 0
    mismatches: list[dict[str, Any]] = field(default_factory=list)
    read_back: int = 0
    """Target rows this verification read back and compared row by row (pieces the conversion
    already verified from disk are not read again)."""
    elapsed_s: float = 0.0
    not_checked: list[str] = field(default_factory=list)
    """What could not be checked (a dropped snapshot); empty when everything was."""

    def summary(self) -> str:
        """One line for an operator."""
        if self.ok and self.not_checked:
            return (f"verified what remains: {self.target_rows} nodes, every checksum and the "
                    "digest recorded at export match; the snapshot was dropped, so some checks "
                    "were not possible")
        if self.ok:
            return f"verified: {self.target_rows} nodes identical to the snapshot"
        ids = ", ".join(repr(m["id"]) for m in self.mismatches[:5])
        return (f"verification failed: {self.mismatched} node(s) differ "
                f"(snapshot {self.snapshot_rows} rows, target {self.target_rows}); first: {ids}")

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


@dataclass
class RollbackReport:
    """What a rollback did and what it proved; ``as_dict()`` is the ``--json`` output."""

    status: str
    """``rolled-back`` when done; ``rolling-back`` in the report of a failed proof."""
    run_dir: str
    mode: str
    """``copy``, ``in-place`` or ``online``."""
    state_before: str
    """The run's state when the rollback started."""
    source: str
    """The source (copy) or the legacy store converted in place."""
    target: str
    store_format: str | None = None
    """In-place runs: ``parquet`` or ``lance``."""
    snapshot_checked: bool = False
    """Every snapshot row's checksum and the snapshot digest were checked first."""
    snapshot_rows: int | None = None
    snapshot_digest: str | None = None
    removed: list[str] = field(default_factory=list)
    """What the run wrote and the rollback removed."""
    restored_from: str | None = None
    """In-place runs: the backup, the Lance version or the snapshot the store came back from."""
    proven_rows: int | None = None
    proven_digest: str | None = None
    """Digest recomputed from the restored store (in-place) or the source (copy) after the
    rollback; equal to ``snapshot_digest`` when the rollback succeeded."""
    source_untouched: bool | None = None
    """The legacy data is as it was before the run (proven by digest when there is a
    snapshot; by file sizes and times for a copy run that had not finished its export)."""
    notes: list[str] = field(default_factory=list)
    steps: list[str] = field(default_factory=list)
    """Steps done, as recorded in the journal (across re-runs of a crashed rollback)."""
    elapsed_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


@dataclass
class FinalizeReport:
    """What finalize recorded and removed; ``as_dict()`` is the ``--json`` output."""

    status: str
    run_dir: str
    mode: str
    target: str
    removed: list[str] = field(default_factory=list)
    snapshot_dropped: bool = False
    finalized_at: str = ""
    """When the run was finalized (ISO 8601)."""
    legacy_kept: str | None = None
    """Online runs: the legacy store, if it is kept (it takes no more writes)."""

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


@dataclass
class CutoverReport:
    """What a cut-over request found; ``as_dict()`` is the ``--json`` output."""

    status: str
    """``requested`` (durably, for the migrator) or ``done`` (the run had cut over already)."""
    run_dir: str
    phase: str | None = None
    """The run's phase when the cut-over was requested."""

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form: with the ``phase`` of a request, or the ``detail`` of a run that
        had cut over already."""
        if self.status == "done":
            return {"status": "done", "run_dir": self.run_dir, "detail": "already cut over"}
        return {"status": self.status, "run_dir": self.run_dir, "phase": self.phase}


@dataclass(frozen=True)
class StatusReport:
    """Where a run stands, read from its journal (:mod:`dualmem_bulk.run.status`); ``as_dict()``
    is the ``status --json`` output. The progress figures are ``None`` only before the first
    checkpoint, or a total no checkpoint has counted yet."""

    run_dir: str
    mode: str
    """``copy``, ``in-place`` or ``online``."""
    state: str
    phase: str | None
    running: bool
    """Whether a migrator holds the run's lock."""
    lock_holder: dict[str, Any] | None
    """The lock's holder: ``pid``, ``host``, ``started``."""
    source: str | None
    target: str | None
    nodes_done: int | None
    nodes_total: int | None
    rate_nodes_per_s: float | None
    eta_s: float | None
    last_checkpoint: str | None
    """ISO 8601."""
    units_committed: int
    batches_done: int
    batches_total: int | None
    snapshot_digest: str | None
    target_digest: str | None
    rollback_possible: bool
    last_event: dict[str, Any] | None
    """The last state change: ``at`` (ISO 8601), ``state``, ``detail``."""
    serving: str | None = None
    """Online runs: ``legacy``, ``dual`` or ``lance``, the store the service uses."""
    changes_applied: int | None = None
    """Online runs: change-log ids applied to the target."""
    cutover_pause_ms: float | None = None
    """Online runs: how long the cut-over held the service's writers."""

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form: an online run's keys only for an online run."""
        out = asdict(self)
        if self.mode != "online":
            for key in _ONLINE_ONLY:
                del out[key]
        return out


@dataclass(frozen=True)
class InspectReport:
    """What a path is (:mod:`dualmem_bulk.inspect`); ``as_dict()`` is the ``inspect --json``
    output: ``path``, ``kind``, then a run directory's status or the kind's own keys."""

    path: str
    kind: str
    """``run directory``, ``dual-store (FORMAT)``, ``snapshot (...)``, ``quarantine``,
    ``legacy source (KIND)`` or ``Engram data root (WAL)``."""
    details: dict[str, Any] = field(default_factory=dict)
    """The kind's own keys, in the order shown: ``schema``, ``nodes`` and ``digest`` of a store,
    a snapshot or a legacy source (with its ``valid``, ``quarantined`` rows...); ``rows``,
    ``codes`` and ``reasons`` of a quarantine."""
    status: StatusReport | None = None
    """A run directory's status."""

    @property
    def nodes(self) -> int | None:
        """Nodes of a store, a snapshot or a legacy source (``None`` for other kinds)."""
        nodes = self.details.get("nodes")
        return None if nodes is None else int(nodes)

    @property
    def digest(self) -> str | None:
        """The digest of a store, a snapshot or a legacy source's snapshot-to-be."""
        digest = self.details.get("digest")
        return None if digest is None else str(digest)

    @classmethod
    def of(cls, described: dict[str, Any]) -> InspectReport:
        """A report from a description's keys (``path`` and ``kind`` first)."""
        details = {k: v for k, v in described.items() if k not in ("path", "kind")}
        return cls(str(described["path"]), str(described["kind"]), details)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        status = self.status.as_dict() if self.status is not None else {}
        return {"path": self.path, "kind": self.kind, **status, **self.details}
