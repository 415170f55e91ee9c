"""Verification fails on every kind of damage it claims to catch: one changed byte of `space` or
`episode` in a target (offline and online Engram-WAL runs, and the WAL cut-over proof), and each
conversion rule broken in a real target store on disk; `verify` exits 1 naming the id and the
rule."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lance
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import legacy_table

import dualmem_bulk.online.store as online_store
import dualmem_bulk.stores.dual as dual_module
from dualmem_bulk import MemoryStore, OnlineConfig, run_online
from dualmem_bulk.errors import VerificationFailed
from dualmem_bulk.generate import generate_batches
from dualmem_bulk.offline.run import OfflineConfig, run_offline
from dualmem_bulk.schema import DIM, DUAL_SCHEMA
from dualmem_bulk.stores.dual import DualStore, apply_changes
from tests.online_workload import new_memory
from tests.test_online_run import Hooks

ROOT = Path(__file__).resolve().parents[1]
WAL_FIXTURE = ROOT.parent / "shared" / "fixtures" / "engram-wal" / "engram-data"
CLEAN = ROOT / "data" / "fixtures" / "clean.parquet"

Mutation = Callable[[pa.Table], tuple[pa.Table, str]]


def _verify(run_dir: Path) -> tuple[int, dict[str, Any]]:
    done = subprocess.run([sys.executable, "-m", "dualmem_bulk", "verify", str(run_dir), "--json"],
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=300)
    assert done.returncode in (0, 1), done.stderr
    return done.returncode, json.loads(done.stdout)


def _rewrite(target: Path, mutate: Mutation) -> str:
    """Rewrite the Lance store with one value changed (a new version); the id of the row."""
    table = lance.dataset(str(target)).to_table()
    changed, episode_id = mutate(table)
    fresh = changed.take(pa.array(range(changed.num_rows), pa.int64()))  # Lance panics on slices
    lance.write_dataset(fresh, str(target), schema=DUAL_SCHEMA, mode="overwrite")
    return episode_id


def _set(table: pa.Table, row: int, column: str, value: Any) -> pa.Table:
    """``table`` with one value of ``column`` replaced (every other value keeps its bits)."""
    col = table.column(column).combine_chunks()
    kind = col.type
    if pa.types.is_dictionary(kind):
        col = col.cast(kind.value_type)
    replacement = value if isinstance(value, pa.Array) else pa.array([value], col.type)
    col = pa.concat_arrays([col.slice(0, row), replacement, col.slice(row + 1)])
    if pa.types.is_dictionary(kind):
        col = col.dictionary_encode().cast(kind)
    return table.set_column(table.schema.get_field_index(column), table.field(column), col)


def _episode_row(table: pa.Table) -> int:
    """A row whose episode has a place (so one character of it can change)."""
    places = table.column("episode").combine_chunks().field("where_location")
    return next(i for i, p in enumerate(places.to_pylist()) if p)


def _one_byte(text: str) -> str:
    """``text`` with one bit of its first byte flipped (an ASCII character stays one byte)."""
    assert text and ord(text[0]) < 0x80, text
    return chr(ord(text[0]) ^ 1) + text[1:]


def change_place(table: pa.Table) -> tuple[pa.Table, str]:
    i = _episode_row(table)
    episode = table.column("episode").combine_chunks()[i].as_py()
    episode["where_location"] = _one_byte(episode["where_location"])
    value = pa.array([episode], table.schema.field("episode").type)
    return _set(table, i, "episode", value), table.column("episode_id")[i].as_py()


def change_space(table: pa.Table) -> tuple[pa.Table, str]:
    i = _episode_row(table)
    return (_set(table, i, "space", _one_byte(table.column("space")[i].as_py())),
            table.column("episode_id")[i].as_py())


def _named(report: dict[str, Any], episode_id: str) -> list[str]:
    return [m["problem"] for m in report["mismatches"] if m["id"] == episode_id]


@pytest.mark.parametrize("mutate", [change_place, change_space])
def test_offline_verify_names_a_changed_space_or_episode(tmp_path: Path, mutate: Mutation) -> None:
    target = tmp_path / "nodes.lance"
    report = run_offline(OfflineConfig(source=WAL_FIXTURE, target=target, workers=0))
    assert report.verified
    run_dir = tmp_path / "nodes.lance.run"
    assert _verify(run_dir)[0] == 0
    episode_id = _rewrite(target, mutate)
    code, out = _verify(run_dir)
    assert code == 1 and out["status"] == "differs"
    problems = _named(out, episode_id)
    assert problems, out["mismatches"]
    if mutate is change_place:  # the row checksums agree: only the episode checksum can tell
        assert problems == ["episode fields differ from the snapshot's"]
        assert out["snapshot_digest"] == out["target_digest"] == out["recomputed_digest"]
    else:  # another space is another key: missing under one, extra under the other
        assert sorted(problems) == ["in the target but not in the snapshot",
                                    "missing from the target"]


def _online_wal(tmp_path: Path) -> tuple[Path, Path, Path]:
    root = tmp_path / "engram-data"
    shutil.copytree(WAL_FIXTURE, root)
    target = tmp_path / "nodes.lance"
    return root, target, tmp_path / "nodes.lance.run"


@pytest.mark.parametrize("mutate", [change_place, change_space])
def test_online_wal_verify_names_a_changed_space_or_episode(tmp_path: Path,
                                                           mutate: Mutation) -> None:
    root, target, run_dir = _online_wal(tmp_path)
    assert run_online(OnlineConfig(store=root, target=target)).verified
    assert _verify(run_dir)[0] == 0
    episode_id = _rewrite(target, mutate)
    code, out = _verify(run_dir)
    assert code == 1 and out["status"] == "differs"
    assert _named(out, episode_id), out["mismatches"]
    assert "space/episode columns differ" in out["mismatches"][-1]["problem"]
    if mutate is change_place:  # the row digests alone would have passed
        assert out["snapshot_digest"] == out["target_digest"] == out["recomputed_digest"]


def test_online_wal_cutover_refuses_a_changed_episode(tmp_path: Path) -> None:
    root, target, _run_dir = _online_wal(tmp_path)
    hooks = Hooks(catch_up=lambda: _rewrite(target, change_place))
    with pytest.raises(VerificationFailed, match="space/episode columns differ"):
        run_online(OnlineConfig(store=root, target=target, cutover_lag=0, poll_s=0.01), hooks)


def _f32(value: float) -> pa.Array:
    return pa.array([value], pa.float32())


RULES: dict[str, tuple[Callable[[pa.Table, int], pa.Table], str]] = {
    "node UUID": (lambda t, i: _set(t, i, "id", t.column("id")[i + 1].as_py()),
                  "id is not the node UUID of episode_id"),
    "node_type": (lambda t, i: _set(t, i, "node_type", "Concept"), "node_type is Concept"),
    "strength": (lambda t, i: _set(t, i, "strength", np.nextafter(
        np.float32(t.column("activation")[i].as_py()), np.float32(2))),
        "strength differs from activation"),
    "consolidation_score": (lambda t, i: _set(t, i, "consolidation_score", -0.0),
                            "consolidation_score is not 0.0"),
    "centroid": (lambda t, i: _set(t, i, "centroid", [0.0] * DIM),
                 "centroid is set on an Episode"),
    "coherence": (lambda t, i: _set(t, i, "coherence", 0.5), "coherence is set on an Episode"),
    "instance_count": (lambda t, i: _set(t, i, "instance_count", 1),
                       "instance_count is set on an Episode"),
    "formation_time": (lambda t, i: _set(t, i, "formation_time", 0),
                       "formation_time is set on an Episode"),
}


@pytest.mark.parametrize("rule", list(RULES))
def test_verify_names_each_broken_conversion_rule(tmp_path: Path, rule: str) -> None:
    report = run_offline(OfflineConfig(source=CLEAN, target=tmp_path / "nodes.lance", workers=0))
    assert report.verified
    mutate, reason = RULES[rule]
    row = 3

    def broken(table: pa.Table) -> tuple[pa.Table, str]:
        return mutate(table, row), table.column("episode_id")[row].as_py()

    episode_id = _rewrite(tmp_path / "nodes.lance", broken)
    code, out = _verify(tmp_path / "nodes.lance.run")
    assert code == 1, out
    assert reason in _named(out, episode_id), out["mismatches"]


def test_a_run_quarantines_each_provenance_reason(tmp_path: Path) -> None:
    """A real Parquet source with one broken provenance per row: each row is quarantined with
    its reason (a null inside a present provenance would otherwise encode like an empty value)."""
    good = {"model_name": "m", "model_version": "1", "dimension": 768, "language": None,
            "created_at": 5, "quality_score": None, "metadata": [("k", "v")]}
    broken = {"model_name": {"model_name": None}, "model_version": {"model_version": None},
              "dimension": {"dimension": None}, "created_at": {"created_at": None},
              "metadata": {"metadata": None}, "metadata value": {"metadata": [("k", None)]}}
    rows = [{"id": "fine", "embedding_provenance": good}]
    rows += [{"id": name, "embedding_provenance": {**good, **change}}
             for name, change in broken.items()]
    src = tmp_path / "src.parquet"
    pq.write_table(legacy_table(rows), src)
    report = run_offline(OfflineConfig(source=src, target=tmp_path / "n.lance", workers=0))
    assert (report.nodes_converted, report.quarantined) == (1, len(broken))
    reasons = {r["id"]: r["reason"] for r in
               pq.read_table(tmp_path / "n.lance.run" / "quarantine.parquet").to_pylist()}
    assert reasons == {
        "model_name": "embedding_provenance.model_name is null",
        "model_version": "embedding_provenance.model_version is null",
        "dimension": "embedding_provenance.dimension is null",
        "created_at": "embedding_provenance.created_at is null",
        "metadata": "embedding_provenance.metadata is null",
        "metadata value": "embedding_provenance.metadata holds a null value",
    }


def _memory_store(path: Path, nodes: int) -> Path:
    with MemoryStore(path) as store:
        for batch in generate_batches(nodes, 5, 500):
            store.store_batch(batch)
    return path


def _change_a_space(table: pa.Table) -> tuple[pa.Table, str]:
    """Give the first node a space (a MemoryStore's nodes have none)."""
    return _set(table, 0, "space", "default"), table.column("episode_id")[0].as_py()


def test_memory_store_cutover_refuses_a_changed_space(tmp_path: Path) -> None:
    """The proof at the pinned position compares the identity digests: a node given a space
    (its row checksum unchanged) stops the cut-over."""
    store = _memory_store(tmp_path / "m.sqlite", 1_000)
    target = tmp_path / "nodes.lance"
    hooks = Hooks(verify=lambda: _rewrite(target, _change_a_space))
    with pytest.raises(VerificationFailed, match=r"^at change \d+ .*space/episode columns differ"):
        run_online(OnlineConfig(store=store, target=target, cutover_lag=0, poll_s=0.01), hooks)


def _into_a_space(monkeypatch: pytest.MonkeyPatch) -> None:
    """From now on the dual store's writes give every node the space ``elsewhere``."""
    to_dual = dual_module.to_dual

    def into_a_space(legacy: pa.RecordBatch, *args: Any) -> pa.RecordBatch:
        node = to_dual(legacy, *args)
        where = node.schema.get_field_index("space")
        return node.set_column(where, "space", pa.array(["elsewhere"] * node.num_rows))

    monkeypatch.setattr(dual_module, "to_dual", into_a_space)


def test_memory_store_cutover_refuses_a_space_written_after_the_pin(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """After the verified pin the cut-over carries the identity digests through the changes it
    applies (no rescan): a change written into the target with another space stops it."""
    store = _memory_store(tmp_path / "m.sqlite", 1_000)
    pinned = online_store.compare_at_pin

    def pin_then_write(*args: Any, **kwargs: Any) -> Any:
        result = pinned(*args, **kwargs)
        with MemoryStore(store, create=False) as writer:
            writer.store(new_memory(3, 1, "after the pin"))
        _into_a_space(monkeypatch)
        return result

    monkeypatch.setattr(online_store, "compare_at_pin", pin_then_write)
    with pytest.raises(VerificationFailed,
                       match=r"at the cut-over the store .*space/episode columns differ"):
        run_online(OnlineConfig(store=store, target=tmp_path / "nodes.lance", cutover_lag=0,
                                poll_s=0.01))


def test_changes_applied_after_the_pin_carry_the_identity_digests(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The changes applied after the verified pin (the cut-over pause) are carried forward by
    digest: a target that gets another space than the source shows in the identity digests,
    though the row digests agree."""
    store = MemoryStore(_memory_store(tmp_path / "m.sqlite", 200))
    dual = DualStore(tmp_path / "nodes.lance")
    try:
        dual.append(pa.Table.from_batches(list(store.scan(1_000))).combine_chunks()
                    .to_batches()[0])
        after = store.change_position()
        store.store(new_memory(1, 7, "late"))
        with store.snapshot():
            fine = apply_changes(store, dual, after, limit=100, track=True)
        assert fine.source_added == fine.target_added
        assert fine.source_identity == fine.target_identity
        _into_a_space(monkeypatch)
        store.store(new_memory(2, 7, "later"))
        with store.snapshot():
            moved = apply_changes(store, dual, fine.position, limit=100, track=True)
        assert (moved.upserts, moved.source_added) == (1, moved.target_added)
        assert moved.source_identity != moved.target_identity
    finally:
        store.close()
