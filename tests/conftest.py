"""Shared test helpers: build legacy tables from plain rows, compare tables bit for bit.

How test files are named (``test_test_names.py`` holds every ``test_*.py`` here to it): a file
that tests one module is named after it, its path under ``dualmem_bulk/`` joined with ``_``
(``online/compat.py``: ``test_online_compat.py``; ``checksum.py``: ``test_checksum.py``; a
package's ``__init__.py`` by the package's name; a private module without its leading ``_``), and
a further file for the same module adds what it covers (``test_checksum_vectors.py``); a file that
tests several modules is named after its main one. End-to-end scenarios across the whole tool
(the CLI contract, kill-and-resume, safety prompts, bad input, interop, the proof) are
``test_e2e_<scenario>.py``. Three files test the package as a whole: ``test_api.py`` (its public
API), ``test_layout.py`` (its layout) and ``test_test_names.py`` (this rule). Helper modules that
tests import by name (``online_workload.py``, ``wal_appender.py``, ``reference_encoding.py``) do
not start with ``test_``; every basename in this flat directory is unique (pytest's ``prepend``
import mode imports test files by their basename).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from dualmem_bulk.checksum import row_checksums
from dualmem_bulk.convert import to_legacy
from dualmem_bulk.rundir.journal import Journal
from dualmem_bulk.schema import (
    DIM,
    EPISODE_TYPE,
    LEGACY_SCHEMA,
    PROVENANCE_TYPE,
    SNAPSHOT_SCHEMA,
    TIMESTAMP_TYPE,
)
from dualmem_bulk.stores import TargetStore
from dualmem_bulk.stores.snapshot import Snapshot


def journal_value(run_dir: Path, key: str) -> Any:
    """One key of a run's journal, or ``None`` before the journal exists."""
    if not Journal.exists(run_dir):
        return None
    journal = Journal.open(run_dir)
    try:
        return journal.values[key]
    finally:
        journal.close()


def fingerprint(target: Path) -> tuple[str, list[bytes], list[bytes], list[bytes]]:
    """Target digest plus every row's node id, stored checksum and recomputed checksum."""
    store = TargetStore(target)
    ids: list[bytes] = []
    stored: list[bytes] = []
    recomputed: list[bytes] = []
    for batch in store.batches(8192):
        ids += batch.column("id").to_pylist()
        stored += batch.column("checksum").to_pylist()
        recomputed += row_checksums(to_legacy(batch)).to_pylist()
        strength = np.asarray(batch.column("strength").to_numpy(zero_copy_only=False))
        activation = np.asarray(batch.column("activation").to_numpy(zero_copy_only=False))
        assert np.array_equal(strength.view("u4"), activation.view("u4"))
    total = sum(int.from_bytes(c, "little") for c in stored) % (1 << 256)
    return total.to_bytes(32, "little").hex(), ids, stored, recomputed


def kill_after_units(args: list[str], run_dir: Path, units: int) -> None:
    """Run ``python -m dualmem_bulk *args`` and SIGKILL it once ``units`` units are committed."""
    from dualmem_bulk import run_status

    proc = subprocess.Popen([sys.executable, "-m", "dualmem_bulk", *args],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert proc.poll() is None, "the conversion ended before it could be killed"
            if Journal.exists(run_dir) and run_status(run_dir).units_committed >= units:
                return
            time.sleep(0.01)
        raise AssertionError(f"{units} units not committed in time")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()


def legacy_table(rows: list[dict[str, Any]]) -> pa.Table:
    """A LEGACY_SCHEMA table; each row gives ``embedding_bits`` (768 uint32) or nothing (zeros)."""
    n = len(rows)
    bits = np.zeros((n, DIM), dtype=np.uint32)
    for i, r in enumerate(rows):
        if "embedding_bits" in r:
            bits[i] = r["embedding_bits"]

    def f32(name: str, default: float) -> pa.Array:
        out = np.empty(n, dtype=np.float32)
        for i, r in enumerate(rows):
            if f"{name}_bits" in r:
                out.view(np.uint32)[i] = r[f"{name}_bits"]
            else:
                out[i] = r.get(name, default)
        return pa.array(out)

    return pa.table(
        {
            "id": pa.array([r["id"] for r in rows], pa.utf8()),
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(bits.view(np.float32).ravel()),
                                                           DIM),
            "activation": f32("activation", 0.5),
            "confidence": f32("confidence", 0.5),
            "last_access": pa.array([r.get("last_access", 0) for r in rows], pa.int64())
            .cast(TIMESTAMP_TYPE),
            "access_count": pa.array([r.get("access_count", 0) for r in rows], pa.uint64()),
            "created_at": pa.array([r.get("created_at", 0) for r in rows], pa.int64())
            .cast(TIMESTAMP_TYPE),
            "decay_rate": f32("decay_rate", 0.1),
            "content": pa.array([r.get("content") for r in rows], pa.utf8()),
            "embedding_provenance": pa.array(
                [r.get("embedding_provenance") for r in rows], PROVENANCE_TYPE
            ),
            "space": pa.nulls(n, pa.utf8()),
            "episode": pa.nulls(n, EPISODE_TYPE),
        },
        schema=LEGACY_SCHEMA,
    )


