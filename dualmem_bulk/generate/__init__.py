"""Synthetic legacy Memory data, deterministic and streaming: rows (:mod:`.memories`), the same
rows as an Engram data root (:mod:`.engram_root`), written in any source format (:mod:`.write`).
"""

from __future__ import annotations

from dualmem_bulk.generate.engram_root import generate_wal_batches
from dualmem_bulk.generate.memories import generate_batches
from dualmem_bulk.generate.write import write_generated

__all__ = ["generate_batches", "generate_wal_batches", "write_generated"]
