"""What the journal's ``meta`` table holds: every key, the type of its JSON value, what it means
and what a key not written yet reads as (the table in ``docs/architecture.md`` lists the same).

:class:`JournalValues` is the one declaration: :meth:`Journal.set` takes its keys as keyword
arguments and ``Journal.values[key]`` reads one, so mypy checks every key's name and type; the
journal refuses an undeclared key at run time too. Values are stored as JSON text, as they
always were: a run directory written before this declaration opens and resumes unchanged.
"""

from __future__ import annotations

from typing import Any, Literal, TypedDict

__all__ = ["DEFAULTS", "RANGE_KEY", "JournalValues", "Mode", "OnlinePosition", "Phase",
           "RangeRecord", "Serving", "State", "WalPosition", "change_number", "wal_position"]

State = Literal[
    "planned", "exporting", "converting", "verifying", "done", "failed",
    "rolling-back", "rolled-back", "finalized",
]
Mode = Literal["copy", "in-place", "online"]
"""How a run converts: into a new store, the legacy store in place, or a live store online."""
Phase = Literal["exporting", "converting", "verifying", "done",
                "copying", "catching-up", "awaiting-cutover", "cut-over"]
"""Where a run is (``status`` shows it): the offline phases, then the online ones."""
Serving = Literal["legacy", "dual", "lance"]
"""Which store an online run's service reads: the legacy store, the dual store after the
cut-over, the Lance store alone after ``finalize``."""
WalPosition = dict[str, dict[str, int]]
"""An Engram WAL position: each space's files and the offset read in each."""
OnlinePosition = int | WalPosition
"""An online run's source position: a MemoryStore's change-log number or a WAL position."""


class JournalValues(TypedDict, total=False):
    """Every key of the journal's ``meta`` table, with its value's type (each attribute's
    docstring is its line in the table of ``docs/architecture.md``)."""

    state: State
    """the run's state"""
    phase: Phase | None
    """the phase ``status`` shows"""
    mode: Mode
    """how the run converts (what ``run/modes.py`` dispatches on)"""
    config: dict[str, Any]
    """the run's identity: what must not change for it to resume (source, target, format, batch
    size, spaces, schema fingerprints...)"""
    source_identity: list[list[Any]] | None
    """every source file's size and mtime, to refuse a resume of a changed source"""
    target: str | None
    """the resolved target path"""
    staging: str | None
    """the resolved staging path"""
    tool: str | None
    """the version of dualmem-bulk that started the run"""
    created_at: float | None
    """when the run started (Unix time)"""
    partitions: list[str] | None
    """the partition plan (checked on resume)"""
    source_rows: int | None
    """the source's rows"""
    snapshot: dict[str, Any] | None
    """``rows``, ``digest``, ``groups`` of the finished snapshot"""
    report: dict[str, Any]
    """the run report so far (``as_dict()``)"""
    target_created: bool
    """whether this run created the target (rollback removes only its own)"""
    store_format: str | None
    """in-place runs: the store's format"""
    pre_migration_version: int | None
    """in-place runs of a Lance store: its last legacy version"""
    pre_migration_tag: str | None
    """in-place runs of a Lance store: the tag on that version"""
    store_files: list[str] | None
    """in-place runs of a Lance store: its data files before the run"""
    legacy_backup: str | None
    """in-place runs of a Parquet store: where the legacy store was moved"""
    swapped: bool
    """in-place runs: whether the new store is in place"""
    published_version: int | None
    """in-place runs of a Lance store: the version that published the new store"""
    rollback: dict[str, Any]
    """the last rollback's report"""
    rollback_from: State | None
    """the state the rollback started from"""
    rollback_steps: list[str]
    """the steps the rollback has done (a crashed rollback finishes)"""
    rollback_target_ours: bool
    """whether the target was this run's when the rollback started"""
    finalize: dict[str, Any]
    """the finalize report"""
    finalized_at: float | None
    """when the run was finalized"""
    online_pin: OnlinePosition | None
    """online runs: the source position the copy started from"""
    online_applied: OnlinePosition
    """online runs: the last change the Lance store holds"""
    online_copied: dict[str, Any]
    """online runs: the copy's progress"""
    online_version: int | None
    """online runs: the Lance version of the last recorded commit"""
    checkpoint_at: float | None
    """online runs: the last checkpoint's time"""
    serving: Serving
    """online runs: which store serves (``dual`` after the cut-over, ``lance`` after
    ``finalize``); the adapter reads it"""
    cutover_requested: bool
    """online runs: the operator's request for the cut-over (``--postpone-cutover``)"""
    cutover_at: float | None
    """online runs: when the cut-over was recorded"""
    cutover_position: WalPosition | None
    """online runs of an Engram WAL: the position the cut-over was proven at"""
    pending_applied: int
    """online runs after ``finalize``: the last pending write the Lance store holds"""
    rollback_proof: dict[str, Any] | None
    """an online rollback's digests at its pinned position"""


DEFAULTS: JournalValues = {
    "state": "planned", "phase": None, "mode": "copy", "config": {}, "source_identity": None,
    "target": None, "staging": None, "tool": None, "created_at": None, "partitions": None,
    "source_rows": None, "snapshot": None, "report": {}, "target_created": False,
    "store_format": None, "pre_migration_version": None, "pre_migration_tag": None,
    "store_files": None, "legacy_backup": None, "swapped": False, "published_version": None,
    "rollback": {}, "rollback_from": None, "rollback_steps": [], "rollback_target_ours": False,
    "finalize": {}, "finalized_at": None, "online_pin": None, "online_applied": 0,
    "online_copied": {}, "online_version": None, "checkpoint_at": None, "serving": "legacy",
    "cutover_requested": False, "cutover_at": None, "cutover_position": None,
    "pending_applied": 0, "rollback_proof": None,
}
"""What each key reads as before it is written (a fresh copy each time)."""

RANGE_KEY = "online_range.{:06d}"
"""Key of each committed range of an online run of a MemoryStore (``online_range.NNNNNN``),
written with :meth:`Journal.set`'s ``copied_range``."""


class RangeRecord(TypedDict):
    """One committed rowid range of an online copy (under :data:`RANGE_KEY`)."""

    unit: int
    first: int
    last: int
    rows: int
    digest: str
    version: int | None
    seconds: float
    invocation: int
    committed_at: float


def change_number(position: OnlinePosition | None) -> int:
    """A MemoryStore run's position: a change-log number (a bug if it is not one)."""
    if not isinstance(position, int):
        raise TypeError(f"not a change-log position: {position!r}")
    return position


def wal_position(position: OnlinePosition | None) -> WalPosition:
    """An Engram WAL run's position (a bug if it is not one)."""
    if not isinstance(position, dict):
        raise TypeError(f"not a WAL position: {position!r}")
    return position
