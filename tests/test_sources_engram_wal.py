"""The Engram WAL source: the shared fixtures bit for bit, and hand-built damaged WAL files."""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from dualmem_bulk.errors import SourceError, UsageError
from dualmem_bulk.schema import DIM, LEGACY_SCHEMA
from dualmem_bulk.sources import ROW_COLUMN, SourceBatch
from dualmem_bulk.sources.engram_wal import (
    EngramWalSource,
    engram_spaces,
    is_engram_root,
    read_engram_wal,
)
from dualmem_bulk.sources.engram_wal_codec import (
    DecayFunction,
    EmbeddingProvenance,
    EntryType,
    Episode,
    encode_episode,
)
from dualmem_bulk.sources.engram_wal_writer import WalEntry, wal_file_name, write_wal

FIXTURES = Path(__file__).parent.parent / "data" / "fixtures" / "engram-wal"
HEADER = 64


# ---------------------------------------------------------------------------------------------
# helpers


def _bits(arr: pa.Array) -> list[int | None]:
    """u32 bit patterns of a float32 array, ``None`` for nulls (no trip through Python floats)."""
    raw = np.frombuffer(arr.buffers()[1], dtype=np.uint32)[arr.offset : arr.offset + len(arr)]
    return [None if not ok else int(b) for b, ok in zip(raw, arr.is_valid().to_pylist(),
                                                        strict=True)]


def _plain(table: pa.Table) -> list[dict[str, Any]]:
    """Rows as Python values, timestamps as int ns, without the embedding."""
    for name in ("created_at", "last_access"):
        i = table.schema.get_field_index(name)
        table = table.set_column(i, name, table[name].cast(pa.int64()))
    return table.drop_columns(["embedding"]).to_pylist()  # type: ignore[no-any-return]


def _f32_bits(value: float) -> int:
    return int(np.float32(value).view(np.uint32))


def _rows(source: EngramWalSource) -> tuple[pa.Table, list[SourceBatch]]:
    batches = list(source)
    table = pa.Table.from_batches([b.batch for b in batches])
    return table, batches


def _embedding(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)


def _episode(id_: str, *, what: str = "", **fields: Any) -> Episode:
    base: dict[str, Any] = {"when": "2024-01-02T03:04:05.123Z", "embedding": _embedding(len(id_))}
    return Episode(id=id_, what=what or f"about {id_}", **(base | fields))


def _write(root: Path, space: str, name: str, entries: Sequence[Episode | WalEntry],
           first_sequence: int = 0) -> Path:
    path = root / space / "wal" / name
    write_wal(path, entries, first_sequence=first_sequence, timestamp_ns=1_700_000_000_000_000_000)
    return path


def _offsets(path: Path) -> list[int]:
    """Byte offset of every record of a well-formed WAL file."""
    data, out, at = path.read_bytes(), [], 0
    while at < len(data):
        out.append(at)
        at += HEADER + struct.unpack_from("<I", data, at + 24)[0]
    return out


def _patch(path: Path, at: int, new: bytes) -> None:
    data = bytearray(path.read_bytes())
    data[at : at + len(new)] = new
    path.write_bytes(bytes(data))


def _flip(path: Path, at: int) -> None:
    _patch(path, at, bytes([path.read_bytes()[at] ^ 0xFF]))


def _space(source: EngramWalSource, name: str = "space_a") -> dict[str, Any]:
    return source.report.as_dict()["spaces"][name]  # type: ignore[no-any-return]


def _damage(source: EngramWalSource, key: str) -> list[dict[str, Any]]:
    return source.report.as_dict()["damage"][key]  # type: ignore[no-any-return]


# ---------------------------------------------------------------------------------------------
# the shared fixtures


@pytest.fixture(scope="module")
def fixture_read() -> tuple[EngramWalSource, pa.Table, list[SourceBatch]]:
    source = read_engram_wal(FIXTURES / "engram-data", batch_size=64)
    table, batches = _rows(source)
    return source, table, batches


