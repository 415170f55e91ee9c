"""Point reads by legacy id on a live DualMemoryNode Lance store, without Lance's scanner.

A read by id through the scanner (filter ``episode_id = ...``, BTREE index) costs ~2.7 ms here
against SQLite's ~0.6 ms, most of it planning the scan and decoding every column; a ``take`` of
the ten columns a Memory needs from the row's fragment costs ~1.0-1.2 ms (the dataset's
``take`` by offset ~1.9), and building the Memory straight from it ~0.15 ms (measured, 20K
nodes, 2 cores). So each reader keeps where every id sits in the dataset version it reads.

Per fragment data (immutable): the hash of each row's id (Python's ``hash``, sorted) and the
row's physical offset, from one scan of its ``episode_id`` column. Per deletion file: the rank
of each physical offset among the live rows (what a fragment's ``take`` counts), from a scan of
the live row addresses alone (no column decoded). A new version only adds fragments (an
applied batch, a compaction), drops some, or gives some a new deletion file (an update or
delete of their rows), so :meth:`RowLocator.sync` scans just those. Every row taken is checked
against the id asked for: a hash collision, or any mistake here, can only make a read miss a
row, never return another id's. Memory: 16 bytes a row per reader, plus 8 per row of a
fragment with deletions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import lance
import numpy as np
import pyarrow as pa

from dualmem_bulk.stores.memory_rows import EMBEDDING_BYTES, embedding_bytes
from dualmem_bulk.stores.memory_store import EmbeddingProvenance, Memory

__all__ = ["MEMORY_COLUMNS", "RowLocator", "table_to_memories"]

KEY = "episode_id"
MEMORY_COLUMNS = ["node_type", KEY, "embedding", "activation", "confidence", "last_access",
                  "access_count", "created_at", "decay_rate", "content", "embedding_provenance"]
"""The DualMemoryNode columns a legacy Memory is rebuilt from."""


@dataclass(frozen=True)
class _Rows:
    """Where each id sits in one fragment's data files (which never change)."""

    hashes: np.ndarray
    """``hash`` of each row's id, sorted (rows deleted when scanned are left out)."""
    offsets: np.ndarray
    """Each hash's physical row offset in the fragment."""

    @classmethod
    def scan(cls, fragment: lance.LanceFragment) -> _Rows:
        table = fragment.to_table(columns=[KEY], with_row_address=True)
        hashes = np.fromiter((hash(i) for i in table.column(0).to_pylist()), dtype=np.int64,
                             count=table.num_rows)
        order = np.argsort(hashes, kind="stable")
        offsets = np.asarray(table.column(1).to_numpy(), dtype=np.uint64) & 0xFFFFFFFF
        return cls(hashes[order], offsets.astype(np.int64)[order])


def _live_ranks(fragment: lance.LanceFragment) -> np.ndarray:
    """Each physical offset's position among the fragment's live rows (-1: deleted)."""
    live = np.sort(np.asarray(fragment.to_table(columns=[], with_row_address=True).column(0)
                              .to_numpy(), dtype=np.uint64) & 0xFFFFFFFF)
    ranks = np.full(fragment.metadata.physical_rows, -1, dtype=np.int64)
    ranks[live.astype(np.int64)] = np.arange(len(live), dtype=np.int64)
    return ranks


class RowLocator:
    """Where each legacy id sits in one version of a Lance dataset (see the module docstring).
    Not thread-safe: one per reader (a :class:`~dualmem_bulk.stores.dual.DualStore`)."""

    def __init__(self) -> None:
        self._version: int | None = None
        self._rows: dict[tuple[Any, ...], _Rows] = {}
        self._ranks: dict[tuple[Any, ...], np.ndarray | None] = {}
        self._fragments: list[tuple[lance.LanceFragment, _Rows, np.ndarray | None]] = []

    def sync(self, ds: lance.LanceDataset) -> None:
        """Follow ``ds``'s version: scan the fragments (or deletion files) not seen before."""
        if ds.version == self._version:
            return
        rows: dict[tuple[Any, ...], _Rows] = {}
        ranks: dict[tuple[Any, ...], np.ndarray | None] = {}
        fragments = []
        for fragment in ds.get_fragments():
            meta = fragment.metadata
            data = (meta.id, meta.physical_rows, tuple(f.path for f in meta.files))
            deleted = meta.deletion_file
            state = (*data, None if deleted is None else (deleted.id, deleted.read_version,
                                                          deleted.num_deleted_rows))
            rows[data] = self._rows.get(data) or _Rows.scan(fragment)
            if state not in self._ranks:
                self._ranks[state] = None if deleted is None else _live_ranks(fragment)
            ranks[state] = self._ranks[state]
            fragments.append((fragment, rows[data], ranks[state]))
        self._rows, self._ranks, self._fragments = rows, ranks, fragments
        self._version = ds.version

    def take(self, ds: lance.LanceDataset, memory_id: str, columns: Sequence[str]) -> pa.Table:
        """The rows of ``memory_id`` in ``ds`` (synced first), with ``columns`` and the id:
        a ``take`` of the candidate rows from their fragments, kept if their id is the one
        asked for."""
        self.sync(ds)
        names = list(dict.fromkeys([KEY, *columns]))
        target = np.int64(hash(memory_id))
        parts = []
        for fragment, entry, ranks in self._fragments:
            lo = int(np.searchsorted(entry.hashes, target, "left"))
            hi = int(np.searchsorted(entry.hashes, target, "right"))
            if lo < hi:
                offsets = entry.offsets[lo:hi]
                positions = offsets if ranks is None else ranks[offsets]
                positions = positions[positions >= 0]
                if len(positions):
                    parts.append(fragment.take(positions.tolist(), columns=names))
        if not parts:
            return pa.table({n: pa.array([], ds.schema.field(n).type) for n in names})
        rows = pa.concat_tables(parts)
        keep = [i for i, found in enumerate(rows.column(KEY).to_pylist()) if found == memory_id]
        return rows if len(keep) == rows.num_rows else rows.take(keep)


def table_to_memories(table: pa.Table) -> list[Memory]:
    """The Memory of each Episode row of ``table`` (``MEMORY_COLUMNS`` of DualMemoryNode rows),
    bit for bit as :func:`~dualmem_bulk.convert.to_legacy` rebuilds it, without the batch
    conversions (a tenth of the cost for one row). Raises ``ValueError`` on a Concept row."""
    batch = table.combine_chunks().to_batches()
    if not batch:
        return []
    rows = batch[0]
    if any(k != "Episode" for k in rows.column("node_type").to_pylist()):
        raise ValueError("a Concept node has no legacy Memory form")
    emb = embedding_bytes(rows.column("embedding"))
    col = {n: (rows.column(n).view(pa.int64()) if pa.types.is_timestamp(rows.schema.field(n).type)
               else rows.column(n)).to_pylist()
           for n in MEMORY_COLUMNS if n not in ("node_type", "embedding")}
    out = []
    for i in range(rows.num_rows):
        prov = col["embedding_provenance"][i]
        out.append(Memory(
            id=col[KEY][i], embedding=emb[i * EMBEDDING_BYTES:(i + 1) * EMBEDDING_BYTES],
            activation=col["activation"][i], confidence=col["confidence"][i],
            last_access=col["last_access"][i], access_count=col["access_count"][i],
            created_at=col["created_at"][i], decay_rate=col["decay_rate"][i],
            content=col["content"][i],
            embedding_provenance=None if prov is None else EmbeddingProvenance(
                **{**prov, "metadata": tuple(prov["metadata"] or ())})))
    return out
