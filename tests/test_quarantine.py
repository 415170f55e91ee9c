"""A quarantine an operator can act on, through real subprocesses on real files: a stable code
for every kind of reason (counted per code in the report, with the quarantine's path), the
rejected row in its source's own representation (a fixed JSON lines row converts when fed
back), and a duplicate naming its first occurrence."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import read_snapshot

from dualmem_bulk.generate import write_generated
from dualmem_bulk.quarantine import REASON_CODES, reason_codes, source_table
from dualmem_bulk.schema import DIM, PROVENANCE_TYPE

README = Path(__file__).parents[1] / "README.md"


def _cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dualmem_bulk", *map(str, args)],
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=300)


def _convert(src: Path, target: Path, *extra: str) -> dict[str, Any]:
    done = _cli("convert", src, target, "--json", "--quiet", *extra)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def _quarantine(report: dict[str, Any]) -> list[dict[str, Any]]:
    assert report["quarantine_path"] is not None
    return pq.read_table(report["quarantine_path"]).to_pylist()


_PROV = {"model_name": "m", "model_version": "1", "dimension": DIM, "language": None,
         "created_at": 1, "quality_score": None, "metadata": [("k", "v")]}

# One row per validator reason: (changes to a valid row, expected code)
_BAD: list[tuple[dict[str, Any], str]] = [
    ({"id": None}, "null_field"),
    ({"id": b""}, "empty_id"),
    ({"id": b"\xff\xfeid"}, "not_utf8"),
    ({"embedding": None}, "null_field"),
    ({"embedding": [0.5] * (DIM - 1)}, "bad_embedding_length"),
    ({"embedding": [0.5] * (DIM - 1) + [None]}, "null_in_embedding"),
    ({"activation": None}, "null_field"),
    ({"decay_rate": None}, "null_field"),
    ({"last_access": 10**13}, "timestamp_out_of_range"),
    ({"created_at": -(10**13)}, "timestamp_out_of_range"),
    ({"confidence": 2.0}, "out_of_unit_range"),
    ({"activation": float("nan")}, "out_of_unit_range"),
    ({"content": b"caf\xe9"}, "not_utf8"),
    ({"embedding_provenance": {**_PROV, "model_name": None}}, "bad_provenance"),
    ({"embedding_provenance": {**_PROV, "metadata": None}}, "bad_provenance"),
    ({"embedding_provenance": {**_PROV, "metadata": [("k", None)]}}, "bad_provenance"),
    ({"id": b"row-0"}, "duplicate_id"),
]
_SCHEMA = pa.schema([
    ("id", pa.binary()), ("embedding", pa.list_(pa.float32())), ("activation", pa.float32()),
    ("confidence", pa.float32()), ("last_access", pa.timestamp("s", "UTC")),
    ("access_count", pa.uint64()), ("created_at", pa.timestamp("s", "UTC")),
    ("decay_rate", pa.float32()), ("content", pa.binary()),
    ("embedding_provenance", PROVENANCE_TYPE),
])


def _every_reason(path: Path) -> None:
    """Two valid rows, then one row per validator reason (in a Parquet file whose types the
    validator has to judge: binary text, variable-length embeddings, second timestamps)."""
    rows = []
    for i in range(2 + len(_BAD)):
        row: dict[str, Any] = {
            "id": f"row-{i}".encode(), "embedding": [0.25] * DIM, "activation": 0.5,
            "confidence": 0.5, "last_access": 1_700_000_000 + i, "access_count": i,
            "created_at": 1_600_000_000, "decay_rate": 0.1, "content": b"text",
            "embedding_provenance": None}
        if i >= 2:
            row.update(_BAD[i - 2][0])
        rows.append(row)
    pq.write_table(pa.Table.from_pylist(rows, schema=_SCHEMA), path)


def test_every_validator_reason_has_its_code_in_rows_and_report(tmp_path: Path) -> None:
    src = tmp_path / "bad.parquet"
    _every_reason(src)
    report = _convert(src, tmp_path / "n.lance")
    rows = _quarantine(report)
    assert Path(report["quarantine_path"]) == tmp_path / "n.lance.run" / "quarantine.parquet"
    assert [r["row"] for r in rows] == list(range(2, 2 + len(_BAD)))
    assert [r["reason_code"] for r in rows] == [code for _, code in _BAD]
    for r in rows:  # the code is derived from the text, never "other" for the validator's
        assert r["reason_code"] == ";".join(reason_codes(r["reason"]))
    assert report["quarantine_codes"] == dict(Counter(code for _, code in _BAD))
    assert report["quarantined"] == len(_BAD) and report["nodes_converted"] == 2
    # the row as its source had it: the source's own column names and values
    first = json.loads(rows[0]["record"])
    assert first["id"] is None and first["access_count"] == 2
    assert first["last_access"] == "2023-11-14T22:13:22Z"  # RFC 3339, not ticks
    assert json.loads(rows[10]["record"])["confidence"] == 2.0
    # the duplicate names its first occurrence: this file, row 0
    assert rows[-1]["reason"].endswith(f", first at {src} row 0")
    text = _cli("inspect", tmp_path / "n.lance.run" / "quarantine.parquet", "--json")
    assert json.loads(text.stdout)["codes"] == report["quarantine_codes"]


def test_every_code_is_documented_and_reader_reasons_have_codes() -> None:
    readme = README.read_text()
    for _pattern, code in REASON_CODES:
        assert f"`{code}`" in readme, code
    examples = {
        "not valid JSON: Expecting value: line 1 column 1 (char 0)": "not_json",
        "line is not a JSON object (found array)": "not_json_object",
        "line is longer than 16 MiB": "line_too_long",
        "duplicate key 'id'": "duplicate_key",
        "missing required key 'confidence'": "missing_key",
        "created_at: not an RFC 3339 timestamp in the int64 ns range: 'x'": "bad_timestamp",
        "confidence: expected a number, found a string": "wrong_json_type",
        "activation: number out of range for f64": "number_out_of_range",
        "embedding[3] is null (serde writes NaN and infinities as null, ...)":
            "null_in_embedding",
        "content not valid UTF-8 (invalid bytes or an unpaired \\u surrogate escape)":
            "not_utf8",
        "/d/default/wal/wal-0000000000000001.log: record at offset 64 (sequence 3): when "
        "'yesterday' is not an RFC 3339 timestamp": "bad_timestamp",
        "/d/default/wal/wal-0000000000000001.log: record at offset 64 (sequence 3): "
        "EpisodeStore truncated payload": "undecodable_record",
        "UTF-8 is not a kind": "other",
        "id is null; confidence is 2.0, outside [0, 1]": "null_field;out_of_unit_range",
    }
    for reason, codes in examples.items():
        assert ";".join(reason_codes(reason)) == codes, reason


def _jsonl_source(path: Path) -> list[str]:
    """Generated serde JSON lines with rows broken in ways an operator can fix."""
    write_generated(path, 40, seed=5, fmt="jsonl")
    lines = path.read_text().split("\n")[:-1]  # content may hold U+2028 and friends
    rows = [json.loads(line) for line in lines]
    rows[3]["confidence"] = 1.5
    rows[5]["embedding"] = rows[5]["embedding"][:-1]
    lines[3], lines[5] = json.dumps(rows[3]), json.dumps(rows[5])
    lines[7] = lines[7][: len(lines[7]) // 2]  # cut: not JSON at all
    lines[9] = lines[1]  # a duplicate of line 1
    path.write_text("\n".join(lines) + "\n")
    return lines


def test_jsonl_rows_come_back_as_lines_that_convert_once_fixed(tmp_path: Path) -> None:
    src = tmp_path / "m.jsonl"
    lines = _jsonl_source(src)
    report = _convert(src, tmp_path / "n.lance")
    rows = {r["row"]: r for r in _quarantine(report)}
    assert sorted(rows) == [3, 5, 7, 9]
    assert {r: rows[r]["reason_code"] for r in rows} == {
        3: "out_of_unit_range", 5: "bad_embedding_length", 7: "not_json", 9: "duplicate_id"}
    assert rows[7]["record"] == lines[7]  # the reader's reject: the line itself
    assert rows[9]["reason"].endswith(f", first at {src} row 1")
    for r in (3, 5, 9):  # the validator's: the same Memory as the source line, serde's form
        assert json.loads(rows[r]["record"]) == json.loads(lines[r]), r
    assert json.loads(rows[3]["record"])["last_access"] == json.loads(lines[3])["last_access"]
    fixed = [json.loads(rows[3]["record"]), json.loads(rows[5]["record"])]
    fixed[0]["confidence"] = 0.75
    fixed[1]["embedding"].append(0.5)
    again = tmp_path / "fixed.jsonl"
    again.write_text("".join(json.dumps(row) + "\n" for row in fixed))
    second = _convert(again, tmp_path / "fixed.lance")
    assert second["quarantined"] == 0 and second["nodes_converted"] == 2
    assert second["verified"] and second["quarantine_path"] is None


@pytest.mark.parametrize("workers", ["0", "1"])
def test_duplicate_in_a_later_partition_names_its_first_occurrence(
        tmp_path: Path, workers: str) -> None:
    """Partitions of 100 rows (row groups): the duplicates of row 5 in later partitions, and a
    second duplicate within one partition, all name row 5, in the right file."""
    first, second = tmp_path / "src" / "a.parquet", tmp_path / "src" / "b.parquet"
    first.parent.mkdir()
    write_generated(first, 300, seed=1, batch_size=100)
    write_generated(second, 300, seed=2, batch_size=100)
    table = pq.read_table(second)
    ids = table.column("id").to_pylist()
    origin = pq.read_table(first).column("id")[5].as_py()
    for i in (150, 170):
        ids[i] = origin
    pq.write_table(table.set_column(0, "id", pa.array(ids, pa.utf8())), second,
                   row_group_size=100)
    report = _convert(first.parent, tmp_path / "n.lance", "--batch-size", "100",
                      "--workers", workers)
    assert report["units"] == 6
    rows = _quarantine(report)
    assert [(r["source"], r["row"], r["reason_code"]) for r in rows] == [
        (str(second), 150, "duplicate_id"), (str(second), 170, "duplicate_id")]
    for r in rows:
        assert r["reason"].endswith(f", first at {first} row 5"), r["reason"]
    assert report["quarantine_codes"] == {"duplicate_id": 2}


def test_quarantine_rows_of_a_parquet_source_keep_its_values(tmp_path: Path) -> None:
    src = tmp_path / "m.parquet"
    write_generated(src, 20, seed=3)
    table = pq.read_table(src)
    conf = np.asarray(table.column("confidence").to_numpy()).copy()
    conf[4] = -1.0
    pq.write_table(table.set_column(table.schema.get_field_index("confidence"), "confidence",
                                    pa.array(conf, pa.float32())), src)
    report = _convert(src, tmp_path / "n.lance")
    [row] = _quarantine(report)
    record = json.loads(row["record"])
    original = pq.read_table(src).slice(4, 1)
    assert record["id"] == original.column("id")[0].as_py() and record["confidence"] == -1.0
    assert record["embedding"] == original.column("embedding")[0].as_py()  # float32 exactly
    assert record["access_count"] == original.column("access_count")[0].as_py()
    assert isinstance(record["created_at"], str) and record["created_at"].endswith("Z")
    ticks = original.column("created_at").cast(pa.int64())[0].as_py()
    parsed = pa.array([record["created_at"]]).cast(pa.timestamp("ns", "UTC"))
    assert parsed.cast(pa.int64())[0].as_py() == ticks  # RFC 3339 to the nanosecond
    # fixed, it goes back into a Parquet file of the source's types, and converts
    record["confidence"] = 0.25
    fixed = source_table([json.dumps(record)], pq.read_schema(row["source"]))
    assert fixed.schema == pq.read_schema(src)
    pq.write_table(fixed, tmp_path / "fixed.parquet")
    again = _convert(tmp_path / "fixed.parquet", tmp_path / "fixed.lance")
    assert again["nodes_converted"] == 1 and again["quarantined"] == 0
    snapshot = read_snapshot(tmp_path / "fixed.lance.run" / "snapshot.parquet")
    for name in original.column_names:  # every value as the source had it, but the fix
        got, want = snapshot.column(name), original.column(name)
        if pa.types.is_timestamp(want.type):  # nanoseconds: compared as ticks
            got, want = got.cast(pa.int64()), want.cast(pa.int64())
        assert got.to_pylist() == ([0.25] if name == "confidence" else want.to_pylist()), name
