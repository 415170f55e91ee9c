"""The rollback of an online run: the legacy store has every write, so it is served again and
the dual store removed."""

from __future__ import annotations

from dualmem_bulk.online.cutover import prove_legacy
from dualmem_bulk.run.rollback import Rollback
from dualmem_bulk.rundir.journal import Journal

__all__ = ["OnlineRollback"]


class OnlineRollback(Rollback):
    """After a cut-over, prove that the legacy store holds what the dual store holds (digests
    at one change-log position, see :func:`~dualmem_bulk.online.cutover.prove_legacy`) and
    serve it again, both under the dual store's writer lock; then remove the dual store."""

    @staticmethod
    def plan(journal: Journal) -> str:
        return (f"serve the legacy store {journal.config.get('source')} again (it has every "
                f"write) and remove {journal.values['target']}")

    def undo(self) -> None:
        if self.journal.values["serving"] == "dual":
            proof = prove_legacy(self.run_dir, self.source, self.target)
            if not proof.same:
                raise self._fail(proof.describe(self.source, self.target) + "; the service "
                                 "stays on the dual store and nothing was removed")
            self.report.proven_rows, self.report.proven_digest = (proof.source.rows,
                                                                  proof.source.hex)
            self._step("the legacy store holds what the dual store held; serving it again")
        if self.journal.values["rollback_target_ours"]:
            self._remove(self.target)
