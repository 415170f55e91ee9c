"""One exception tree; each error says what was wrong, where, and what to run next.

::

    DualmemError                 exit_code
     ├── UsageError                 2   a bad option or combination of options
     ├── InputError                 3   the input cannot be migrated as it is; nothing written
     │    ├── SourceError              unreadable, truncated or unrecognised source file
     │    ├── SchemaMismatch           a column of the wrong type, or a required column missing
     │    ├── InvalidRows              strict and some rows are invalid
     │    └── SourceDamaged            strict and the source has damaged records (WAL)
     ├── TargetExists               3   the target already exists and is not this run's
     ├── VerificationFailed         1   the target differs from the snapshot
     ├── Interrupted                4   stopped (signal, full disk...); re-run the same command
     └── RunLocked                  5   another migrator holds the run directory

Foreign errors (pyarrow, polars, lance, OS) are translated at the storage boundary and chained
with ``from`` so the original stays visible.

A message names configuration fields as the configuration spells them (``workers must be at
least 0``) and lists them in ``fields``; the CLI shows each as its flag (``--workers``).
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "DualmemError",
    "InputError",
    "Interrupted",
    "InvalidRows",
    "RunChanged",
    "RunLocked",
    "SchemaMismatch",
    "SourceDamaged",
    "SourceError",
    "TargetExists",
    "UsageError",
    "VerificationFailed",
]


class DualmemError(Exception):
    """Root of every error dualmem-bulk raises on purpose; ``exit_code`` is the CLI's."""

    exit_code = 1
    fields: tuple[str, ...] = ()
    """The configuration fields the message names, the one at fault first."""

    @property
    def field(self) -> str | None:
        """The configuration field at fault, if the error is about one."""
        return self.fields[0] if self.fields else None

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickle as message and attributes: a worker process's error reaches the driver as
        itself (pickling calls ``cls(*args)`` by default, which the subclasses' own
        constructors refuse, and the pool then reports a dead worker)."""
        return _rebuild, (type(self), self.args, self.__dict__)


def _rebuild(cls: type[DualmemError], args: tuple[Any, ...], state: dict[str, Any]
             ) -> DualmemError:
    error = cls.__new__(cls)
    error.args = args
    error.__dict__.update(state)
    return error


class UsageError(DualmemError):
    """A bad option or combination of options; ``fields`` are the configuration fields the
    message names (``UsageError("workers must be at least 0, got -1", "workers")``)."""

    exit_code = 2

    def __init__(self, message: str, *fields: str) -> None:
        super().__init__(message)
        self.fields = fields


class InputError(DualmemError):
    """The input cannot be migrated as it is; nothing was written to the target."""

    exit_code = 3


class SourceError(InputError):
    """A source file that cannot be read: missing, unreadable, truncated or of unknown format;
    ``fields`` are the configuration fields ``problem`` names."""

    def __init__(self, path: object, problem: str, *fields: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = str(path)
        self.problem = problem
        self.fields = fields


class SchemaMismatch(InputError):
    """A source column of the wrong type, or a required column that is missing."""

    def __init__(self, path: str, column: str, expected: str, found: str) -> None:
        super().__init__(
            f"{path}: column {column!r}: expected {expected}, found {found}"
        )
        self.path, self.column, self.expected, self.found = path, column, expected, found


class InvalidRows(InputError):
    """``strict`` was given and the source holds invalid rows."""

    def __init__(self, count: int, first: str) -> None:
        super().__init__(
            f"{count} invalid row(s) and strict was given; first: {first}. "
            "Nothing was written to the target; run without strict to quarantine them, "
            "or with dry_run to list them."
        )
        self.count = count
        self.fields = ("strict", "dry_run")


class SourceDamaged(InputError):
    """``strict`` was given and the source has damaged or skipped records."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__(
            f"{len(lines)} damaged spot(s) in the source and strict was given; first: "
            f"{lines[0]}. Nothing was written; run `dualmem-bulk inspect` on the source to "
            "list them, or run without strict to migrate what is whole."
        )
        self.lines = lines
        self.fields = ("strict",)


class TargetExists(DualmemError):
    """The target path already holds data that this run did not write."""

    exit_code = 3

    def __init__(self, path: object) -> None:
        super().__init__(
            f"{path}: target already exists and is not this run's output; "
            "choose another target or remove it"
        )


class VerificationFailed(DualmemError):
    """The target's rows or digest differ from the snapshot's."""

    exit_code = 1


class Interrupted(DualmemError):
    """Stopped by a signal after a checkpoint; re-running the same command resumes."""

    exit_code = 4


class RunChanged(InputError):
    """The source or the configuration changed since the run started: it cannot resume."""

    def __init__(self, run_dir: object, what: str) -> None:
        super().__init__(
            f"{run_dir}: {what} since this run started, so it cannot resume; "
            "re-run with restart to start the run again from the current source"
        )
        self.fields = ("restart",)


class RunLocked(DualmemError):
    """Another migrator holds the run directory's lock."""

    exit_code = 5

    def __init__(self, run_dir: object, holder: dict[str, object] | None) -> None:
        who = (f"pid {holder.get('pid')} on {holder.get('host')}, started {holder.get('started')}"
               if holder else "an unknown process")
        super().__init__(f"{run_dir}: another migrator holds this run ({who}); "
                         "wait for it, or stop it and re-run to resume")
        self.holder = holder
