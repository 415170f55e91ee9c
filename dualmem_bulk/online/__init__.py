"""The online run: copy a live store while it serves, catch up, cut over, finalize.

``run.py`` picks the driver for the source (``store.py`` for a MemoryStore, ``wal.py`` for a live
Engram WAL), both built on ``driver.py``; ``compat.py`` is the legacy API the application keeps
using throughout; ``cutover.py`` and ``finalize.py`` end the migration.
"""
