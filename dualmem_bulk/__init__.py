"""dualmem-bulk: migrate Engram ``Memory`` stores to ``DualMemoryNode``, fast and verifiably."""

from __future__ import annotations

import os

os.environ.setdefault("LANCE_LOG", "error")  # Lance's native logger reads it once, at load

__version__ = "0.1.0"