def test_fixture_report_counts(fixture_read: tuple[EngramWalSource, pa.Table, Any]) -> None:
    source, table, _ = fixture_read
    expected = json.loads((FIXTURES / "expected-report.json").read_text())
    report = source.report.as_dict()
    assert report["spaces"] == expected["spaces"]
    assert report["totals"] == expected["totals"]
    assert source.memories == table.num_rows == expected["totals"]["memories_yielded"]
    assert source.total_rows == source.memories
    assert report["damage"] == {
        "bad_crc_records": [{"space": "team_alpha", "file": "wal-000000006913b820.log",
                             "offset": 49036, "sequence": 14,
                             "problem": "payload CRC 0x0484f0bf, header says 0x21bf8959"}],
        "bad_headers": [],
        "torn_tails": [{"space": "team_alpha", "file": "wal-000000006913b820.log",
                        "offset": 105097, "bytes": 1364,
                        "problem": "payload of 3252 bytes, 1300 present"}],
        "undecodable_records": [],
        "unknown_entry_types": [],
    }


def _decay_expected(d: dict[str, Any] | None) -> dict[str, Any] | None:
    if d is None:
        return None
    out: dict[str, Any] = {"variant": d["variant"]}
    for name in ("tau_hours", "beta", "short_term_tau", "long_term_beta"):
        out[name] = d.get(f"{name}_bits")
    for name in ("consolidation_threshold", "transition_point"):
        out[name] = d.get(name)
    return out


def test_fixture_memories_bit_exact(
    fixture_read: tuple[EngramWalSource, pa.Table, list[SourceBatch]],
) -> None:
    source, table, batches = fixture_read
    assert table.schema.remove_metadata() == LEGACY_SCHEMA.append(
        pa.field(ROW_COLUMN, pa.int64(), nullable=False)).remove_metadata()
    t = table.combine_chunks()
    emb = t["embedding"].chunks[0].flatten()
    emb_bits = np.frombuffer(emb.buffers()[1], dtype=np.uint32)[emb.offset :].reshape(-1, DIM)
    prov, ep = t["embedding_provenance"].chunks[0], t["episode"].chunks[0]
    decay = ep.field("decay_function")
    cols: dict[str, list[Any]] = {
        "activation_bits": _bits(t["activation"].chunks[0]),
        "confidence_bits": _bits(t["confidence"].chunks[0]),
        "decay_rate_bits": _bits(t["decay_rate"].chunks[0]),
        "created_at_ns": t["created_at"].cast(pa.int64()).to_pylist(),
        "last_access_ns": t["last_access"].cast(pa.int64()).to_pylist(),
        "quality_score_bits": _bits(prov.field("quality_score")),
        "vividness_confidence_bits": _bits(ep.field("vividness_confidence")),
        "reliability_confidence_bits": _bits(ep.field("reliability_confidence")),
        "episode_decay_rate_bits": _bits(ep.field("decay_rate")),
        **{f"decay_{n}": _bits(decay.field(n)) for n in
           ("tau_hours", "beta", "short_term_tau", "long_term_beta")},
    }
    plain = _plain(t)
    refs = list(source.winners())
    sources = [b.source for b in batches for _ in range(b.batch.num_rows)]
    by_key = {(r["space"], r["id"]): i for i, r in enumerate(plain)}
    assert len(by_key) == len(plain) == 296

    expected_rows = [json.loads(line) for line in
                     (FIXTURES / "expected-memories.jsonl").read_text("utf-8").splitlines()]
    assert len(expected_rows) == 296
    for want in expected_rows:
        i = by_key[(want["space"], want["id"])]
        got = plain[i]
        assert emb_bits[i].tolist() == want["embedding"], want["id"]
        for key in ("activation_bits", "confidence_bits", "decay_rate_bits", "created_at_ns",
                    "last_access_ns", "vividness_confidence_bits", "reliability_confidence_bits",
                    "episode_decay_rate_bits"):
            assert cols[key][i] == want[key], (want["id"], key)
        assert got["content"] == want["content"]
        assert got["access_count"] == want["access_count"]
        assert got["episode"]["where_location"] == want["where_location"]
        assert got["episode"]["who"] == want["who"]
        assert dict(got["episode"]["metadata"]) == want["metadata"]
        got_decay = got["episode"]["decay_function"]
        if got_decay is not None:
            got_decay |= {n: cols[f"decay_{n}"][i] for n in
                          ("tau_hours", "beta", "short_term_tau", "long_term_beta")}
        assert got_decay == _decay_expected(want["decay_function"]), want["id"]
        wp, gp = want["embedding_provenance"], got["embedding_provenance"]
        if wp is None:
            assert gp is None
        else:
            assert (gp["model_name"], gp["model_version"], gp["dimension"]) == (
                wp["model"]["name"], wp["model"]["version"], wp["model"]["dimension"])
            assert (gp["language"], gp["created_at"]) == (wp["language"], wp["created_at"])
            assert cols["quality_score_bits"][i] == wp["quality_score_bits"]
            assert dict(gp["metadata"]) == wp["metadata"]
        ref = refs[i]
        assert (Path(ref.file).name, ref.offset, ref.sequence) == (
            want["source"]["file"], want["source"]["offset"], want["source"]["sequence"])
        assert (ref.space, ref.id, ref.row, ref.file) == (got["space"], got["id"], got[ROW_COLUMN],
                                                           sources[i])


