"""The row-level checks of a verification: target rows against their stored checksums and the
conversion rules, and the join of (space, id) keys that names what is missing, extra,
duplicated or different."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dualmem_bulk.checksum import TableDigest, episode_checksums, row_checksums
from dualmem_bulk.convert import node_uuids, to_legacy

if TYPE_CHECKING:
    import polars as pl

__all__ = ["MAX_LISTED", "Keys", "Problem", "join_problems", "keyed_problems", "listed",
           "row_problems"]

MAX_LISTED = 20
_CONCEPT_FIELDS = ("centroid", "coherence", "instance_count", "formation_time")

Problem = tuple[str, str, str]
"""(space, id, what is wrong); space is "" for sources without spaces."""


def listed(problems: list[Problem], limit: int = MAX_LISTED) -> list[dict[str, str]]:
    """The first ``limit`` problems as a report lists them (``space`` only when there is one)."""
    return [{"id": i, "problem": p, **({"space": sp} if sp else {})}
            for sp, i, p in problems[:limit]]


def _bits(arr: pa.Array) -> np.ndarray:
    return np.asarray(arr.fill_null(np.nan).to_numpy(zero_copy_only=False)).view(np.uint32)


def _structural(batch: pa.RecordBatch) -> list[tuple[int, str]]:
    """Rows that break a conversion rule, with the rule (vectorized, Python only per failure)."""
    problems: list[tuple[int, str]] = []
    kinds = batch.column("node_type").cast(pa.utf8())
    not_episode = np.asarray(pc.not_equal(kinds, "Episode").fill_null(True))
    problems += [(int(i), f"node_type is {kinds[int(i)]}") for i in np.flatnonzero(not_episode)]
    episodes = ~not_episode
    ids = batch.column("episode_id")
    expected = node_uuids(ids.fill_null(""))
    bad_uuid = ~np.asarray(pc.equal(batch.column("id"), expected).fill_null(False))
    problems += [(int(i), "id is not the node UUID of episode_id")
                 for i in np.flatnonzero(bad_uuid & episodes)]
    strength = _bits(batch.column("strength")) != _bits(batch.column("activation"))
    problems += [(int(i), "strength differs from activation")
                 for i in np.flatnonzero(strength & episodes)]
    zero = _bits(batch.column("consolidation_score")) != 0
    problems += [(int(i), "consolidation_score is not 0.0")
                 for i in np.flatnonzero(zero & episodes)]
    for name in _CONCEPT_FIELDS:
        filled = np.asarray(batch.column(name).is_valid())
        problems += [(int(i), f"{name} is set on an Episode")
                     for i in np.flatnonzero(filled & episodes)]
    return problems


def _checksum_problems(batch: pa.RecordBatch) -> tuple[list[tuple[int, str]], TableDigest]:
    kinds = batch.column("node_type").cast(pa.utf8())
    episodes = pc.equal(kinds, "Episode").fill_null(False)
    sub = batch if pc.all(episodes).as_py() else batch.filter(episodes)
    recomputed = row_checksums(to_legacy(sub))
    same = np.asarray(pc.equal(recomputed, sub.column("checksum")).fill_null(False))
    where = np.flatnonzero(np.asarray(episodes))
    return ([(int(where[i]), "fields differ from the stored checksum")
             for i in np.flatnonzero(~same)], TableDigest.of(recomputed))


def row_problems(batch: pa.RecordBatch) -> tuple[list[Problem], TableDigest]:
    """The target rows that differ from their stored checksum or break a conversion rule, and
    the digest of the checksums recomputed from their fields."""
    rows, digest = _checksum_problems(batch)
    rows += _structural(batch)
    ids, spaces = batch.column("episode_id"), batch.column("space")
    return [(spaces[i].as_py() or "", str(ids[i].as_py()), why)
            for i, why in sorted(set(rows))], digest


def keyed_problems(source: Iterator[pa.RecordBatch],
                   target: Iterator[pa.RecordBatch]) -> list[Problem]:
    """Name the nodes behind a failed comparison of digests: target rows (DualMemoryNode) that
    differ from their stored checksum or break a conversion rule, then the (space, id) keys
    missing, extra, duplicated or different (row or ``space``/``episode`` checksum) against the
    ``source`` rows (legacy schema with a ``checksum`` column)."""
    src, tgt = Keys(), Keys()
    problems: list[Problem] = []
    for batch in source:
        src.add(batch, "id")
    for batch in target:
        problems += row_problems(batch)[0]
        tgt.add(batch, "episode_id")
    return problems + join_problems(src.frame("s"), tgt.frame("t"))


_KEY = ["space", "id"]


def join_problems(snapshot: pl.DataFrame, target: pl.DataFrame) -> list[Problem]:
    """The keys missing, extra, duplicated or different between two :meth:`Keys.frame`
    frames (``"s"``: the snapshot's, ``"t"``: the target's)."""
    import polars as pl  # here, not at the top: a run's driver never needs Polars (26 MiB)

    problems: list[Problem] = []
    dup = target.filter(pl.struct(_KEY).is_duplicated()).unique(_KEY).sort(_KEY)
    problems += [(sp, i, "appears more than once in the target")
                 for sp, i in dup.select(_KEY).iter_rows()]
    joined = snapshot.unique(_KEY).join(target.unique(_KEY), on=_KEY, how="full", coalesce=True)
    for row in joined.filter(
        pl.col("t").is_null() | pl.col("s").is_null() | (pl.col("s") != pl.col("t"))
        | (pl.col("es") != pl.col("et"))
    ).sort(_KEY).iter_rows(named=True):
        if row["t"] is None:
            why = "missing from the target"
        elif row["s"] is None:
            why = "in the target but not in the snapshot"
        elif row["s"] != row["t"]:
            why = "checksum differs from the snapshot's"
        else:
            why = "episode fields differ from the snapshot's"
        problems.append((row["space"], row["id"], why))
    return problems


class Keys:
    """(space, id, row checksum, episode checksum) gathered batch by batch, for the join."""

    def __init__(self) -> None:
        self.spaces: list[pa.Array] = []
        self.ids: list[pa.Array] = []
        self.sums: list[pa.Array] = []
        self.extras: list[pa.Array] = []

    def add(self, batch: pa.RecordBatch, id_column: str) -> None:
        """Keep copies: a slice of a batch read by Lance keeps the whole batch's memory alive."""
        every = pa.array(np.arange(batch.num_rows))
        self.spaces.append(batch.column("space").cast(pa.large_utf8()).take(every))
        self.ids.append(batch.column(id_column).cast(pa.large_utf8()).take(every))
        self.sums.append(batch.column("checksum").cast(pa.large_binary()).take(every))
        self.extras.append(episode_checksums(batch).cast(pa.large_binary()))

    def frame(self, name: str) -> pl.DataFrame:
        """The keys as a frame: ``space``, ``id``, ``NAME`` (row checksum), ``eNAME``."""
        import polars as pl

        schema = {"space": pl.String, "id": pl.String, name: pl.Binary, "e" + name: pl.Binary}
        if not self.ids:
            return pl.DataFrame(schema=schema)
        table = pa.table({
            "space": pa.chunked_array(self.spaces, pa.large_utf8()),
            "id": pa.chunked_array(self.ids, pa.large_utf8()),
            name: pa.chunked_array(self.sums, pa.large_binary()),
            "e" + name: pa.chunked_array(self.extras, pa.large_binary()),
        })
        out = pl.from_arrow(table)
        assert isinstance(out, pl.DataFrame)
        return out.with_columns(pl.col("space").fill_null(""))
