"""Recognise a source by its content (not only its name) and open the matching reader."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import pyarrow as pa

from dualmem_bulk.errors import SourceError, UsageError
from dualmem_bulk.sources import SourceBatch, SourcePart, refuse_dual

if TYPE_CHECKING:
    from dualmem_bulk.engines import TaskPool

__all__ = ["JsonlPart", "Source", "detect_source", "open_source"]


class Source(Protocol):
    """A readable legacy source: its kind, its files and a stream of loose batches."""

    kind: str
    files: list[Path]

    @property
    def total_rows(self) -> int | None:
        """Rows to expect, when known cheaply (for progress)."""

    def batches(self, batch_size: int) -> Iterator[SourceBatch]:
        """Loose legacy batches of at most ``batch_size`` rows."""

    def describe(self) -> dict[str, Any]:
        """Facts about the source for the run report (for a WAL: the replay report)."""

    def damage(self) -> list[str]:
        """One line per damaged spot found before reading rows (``--strict`` refuses them)."""

    def partitions(self, rows: int) -> Sequence[SourcePart]:
        """The source cut into parts of about ``rows`` rows each (at least one part), in
        source order: reading every part in turn yields what :meth:`batches` yields."""


def _files(files: list[Path]) -> dict[str, Any]:
    return {"files": [str(f) for f in files]}


def _sniff(path: Path) -> str:
    try:
        with path.open("rb") as fh:
            head = fh.read(4096)
    except OSError as exc:
        raise SourceError(path, f"cannot read ({exc.strerror})") from exc
    if not head:
        raise SourceError(path, "empty file")
    if head.startswith(b"PAR1"):
        return "parquet"
    if head.lstrip().startswith(b"{"):
        return "jsonl"
    raise SourceError(path, "not a legacy source: neither Parquet (no PAR1 magic) nor JSON lines")


def detect_source(path: Path) -> str:
    """``parquet``, ``jsonl``, ``engram-wal`` or ``lance`` (a legacy store kept as a Lance
    dataset), judged from the content of ``path``."""
    from dualmem_bulk.sources.engram_wal import is_engram_root

    if not path.exists():
        raise SourceError(path, "no such file or directory")
    if path.is_dir():
        if (path / "_versions").is_dir():
            return "lance"
        if is_engram_root(path):
            return "engram-wal"
        if any(path.rglob("*.parquet")):
            return "parquet"
        raise SourceError(path, "directory holds no .parquet files and is not a Lance dataset "
                                "or an Engram data root (<root>/<space>/wal/wal-*.log)")
    return _sniff(path)


_BLOCK = 4 << 20


@dataclass(frozen=True)
class JsonlPart:
    """A byte range of a JSON lines file cut at line ends: a partition of a JSONL source."""

    path: Path
    start: int
    end: int
    first_line: int
    """0-based index of the range's first line in the file."""
    rows: int
    """Lines in the range (blank ones included)."""

    @property
    def needs(self) -> tuple[Path, ...]:
        """The file."""
        return (self.path,)

    def batches(self, batch_size: int) -> Iterator[SourceBatch]:
        """The range's lines as the whole file's reader yields them."""
        from dualmem_bulk.sources.jsonl import read_jsonl

        yield from read_jsonl(self.path, batch_size, self.start, self.end, self.first_line)

    def describe(self) -> str:
        """File, byte range and first line."""
        return f"{self.path} bytes {self.start}-{self.end} from line {self.first_line}"


class JsonlSource:
    """Memory JSON lines, one file."""

    kind = "jsonl"

    def __init__(self, path: Path) -> None:
        self.path = path
        self.files = [path]

    @property
    def total_rows(self) -> int | None:
        """Non-blank lines in the file, counted in 1 MiB blocks."""
        count, last = 0, b"\n"
        with self.path.open("rb") as fh:
            while block := fh.read(1 << 20):
                count += block.count(b"\n")
                last = block[-1:]
        return count + (last != b"\n")

    def batches(self, batch_size: int) -> Iterator[SourceBatch]:
        """Loose batches from the JSON lines reader."""
        from dualmem_bulk.sources.jsonl import read_jsonl

        yield from read_jsonl(self.path, batch_size)

    def partitions(self, rows: int) -> list[JsonlPart]:
        """Byte ranges of ``rows`` lines each, cut after a newline (one pass over the file,
        counting newlines a block at a time)."""
        parts: list[JsonlPart] = []
        start = first_line = lines = offset = 0
        last = b"\n"
        try:
            with self.path.open("rb") as fh:
                while block := fh.read(_BLOCK):
                    ends = np.flatnonzero(np.frombuffer(block, np.uint8) == ord("\n"))
                    done = lines + 1 + np.arange(len(ends))
                    for i in np.flatnonzero(done % rows == 0).tolist():
                        end = offset + int(ends[i]) + 1
                        parts.append(JsonlPart(self.path, start, end, first_line,
                                               int(done[i]) - first_line))
                        start, first_line = end, int(done[i])
                    lines += len(ends)
                    offset += len(block)
                    last = block[-1:]
        except OSError as exc:
            raise SourceError(self.path, f"cannot read ({exc.strerror})") from exc
        if offset > start or not parts:
            parts.append(JsonlPart(self.path, start, offset, first_line,
                                   lines + (last != b"\n") - first_line))
        return parts

    def describe(self) -> dict[str, Any]:
        """The file read."""
        return _files(self.files)

    def damage(self) -> list[str]:
        """JSON lines damage shows per row, in the quarantine."""
        return []


def open_source(path: Path, spaces: Sequence[str] | None = None,
                batch_size: int = 16_384, pool: TaskPool | None = None) -> Source:
    """Open ``path`` with the reader its content calls for; :class:`SourceError` otherwise.

    ``spaces`` picks memory spaces of an Engram data root (default: all of them); ``pool``
    runs the scan of its WAL files (default: in this process).
    """
    kind = detect_source(path)
    if kind == "engram-wal":
        from dualmem_bulk.sources.engram_wal import read_engram_wal

        return read_engram_wal(path, batch_size, spaces, pool=pool)
    if spaces:
        raise UsageError(f"spaces applies to an Engram data root only; {path} is {kind}",
                         "spaces")
    if kind == "lance":
        from dualmem_bulk.sources.lance_legacy import LanceLegacySource

        return LanceLegacySource(path)
    if kind == "parquet":
        from dualmem_bulk.sources.parquet import ParquetSource

        _refuse_dual_parquet(path)
        return ParquetSource(path)
    return JsonlSource(path)


def _refuse_dual_parquet(path: Path) -> None:
    """A Parquet DualMemoryNode store is no legacy source: say so, rather than which column
    has the wrong type. Unreadable files are left to the Parquet reader to report."""
    import pyarrow.parquet as pq

    from dualmem_bulk.sources.parquet import parquet_files

    first = parquet_files(path)[0]
    try:
        schema = pq.read_schema(first)
    except (OSError, pa.ArrowException):
        return
    refuse_dual(path, schema)