def test_fixture_batches_are_bounded_and_per_file(
    fixture_read: tuple[EngramWalSource, pa.Table, list[SourceBatch]],
) -> None:
    source, _, batches = fixture_read
    assert all(0 < b.batch.num_rows <= 64 and not b.rejected for b in batches)
    sources = [b.source for b in batches]
    assert sources == sorted(sources) and set(sources) == {str(f) for f in source.files}
    for i, b in enumerate(batches):  # only a file's last batch may be short
        if i + 1 < len(batches) and batches[i + 1].source == b.source:
            assert b.batch.num_rows == 64
    rows = [(b.source, r) for b in batches for r in b.batch[ROW_COLUMN].to_pylist()]
    assert rows == sorted(rows)  # file by file, in record (offset) order


def test_detection_and_spaces() -> None:
    root = FIXTURES / "engram-data"
    assert is_engram_root(root)
    assert not is_engram_root(FIXTURES)
    assert not is_engram_root(FIXTURES / "expected-report.json")
    assert engram_spaces(root) == ["default", "team_alpha"]
    only = read_engram_wal(root, 1000, spaces=["team_alpha"])
    assert list(only.report.spaces) == ["team_alpha"] and only.memories == 76
    with pytest.raises(UsageError, match=r"'nope' has no wal/ folder here; spaces here: "
                                         r"default, team_alpha"):
        read_engram_wal(root, 1000, spaces=["default", "nope"])
    with pytest.raises(UsageError, match=r"'No' is not a valid space id"):
        read_engram_wal(root, 1000, spaces=["No"])


# ---------------------------------------------------------------------------------------------
# hand-built WAL files


def test_space_discovery_by_name_and_content(tmp_path: Path) -> None:
    for name in ("zeta", "alpha-1", "a_b", "AB_upper", "xy", "has space", "x" * 65):
        _write(tmp_path, name, wal_file_name(1), [_episode("m")])
    (tmp_path / "no_wal_dir").mkdir()
    (tmp_path / "empty" / "wal").mkdir(parents=True)
    assert engram_spaces(tmp_path) == ["a_b", "alpha-1", "empty", "zeta"]
    assert is_engram_root(tmp_path) and not is_engram_root(tmp_path / "empty")
    picked = read_engram_wal(tmp_path, 10, spaces=["zeta", "a_b", "zeta"])
    assert list(picked.report.spaces) == ["zeta", "a_b"]  # the order asked for, once each
    (tmp_path / "empty" / "wal").rmdir()
    source = read_engram_wal(tmp_path, 10)
    assert list(source.report.spaces) == ["a_b", "alpha-1", "zeta"]
    table, _ = _rows(source)
    assert table["space"].to_pylist() == ["a_b", "alpha-1", "zeta"]
    assert table["id"].to_pylist() == ["m"] * 3  # same id in three spaces: three memories
    with pytest.raises(SourceError, match="no memory space here"):
        read_engram_wal(tmp_path / "no_wal_dir", 10)


