"""The checksum encoding checked against bytes built by hand with ``struct``, independently.

The hand-built reference encoder lives in ``tests/reference_encoding.py`` (shared with the golden
fixtures' generator); pytest's default ``prepend`` import mode puts ``tests/`` on ``sys.path``.
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from blake3 import blake3
from reference_encoding import encode_row, row_checksum, table_digest

from dualmem_bulk.checksum import TableDigest, encode_rows, episode_checksums, row_checksums
from dualmem_bulk.schema import EPISODE_TYPE, LEGACY_SCHEMA, PROVENANCE_TYPE, TIMESTAMP_TYPE


@pytest.fixture
def table() -> pa.Table:
    n = 4
    emb = np.random.default_rng(1).standard_normal(n * 768).astype(np.float32)
    emb[0] = np.nan
    emb[1] = -0.0
    emb[2] = np.inf
    emb[3] = np.frombuffer(struct.pack("<I", 0x7FA00001), "<f4")[0]  # NaN with a payload
    prov_md = {
        "model_name": "m",
        "model_version": "v",
        "dimension": 768,
        "language": None,
        "created_at": 5,
        "quality_score": None,
        "metadata": [("b", "1"), ("a", "2"), ("é", ""), ("Z", "z")],
    }
    prov_bare = {
        "model_name": "",
        "model_version": "v2",
        "dimension": 3,
        "language": "en",
        "created_at": 0,
        "quality_score": 0.5,
        "metadata": [],
    }
    cols = {
        "id": pa.array(["a", "bé", "😀x", ""]),
        "embedding": pa.FixedSizeListArray.from_arrays(pa.array(emb), 768),
        "activation": pa.array([0.5, 0.25, 1, 0], pa.float32()),
        "confidence": pa.array([0.5, 0.5, 0, 1], pa.float32()),
        "last_access": pa.array([1, 2, -1, 2**62], TIMESTAMP_TYPE),
        "access_count": pa.array([1, 2**64 - 1, 0, 7], pa.uint64()),
        "created_at": pa.array([-1, 2, 3, -(2**62)], TIMESTAMP_TYPE),
        "decay_rate": pa.array([0.1, 0.1, 0.2, 1.0], pa.float32()),
        "content": pa.array(["x", None, "", "ü" * 1000]),
        "embedding_provenance": pa.array([None, prov_md, prov_bare, None], PROVENANCE_TYPE),
        "space": pa.nulls(n, pa.utf8()),
        "episode": pa.nulls(n, EPISODE_TYPE),
    }
    return pa.Table.from_pydict(cols, schema=LEGACY_SCHEMA)


def _plain_rows(table: pa.Table) -> list[dict[str, Any]]:
    """The table's rows as plain Python values, the embedding as a float32 numpy row."""
    as_int = table.set_column(4, "last_access", table["last_access"].cast(pa.int64()))
    as_int = as_int.set_column(6, "created_at", as_int["created_at"].cast(pa.int64()))
    rows = as_int.drop(["embedding"]).to_pylist()
    emb = table["embedding"].combine_chunks().values.to_numpy(zero_copy_only=False)
    emb = emb.reshape(len(rows), 768)
    return [{**r, "embedding": emb[i]} for i, r in enumerate(rows)]


def _hand_rows(table: pa.Table) -> list[bytes]:
    return [encode_row(r) for r in _plain_rows(table)]


def test_encoding_matches_hand_built_bytes(table: pa.Table) -> None:
    assert encode_rows(table).to_pylist() == _hand_rows(table)


def test_checksums_are_blake3_of_encoding(table: pa.Table) -> None:
    expected = [blake3(b).digest() for b in _hand_rows(table)]
    assert row_checksums(table).to_pylist() == expected
    assert [row_checksum(r) for r in _plain_rows(table)] == expected


def test_checksums_respect_slices(table: pa.Table) -> None:
    whole = row_checksums(table).to_pylist()
    sliced = table.combine_chunks().to_batches()[0].slice(1, 2)
    assert row_checksums(sliced).to_pylist() == whole[1:3]


def test_digest_is_sum_mod_2_256(table: pa.Table) -> None:
    sums = row_checksums(table)
    expected = sum(int.from_bytes(c, "little") for c in sums.to_pylist()) % (1 << 256)
    digest = TableDigest.of(sums)
    assert digest.rows == 4
    assert digest.total == expected
    assert digest.hex == expected.to_bytes(32, "little").hex()
    assert TableDigest.of(sums.take([3, 1, 0, 2])) == digest
    assert TableDigest.of(sums.slice(0, 1)) + TableDigest.of(sums.slice(1)) == digest
    assert TableDigest.from_hex(4, digest.hex) == digest
    assert table_digest(_plain_rows(table)) == (4, digest.hex)


def test_digest_wraps_modulo() -> None:
    top = pa.array([b"\xff" * 32] * 2, pa.binary(32))
    assert TableDigest.of(top).total == (2 * ((1 << 256) - 1)) % (1 << 256)


def test_any_field_change_changes_checksum(table: pa.Table) -> None:
    base = row_checksums(table).to_pylist()
    emb = table["embedding"].combine_chunks()
    flipped = emb.values.to_numpy(zero_copy_only=False).copy()
    flipped.view(np.uint32)[5] ^= 1
    changed = table.set_column(1, "embedding",
                               pa.FixedSizeListArray.from_arrays(pa.array(flipped), 768))
    after = row_checksums(changed).to_pylist()
    assert after[0] != base[0]
    assert after[1:] == base[1:]


def test_episode_checksums_without_episodes_hash_each_space_as_one_row() -> None:
    """The shortcut for a legacy source (no row has an episode) gives every row the checksum
    the general encoding gives it on its own."""
    spaces = pa.array(["a", None, "b", "a", None, "ä"], pa.string())
    batch = pa.record_batch({"space": spaces, "episode": pa.nulls(len(spaces), EPISODE_TYPE)})
    together = episode_checksums(batch)
    for i in range(len(spaces)):  # beside a row with an episode: the general encoding
        general = episode_checksums(pa.record_batch({
            "space": pa.array([spaces[i].as_py(), "z"], pa.string()),
            "episode": pa.array([None, {"where_location": "x"}], EPISODE_TYPE)}))
        assert together[i] == general[0] != general[1]
    assert together[0] == together[3] != together[2]
    assert together[1] == together[4] != together[0]
