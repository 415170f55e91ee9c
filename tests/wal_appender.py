"""Append records to a live Engram data root's WAL the way Engram does (header, then payload, at
the end of the newest file of a space), for the online WAL tests."""

from __future__ import annotations

from pathlib import Path

import lance
import numpy as np
import pyarrow as pa
from conftest import assert_bit_equal

from dualmem_bulk.offline.run import OfflineConfig, run_offline
from dualmem_bulk.sources.engram_wal_codec import EntryType, Episode, encode_episode, pack_header
from dualmem_bulk.sources.engram_wal_writer import wal_file_name

KEYS = [("space", "ascending"), ("episode_id", "ascending")]


class Appender:
    """Writes EpisodeStore and MemoryDelete records with rising sequences."""

    def __init__(self, root: Path, seed: int = 11) -> None:
        self.root, self.sequence, self.rng = root, 1 << 40, np.random.default_rng(seed)
        self.torn: tuple[Path, bytes] | None = None

    def _file(self, space: str) -> Path:
        return sorted((self.root / space / "wal").glob("wal-*.log"))[-1]

    def _record(self, entry_type: int, payload: bytes) -> bytes:
        self.sequence += 1
        return pack_header(self.sequence, 1_700_000_000_000_000_000, entry_type, payload) + payload

    def store(self, space: str, id_: str, what: str = "appended") -> None:
        """An EpisodeStore of ``id_`` (a new memory, or a duplicate the replay ignores)."""
        ep = Episode(id=id_, when="2024-05-06T07:08:09.123456789Z", what=what,
                     embedding=self.rng.standard_normal(768).astype(np.float32),
                     encoding_confidence=0.5, metadata={"k": what})
        self.write(space, self._record(EntryType.EpisodeStore, encode_episode(ep)))

    def delete(self, space: str, id_: str) -> None:
        """A MemoryDelete of ``id_``."""
        self.write(space, self._record(EntryType.MemoryDelete, id_.encode()))

    def write(self, space: str, data: bytes) -> None:
        with self._file(space).open("ab") as fh:
            fh.write(data)

    def start_torn(self, space: str, id_: str) -> None:
        """Write the header and half the payload of a store: a record still being written."""
        ep = Episode(id=id_, when="2024-05-06T07:08:09Z", what="torn, then whole",
                     embedding=np.zeros(768, np.float32))
        record = self._record(EntryType.EpisodeStore, encode_episode(ep))
        half = 64 + (len(record) - 64) // 2
        self.write(space, record[:half])
        self.torn = (self._file(space), record[half:])

    def finish_torn(self) -> None:
        """Write the rest of the torn record."""
        assert self.torn is not None
        with self.torn[0].open("ab") as fh:
            fh.write(self.torn[1])
        self.torn = None

    def new_file(self, space: str, unix_seconds: int) -> None:
        """Start a new (empty) WAL file, as Engram does when it rotates."""
        (self.root / space / "wal" / wal_file_name(unix_seconds)).touch()


def reference(root: Path, out: Path) -> tuple[str, pa.Table]:
    """The offline replay of ``root`` (``convert``): its digest and its nodes sorted by key."""
    report = run_offline(OfflineConfig(source=root, target=out, workers=0))
    return report.target_digest, lance.dataset(str(out)).to_table().sort_by(KEYS)


def assert_same_nodes(target: Path, expected: pa.Table) -> None:
    """The dual store holds exactly ``expected``, row for row by (space, id): keys, checksums
    and the ``episode`` column, floats compared by their bits."""
    got = lance.dataset(str(target)).to_table().sort_by(KEYS)
    columns = ["space", "episode_id", "id", "checksum", "episode"]
    assert_bit_equal(got.select(columns), expected.select(columns))