def test_ignored_files_and_zero_byte_file(tmp_path: Path) -> None:
    _write(tmp_path, "space_a", wal_file_name(2), [_episode("a"), _episode("b")])
    wal = tmp_path / "space_a" / "wal"
    (wal / wal_file_name(1)).write_bytes(b"")
    (wal / (wal_file_name(3) + ".tmp")).write_bytes(b"garbage that is never read")
    (wal / "notes.txt").write_text("hi")
    (wal / "wal-0000000000000009.LOG").write_bytes(b"x")
    source = read_engram_wal(tmp_path, 10)
    space = _space(source)
    assert space["wal_files"] == 2
    assert space["ignored_files"] == ["notes.txt", "wal-0000000000000003.log.tmp",
                                      "wal-0000000000000009.LOG"]
    assert space["files"][0] == {"name": wal_file_name(1), "bytes": 0, "records_read": 0,
                                 "bad_crc_offsets": [], "bad_header_at": None,
                                 "bytes_skipped_after_bad_header": 0, "torn_tail_at": None,
                                 "torn_tail_bytes": 0}
    assert space["memories_yielded"] == source.memories == 2
    assert source.report.issues == []


@pytest.mark.parametrize(
    ("at", "problem"),
    [
        (0, r"magic 0xdeadbe10, expected 0xdeadbeef"),
        (4, r"header CRC 0x[0-9a-f]{8}, computed 0x[0-9a-f]{8}"),  # sequence byte
        (40, r"header CRC 0x[0-9a-f]{8}, computed 0x[0-9a-f]{8}"),  # reserved: covered
        (54, r"header CRC 0x[0-9a-f]{8}, computed 0x[0-9a-f]{8}"),  # up to byte 56: covered
    ],
    ids=["magic", "crc-sequence", "crc-reserved", "crc-reserved-end"],
)
def test_bad_header_ends_the_file(tmp_path: Path, at: int, problem: str) -> None:
    path = _write(tmp_path, "space_a", wal_file_name(1), [_episode(f"m{i}") for i in range(4)])
    _write(tmp_path, "space_a", wal_file_name(2), [_episode("later")])
    offsets, size = _offsets(path), path.stat().st_size
    _flip(path, offsets[2] + at)
    source = read_engram_wal(tmp_path, 10)
    file = _space(source)["files"][0]
    assert file["records_read"] == 2
    assert (file["bad_header_at"], file["bytes_skipped_after_bad_header"]) == (
        offsets[2], size - offsets[2])
    [bad] = _damage(source, "bad_headers")
    assert (bad["file"], bad["offset"], bad["bytes"]) == (path.name, offsets[2], size - offsets[2])
    assert re.fullmatch(problem, bad["problem"]), bad["problem"]
    assert _space(source)["bad_header_files"] == 1
    assert sorted(_rows(source)[0]["id"].to_pylist()) == ["later", "m0", "m1"]


def test_padding_is_not_covered_by_the_header_crc(tmp_path: Path) -> None:
    path = _write(tmp_path, "space_a", wal_file_name(1), [_episode("a"), _episode("b")])
    _patch(path, _offsets(path)[1] + 60, b"\x07")
    source = read_engram_wal(tmp_path, 10)
    assert source.memories == 2 and source.report.issues == []


def test_bad_payload_crc_skips_only_that_record(tmp_path: Path) -> None:
    path = _write(tmp_path, "space_a", wal_file_name(1), [_episode(f"m{i}") for i in range(3)],
                  first_sequence=10)
    offsets = _offsets(path)
    _flip(path, offsets[1] + HEADER + 100)
    source = read_engram_wal(tmp_path, 10)
    space = _space(source)
    assert (space["records_read"], space["records_valid"], space["bad_crc_records_skipped"]) == (
        3, 2, 1)
    assert space["files"][0]["bad_crc_offsets"] == [offsets[1]]
    [bad] = _damage(source, "bad_crc_records")
    assert (bad["file"], bad["offset"], bad["sequence"]) == (path.name, offsets[1], 11)
    table, _ = _rows(source)
    assert table["id"].to_pylist() == ["m0", "m2"]
    assert table[ROW_COLUMN].to_pylist() == [0, 2]  # the bad record still counts as a record


def test_torn_header_keeps_everything_before(tmp_path: Path) -> None:
    path = _write(tmp_path, "space_a", wal_file_name(1), [_episode("a"), _episode("b")])
    size = path.stat().st_size
    path.write_bytes(path.read_bytes() + b"\xef\xbe\xad\xde" + bytes(6))
    source = read_engram_wal(tmp_path, 10)
    file = _space(source)["files"][0]
    assert (file["torn_tail_at"], file["torn_tail_bytes"], file["records_read"]) == (size, 10, 2)
    [torn] = _damage(source, "torn_tails")
    assert torn == {"space": "space_a", "file": path.name, "offset": size, "bytes": 10,
                    "problem": "partial header: 10 of 64 bytes"}
    assert source.memories == 2


