"""Synthetic legacy rows (``dualmem_bulk.generate.memories``): schema, determinism, unique ids,
realistic value ranges, streaming."""

from __future__ import annotations

import re
import uuid

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from conftest import assert_bit_equal

from dualmem_bulk.generate import generate_batches, memories
from dualmem_bulk.schema import DIM, LEGACY_SCHEMA

N = 6_000
MEM = re.compile(r"mem_[0-9a-f]{8}")


@pytest.fixture(scope="module")
def table() -> pa.Table:
    return pa.Table.from_batches(list(generate_batches(N, seed=42, batch_size=2_500)))


def test_batches_have_the_legacy_schema_and_sizes() -> None:
    batches = list(generate_batches(5_000, seed=1, batch_size=2_048))
    assert [b.num_rows for b in batches] == [2_048, 2_048, 904]
    assert all(b.schema.equals(LEGACY_SCHEMA, check_metadata=True) for b in batches)
    assert list(generate_batches(0, seed=1)) == []


@pytest.mark.parametrize("batch_size", [1, 999, 4_096, 65_536])
def test_output_is_independent_of_batch_size(table: pa.Table, batch_size: int) -> None:
    rows = 1_200 if batch_size == 1 else N
    other = pa.Table.from_batches(list(generate_batches(rows, seed=42, batch_size=batch_size)))
    assert_bit_equal(other, table.slice(0, rows))


def test_same_seed_same_data_other_seed_other_data(table: pa.Table) -> None:
    again = pa.Table.from_batches(list(generate_batches(N, seed=42, batch_size=N)))
    assert_bit_equal(again, table)
    other = pa.Table.from_batches(list(generate_batches(N, seed=43, batch_size=N)))
    assert not other.column("id").equals(table.column("id"))
    assert not other.column("embedding").equals(table.column("embedding"))


def test_ids_are_unique_even_ignoring_case_and_mixed(table: pa.Table) -> None:
    ids = table.column("id").to_pylist()
    assert len(set(ids)) == len({i.lower() for i in ids}) == N
    mem = [i for i in ids if MEM.fullmatch(i)]
    uuids = [i for i in ids if len(i) == 36 and str(uuid.UUID(i)) == i.lower()]
    free = set(ids) - set(mem) - set(uuids)
    assert 0.65 < len(mem) / N < 0.75
    assert 0.12 < len(uuids) / N < 0.18
    assert 0.12 < len(free) / N < 0.18
    assert any(u != u.lower() for u in uuids) and any(u == u.lower() for u in uuids)
    assert all(uuid.UUID(u).version == 4 for u in uuids)
    assert all(i.startswith("ep_") or " " in i for i in free)
    assert any("/" in i for i in free) and any(not i.isascii() for i in free)


def test_ids_stay_unique_up_to_ten_million_rows() -> None:
    """Ids come from bijections of the row index: check the far end of a 10M-row set too."""
    ctx = memories.Context(7)
    rng = np.random.default_rng(0)
    parts = [memories._ids(ctx, rng, start, 100_000) for start in (0, 9_900_000)]
    ids = pa.concat_arrays(parts).to_pylist()
    assert len({i.lower() for i in ids}) == len(ids)
    keys = np.sort(memories._perm32(np.arange(1 << 22, dtype=np.uint64), 12345))
    assert (np.diff(keys) > 0).all()  # np.sort, not np.unique: ~13x faster on numpy 2.4
    assert keys[-1] < 1 << 32


def test_embeddings_are_unit_norm_and_clustered(table: pa.Table) -> None:
    vectors = table.column("embedding").combine_chunks().flatten().to_numpy().reshape(-1, DIM)
    assert np.isfinite(vectors).all()
    norms = np.linalg.norm(vectors.astype(np.float64), axis=1)
    assert np.abs(norms - 1).max() < 1e-5
    sample = vectors[:500]
    cosine = sample @ sample.T
    np.fill_diagonal(cosine, -1)
    assert np.median(cosine.max(axis=1)) > 0.5  # each has a close cluster mate
    assert abs(np.median(cosine)) < 0.1  # most pairs are unrelated


def test_scalar_columns_are_realistic(table: pa.Table) -> None:
    for name in ("activation", "confidence"):
        values = table.column(name).to_numpy()
        assert values.min() >= 0 and values.max() <= 1 and values.std() > 0.1
    created = table.column("created_at").cast(pa.int64()).to_numpy()
    last = table.column("last_access").cast(pa.int64()).to_numpy()
    assert (last >= created).all() and (last == created).any()
    assert created.min() >= 1_546_300_800 * 10**9 and last.max() < 1_800_000_000 * 10**9
    assert np.mean(created % 1000 != 0) > 0.5  # nanosecond parts
    assert (created % 10**9 == 0).any()  # and some whole seconds
    access = table.column("access_count").to_numpy()
    assert (access == 0).any() and (access > 2**32).any() and np.median(access) < 100
    decay = table.column("decay_rate").to_numpy()
    assert 0.8 < np.mean(decay == np.float32(0.1)) < 0.9
    assert decay.min() >= np.float32(0.001) and decay.max() <= 1


def test_content_lengths_and_scripts(table: pa.Table) -> None:
    content = table.column("content")
    assert 0.03 < content.null_count / N < 0.07
    texts = [t for t in content.to_pylist() if t is not None]
    sizes = np.array([len(t.encode()) for t in texts])
    assert (sizes == 0).any() and np.median(sizes) < 1_000 and 10_000 < sizes.max() < 40_000
    joined = "".join(texts)
    for pattern in (r"[\u4e00-\u9fff]", r"[\u0600-\u06ff]", r"[\u0400-\u04ff]", "\U0001f389",
                    "\u200d", '"', "\\\\", "\n"):
        assert re.search(pattern, joined), pattern


def test_provenance_mix(table: pa.Table) -> None:
    prov = table.column("embedding_provenance").combine_chunks()
    assert 0.25 < 1 - prov.null_count / N < 0.35
    present = prov.filter(prov.is_valid())
    assert pc.struct_field(present, "language").null_count > 0
    assert pc.struct_field(present, "quality_score").null_count > 0
    metadata = pc.struct_field(present, "metadata")
    sizes = np.diff(metadata.offsets.to_numpy())
    assert set(sizes.tolist()) == {0, 1, 2, 3}
    for entries in metadata.to_pylist()[:300]:
        assert len({k for k, _ in entries}) == len(entries)
    assert pc.struct_field(present, "dimension").to_pylist() == [DIM] * len(present)


def test_generation_streams() -> None:
    """The first batch of a huge run comes out without the rest being made."""
    first = next(generate_batches(4_000_000_000, seed=3, batch_size=10))
    assert first.num_rows == 10
    with pytest.raises(ValueError, match="nodes"):
        next(generate_batches(1 << 32, seed=3))
