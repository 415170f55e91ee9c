"""What reading an Engram data root found: counts per file, space and in total, and the damage.

The per-space, per-file and totals parts of :meth:`WalReport.as_dict` have exactly the keys of
the fixture's ``expected-report.json``; every damaged or skipped record is listed under
``damage`` with its space, file and byte offset so an operator can find it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

__all__ = ["IssueKind", "SpaceReport", "WalFileReport", "WalIssue", "WalReport"]

IssueKind = Literal["bad_crc", "bad_header", "torn_tail", "undecodable", "unknown_entry_type"]


class WalIssue(NamedTuple):
    """One damaged, skipped or unusual record (or file tail)."""

    kind: IssueKind
    space: str
    file: str
    """The WAL file's name."""
    offset: int
    """Byte offset of the record (or of the bad header / torn tail) in the file."""
    sequence: int | None
    """The record's sequence, when its header could be read."""
    bytes: int
    """Payload size, or for a bad header or torn tail the bytes from ``offset`` to the end."""
    problem: str

    def describe(self) -> str:
        """One line for an operator: where, and what."""
        seq = f" (sequence {self.sequence})" if self.sequence is not None else ""
        return f"{self.space}/wal/{self.file} at byte {self.offset}{seq}: {self.problem}"


_AT_RECORD = ("space", "file", "offset", "sequence", "problem")
_AT_TAIL = ("space", "file", "offset", "bytes", "problem")
_DAMAGE_KEYS: dict[IssueKind, tuple[str, tuple[str, ...]]] = {
    "bad_crc": ("bad_crc_records", _AT_RECORD),
    "bad_header": ("bad_headers", _AT_TAIL),
    "torn_tail": ("torn_tails", _AT_TAIL),
    "undecodable": ("undecodable_records", _AT_RECORD),
    "unknown_entry_type": ("unknown_entry_types", _AT_RECORD),
}


@dataclass
class WalFileReport:
    """Counts and damage offsets of one ``wal-*.log`` file."""

    name: str
    bytes: int
    records_read: int = 0
    """Whole records with a valid header, including those with a bad payload CRC."""
    bad_crc_offsets: list[int] = field(default_factory=list)
    bad_header_at: int | None = None
    bytes_skipped_after_bad_header: int = 0
    """From the bad header to the end of the file."""
    torn_tail_at: int | None = None
    torn_tail_bytes: int = 0
    """From the start of the torn record to the end of the file."""

    def as_dict(self) -> dict[str, Any]:
        """The JSON form (keys as in ``expected-report.json``)."""
        return {
            "name": self.name,
            "bytes": self.bytes,
            "records_read": self.records_read,
            "bad_crc_offsets": list(self.bad_crc_offsets),
            "bad_header_at": self.bad_header_at,
            "bytes_skipped_after_bad_header": self.bytes_skipped_after_bad_header,
            "torn_tail_at": self.torn_tail_at,
            "torn_tail_bytes": self.torn_tail_bytes,
        }


@dataclass
class SpaceReport:
    """Counts of one memory space; the file-level counts are summed from :attr:`files`."""

    name: str
    files: list[WalFileReport] = field(default_factory=list)
    ignored_files: list[str] = field(default_factory=list)
    """Names in ``wal/`` that are not ``wal-*.log`` files (``.log.tmp`` leftovers, ...)."""
    records_valid: int = 0
    """Records whose header and payload CRC are both good."""
    records_by_type: Counter[str] = field(default_factory=Counter)
    """Valid records by entry type; unknown type numbers count as ``EpisodeStore``."""
    episode_store_records: int = 0
    duplicates_skipped: int = 0
    """Stores of an id that replay had already stored (and not deleted since)."""
    memories_yielded: int = 0

    @property
    def records_read(self) -> int:
        """Whole records with a valid header, in all files."""
        return sum(f.records_read for f in self.files)

    @property
    def bad_crc_records_skipped(self) -> int:
        """Records skipped because their payload CRC did not match."""
        return sum(len(f.bad_crc_offsets) for f in self.files)

    @property
    def bad_header_files(self) -> int:
        """Files cut short by a bad header."""
        return sum(f.bad_header_at is not None for f in self.files)

    @property
    def bytes_skipped_after_bad_header(self) -> int:
        """Bytes not read because of bad headers."""
        return sum(f.bytes_skipped_after_bad_header for f in self.files)

    @property
    def torn_tail_bytes(self) -> int:
        """Bytes of torn tail records."""
        return sum(f.torn_tail_bytes for f in self.files)

    def as_dict(self) -> dict[str, Any]:
        """The JSON form (keys as in ``expected-report.json``)."""
        return {
            "wal_files": len(self.files),
            "ignored_files": list(self.ignored_files),
            "records_read": self.records_read,
            "records_valid": self.records_valid,
            "records_by_type": dict(sorted(self.records_by_type.items())),
            "episode_store_records": self.episode_store_records,
            "duplicates_skipped": self.duplicates_skipped,
            "bad_crc_records_skipped": self.bad_crc_records_skipped,
            "bad_header_files": self.bad_header_files,
            "bytes_skipped_after_bad_header": self.bytes_skipped_after_bad_header,
            "torn_tail_bytes": self.torn_tail_bytes,
            "memories_yielded": self.memories_yielded,
            "files": [f.as_dict() for f in self.files],
        }


_TOTALS = (
    "wal_files",
    "records_read",
    "episode_store_records",
    "duplicates_skipped",
    "bad_crc_records_skipped",
    "records_valid",
    "bad_header_files",
    "bytes_skipped_after_bad_header",
    "torn_tail_bytes",
    "memories_yielded",
)


@dataclass
class WalReport:
    """The whole data root: per-space reports, their totals, and every issue found."""

    data_root: str
    spaces: dict[str, SpaceReport] = field(default_factory=dict)
    issues: list[WalIssue] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """JSON form: ``spaces`` and ``totals`` as in ``expected-report.json``, plus ``damage``."""
        spaces = {name: space.as_dict() for name, space in self.spaces.items()}
        totals = {key: sum(s[key] for s in spaces.values()) for key in _TOTALS}
        damage: dict[str, list[dict[str, Any]]] = {key: [] for key, _ in _DAMAGE_KEYS.values()}
        for issue in self.issues:
            key, fields = _DAMAGE_KEYS[issue.kind]
            damage[key].append({name: getattr(issue, name) for name in fields})
        return {"data_root": self.data_root, "spaces": spaces, "totals": totals, "damage": damage}
