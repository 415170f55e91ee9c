"""Golden fixtures: every reader, the validator and a full offline run must give exactly what
``data/fixtures/expected.json`` says, which was computed independently of the package (see
``data/fixtures/README.md``): counts, rejected rows with their reasons, and the digest of the
valid rows; and the converted store must give back the fixture's valid rows bit for bit.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from reference_encoding import table_digest

from dualmem_bulk import verify_run
from dualmem_bulk.convert import to_legacy
from dualmem_bulk.offline.run import OfflineConfig, run_offline
from dualmem_bulk.rundir.files import QUARANTINE
from dualmem_bulk.sources.scan import scan_source
from dualmem_bulk.stores import DEFAULT_BATCH_SIZE, TargetStore

FIXTURES = Path(__file__).resolve().parents[1] / "data" / "fixtures"
EXPECTED: dict[str, dict[str, Any]] = json.loads(
    (FIXTURES / "expected.json").read_text(encoding="utf-8")
)["files"]
NAMES = sorted(EXPECTED)
FULL_RUNS = [n for n in NAMES if n.startswith(("clean", "extreme", "invalid"))]
SMALL_BATCH = 4
"""Batches smaller than a row group: duplicates and rejections cross batch edges."""


@cache
def make_fixtures() -> ModuleType:
    """``data/fixtures/make_fixtures.py`` as a module (it is a script, not a package)."""
    path = FIXTURES / "make_fixtures.py"
    spec = importlib.util.spec_from_file_location("make_fixtures", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while decorating
    spec.loader.exec_module(module)
    return module


@cache
def built() -> dict[str, Any]:
    """The generator's in-memory fixtures (the rows each file was written from)."""
    fixtures: dict[str, Any] = make_fixtures().build()
    return fixtures


def _needs_reader(name: str) -> None:
    if name.endswith(".jsonl") and importlib.util.find_spec("dualmem_bulk.sources.jsonl") is None:
        pytest.skip("the JSON lines reader (dualmem_bulk.sources.jsonl) does not exist yet")


def _assert_rejected(name: str, found: list[tuple[int, str | None, str]]) -> None:
    """``found`` = (row, id, reason) of each quarantined row, in source order."""
    expected = EXPECTED[name]["rejected"]
    assert [row for row, _, _ in found] == [r["row"] for r in expected], name
    for (row, ident, reason), exp in zip(found, expected, strict=True):
        for part in exp["reason"]:
            assert part.lower() in reason.lower(), (name, row, exp["what"], part, reason)
        assert ident == exp["id"], (name, row, exp["what"])


# --------------------------------------------------------------------------- plain rows


def _f32_bits(value: bytes) -> int:
    return int(np.frombuffer(value, dtype="<u4")[0])


def _plain_expected(row: dict[str, Any], sort_metadata: bool) -> dict[str, Any]:
    """A generator row with floats as uint32 bits and the embedding as its raw bytes."""
    prov = row["embedding_provenance"]
    if prov is not None:
        metadata = list(prov["metadata"])
        prov = {
            **prov,
            "quality_score": None if prov["quality_score"] is None
            else _f32_bits(prov["quality_score"]),
            "metadata": sorted(metadata) if sort_metadata else metadata,
        }
    return {
        "id": row["id"],
        "embedding": np.asarray(row["embedding"], dtype="<u4").tobytes(),
        "activation": _f32_bits(row["activation"]),
        "confidence": _f32_bits(row["confidence"]),
        "last_access": row["last_access"],
        "access_count": row["access_count"],
        "created_at": row["created_at"],
        "decay_rate": _f32_bits(row["decay_rate"]),
        "content": row["content"],
        "embedding_provenance": prov,
    }


def _bits(arr: pa.Array) -> list[int | None]:
    values: list[int | None] = arr.view(pa.uint32()).to_pylist()
    return values


def _plain_legacy(batch: pa.RecordBatch, sort_metadata: bool) -> list[dict[str, Any]]:
    """Legacy rows read back from a store, in the same plain form, without any float conversion."""
    n = batch.num_rows
    emb = batch.column("embedding")
    flat = np.asarray(emb.values.slice(emb.offset * 768, n * 768).view(pa.uint32()))
    prov = batch.column("embedding_provenance")
    quality = _bits(pc.struct_field(prov, "quality_score"))
    columns = {
        name: _bits(batch.column(name)) for name in ("activation", "confidence", "decay_rate")
    }
    for name in ("last_access", "created_at"):
        columns[name] = batch.column(name).cast(pa.int64()).to_pylist()
    for name in ("id", "access_count", "content"):
        columns[name] = batch.column(name).to_pylist()
    out = []
    for i, p in enumerate(prov.to_pylist()):
        if p is not None:
            metadata = list(p["metadata"])
            p = {**p, "quality_score": quality[i],
                 "metadata": sorted(metadata) if sort_metadata else metadata}
        out.append({
            **{name: values[i] for name, values in columns.items()},
            "embedding": flat[i * 768 : (i + 1) * 768].astype("<u4").tobytes(),
            "embedding_provenance": p,
        })
    return out


