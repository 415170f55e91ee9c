"""Verification: a target proven to hold exactly its source's nodes. The checks of rows
(:mod:`.rows`) and of a target's pieces (:mod:`.pieces`, run in the conversion's tasks too),
and the verification of a whole run: offline against its snapshot (:mod:`.offline`,
:mod:`.dropped`), online against its source at one position (:mod:`.online`, by the comparison
the cut-over and a rollback after it prove themselves with too: :mod:`.pinned`). Which one a run
gets is :func:`dualmem_bulk.run.modes.verify_run`'s choice."""

from dualmem_bulk.rundir.reports import VerifyReport
from dualmem_bulk.verify.offline import verify_offline
from dualmem_bulk.verify.pieces import (
    SNAPSHOT_KEYS,
    PieceTask,
    PieceVerdict,
    snapshot_keys,
    verify_batches,
    verify_piece,
)
from dualmem_bulk.verify.rows import Problem, keyed_problems

__all__ = ["SNAPSHOT_KEYS", "PieceTask", "PieceVerdict", "Problem", "VerifyReport",
           "keyed_problems", "snapshot_keys", "verify_batches", "verify_offline", "verify_piece"]