def test_torn_payload_keeps_everything_before(tmp_path: Path) -> None:
    path = _write(tmp_path, "space_a", wal_file_name(1), [_episode(f"m{i}") for i in range(3)])
    last = _offsets(path)[2]
    cut = last + HEADER + 5
    path.write_bytes(path.read_bytes()[:cut])
    source = read_engram_wal(tmp_path, 10)
    space = _space(source)
    assert (space["torn_tail_bytes"], space["records_read"], space["memories_yielded"]) == (
        HEADER + 5, 2, 2)
    assert space["files"][0]["torn_tail_at"] == last
    [torn] = _damage(source, "torn_tails")
    assert torn["offset"] == last and torn["problem"].endswith(", 5 present")


def test_replay_order_delete_and_restore(tmp_path: Path) -> None:
    # file 1: a(seq 5), b(seq 6), delete a(seq 7), a again(seq 8), checkpoint(9), delete x(10)
    _write(tmp_path, "space_a", wal_file_name(1), [
        _episode("a", what="a first", recall_count=1),
        _episode("b", what="b from file 1"),
        WalEntry(EntryType.MemoryDelete, b"a"),
        _episode("a", what="a restored"),
        WalEntry(EntryType.Checkpoint, struct.pack("<Q", 8)),
        WalEntry(EntryType.MemoryDelete, b"never stored"),
    ], first_sequence=5)
    # file 2: sequences restart: b(seq 6) ties with file 1's b and loses; c(seq 0) is first
    _write(tmp_path, "space_a", wal_file_name(2), [
        WalEntry(EntryType.EpisodeStore, encode_episode(_episode("c")), sequence=0),
        WalEntry(EntryType.EpisodeStore, encode_episode(_episode("b", what="b file 2")), 6),
        WalEntry(EntryType.EpisodeStore, encode_episode(_episode("a", what="a late")), 9),
    ])
    source = read_engram_wal(tmp_path, 10)
    space = _space(source)
    assert space["records_by_type"] == {"Checkpoint": 1, "EpisodeStore": 6, "MemoryDelete": 2}
    assert (space["duplicates_skipped"], space["memories_yielded"]) == (2, 3)
    table, _ = _rows(source)
    got = dict(zip(table["id"].to_pylist(), table["content"].to_pylist(), strict=True))
    assert got == {"a": "a restored", "b": "b from file 1", "c": "about c"}
    refs = {r.id: (Path(r.file).name, r.sequence, r.row) for r in source.winners()}
    assert refs == {"a": (wal_file_name(1), 8, 3), "b": (wal_file_name(1), 6, 1),
                    "c": (wal_file_name(2), 0, 0)}


def test_unknown_entry_type_is_an_episode_store(tmp_path: Path) -> None:
    path = _write(tmp_path, "space_a", wal_file_name(1), [
        WalEntry(42, encode_episode(_episode("odd"))), WalEntry(EntryType.CompactionMarker, b""),
    ])
    source = read_engram_wal(tmp_path, 10)
    space = _space(source)
    assert space["records_by_type"] == {"CompactionMarker": 1, "EpisodeStore": 1}
    assert space["episode_store_records"] == 1 and source.memories == 1
    assert _damage(source, "unknown_entry_types") == [{
        "space": "space_a", "file": path.name, "offset": 0, "sequence": 0,
        "problem": "entry type 42 is unknown; replayed as an EpisodeStore"}]


def _truncate(payload: bytes) -> bytes:
    return payload[:-5]


def _bad_utf8_what(payload: bytes) -> bytes:
    at = payload.index(b"about x")
    return payload[:at] + b"\xff" + payload[at + 1 :]


def _embedding_767(payload: bytes) -> bytes:
    at = payload.index(struct.pack("<Q", DIM))
    return payload[:at] + struct.pack("<Q", 767) + payload[at + 8 :]


def _option_tag_2(payload: bytes) -> bytes:
    at = 8 + 1 + 8 + len("2024-01-02T03:04:05.123Z")  # id "x", when, then where_location's tag
    return payload[:at] + b"\x02" + payload[at + 1 :]


