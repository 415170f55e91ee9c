"""The known-answer vectors (``data/fixtures/checksum-vectors.json``) against the package's fast
encoders and the independent reference encoder: row encodings and checksums, episode encodings
and checksums, the table digest and the identity digest."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from reference_encoding import encode_episode, encode_row, episode_checksum, row_checksum

from dualmem_bulk.checksum import (
    TableDigest,
    encode_rows,
    episode_checksums,
    identity_digest,
    row_checksums,
)
from dualmem_bulk.schema import DIM, EPISODE_TYPE, LEGACY_SCHEMA, PROVENANCE_TYPE

FIXTURES = Path(__file__).resolve().parents[1] / "data" / "fixtures"
VECTORS = json.loads((FIXTURES / "checksum-vectors.json").read_text(encoding="utf-8"))
sys.path.insert(0, str(FIXTURES))
import make_vectors  # noqa: E402  (the file's own converters to the reference's input form)


def _f32(values: list[str | None]) -> pa.Array:
    bits = [None if v is None else int(v, 16) for v in values]
    return pa.array(bits, pa.uint32()).view(pa.float32())


def _struct(rows: list[dict[str, Any] | None], kind: pa.StructType,
            floats: tuple[str, ...], nested: dict[str, tuple[str, ...]]) -> pa.StructArray:
    """A struct column from file-form dicts: floats from their bit patterns, maps from pairs."""
    columns = []
    for field in kind:
        values = [None if r is None else r[field.name] for r in rows]
        if field.name in floats:
            columns.append(_f32(values))
        elif field.name in nested:
            columns.append(_struct(values, field.type, nested[field.name], {}))
        elif pa.types.is_map(field.type):
            columns.append(pa.array([None if v is None else [tuple(kv) for kv in v]
                                     for v in values], field.type))
        else:
            columns.append(pa.array(values, field.type))
    return pa.StructArray.from_arrays(columns, fields=list(kind),
                                      mask=pa.array([r is None for r in rows]))


def _table() -> pa.Table:
    rows = VECTORS["rows"]
    embedding = np.frombuffer(b"".join(bytes.fromhex(r["embedding"]) for r in rows), "<f4")
    columns: dict[str, pa.Array] = {
        "id": pa.array([r["id"] for r in rows], pa.utf8()),
        "embedding": pa.FixedSizeListArray.from_arrays(pa.array(embedding), DIM),
        **{n: _f32([r[n] for r in rows]) for n in ("activation", "confidence", "decay_rate")},
        **{n: pa.array([r[n] for r in rows], pa.int64()).cast(LEGACY_SCHEMA.field(n).type)
           for n in ("last_access", "created_at")},
        "access_count": pa.array([r["access_count"] for r in rows], pa.uint64()),
        "content": pa.array([r["content"] for r in rows], pa.utf8()),
        "embedding_provenance": _struct([r["embedding_provenance"] for r in rows],
                                        PROVENANCE_TYPE, ("quality_score",), {}),
        "space": pa.array([r["space"] for r in rows], pa.utf8()),
        "episode": _struct([r["episode"] for r in rows], EPISODE_TYPE,
                           ("vividness_confidence", "reliability_confidence", "decay_rate"),
                           {"decay_function": ("tau_hours", "beta", "short_term_tau",
                                               "long_term_beta")}),
    }
    return pa.table(columns, schema=LEGACY_SCHEMA)


def _expected(key: str) -> list[bytes]:
    return [bytes.fromhex(r["expected"][key]) for r in VECTORS["rows"]]


def test_the_vectors_cover_the_edge_cases() -> None:
    table = _table()
    bits = table["embedding"].combine_chunks().values.view(pa.uint32()).to_pylist()
    assert {0x7FA00001, 0x80000000, 0x7F800000, 0xFFC00001} <= set(bits)  # NaN payloads, -0.0
    assert table["content"].null_count and table["episode"].null_count
    metadata = [kv[0] for kv in VECTORS["rows"][1]["embedding_provenance"]["metadata"]]
    assert metadata != sorted(metadata, key=str.encode)  # unsorted, unicode keys
    assert any(ord(c) > 0x7F for key in metadata for c in key)


def test_the_package_gives_the_known_answers() -> None:
    table = _table()
    assert encode_rows(table).to_pylist() == _expected("row_encoding")
    sums = row_checksums(table)
    assert sums.to_pylist() == _expected("row_checksum")
    batch = table.combine_chunks().to_batches()[0]
    episodes = episode_checksums(batch)
    assert episodes.to_pylist() == _expected("episode_checksum")
    digest = TableDigest.of(sums)
    assert (digest.rows, digest.hex) == (VECTORS["table"]["rows"], VECTORS["table"]["digest"])
    assert identity_digest(sums, episodes).hex == VECTORS["table"]["identity_digest"]


@pytest.mark.parametrize("index", range(len(VECTORS["rows"])))
def test_the_reference_gives_the_known_answers(index: int) -> None:
    vector = VECTORS["rows"][index]
    row = make_vectors.reference_row(vector)
    episode = make_vectors.reference_episode(vector)
    expected = vector["expected"]
    assert encode_row(row).hex() == expected["row_encoding"]
    assert row_checksum(row).hex() == expected["row_checksum"]
    assert encode_episode(vector["space"], episode).hex() == expected["episode_encoding"]
    assert episode_checksum(vector["space"], episode).hex() == expected["episode_checksum"]
