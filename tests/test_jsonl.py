"""Memory JSON lines: bit-exact round trips, serde's number rules, quarantined lines."""

from __future__ import annotations

import json
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

from dualmem_bulk.errors import SourceError
from dualmem_bulk.generate import generate_batches
from dualmem_bulk.schema import DIM, LEGACY_SCHEMA
from dualmem_bulk.sources import SourceBatch
from dualmem_bulk.sources.jsonl import read_jsonl, reader, write_jsonl

GOOD: dict[str, Any] = {
    "id": "mem_1a2b3c4d", "embedding": [0.5, -0.0, 1e-45, 3.4028235e38], "activation": 0.25,
    "confidence": 1.0, "last_access": "2024-01-01T00:00:00.123456789Z", "access_count": 3,
    "created_at": "1969-12-31T23:59:59.999999999Z", "decay_rate": 0.1, "content": "héllo",
    "embedding_provenance": None,
}
MISSING = object()


def line(**changes: Any) -> bytes:
    """A serde-form Memory line; a value of MISSING drops the key."""
    obj = {k: v for k, v in {**GOOD, **changes}.items() if v is not MISSING}
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()


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


@pytest.mark.parametrize(
    ("bad", "reason", "ident"),
    [
        (b"not json", "not valid JSON", None),
        (b"[1, 2]", "line is not a JSON object (found array)", None),
        (b'{"id":"a"} {"id":"b"}', "not valid JSON: Extra data", None),
        (line(id=5), "id: expected a string, found integer 5", None),
        (line(embedding=[1.0, None]), "embedding[1] is null", "mem_1a2b3c4d"),
        (line(embedding="x"), "embedding: expected an array of numbers", "mem_1a2b3c4d"),
        (line(embedding=[1, True]), "embedding[1]: expected a number, found bool",
         "mem_1a2b3c4d"),
        (line(embedding=MISSING), "missing required key 'embedding'", "mem_1a2b3c4d"),
        (line(activation="high"), 'activation: expected a number, found string "high"',
         "mem_1a2b3c4d"),
        (line(confidence=None), "confidence: expected a number, found null", "mem_1a2b3c4d"),
        (line(created_at=MISSING), "missing required key 'created_at'", "mem_1a2b3c4d"),
        (line(last_access="2024-13-01T00:00:00Z"), "last_access: not an RFC 3339 timestamp",
         "mem_1a2b3c4d"),
        (line(last_access=1700000000), "last_access: expected a string, found integer",
         "mem_1a2b3c4d"),
        (line(access_count=-1), "access_count: expected an unsigned 64-bit integer",
         "mem_1a2b3c4d"),
        (line(access_count=2**64), "access_count: expected an unsigned 64-bit integer",
         "mem_1a2b3c4d"),
        (line(access_count=3.0), "access_count: expected an unsigned 64-bit integer, found num",
         "mem_1a2b3c4d"),
        (line(content=3), "content: expected a string, found integer 3", "mem_1a2b3c4d"),
        (line(content="x").replace(b'"x"', b'"x\xff"'), "content not valid UTF-8",
         "mem_1a2b3c4d"),
        (line(id="ab").replace(b'"ab"', b'"a\\ud800b"'), "id not valid UTF-8", None),
        (line().replace(b'"activation":0.25', b'"activation":NaN'), "NaN is not a JSON number",
         "mem_1a2b3c4d"),
        (line().replace(b'"decay_rate":0.1', b'"decay_rate":1e400'),
         "decay_rate: number out of range", "mem_1a2b3c4d"),
        (line()[:-1] + b',"id":"again"}', "duplicate key 'id'", "again"),
        (line(embedding_provenance="m"), "embedding_provenance: expected an object or null",
         "mem_1a2b3c4d"),
        (line(embedding_provenance={"model": {"name": "m", "version": "v", "dimension": 1},
                                    "created_at": 1, "quality_score": "x", "metadata": {}}),
         "embedding_provenance.quality_score: expected a number", "mem_1a2b3c4d"),
        (line(embedding_provenance={"model": {"name": "m", "version": "v", "dimension": 1},
                                    "created_at": 1, "metadata": {"k": 1}}),
         "embedding_provenance.metadata.k: expected a string", "mem_1a2b3c4d"),
        (line(embedding_provenance={"model": {"name": "m", "dimension": 1},
                                    "created_at": 1, "metadata": {}}),
         "missing required key embedding_provenance.model.'version'", "mem_1a2b3c4d"),
    ],
    ids=lambda v: v[:40].decode("utf-8", "replace") if isinstance(v, bytes) else None,
)
def test_bad_line_is_quarantined_with_reason(
        tmp_path: Path, bad: bytes, reason: str, ident: str | None) -> None:
    path = tmp_path / "m.jsonl"
    path.write_bytes(line(id="first") + b"\n" + bad + b"\n\n" + line(id="last") + b"\n")
    batches = read_all(path)
    rows = [r for b in batches for r in b.batch.column("_row").to_pylist()]
    ids = [r for b in batches for r in b.batch.column("id").to_pylist()]
    assert (rows, ids) == ([0, 3], ["first", "last"])
    [rejected] = [r for b in batches for r in b.rejected]
    assert rejected.row == 1
    assert rejected.source == str(path)
    assert reason in rejected.reason
    assert rejected.id == ident
    try:
        assert rejected.record == bad.decode("utf-8")
    except UnicodeDecodeError:
        assert rejected.record == bad.hex()


