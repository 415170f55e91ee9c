"""Engram data roots end to end: the shared WAL fixtures and generated roots, converted through
the library and through the CLI (real subprocesses), read back from the target bit for bit."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from dualmem_bulk.checksum import TableDigest, row_checksums
from dualmem_bulk.convert import to_legacy
from dualmem_bulk.generate import generate_wal_batches
from dualmem_bulk.offline.run import OfflineConfig, run_offline
from dualmem_bulk.schema import DIM, LEGACY_SCHEMA
from dualmem_bulk.stores import TargetStore

WAL = Path(__file__).resolve().parents[1] / "data" / "fixtures" / "engram-wal"
DATA = WAL / "engram-data"
EXPECTED_REPORT = json.loads((WAL / "expected-report.json").read_text("utf-8"))
EXPECTED = [json.loads(line) for line in
            (WAL / "expected-memories.jsonl").read_text("utf-8").splitlines()]
DAMAGED = "wal-000000006913b820.log"  # team_alpha: a bad payload CRC, then a torn tail


def cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dualmem_bulk", *map(str, args)],
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=300)


def as_json(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert isinstance(data, dict)
    return data


def _bits(arr: pa.Array) -> list[int | None]:
    """u32 bit patterns of a float32 array, ``None`` for nulls."""
    raw = np.frombuffer(arr.buffers()[1], dtype=np.uint32)[arr.offset : arr.offset + len(arr)]
    return [int(b) if ok else None for b, ok in zip(raw, arr.is_valid().to_pylist(), strict=True)]


def _read_target(target: Path) -> pa.Table:
    """The target's rows rebuilt as legacy Memory rows, one chunk."""
    store = TargetStore(target)
    return pa.Table.from_batches([to_legacy(b) for b in store.batches(100)],
                                 schema=LEGACY_SCHEMA).combine_chunks()


# ---------------------------------------------------------------------------------------------
# the shared fixture data root


@pytest.fixture(scope="module")
def fixture_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    """``convert`` of the fixture data root (every space) through the CLI, in small batches."""
    target = tmp_path_factory.mktemp("wal") / "nodes.lance"
    done = cli("convert", DATA, target, "--json", "--batch-size", "64")
    return as_json(done), target


def test_fixture_convert_report(fixture_run: tuple[dict[str, Any], Path]) -> None:
    report, _ = fixture_run
    assert (report["status"], report["verified"], report["source_kind"]) == (
        "done", True, "engram-wal")
    assert report["nodes_in"] == report["nodes_converted"] == 296
    assert report["quarantined"] == 0
    assert report["snapshot_digest"] == report["target_digest"]
    details = report["source_details"]
    assert details["spaces"] == EXPECTED_REPORT["spaces"]
    assert details["totals"] == EXPECTED_REPORT["totals"]
    damage = details["damage"]
    assert [(d["space"], d["file"], d["offset"], d["sequence"]) for d in
            damage["bad_crc_records"]] == [("team_alpha", DAMAGED, 49036, 14)]
    assert [(d["space"], d["file"], d["offset"], d["bytes"]) for d in damage["torn_tails"]] == [
        ("team_alpha", DAMAGED, 105097, 1364)]
    saved = json.loads((Path(report["run_dir"]) / "report.json").read_text("utf-8"))
    assert saved["source_details"] == details
    assert saved["target_digest"] == report["target_digest"]


def _decay(want: dict[str, Any] | None) -> dict[str, Any] | None:
    """The expected decay function with f32 fields as bits (their ``_bits`` twins)."""
    if want is None:
        return None
    return {k.removesuffix("_bits"): v for k, v in want.items() if f"{k}_bits" not in want}


