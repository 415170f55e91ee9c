"""Memory JSON lines: one serde ``Memory`` object per line, read (:mod:`.reader`) and written
(:mod:`.writer`) in bounded batches."""

from __future__ import annotations

from dualmem_bulk.sources.jsonl.reader import read_jsonl
from dualmem_bulk.sources.jsonl.writer import write_jsonl

__all__ = ["read_jsonl", "write_jsonl"]