def test_serde_number_rules(tmp_path: Path) -> None:
    """Integers are f32s too; ``-0`` is -0.0 (serde_json) though polars alone reads +0.0;
    ``1e-400`` underflows to 0.0; f32 values are f64-parsed then rounded, like serde."""
    path = tmp_path / "n.jsonl"
    text = (line(embedding=[1, 2, 3]).replace(b"[1,2,3]", b"[-0,1e-400,16777217,0.1]")
            .replace(b'"activation":0.25', b'"activation":-0'))
    path.write_bytes(text + b"\n")
    [batch] = read_all(path)
    assert not batch.rejected
    values = batch.batch.column("embedding").values.to_numpy()
    assert values.view(np.uint32).tolist() == [0x80000000, 0, 0x4B800000, 0x3DCCCCCD]
    assert batch.batch.column("activation").to_numpy().view(np.uint32).tolist() == [0x80000000]


@pytest.mark.parametrize("separators", [(",", ":"), (", ", ": ")], ids=["compact", "spaced"])
def test_well_formed_lines_stay_on_the_fast_path(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, separators: tuple[str, str]) -> None:
    def no_slow_path(raw: bytes) -> None:
        raise AssertionError(f"slow path taken for {raw[:60]!r}")

    monkeypatch.setattr(reader, "decode_line", no_slow_path)
    provenance = {"model": {"name": "m", "version": "v", "dimension": 768}, "language": "de",
                  "created_at": 5, "quality_score": 0.5,
                  "metadata": {"k": "v"}}
    path = tmp_path / "f.jsonl"
    path.write_text("\n".join(
        json.dumps({**GOOD, "id": f"m{i}", "embedding_provenance": p}, ensure_ascii=False,
                   separators=separators) for i, p in enumerate([None, provenance])), "utf-8")
    [batch] = read_all(path)
    assert batch.batch.column("id").to_pylist() == ["m0", "m1"]
    assert batch.batch.column("embedding_provenance").to_pylist()[1] == {
        "model_name": "m", "model_version": "v", "dimension": 768, "language": "de",
        "created_at": 5, "quality_score": 0.5,
        "metadata": [("k", "v")]}


def test_provenance_found_whatever_the_key_order_or_lookalike_keys(tmp_path: Path) -> None:
    provenance = {"model": {"name": "m", "version": "v", "dimension": 1}, "language": None,
                  "created_at": 9, "quality_score": None, "metadata": {}}
    first = {"embedding_provenance": provenance, **{k: v for k, v in GOOD.items()
                                                    if k != "embedding_provenance"}}
    lookalike = {**GOOD, "embedding_provenance": provenance, 'x"embedding_provenance': None}
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps(first) + "\n" + json.dumps(lookalike, separators=(",", ":")),
                    "utf-8")
    [batch] = read_all(path)
    assert not batch.rejected
    assert [p["created_at"] for p in batch.batch.column("embedding_provenance").to_pylist()] == [
        9, 9]


def test_loose_output_keeps_wrong_lengths_and_optional_keys(tmp_path: Path) -> None:
    path = tmp_path / "l.jsonl"
    path.write_bytes(line(content=MISSING, embedding_provenance=MISSING) + b"\n"
                     + line(embedding=[0.5] * 3) + b"\n")
    [batch] = read_all(path)
    assert not batch.rejected
    assert pc.list_value_length(batch.batch.column("embedding")).to_pylist() == [4, 3]
    assert batch.batch.column("content").to_pylist() == [None, "héllo"]
    assert batch.batch.column("space").null_count == 2
    assert batch.batch.column("episode").null_count == 2


def test_row_numbers_across_small_batches_blank_lines_and_crlf(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    lines = [b"", line(id="a") + b"\r", b"  ", b"oops", line(id="b"), b"", line(id="c"),
             line(id="d")]
    path.write_bytes(b"\n".join(lines))  # no newline at the end
    batches = read_all(path, batch_size=2)
    assert [b.batch.column("_row").to_pylist() for b in batches] == [[1], [4, 6], [7]]
    assert [[r.row for r in b.rejected] for b in batches] == [[3], [], []]
    assert [i for b in batches for i in b.batch.column("id").to_pylist()] == ["a", "b", "c", "d"]


@pytest.mark.parametrize(
    "content",
    [b"PAR1\x00\x01binary", b"[1, 2, 3]\n", b"\n\nhello world\n", b'"just a string"\n'],
    ids=["binary", "array", "text", "string"],
)
def test_file_that_is_not_json_lines_raises(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "x.jsonl"
    path.write_bytes(content)
    with pytest.raises(SourceError, match="not Memory JSON lines: line"):
        read_all(path)


def test_empty_and_blank_files_yield_nothing(tmp_path: Path) -> None:
    empty, blank = tmp_path / "e.jsonl", tmp_path / "b.jsonl"
    empty.write_bytes(b"")
    blank.write_bytes(b"\n  \n\r\n")
    assert read_all(empty) == []
    assert read_all(blank) == []
    with pytest.raises(SourceError, match="cannot read"):
        read_all(tmp_path / "missing.jsonl")


def test_overlong_line_is_rejected_without_being_held(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reader, "_MAX_LINE", 1_000)
    path = tmp_path / "o.jsonl"
    path.write_bytes(line(id="a") + b"\n" + line(content="x" * 5_000) + b"\n" + line(id="b"))
    [batch] = read_all(path)
    assert batch.batch.column("_row").to_pylist() == [0, 2]
    [rejected] = batch.rejected
    assert (rejected.row, rejected.record) == (1, None)
    assert "longer than" in rejected.reason


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