@pytest.mark.parametrize(
    ("episode", "mangle", "id_", "problem"),
    [
        ({"encoding_confidence": 1.5}, None, "x",
         r"encoding_confidence 1.5 \(bits 0x3fc00000\) is outside \[0, 1\]"),
        ({"vividness_confidence": float("nan")}, None, "x", r"vividness_confidence nan"),
        ({"reliability_confidence": -0.25}, None, "x", r"reliability_confidence -0.25"),
        ({}, _truncate, "x", r"metadata length: needs 8 bytes, 3 left"),
        ({}, _bad_utf8_what, "x", r"what: invalid UTF-8"),
        ({}, _embedding_767, "x", r"embedding has 767 values, expected 768"),
        ({}, _option_tag_2, "x", r"where_location: option tag 2, expected 0 or 1"),
        ({"decay_function": DecayFunction(variant="PowerLaw", beta=0.5)},
         lambda p: p.replace(b"\x01\x01\x00\x00\x00\x00\x00\x00\x3f", b"\x01\x07\x00\x00\x00"
                             b"\x00\x00\x00\x3f"), "x", r"decay_function variant 7, expected 0..3"),
        ({"when": "2023-02-30T00:00:00Z"}, None, "x",
         r"when '2023-02-30T00:00:00Z' is not an RFC 3339 timestamp"),
        ({"last_recall": "yesterday"}, None, "x",
         r"last_recall 'yesterday' is not an RFC 3339 timestamp"),
        ({}, lambda p: b"\xff" * 8 + p[8:], None, r"id: needs 18446744073709551615 bytes"),
    ],
    ids=["confidence>1", "nan-vividness", "negative-reliability", "truncated", "utf8",
         "embedding-767", "option-tag", "decay-variant", "feb-30", "bad-last-recall", "bad-id"],
)
def test_undecodable_record_is_quarantined(
    tmp_path: Path, episode: dict[str, Any], mangle: Any, id_: str | None, problem: str,
) -> None:
    payload = encode_episode(_episode("x", **episode))
    if mangle is not None:
        payload = mangle(payload)
    path = _write(tmp_path, "space_a", wal_file_name(1), [
        _episode("before"),
        WalEntry(EntryType.EpisodeStore, payload),
        _episode("x", what="the valid later x"),  # the broken x never stored: this one wins
    ], first_sequence=3)
    offset = _offsets(path)[1]
    source = read_engram_wal(tmp_path, 10)
    space = _space(source)
    assert (space["episode_store_records"], space["duplicates_skipped"]) == (3, 0)
    assert source.memories == 2 and source.total_rows == 3
    [bad] = _damage(source, "undecodable_records")
    assert (bad["file"], bad["offset"], bad["sequence"]) == (path.name, offset, 4)
    assert re.search(problem, bad["problem"]), bad["problem"]
    table, batches = _rows(source)
    assert dict(zip(table["id"].to_pylist(), table["content"].to_pylist(), strict=True)) == {
        "before": "about before", "x": "the valid later x"}
    [rejected] = batches[0].rejected
    assert (rejected.source, rejected.row, rejected.id, rejected.record) == (
        str(path), 1, id_, payload.hex())
    assert rejected.reason.startswith(f"{path}: record at offset {offset} (sequence 4): ")
    assert re.search(problem, rejected.reason)


def test_file_with_only_rejects_yields_an_empty_batch(tmp_path: Path) -> None:
    path = _write(tmp_path, "space_a", wal_file_name(1), [
        WalEntry(EntryType.MemoryDelete, b"\xc3\x28"), _episode("a", encoding_confidence=2.0)])
    source = read_engram_wal(tmp_path, 10)
    [batch] = list(source)
    assert batch.source == str(path) and batch.batch.num_rows == 0
    assert batch.batch.schema.names == [*LEGACY_SCHEMA.names, ROW_COLUMN]
    assert [(r.row, r.id, r.record) for r in batch.rejected] == [
        (0, None, "c328"), (1, "a", encode_episode(_episode("a", encoding_confidence=2.0)).hex())]
    assert "MemoryDelete payload byte 0: id is not valid UTF-8" in batch.rejected[0].reason


