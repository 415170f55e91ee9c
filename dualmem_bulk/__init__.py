"""dualmem-bulk: migrate Engram ``Memory`` stores to ``DualMemoryNode``, fast and verifiably."""

from __future__ import annotations

__version__ = "0.1.0"
