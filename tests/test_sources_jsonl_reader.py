"""Reading Memory JSON lines (``dualmem_bulk.sources.jsonl.reader`` and its fast and slow paths):
serde's number rules, quarantined lines, row numbers, the fast path kept for well-formed lines."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.compute as pc
import pytest

from dualmem_bulk.errors import SourceError
from dualmem_bulk.sources import SourceBatch
from dualmem_bulk.sources.jsonl import read_jsonl, reader

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
