"""Vector search on the new store (issue 15): the ANN index's build time, query latency (p50,
p99) and recall@10 against the exact search, at ``BENCH_SEARCH_NODES`` (default 100,000)
generated nodes. Queries are stored embeddings with a little noise (a service searches near
what it holds); recall is also reported for random directions, far from every cluster (the
hard case for an IVF index, which probes the partitions nearest the query). The exact search
is the legacy store's (``top_k``, cosine, every row), timed on the same queries.
Run: ``pytest benchmarks -k search -o python_files='bench_*.py'``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import lance
import numpy as np
from conftest import record

from dualmem_bulk.generate import generate_batches
from dualmem_bulk.stores.dual import DualStore
from dualmem_bulk.stores.search import nearest, top_k
from dualmem_bulk.vector_index import build_index

NODES = int(os.environ.get("BENCH_SEARCH_NODES", "100000"))
QUERIES = 200
EXACT_QUERIES = 30
"""The exact search scans every row: fewer queries, the recall is measured on these."""


def _ms(seconds: list[float]) -> dict[str, float]:
    ms = np.array(seconds) * 1000
    return {"p50_ms": round(float(np.percentile(ms, 50)), 2),
            "p99_ms": round(float(np.percentile(ms, 99)), 2)}


def test_vector_search(benchmark: Any, workdir: Path) -> None:
    target = workdir / f"search-{NODES}.lance"
    store = DualStore(target)
    for batch in generate_batches(NODES, 7, 20_000):
        store.append(batch)
    report = benchmark.pedantic(lambda: build_index(target), rounds=1, iterations=1)
    ds = lance.dataset(str(target))
    table = ds.to_table(columns=["episode_id", "embedding"])
    vectors = np.asarray(table.column("embedding").combine_chunks().flatten().to_numpy())
    vectors = vectors.reshape(-1, 768)
    rng = np.random.default_rng(15)
    queries = [vectors[i] + rng.standard_normal(768).astype(np.float32) * 0.01
               for i in rng.integers(len(vectors), size=QUERIES)]
    queries = [np.nan_to_num(q) for q in queries]
    nearest(ds, queries[0], 10)  # open the index once, as a long-lived service has
    indexed: list[float] = []
    found: list[set[str]] = []
    for query in queries:
        started = time.perf_counter()
        found.append({i for i, _ in nearest(ds, query, 10)})
        indexed.append(time.perf_counter() - started)
    exact: list[float] = []
    recall: list[float] = []
    batches = table.to_batches(max_chunksize=16_384)
    for query, got in zip(queries[:EXACT_QUERIES], found, strict=False):
        started = time.perf_counter()
        want = {i for i, _ in top_k(query, 10, batches)}
        exact.append(time.perf_counter() - started)
        recall.append(len(want & got) / 10)
    far = []
    for query in rng.standard_normal((EXACT_QUERIES // 2, 768)).astype(np.float32):
        want = {i for i, _ in top_k(query, 10, batches)}
        far.append(len(want & {i for i, _ in nearest(ds, query, 10)}) / 10)
    record("vector_search", NODES, report.seconds, index=report.kind,
           partitions=report.partitions, build_s=report.seconds, indexed=_ms(indexed),
           exact=_ms(exact), recall_at_10=round(float(np.mean(recall)), 3),
           worst_recall=round(float(np.min(recall)), 2),
           random_query_recall_at_10=round(float(np.mean(far)), 3))
    assert np.mean(recall) >= 0.95, recall
