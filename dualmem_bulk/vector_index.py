"""The ANN index on a DualMemoryNode Lance store's ``embedding`` (``dualmem-bulk index
TARGET``); the search through it, which the compatibility adapter runs, is
:func:`dualmem_bulk.stores.search.nearest`.

The index is IVF_FLAT with the cosine metric (the legacy store's ``search`` ranks by cosine
similarity): ~sqrt(rows) k-means partitions of the full vectors, and a query ranks the rows of
its ``NPROBES`` nearest partitions exactly. No quantization, so no re-ranking: recall@10 is
set by the partitions probed alone (measured >= 0.95 in ``benchmarks/bench_search.py``), and the
build is a k-means (IVF_PQ's codebook training cost ~10x more here, for a lower recall).
Embeddings holding a NaN are left out of the training and the index (the exact search ranks
their NaN similarity last). Rows added after the build are not in the index: Lance searches
them flat and merges them in, and every clean-up of the store (``DualStore.maintain``) adds
them to it (``optimize_indices``); ``index`` again rebuilds it from every row.

The index is a new version of the dataset; for an online run's store it is built under the
run's writer lock (one committer per table): the applier waits meanwhile, writes do not.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import lance

from dualmem_bulk.errors import SourceError
from dualmem_bulk.rundir.files import default_run_dir
from dualmem_bulk.rundir.journal import Journal
from dualmem_bulk.stores import detect_store
from dualmem_bulk.stores.dual import writer_lock
from dualmem_bulk.stores.search import VECTOR_INDEX

__all__ = ["INDEX_TYPE", "IndexReport", "build_index"]

INDEX_TYPE = "IVF_FLAT"


@dataclass
class IndexReport:
    """What ``index`` built; ``as_dict()`` is the ``--json`` output."""

    status: str
    target: str
    index: str
    rows: int
    partitions: int
    kind: str
    seconds: float
    version: int

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


def build_index(target: Path, run_dir: Path | None = None) -> IndexReport:
    """Build (or rebuild from every row) the ANN index on ``target``'s ``embedding``; under
    the writer lock of ``run_dir`` (default ``TARGET.run``) if that is an online run's."""
    if detect_store(target) != "lance":
        raise SourceError(target, "not a Lance dataset")
    ds = lance.dataset(str(target))
    if "node_type" not in ds.schema.names or "embedding" not in ds.schema.names:
        raise SourceError(target, "not a DualMemoryNode store (no node_type, embedding)")
    rows = int(ds.count_rows())
    if rows < 256:
        raise SourceError(target, f"{rows} rows: too few to train an index (256 at least); "
                                  "search without one is exact and fast at this size")
    partitions = max(1, min(4096, round(math.sqrt(rows))))
    run_dir = run_dir or default_run_dir(target)
    online = Journal.exists(run_dir)
    started = time.perf_counter()
    with writer_lock(run_dir) if online else contextlib.nullcontext():
        ds = lance.dataset(str(target)).create_index(
            "embedding", INDEX_TYPE, name=VECTOR_INDEX, metric="cosine", replace=True,
            num_partitions=partitions)
    return IndexReport(status="indexed", target=str(target), index=VECTOR_INDEX, rows=rows,
                       partitions=partitions, kind=INDEX_TYPE,
                       seconds=round(time.perf_counter() - started, 3),
                       version=int(ds.version))
