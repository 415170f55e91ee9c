"""Writing Memory JSON lines (``dualmem_bulk.sources.jsonl.writer``): serde's form, non-finite
floats refused, and bit-exact round trips through the reader."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from conftest import assert_bit_equal, legacy_table
from hypothesis import given, settings
from hypothesis import strategies as st

from dualmem_bulk.generate import generate_batches
from dualmem_bulk.schema import DIM, LEGACY_SCHEMA
from dualmem_bulk.sources import SourceBatch
from dualmem_bulk.sources.jsonl import read_jsonl, write_jsonl


def read_all(path: Path, batch_size: int = 1000) -> list[SourceBatch]:
    return list(read_jsonl(path, batch_size))


def as_legacy(batches: list[SourceBatch]) -> pa.Table:
    """Reader output conformed to LEGACY_SCHEMA (fixed-size embeddings, no ``_row``)."""
    table = pa.Table.from_batches([b.batch for b in batches])
    flat = pc.list_flatten(table.column("embedding").combine_chunks())
    columns = [pa.FixedSizeListArray.from_arrays(flat, DIM) if name == "embedding"
               else table.column(name) for name in LEGACY_SCHEMA.names]
    return pa.Table.from_arrays(columns, schema=LEGACY_SCHEMA)


def test_generated_data_round_trips_bit_exact(tmp_path: Path) -> None:
    expected = pa.Table.from_batches(list(generate_batches(2_500, seed=11, batch_size=1_000)))
    path = tmp_path / "m.jsonl"
    assert write_jsonl(expected.to_batches(), path) == 2_500
    batches = read_all(path, batch_size=1_000)
    assert [b.batch.num_rows for b in batches] == [1_000, 1_000, 500]
    assert not any(b.rejected for b in batches)
    assert pa.concat_arrays([b.batch.column("_row") for b in batches]).to_pylist() == list(
        range(2_500))
    assert_bit_equal(as_legacy(batches), expected)


def edge_rows() -> list[dict[str, Any]]:
    rng = np.random.default_rng(3)
    bits = rng.integers(0, 2**32, (6, DIM), dtype=np.uint64).astype(np.uint32)
    bits[(bits & 0x7F800000) == 0x7F800000] = 0x80000000  # NaN/inf -> -0.0
    bits[0, :8] = [0x80000000, 0, 1, 0x80000001, 0x7F7FFFFF, 0xFF7FFFFF, 0x00800000, 0x3DCCCCCD]
    bits[1] = 0x80000000
    provenance = {"model_name": "m/e5", "model_version": "9f2c1e7", "dimension": 768,
                  "language": None, "created_at": 0, "quality_score": None,
                  "metadata": [("", ""), ('k"q\\', "v\n\t"), ("ключ", "😀\u2028"), ("\x00", "x"),
                               ("embedding_provenance", '"embedding_provenance":null}')]}
    return [
        {"id": 'q"uote\\back/slash', "embedding_bits": bits[0], "activation": 0.0,
         "confidence": 1.0, "created_at": -(2**63), "last_access": 2**63 - 1,
         "access_count": 2**64 - 1, "content": None, "embedding_provenance": provenance},
        {"id": "ctrl\x01\x1f\x7f sep\u2028 👩‍👩‍👧", "embedding_bits": bits[1],
         "confidence_bits": 0x80000000, "decay_rate": 0.001, "created_at": -1, "content": ""},
        {"id": "", "embedding_bits": bits[2], "content": "\x00 nul \\u0000 and \ud7ff",
         "embedding_provenance": {**provenance, "language": "ar", "quality_score": 0.1,
                                  "metadata": []}},
        {"id": "3", "embedding_bits": bits[3], "content": '{"looks": ["like", "json"]}'},
        {"id": "true", "embedding_bits": bits[4], "content": "12.5e3"},
        {"id": "long", "embedding_bits": bits[5], "content": "漢字 émoji 🎉 " * 4000},
    ]


def test_edge_values_round_trip_bit_exact(tmp_path: Path) -> None:
    expected = legacy_table(edge_rows())
    path = tmp_path / "edge.jsonl"
    write_jsonl(expected.to_batches(), path)
    batches = read_all(path)
    assert not batches[0].rejected
    assert_bit_equal(as_legacy(batches), expected)


def test_writer_emits_serde_form(tmp_path: Path) -> None:
    row = {"id": "mem_1", "embedding_bits": np.array([0x3DCCCCCD, 0x80000000, 0x3F800000,
                                                        0x33D6BF95] + [0] * (DIM - 4)),
           "activation": 1.0, "confidence": 0.5, "created_at": 1_500_000_000, "last_access": -1,
           "access_count": 7, "decay_rate": 0.1, "content": 'a"b',
           "embedding_provenance": {"model_name": "m", "model_version": "v", "dimension": 768,
                                    "language": "en", "created_at": 5, "quality_score": 0.75,
                                    "metadata": [("k", "v")]}}
    path = tmp_path / "one.jsonl"
    write_jsonl(legacy_table([row]).to_batches(), path)
    text = path.read_text("utf-8")
    zeros = ",".join(["0.0"] * (DIM - 4))
    assert text == (
        '{"id":"mem_1","embedding":[0.1,-0.0,1.0,1e-7,' + zeros + '],"activation":1.0,'
        '"confidence":0.5,"last_access":"1969-12-31T23:59:59.999999999Z","access_count":7,'
        '"created_at":"1970-01-01T00:00:01.500Z","decay_rate":0.1,"content":"a\\"b",'
        '"embedding_provenance":{"model":{"name":"m","version":"v","dimension":768},'
        '"language":"en","created_at":5,"quality_score":0.75,"metadata":{"k":"v"}}}\n'
    )


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"embedding_bits": np.r_[np.zeros(5, np.uint32), 0x7FC00000, np.zeros(DIM - 6,
                                                                                np.uint32)]},
         r"row 1 \(id 'bad'\): embedding\[5\] is nan"),
        ({"activation_bits": 0x7F800000}, r"row 1 \(id 'bad'\): activation is inf"),
    ],
    ids=["nan-embedding", "inf-activation"],
)
def test_writer_refuses_non_finite_and_leaves_nothing(
        tmp_path: Path, row: dict[str, Any], message: str) -> None:
    table = legacy_table([{"id": "ok"}, {"id": "bad", **row}])
    path = tmp_path / "out.jsonl"
    with pytest.raises(ValueError, match=message):
        write_jsonl(table.to_batches(), path)
    assert list(tmp_path.iterdir()) == []


@settings(max_examples=40, deadline=None)
@given(ident=st.text(), content=st.none() | st.text(),
       meta=st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3))
def test_any_text_round_trips(ident: str, content: str | None, meta: dict[str, str]) -> None:
    provenance = {"model_name": ident, "model_version": "v", "dimension": 1, "language": ident,
                  "created_at": 1, "quality_score": 0.5, "metadata": list(meta.items())}
    expected = legacy_table([{"id": ident, "content": content,
                              "embedding_provenance": provenance}])
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "t.jsonl"
        write_jsonl(expected.to_batches(), path)
        batches = read_all(path)
    assert [r.reason for b in batches for r in b.rejected] == []
    assert_bit_equal(as_legacy(batches), expected)