def test_fixture_target_bit_exact(fixture_run: tuple[dict[str, Any], Path]) -> None:
    """Every expected memory, read back from the Lance target, field by field and bit by bit."""
    _, target = fixture_run
    t = _read_target(target)
    assert t.num_rows == len(EXPECTED) == 296
    emb = t["embedding"].chunks[0].flatten()
    emb_bits = np.frombuffer(emb.buffers()[1], np.uint32)[emb.offset :].reshape(-1, DIM)
    prov, ep = t["embedding_provenance"].chunks[0], t["episode"].chunks[0]
    decay = ep.field("decay_function")
    f32 = {
        "activation_bits": _bits(t["activation"].chunks[0]),
        "confidence_bits": _bits(t["confidence"].chunks[0]),
        "decay_rate_bits": _bits(t["decay_rate"].chunks[0]),
        "vividness_confidence_bits": _bits(ep.field("vividness_confidence")),
        "reliability_confidence_bits": _bits(ep.field("reliability_confidence")),
        "episode_decay_rate_bits": _bits(ep.field("decay_rate")),
        "quality_score": _bits(prov.field("quality_score")),
        **{n: _bits(decay.field(n)) for n in
           ("tau_hours", "beta", "short_term_tau", "long_term_beta")},
    }
    ns = {n: t[n].cast(pa.int64()).to_pylist() for n in ("created_at", "last_access")}
    rows = t.drop_columns(["embedding", "created_at", "last_access"]).to_pylist()
    at = {(r["space"], r["id"]): i for i, r in enumerate(rows)}
    assert len(at) == 296
    for want in EXPECTED:
        i = at[(want["space"], want["id"])]
        got, key = rows[i], (want["space"], want["id"])
        assert emb_bits[i].tolist() == want["embedding"], key
        for name in ("activation_bits", "confidence_bits", "decay_rate_bits",
                     "vividness_confidence_bits", "reliability_confidence_bits",
                     "episode_decay_rate_bits"):
            assert f32[name][i] == want[name], (key, name)
        assert (ns["created_at"][i], ns["last_access"][i]) == (
            want["created_at_ns"], want["last_access_ns"]), key
        assert (got["content"], got["access_count"]) == (want["content"], want["access_count"])
        episode = got["episode"]
        assert (episode["where_location"], episode["who"]) == (
            want["where_location"], want["who"]), key
        assert sorted(episode["metadata"]) == sorted(want["metadata"].items()), key
        got_decay = episode["decay_function"]
        if got_decay is not None:
            got_decay = {k: f32[k][i] if k in f32 else v for k, v in got_decay.items()
                         if v is not None}
        assert got_decay == _decay(want["decay_function"]), key
        wp, gp = want["embedding_provenance"], got["embedding_provenance"]
        if wp is None:
            assert gp is None, key
            continue
        assert gp is not None, key
        assert (gp["model_name"], gp["model_version"], gp["dimension"], gp["language"],
                gp["created_at"], f32["quality_score"][i]) == (
            wp["model"]["name"], wp["model"]["version"], wp["model"]["dimension"],
            wp["language"], wp["created_at"], wp["quality_score_bits"]), key
        assert sorted(gp["metadata"]) == sorted(wp["metadata"].items()), key


def test_same_id_in_two_spaces_is_two_nodes(fixture_run: tuple[dict[str, Any], Path]) -> None:
    _, target = fixture_run
    [shared] = {r["id"] for r in EXPECTED if r["space"] == "default"} & {
        r["id"] for r in EXPECTED if r["space"] == "team_alpha"}
    rows = [r for r in _read_target(target).select(["id", "space", "content"]).to_pylist()
            if r["id"] == shared]
    assert sorted(r["space"] for r in rows) == ["default", "team_alpha"]
    want = {r["space"]: r["content"] for r in EXPECTED if r["id"] == shared}
    assert {r["space"]: r["content"] for r in rows} == want


def test_fixture_convert_library(tmp_path: Path, fixture_run: tuple[dict[str, Any], Path]) -> None:
    """The library call gives the CLI's result: same digest, same replay report."""
    cli_report, _ = fixture_run
    report = run_offline(OfflineConfig(source=DATA, target=tmp_path / "n.lance",
                                       batch_size=100))
    assert report.verified and report.nodes_converted == 296
    assert report.target_digest == cli_report["target_digest"]
    assert report.source_details["totals"] == EXPECTED_REPORT["totals"]


def test_fixture_strict_refuses_damage(tmp_path: Path) -> None:
    target = tmp_path / "n.lance"
    done = cli("convert", DATA, target, "--strict")
    assert done.returncode == 3
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("error:") and f"team_alpha/wal/{DAMAGED} at byte 49036" in line
    assert list(tmp_path.iterdir()) == []  # no target, no run directory