def test_bit_patterns_and_fields_survive(tmp_path: Path) -> None:
    snan, neg_nan = np.uint32(0x7F800001).view(np.float32), np.uint32(0xFFC12345).view(np.float32)
    emb_bits = np.zeros(DIM, dtype=np.uint32)  # sNaN, negative NaN, -0.0, +-inf, subnormal
    emb_bits[:6] = [0x7F800001, 0xFFC12345, 0x80000000, 0x7F800000, 0xFF800000, 1]
    emb = emb_bits.view(np.float32)
    ep = _episode(
        "bits", embedding=emb, when=-1, last_recall="1969-07-20T20:17:40.500Z",
        encoding_confidence=np.float32(-0.0), decay_rate=snan, recall_count=2**32 - 1,
        where_location="Moon", who=["Neil", "Buzz"], metadata={"z": "1", "a": "2", "": "e"},
        embedding_provenance=EmbeddingProvenance(
            model_name="m", model_version="v", language="en", created_at=2**64 - 1,
            quality_score=neg_nan, metadata={"k": "v"}),
        decay_function=DecayFunction(variant="Hybrid", short_term_tau=snan, long_term_beta=0.25,
                                     transition_point=2**64 - 1),
    )
    _write(tmp_path, "space_a", wal_file_name(1), [ep])
    table, _ = _rows(read_engram_wal(tmp_path, 10))
    [row] = _plain(table)
    t = table.combine_chunks()
    emb_out = t["embedding"].chunks[0].flatten()
    assert np.array_equal(np.frombuffer(emb_out.buffers()[1], np.uint32), emb.view(np.uint32))
    assert _bits(t["confidence"].chunks[0]) == _bits(t["activation"].chunks[0]) == [0x80000000]
    assert _bits(t["decay_rate"].chunks[0]) == [_f32_bits(0.1)]
    episode = t["episode"].chunks[0]
    assert _bits(episode.field("decay_rate")) == [0x7F800001]
    decay = episode.field("decay_function")
    assert _bits(decay.field("short_term_tau")) == [0x7F800001]
    assert _bits(decay.field("tau_hours")) == [None]
    assert _bits(t["embedding_provenance"].chunks[0].field("quality_score")) == [0xFFC12345]
    assert t["created_at"].cast(pa.int64()).to_pylist() == [-1]
    assert t["last_access"].cast(pa.int64()).to_pylist() == [-14182939500000000]
    assert row["access_count"] == 2**32 - 1
    assert row["episode"]["where_location"] == "Moon" and row["episode"]["who"] == ["Neil", "Buzz"]
    assert row["episode"]["metadata"] == [("z", "1"), ("a", "2"), ("", "e")]  # WAL order kept
    assert row["episode"]["decay_function"]["variant"] == "Hybrid"
    assert row["episode"]["decay_function"]["transition_point"] == 2**64 - 1
    assert row["embedding_provenance"]["created_at"] == 2**64 - 1
    assert row["embedding_provenance"]["dimension"] == DIM


def test_batches_split_per_file_and_size(tmp_path: Path) -> None:
    _write(tmp_path, "space_a", wal_file_name(1), [_episode(f"a{i}") for i in range(5)])
    _write(tmp_path, "space_a", wal_file_name(2), [_episode(f"b{i}") for i in range(3)],
           first_sequence=100)
    source = read_engram_wal(tmp_path, 2)
    sizes = [(Path(b.source).name, b.batch.num_rows) for b in source]
    assert sizes == [(wal_file_name(1), 2), (wal_file_name(1), 2), (wal_file_name(1), 1),
                     (wal_file_name(2), 2), (wal_file_name(2), 1)]
    assert [b.batch.num_rows for b in source.batches(100)] == [5, 3]
    with pytest.raises(UsageError, match="batch size"):
        read_engram_wal(tmp_path, 0)


def test_file_changed_after_indexing_is_an_error(tmp_path: Path) -> None:
    path = _write(tmp_path, "space_a", wal_file_name(1), [_episode("a"), _episode("b")])
    source = read_engram_wal(tmp_path, 10)
    _flip(path, _offsets(path)[1] + HEADER + 50)
    with pytest.raises(SourceError, match=rf"record at offset {_offsets(path)[1]} changed"):
        list(source)
