"""Vector search: exact over batches of rows (the legacy store's ``search`` and the served dual
store's exact scan, :mod:`.pending`, rank the same rows the same way), and through the ANN index
that ``dualmem-bulk index`` builds (:mod:`dualmem_bulk.vector_index`) on a Lance store."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import lance
import numpy as np
import pyarrow as pa

from dualmem_bulk.schema import DIM

__all__ = ["NPROBES", "VECTOR_INDEX", "has_vector_index", "nearest", "top_k"]

VECTOR_INDEX = "embedding_idx"
NPROBES = 20
"""IVF partitions searched per query."""


def top_k(embedding: Sequence[float] | np.ndarray, k: int,
          batches: Iterable[pa.RecordBatch]) -> list[tuple[str, float]]:
    """The ``k`` ids of ``batches`` (with ``id`` or ``episode_id`` and ``embedding`` columns)
    most similar to ``embedding`` by cosine, best first; NaN similarities rank last, equal ones
    by id (so the answer does not depend on the order of the rows: the legacy store scans in id
    order, an online run's dual store holds them in rowid order)."""
    query = np.asarray(embedding, dtype=np.float32)
    best: list[tuple[str, float]] = []
    for batch in batches:
        key = "id" if "id" in batch.schema.names else "episode_id"
        vectors = np.asarray(batch.column("embedding").flatten().to_numpy()).reshape(-1, DIM)
        with np.errstate(all="ignore"):
            sims = vectors @ query / (np.linalg.norm(vectors, axis=1) * np.linalg.norm(query))
        sims = np.where(np.isnan(sims), -np.inf, sims)
        picked = np.arange(len(sims))
        if len(sims) > k:  # the k best and every row tied with the k-th
            picked = np.flatnonzero(sims >= -np.partition(-sims, k - 1)[k - 1])
        ids = batch.column(key).take(pa.array(picked, pa.int64())).to_pylist()
        best = sorted([*best, *zip(ids, sims[picked].tolist(), strict=True)],
                      key=lambda t: (-t[1], t[0]))[:k]
    return best


def has_vector_index(ds: lance.LanceDataset) -> bool:
    """Whether the dataset has the ANN index on ``embedding``."""
    return VECTOR_INDEX in {i.name for i in ds.describe_indices()}


def nearest(ds: lance.LanceDataset, embedding: Sequence[float] | np.ndarray, k: int,
            exclude: Sequence[str] = ()) -> list[tuple[str, float]]:
    """The ``k`` nodes nearest ``embedding`` by cosine through the ANN index (unindexed rows
    searched flat), as (legacy id, cosine similarity), best first; ids in ``exclude`` are
    left out (they are served from elsewhere)."""
    query = np.asarray(embedding, dtype=np.float32)
    table = ds.to_table(columns=["episode_id", "_distance"], nearest={
        "column": "embedding", "q": query, "k": k + len(exclude), "nprobes": NPROBES,
        "use_index": True})
    skip = set(exclude)
    ids = table.column("episode_id").to_pylist()
    distances = table.column("_distance").cast(pa.float64()).to_pylist()
    return [(i, 1.0 - d) for i, d in zip(ids, distances, strict=True)
            if i not in skip and d is not None and not math.isnan(d)][:k]
