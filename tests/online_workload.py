"""A service's workload for the online-migration tests: a writer and a reader process using the
CompatibilityAdapter, and the replay of the writer's operations on a copy of the store.

The i-th operation is a pure function of (seed, i) and the original store's ids, so the replay
needs only the number of operations the writer completed. Run as a script:
``python tests/online_workload.py writer|reader STORE RUN_DIR ORIGINAL SEED STOP OUT``.

The writer appends one byte to ``OUT.acked`` per acknowledged operation (before the next
starts), so a writer killed at any point leaves the exact count, and a writer started again
continues with the next operation. ``DUALMEM_TEST_APPLY``: ``none`` (the adapter never applies
pending writes to the dual store) or ``ROWS,AGE_S`` (its apply policy).
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from dualmem_bulk import CompatibilityAdapter, Memory, MemoryStore
from dualmem_bulk.checksum import TableDigest, episode_checksums, identity_digest, row_checksums
from dualmem_bulk.schema import DIM
from dualmem_bulk.stores.memory_store import EmbeddingProvenance, memories_to_batch
from dualmem_bulk.stores.pending import DEFAULT_POLICY, ApplyPolicy

Backend = CompatibilityAdapter | MemoryStore


def split_ids(ids: list[str]) -> tuple[list[str], list[str]]:
    """(ids the writer may update or delete, ids it never touches: the reader's)."""
    return ids[0::2], ids[1::2]


def new_memory(seed: int, i: int, memory_id: str) -> Memory:
    """A deterministic Memory with float edge cases (NaN payload, -0.0) and unicode."""
    rng = np.random.default_rng([seed, i])
    vector = rng.standard_normal(DIM).astype("<f4")
    vector[i % DIM] = -0.0
    bits = vector.view("<u4")
    bits[(i * 7) % DIM] = 0x7FA00000 | (i & 0xFFFF)
    prov = None if i % 3 else EmbeddingProvenance(
        model_name="m", model_version=str(i), dimension=DIM, language="日本語",
        created_at=i, quality_score=0.25, metadata=(("k", str(i)), ("a", "é")))
    return Memory(id=memory_id, embedding=vector.tobytes(), activation=float(rng.random()),
                  confidence=0.5, last_access=1_700_000_000_123_456_789 + i, access_count=i,
                  created_at=1_600_000_000_000_000_001 + i, decay_rate=0.1,
                  content=None if i % 5 == 0 else f"op {i} ✓", embedding_provenance=prov)


def apply_op(backend: Backend, seed: int, i: int, mutable: list[str]) -> str:
    """Perform operation ``i``: add, replace, update_activation or remove."""
    rng = random.Random(seed * 1_000_003 + i)
    roll = rng.random()
    if roll < 0.4:
        backend.store(new_memory(seed, i, f"new-{seed}-{i}"))
        return "add"
    target = rng.choice(mutable)
    if roll < 0.65:
        backend.store(new_memory(seed, i, target))
        return "update"
    if roll < 0.8:
        backend.update_activation(target, rng.random())
        return "activation"
    backend.remove(target)
    return "remove"


def digest(store: MemoryStore) -> TableDigest:
    """The store's table digest."""
    return digests(store)[0]


def digests(store: MemoryStore) -> tuple[TableDigest, TableDigest]:
    """The store's table digest and identity digest (with the ``space``/``episode`` checksums),
    in one read transaction."""
    total, identity = TableDigest(), TableDigest()
    with store.snapshot():
        for batch in store.scan(4096):
            sums = row_checksums(batch)
            total += TableDigest.of(sums)
            identity += identity_digest(sums, episode_checksums(batch))
    return total, identity


def replay(original: Path, copy: Path, seed: int, ops: int) -> TableDigest:
    """Apply the writer's ``ops`` operations to ``copy`` (a copy of ``original``); its digest."""
    with MemoryStore(original, create=False) as base:
        mutable, _ = split_ids(base.all_ids())
    with MemoryStore(copy, create=False) as store:
        for i in range(ops):
            apply_op(store, seed, i, mutable)
        return digest(store)


def _writer(adapter: CompatibilityAdapter, seed: int, stop: Path, out: Path,
            ids: list[str]) -> dict[str, Any]:
    mutable, _ = split_ids(ids)
    acked = out.with_suffix(".acked")
    done = acked.stat().st_size if acked.exists() else 0
    errors, dual = [], 0
    fd = os.open(acked, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    while not stop.exists():
        try:
            apply_op(adapter, seed, done, mutable)
        except Exception as exc:  # a failed write is a test failure: record and stop
            errors.append(f"op {done}: {exc!r}")
            break
        os.write(fd, b".")
        done += 1
        dual += not adapter.legacy_mode
        if done % 50 == 0:  # atomically: the test polls it
            out.with_suffix(".tmp").write_text(f"{done} {dual}")
            os.replace(out.with_suffix(".tmp"), out.with_suffix(".progress"))
        time.sleep(0.002)
    os.close(fd)
    return {"ops": done, "dual_ops": dual, "errors": errors}


def _reader(adapter: CompatibilityAdapter, seed: int, stop: Path, original: Path,
            ids: list[str]) -> dict[str, Any]:
    _, stable = split_ids(ids)
    rng = random.Random(seed)
    reads, errors, missing, wrong, dual = 0, [], 0, 0, 0
    with MemoryStore(original, create=False) as base:
        while not stop.exists():
            memory_id = rng.choice(stable)
            try:
                got = adapter.retrieve(memory_id)
            except Exception as exc:
                errors.append(f"{memory_id!r}: {exc!r}")
                continue
            reads += 1
            dual += not adapter.legacy_mode
            time.sleep(0.002)  # a service, not a benchmark: leave the migrator some CPU
            want = base.retrieve(memory_id)
            assert want is not None
            if got is None:
                missing += 1
            elif row_checksums(memories_to_batch([got])) != row_checksums(
                    memories_to_batch([want])):
                wrong += 1
    return {"reads": reads, "dual_reads": dual, "errors": errors[:10], "error_count": len(errors),
            "missing": missing, "wrong": wrong}


def _policy() -> ApplyPolicy | None:
    spec = os.environ.get("DUALMEM_TEST_APPLY")
    if spec is None:
        return DEFAULT_POLICY
    if spec == "none":
        return None
    rows, age_s = spec.split(",")
    return ApplyPolicy(int(rows), float(age_s))


def main(argv: list[str]) -> None:
    """Entry point of the writer and reader processes."""
    role, store, run_dir, original, seed, stop, out = argv
    with MemoryStore(Path(original), create=False) as base:
        ids = base.all_ids()
    with CompatibilityAdapter(Path(store), Path(run_dir), busy_timeout_ms=30_000,
                              apply=_policy()) as adapter:
        if role == "writer":
            result = _writer(adapter, int(seed), Path(stop), Path(out), ids)
        else:
            result = _reader(adapter, int(seed), Path(stop), Path(original), ids)
    Path(out).write_text(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1:])
