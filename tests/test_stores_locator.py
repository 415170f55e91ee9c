"""Point reads by row offset (``RowLocator``) on a real Lance store, across the versions a live
store goes through: appends, deletes, upserts into old fragments, compaction, a restore. One
``DualStore`` follows every version (its locator updates incrementally); each read is compared
with a scanner read (filter on ``episode_id``) of the same version."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from dualmem_bulk.generate import generate_batches
from dualmem_bulk.stores.dual import DualStore
from dualmem_bulk.stores.memory_store import Memory, batch_to_memories


def _expected(path: Path, ids: list[str]) -> dict[str, Memory | None]:
    """What a scanner read of the latest version says each id holds."""
    rows = DualStore(path).legacy_rows(ids)
    found = {m.id: m for m in batch_to_memories(rows)}
    return {i: found.get(i) for i in ids}


def _check(store: DualStore, ids: list[str]) -> None:
    expected = _expected(store.path, ids)
    assert {i: store.memory(i) for i in ids} == expected
    assert {i: store.contains(i) for i in ids} == {i: m is not None for i, m in expected.items()}


def test_reads_by_offset_follow_every_version(tmp_path: Path) -> None:
    path = tmp_path / "nodes.lance"
    store = DualStore(path)
    batches = list(generate_batches(900, 7, 300))
    for batch in batches:  # three fragments
        store.append(batch)
    ids = [i for b in batches for i in b.column("id").to_pylist()]
    sample = [*ids[::7], "absent-id"]
    _check(store, sample)

    # deletes in the first fragment shift the live positions of the rows after them
    gone = ids[:250:3]
    store.apply(batches[0].slice(0, 0), gone)
    _check(store, sample + ids[1:250:3])
    assert all(store.memory(i) is None for i in gone)

    # upserts move rows out of old fragments into a new one
    old = batches[1].slice(0, 40)
    changed = old.set_column(old.schema.get_field_index("activation"), "activation",
                             pc.multiply(old.column("activation"), pa.scalar(0.5, pa.float32())))
    store.apply(changed, [])
    _check(store, sample + old.column("id").to_pylist())
    memory = store.memory(old.column("id")[0].as_py())
    assert memory is not None and memory.activation == changed.column("activation")[0].as_py()

    before_compaction = store.dataset().version
    for start in range(0, 90, 10):  # small fragments, then compacted into one
        store.apply(batches[2].slice(start, 10), [ids[700 + start]])
    store.maintain()
    assert len(store.dataset().get_fragments()) < 3 + 1 + 9
    _check(store, sample + ids[600:800])
    assert store.memory(ids[700]) is None

    store.restore(before_compaction)  # the latest version holds the earlier rows again
    _check(store, sample + ids[600:800])
    assert store.memory(ids[700]) is not None
