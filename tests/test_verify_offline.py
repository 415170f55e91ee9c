"""An offline run's verification (``dualmem_bulk.verify.offline``) on real targets: a converted
run verifies with every digest equal, reading each row back (on any pool) except the pieces the
conversion verified; a target missing a row, holding one twice or holding a changed one fails,
naming the id and what is wrong."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import lance
import numpy as np
import pytest

from dualmem_bulk.engines.local import WorkerPool
from dualmem_bulk.generate import write_generated
from dualmem_bulk.offline.run import OfflineConfig, run_offline
from dualmem_bulk.rundir.files import SNAPSHOT
from dualmem_bulk.stores import TargetStore
from dualmem_bulk.verify.offline import verify_offline
from dualmem_bulk.verify.pieces import PieceTask, PieceVerdict, verify_piece

NODES = 300


def _converted(tmp_path: Path, fmt: str = "lance") -> tuple[Path, Path]:
    """A finished conversion of ``NODES`` generated rows in 3 units: its target and run
    directory."""
    source, target = tmp_path / "m.parquet", tmp_path / f"n.{fmt}"
    write_generated(source, NODES, seed=13, batch_size=100)
    report = run_offline(OfflineConfig(source=source, target=target, batch_size=100,
                                       target_format=fmt))  # type: ignore[arg-type]
    assert report.verified and report.units == 3
    return target, tmp_path / f"n.{fmt}.run"


@pytest.mark.parametrize("fmt", ["lance", "parquet"])
def test_a_converted_run_verifies_reading_every_row(tmp_path: Path, fmt: str) -> None:
    target, run_dir = _converted(tmp_path, fmt)
    report = verify_offline(run_dir)
    assert report.ok and report.mismatched == 0 and report.mismatches == []
    assert report.snapshot_rows == report.target_rows == report.read_back == NODES
    assert report.target == str(target) and report.not_checked == []
    assert len({report.recorded_digest, report.snapshot_digest, report.target_digest,
                report.recomputed_digest}) == 1


def test_worker_processes_give_the_same_verdict(tmp_path: Path) -> None:
    _target, run_dir = _converted(tmp_path)
    alone = verify_offline(run_dir)
    with WorkerPool(2) as pool:
        pooled = verify_offline(run_dir, pool=pool)
    assert pooled.ok and pooled.read_back == alone.read_back == NODES
    assert (pooled.target_digest, pooled.recomputed_digest) == (alone.target_digest,
                                                                 alone.recomputed_digest)


def _verdicts(target: Path, run_dir: Path) -> list[PieceVerdict]:
    """Each piece verified as a conversion's task does it (with the files it read)."""
    store = TargetStore(target)
    starts = np.concatenate([[0], np.cumsum(store.pieces())[:-1]]).astype(int).tolist()
    return [dataclasses.replace(verify_piece(PieceTask(target, i, run_dir / SNAPSHOT, start,
                                                       100)),
                                files=store.piece_files(i))
            for i, start in enumerate(starts)]


def test_pieces_the_conversion_verified_are_not_read_again(tmp_path: Path) -> None:
    target, run_dir = _converted(tmp_path)
    verdicts = _verdicts(target, run_dir)
    assert [v.rows for v in verdicts] == [100, 100, 100]
    assert verify_offline(run_dir, checked=verdicts[:1]).read_back == 200
    trusted = verify_offline(run_dir, checked=verdicts)
    assert trusted.ok and trusted.read_back == 0 and trusted.target_rows == NODES
    flagged = dataclasses.replace(verdicts[1], problems=[("", "m-1", "found by the conversion")])
    report = verify_offline(run_dir, checked=[verdicts[0], flagged, verdicts[2]])
    assert not report.ok and report.mismatches == [{"id": "m-1",
                                                    "problem": "found by the conversion"}]


def _ids(target: Path) -> list[str]:
    return lance.dataset(str(target)).to_table(columns=["episode_id"]).column(0).to_pylist()


def test_a_missing_row_is_named(tmp_path: Path) -> None:
    target, run_dir = _converted(tmp_path)
    gone = _ids(target)[150]
    lance.dataset(str(target)).delete(f"episode_id = '{gone}'")
    report = verify_offline(run_dir)
    assert not report.ok and report.target_rows == NODES - 1 and report.mismatched == 1
    assert report.mismatches == [{"id": gone, "problem": "missing from the target"}]


def test_a_row_held_twice_is_named(tmp_path: Path) -> None:
    target, run_dir = _converted(tmp_path)
    ds = lance.dataset(str(target))
    twice = ds.to_table().take([42])  # not a slice: Lance panics on a sliced null struct
    lance.write_dataset(twice, str(target), mode="append")
    report = verify_offline(run_dir)
    assert not report.ok and report.target_rows == NODES + 1
    assert {"id": twice.column("episode_id")[0].as_py(),
            "problem": "appears more than once in the target"} in report.mismatches


def test_a_changed_field_is_named(tmp_path: Path) -> None:
    target, run_dir = _converted(tmp_path)
    changed = _ids(target)[7]
    lance.dataset(str(target)).update({"content": "'changed'"}, where=f"episode_id = '{changed}'")
    report = verify_offline(run_dir)
    assert not report.ok and report.mismatched == 1
    assert report.mismatches[0]["id"] == changed
    assert "checksum" in report.mismatches[0]["problem"]
    assert report.recomputed_digest != report.target_digest


def test_the_same_rows_in_another_order_still_verify_by_the_join(tmp_path: Path) -> None:
    """Pieces that do not line up with the snapshot are checked by the join of the keys."""
    target, run_dir = _converted(tmp_path)
    table = lance.dataset(str(target)).to_table()
    reordered = table.take([*range(100, NODES), *range(100)])
    lance.write_dataset(reordered, str(target), mode="overwrite")
    report = verify_offline(run_dir)
    assert report.ok and report.target_rows == NODES and report.mismatches == []