def _assert_column_bit_equal(x: pa.ChunkedArray | pa.Array, y: pa.ChunkedArray | pa.Array,
                             name: str) -> None:
    """Equal values, floats compared by their bits, struct fields one by one (a NaN inside a
    struct makes ``equals`` false even between identical arrays)."""
    xs = pa.chunked_array([x]) if isinstance(x, pa.Array) else x
    ys = pa.chunked_array([y]) if isinstance(y, pa.Array) else y
    if pa.types.is_struct(xs.type):
        assert xs.is_valid().equals(ys.is_valid()), name
        for i, (xf, yf) in enumerate(zip(xs.flatten(), ys.flatten(), strict=True)):
            _assert_column_bit_equal(xf, yf, f"{name}.{xs.type.field(i).name}")
    elif pa.types.is_fixed_size_list(xs.type) and pa.types.is_floating(xs.type.value_type):
        xb = np.asarray(xs.combine_chunks().values.to_numpy(zero_copy_only=False)).view("u4")
        yb = np.asarray(ys.combine_chunks().values.to_numpy(zero_copy_only=False)).view("u4")
        assert xs.is_valid().equals(ys.is_valid()) and np.array_equal(xb, yb), name
    elif pa.types.is_floating(xs.type):
        assert xs.is_valid().equals(ys.is_valid()), name
        assert np.array_equal(np.asarray(xs.to_numpy(zero_copy_only=False)).view("u4"),
                              np.asarray(ys.to_numpy(zero_copy_only=False)).view("u4")), name
    else:
        assert xs.equals(ys), name


def assert_bit_equal(a: pa.Table | pa.RecordBatch, b: pa.Table | pa.RecordBatch) -> None:
    """Equal schemas (with metadata) and equal values, floats compared by their bits."""
    assert a.schema.equals(b.schema, check_metadata=True), (a.schema, b.schema)
    assert a.num_rows == b.num_rows
    for name in a.schema.names:
        _assert_column_bit_equal(a.column(name), b.column(name), name)


@pytest.fixture
def sample_rows() -> list[dict[str, Any]]:
    """A handful of rows covering ids, nulls, provenance and float edge cases."""
    nan_payload = np.full(DIM, 0x7FA00001, dtype=np.uint32)
    neg_zero = np.full(DIM, 0x80000000, dtype=np.uint32)
    return [
        {"id": "mem_1a2b3c4d", "content": "hello", "embedding_bits": nan_payload},
        {"id": "A0B1C2D3-0000-4000-8000-ABCDEF012345", "embedding_bits": neg_zero,
         "activation": 0.0, "confidence": 1.0, "created_at": -1, "last_access": 2**62},
        {"id": "free form / 😀 漢字", "content": "",
         "embedding_provenance": {"model_name": "m", "model_version": "1", "dimension": 768,
                                  "language": "en", "created_at": 1, "quality_score": 0.5,
                                  "metadata": [("z", "1"), ("a", "2")]}},
        {"id": "ep_00000000", "access_count": 2**64 - 1, "decay_rate_bits": 0x7FC00000},
    ]


def read_snapshot(path: Path) -> pa.Table:
    """A run's snapshot as one table, read as the tool reads it (a part may name a copy of the
    source's bytes rather than hold its rows)."""
    return pa.Table.from_batches(list(Snapshot(path).batches(4096)), schema=SNAPSHOT_SCHEMA)