def test_fixture_export_space(tmp_path: Path) -> None:
    snapshot = tmp_path / "snap.parquet"
    report = as_json(cli("export", DATA, snapshot, "--space", "default", "--json"))
    table = pq.read_table(snapshot)
    assert table.num_rows == report["snapshot_rows"] == 220
    assert set(table["space"].to_pylist()) == {"default"}
    assert list(report["source_details"]["spaces"]) == ["default"]
    done = cli("export", DATA, tmp_path / "other.parquet", "--space", "nope")
    assert done.returncode == 2
    assert "'nope'" in done.stderr and "default, team_alpha" in done.stderr
    assert not (tmp_path / "other.parquet").exists()


def test_fixture_inspect() -> None:
    info = as_json(cli("inspect", DATA, "--json"))
    assert info["totals"] == EXPECTED_REPORT["totals"]
    assert info["nodes"] == 296 and info["quarantined"] == 0
    assert sorted(info["spaces"]) == ["default", "team_alpha"]
    assert len(info["damage"]) == 2


# ---------------------------------------------------------------------------------------------
# generated data roots


@pytest.fixture(scope="module")
def generated_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("gen") / "engram-data"
    done = cli("generate", root, "--nodes", "3000", "--format", "engram-wal", "--seed", "3",
               "--json")
    assert as_json(done)["nodes"] == 3000
    return root


def _digest(batches: list[pa.RecordBatch]) -> str:
    total = TableDigest()
    for batch in batches:
        total += TableDigest.of(row_checksums(batch))
    return total.hex


def test_generated_root_converts_end_to_end(tmp_path: Path, generated_root: Path) -> None:
    memories = list(generate_wal_batches(3000, seed=3))
    report = as_json(cli("convert", generated_root, tmp_path / "n.lance", "--json"))
    assert (report["status"], report["verified"]) == ("done", True)
    assert report["nodes_in"] == report["nodes_converted"] == 3000
    assert report["quarantined"] == 0
    assert report["source_details"]["totals"]["memories_yielded"] == 3000
    # the target holds exactly the generated memories: equal digests over the same encoding
    assert report["snapshot_digest"] == report["target_digest"] == _digest(memories)

    spaces = pa.concat_arrays([b.column("space") for b in memories]).to_pylist()
    other = sorted(set(spaces) - {"default"})[0]
    picked = as_json(cli("convert", generated_root, tmp_path / "one.lance", "--space", other,
                         "--json"))
    assert picked["verified"] and picked["nodes_converted"] == spaces.count(other) > 0
    assert list(picked["source_details"]["spaces"]) == [other]
    assert set(_read_target(tmp_path / "one.lance")["space"].to_pylist()) == {other}


def test_verify_covers_episode_fields(tmp_path: Path) -> None:
    """The row checksum leaves the Engram-only columns out; verify still catches a change."""
    from dualmem_bulk import verify_run

    target = tmp_path / "nodes"
    report = run_offline(OfflineConfig(source=DATA, target=target, target_format="parquet"))
    assert report.verified
    part = sorted(target.glob("part-*.parquet"))[0]
    table = pq.read_table(part)
    episodes = table.column("episode").combine_chunks()
    where = pc.struct_field(episodes, "where_location").to_pylist()
    where[0] = "somewhere else"
    fields = [pc.struct_field(episodes, f.name) for f in episodes.type]
    fields[0] = pa.array(where, pa.utf8())
    changed = pa.StructArray.from_arrays(fields, fields=list(episodes.type),
                                         mask=pc.invert(episodes.is_valid()))
    table = table.set_column(table.schema.get_field_index("episode"),
                             table.schema.field("episode"), changed)
    pq.write_table(table, part)
    verdict = verify_run(tmp_path / "nodes.run")
    assert not verdict.ok and verdict.mismatched == 1
    assert verdict.mismatches[0]["problem"] == "episode fields differ from the snapshot's"
    assert verdict.mismatches[0]["id"] == table.column("episode_id")[0].as_py()
