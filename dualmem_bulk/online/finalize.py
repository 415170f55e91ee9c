"""``finalize`` of an online run: end the dual writing.

After the cut-over the legacy store stays the Lance store's write-ahead log so that a rollback
finds every write in it. Once the run is finalized (recorded first: rollback is refused from
then on), this module, under the legacy store's write lock (the service's writers wait) and the
run's writer lock, applies what is left of the change log to the Lance store and records
``serving = lance``: from then on the adapters write to the run's pending store and the Lance
store alone (:mod:`dualmem_bulk.online.compat`). Then the change log is trimmed, and the legacy
store is removed if the operator asked. Repeatable: a run finalized before a crash finishes here.
"""

from __future__ import annotations

from pathlib import Path

from dualmem_bulk._fs import fsync_path, remove
from dualmem_bulk.errors import UsageError
from dualmem_bulk.rundir.journal import Journal
from dualmem_bulk.rundir.keys import change_number
from dualmem_bulk.stores.dual import DualStore, apply_through, writer_lock
from dualmem_bulk.stores.memory_store import MemoryStore

__all__ = ["end_dual_writing"]

_SIDECARS = ("", "-wal", "-shm")
"""A SQLite database in WAL mode is the file and these two beside it."""


def end_dual_writing(run_dir: Path, journal: Journal, *, remove_legacy: bool) -> tuple[
        str | None, list[str]]:
    """For a finalized online run of a MemoryStore: switch the service to the Lance store
    alone, trim the change log, remove the legacy store if asked. (The legacy store's path if
    it is kept, else ``None``; the paths removed.)"""
    config = journal.config
    if journal.mode != "online" or journal.values["serving"] == "legacy":
        if remove_legacy:
            raise UsageError(f"{run_dir}: remove_legacy applies to an online run that cut "
                             "over only", "remove_legacy")
        return None, []
    if config.get("kind") == "engram-wal":
        if remove_legacy:
            raise UsageError(f"{run_dir}: the source is an Engram data root, which Engram "
                             "owns; dualmem-bulk does not remove it")
        return config["source"], []
    store = Path(config["source"])
    if store.is_file():
        legacy = MemoryStore(store, create=False)
        try:
            if journal.values["serving"] == "dual":
                _switch(run_dir, journal, legacy)
            legacy.trim_changes(change_number(journal.values["online_applied"]))
        finally:
            legacy.close()
    if not remove_legacy:
        return (str(store) if store.exists() else None), []
    removed = []
    for suffix in _SIDECARS:
        path = store.with_name(store.name + suffix)
        if path.exists():
            remove(path)
            removed.append(str(path))
    fsync_path(store.parent)
    return None, removed


def _switch(run_dir: Path, journal: Journal, legacy: MemoryStore) -> None:
    """Apply the rest of the change log and record ``serving = lance``, with the service's
    legacy writes held: a write waiting for the lock then finds the run finalized and goes to
    the pending store instead."""
    with legacy.write_lock(), writer_lock(run_dir):
        dual = DualStore(journal.target)
        position = legacy.change_position()
        apply_through(legacy, dual, journal, position)
        journal.set(serving="lance", pending_applied=0)