def _by_id(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out = {r["id"]: r for r in rows}
    assert len(out) == len(rows), "ids repeat"
    return out


# --------------------------------------------------------------------------- the tests


def test_expected_is_self_consistent() -> None:
    for name, exp in EXPECTED.items():
        assert exp["rows_in"] == exp["valid"] + exp["quarantined"], name
        assert exp["quarantined"] == len(exp["rejected"]), name
        assert exp["digest_rows"] == exp["valid"], name
        assert len(exp["digest"]) == 64, name
    assert EXPECTED["clean.parquet"]["digest"] == EXPECTED["clean.jsonl"]["digest"]
    for name, fixture in built().items():
        assert table_digest(fixture.valid_rows) == (EXPECTED[name]["valid"],
                                                    EXPECTED[name]["digest"])


@pytest.mark.parametrize("batch_size", [DEFAULT_BATCH_SIZE, SMALL_BATCH], ids=["batch", "small"])
@pytest.mark.parametrize("name", NAMES)
def test_scan_source(name: str, batch_size: int) -> None:
    _needs_reader(name)
    exp = EXPECTED[name]
    report = scan_source(FIXTURES / name, batch_size=batch_size)
    assert (report.nodes_in, report.snapshot_rows, report.quarantined) == (
        exp["rows_in"], exp["valid"], exp["quarantined"])
    assert report.snapshot_digest == exp["digest"]
    assert len(exp["rejected"]) <= 20, "the report samples only the first 20 rejected rows"
    _assert_rejected(name, [(s["row"], s["id"], s["reason"]) for s in report.quarantine_sample])


@pytest.mark.parametrize("target_format", ["lance", "parquet"])
@pytest.mark.parametrize("name", FULL_RUNS)
def test_run_offline(name: str, target_format: str, tmp_path: Path) -> None:
    _needs_reader(name)
    exp = EXPECTED[name]
    config = OfflineConfig(source=FIXTURES / name, target=tmp_path / "nodes",
                           target_format=target_format,  # type: ignore[arg-type]
                           batch_size=SMALL_BATCH)
    report = run_offline(config)
    assert report.status == "done" and report.verified
    assert (report.nodes_in, report.snapshot_rows, report.nodes_converted, report.quarantined) == (
        exp["rows_in"], exp["valid"], exp["valid"], exp["quarantined"])
    assert report.snapshot_digest == report.target_digest == exp["digest"]
    assert verify_run(config.resolved_run_dir).ok

    quarantine = config.resolved_run_dir / QUARANTINE
    assert quarantine.exists() == bool(exp["rejected"])
    if quarantine.exists():
        q = pq.read_table(quarantine).to_pylist()
        assert {r["source"] for r in q} == {str(FIXTURES / name)}
        _assert_rejected(name, [(r["row"], r["id"], r["reason"]) for r in q])

    store = TargetStore(config.target)
    assert store.count_rows() == exp["valid"]
    sort_metadata = name.endswith(".jsonl")  # a JSON object's key order carries no meaning
    back: list[dict[str, Any]] = []
    for batch in store.batches(batch_size=16):
        legacy = to_legacy(batch)
        assert legacy.column("space").null_count == legacy.num_rows
        assert legacy.column("episode").null_count == legacy.num_rows
        back += _plain_legacy(legacy, sort_metadata)
    want = _by_id([_plain_expected(r, sort_metadata) for r in built()[name].valid_rows])
    got = _by_id(back)
    assert sorted(got) == sorted(want)
    for ident, row in want.items():
        for key, value in row.items():
            assert got[ident][key] == value, (name, ident, key)


def test_fixtures_regenerate_byte_identical(tmp_path: Path) -> None:
    """Nobody edits a fixture by hand: the script must reproduce every committed byte."""
    mk = make_fixtures()
    mk.main(tmp_path)
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written == sorted(mk.FILES)
    for file in written:
        assert (tmp_path / file).read_bytes() == (FIXTURES / file).read_bytes(), (
            f"data/fixtures/{file} differs from what make_fixtures.py writes: "
            "run `python data/fixtures/make_fixtures.py` and commit the result"
        )
    assert sum((FIXTURES / f).stat().st_size for f in written) < 5 * 2**20
