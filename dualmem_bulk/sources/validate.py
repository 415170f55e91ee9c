"""Judge loose legacy rows one by one: conform the valid ones, quarantine the rest with reasons.

Invalid rows: null or empty id; null embedding, or not exactly 768 values, or null values
inside it; a required scalar that is null; confidence or activation outside [0, 1] or NaN;
content that is not valid UTF-8; a provenance whose metadata is null or holds null keys or
values; and a duplicate: a row whose node UUID an earlier valid row already has (the first
occurrence wins, as in Engram's WAL replay). Floats inside embeddings are not judged: NaN,
infinities and -0.0 are carried bit-exact.

A column of the wrong *type* is not a row problem but a source problem: :class:`SchemaMismatch`
names the file, the column, what was expected and what was found.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dualmem_bulk.convert import node_uuids
from dualmem_bulk.quarantine import render_record
from dualmem_bulk.schema import DIM
from dualmem_bulk.schema.conform import check_schema, conform
from dualmem_bulk.sources import ROW_COLUMN, Rejected, SourceBatch

__all__ = ["Dropper", "Origins", "SeenIds", "ValidatedBatch", "validate_batch"]

_REQUIRED = ("activation", "confidence", "last_access", "access_count", "created_at", "decay_rate")
_UNIT_RANGE = ("activation", "confidence")


Origins = tuple[tuple[str, ...], np.ndarray]
"""Where keys come from: source files, and per key ``file index << 40 | row``."""

_ROW_BITS = 40


class SeenIds:
    """The node UUIDs accepted so far, per memory space, each with where it was first seen
    (source file and row): 24 bytes a row, exact.

    Node UUIDs are unique within a space; the same id in two spaces is two memories. Each
    space keeps sorted runs whose sizes at least halve from one to the next (two runs of about
    the same size are merged), so adding N keys costs O(N log N) and a lookup searches at most
    log2(N) runs. One sorted array re-sorted per batch made the export quadratic (4,096-id
    batches: 1M ids 1.54 s, 2M ids 5.34 s; with the runs 1.12 s and 3.24 s).
    """

    def __init__(self) -> None:
        self._runs: dict[str | None, list[tuple[np.ndarray, np.ndarray]]] = {}
        self._files: dict[str, int] = {}
        self._moved: dict[tuple[str | None, bytes], str | None] = {}
        self.firsts = np.zeros(0, dtype=np.int64)
        """After :meth:`first_seen`: per key, where its first occurrence is (-1: this key is
        the first, or where is unknown); read it with :meth:`where`."""

    def __len__(self) -> int:
        return sum(len(run) for runs in self._runs.values() for run, _ in runs)

    def where(self, origin: int) -> str | None:
        """``FILE row N`` for an entry of :attr:`firsts`; ``None`` if unknown."""
        if origin < 0:
            return None
        files = list(self._files)
        return f"{files[origin >> _ROW_BITS]} row {origin & ((1 << _ROW_BITS) - 1)}"

    def redirect(self, space: str | None, uuid: bytes, first: str | None) -> None:
        """A key first seen here turned out to be a duplicate of an earlier part's row
        ``first``: later duplicates name that row, not the rejected one."""
        self._moved[(space, uuid)] = first

    def first_of(self, space: str | None, uuid: bytes, origin: int) -> str | None:
        """Where the first occurrence of a key is, given its :attr:`firsts` entry."""
        key = (space, uuid)
        return self._moved[key] if key in self._moved else self.where(origin)

    def first_seen(self, uuids: pa.FixedSizeBinaryArray, spaces: pa.Array | None = None,
                   origins: Origins | None = None) -> np.ndarray:
        """Mark the rows whose (space, UUID) is new (earliest row wins) and remember them, with
        ``origins`` (unknown when not given); :attr:`firsts` says where the others were first."""
        keys = np.frombuffer(uuids.buffers()[1], dtype="S16", count=len(uuids),
                             offset=uuids.offset * 16)
        codes = np.full(len(keys), -1, dtype=np.int64)
        if origins is not None:
            files, local = origins
            index = np.array([self._files.setdefault(f, len(self._files)) for f in files] or [0],
                             dtype=np.int64)
            rows = local & ((1 << _ROW_BITS) - 1)
            codes = (index[local >> _ROW_BITS] << _ROW_BITS) | rows
        self.firsts = np.full(len(keys), -1, dtype=np.int64)
        if spaces is None or spaces.null_count == len(spaces):
            return self._first_seen(None, keys, codes, np.arange(len(keys)))
        names = np.asarray(spaces.to_pylist(), dtype=object)
        keep = np.zeros(len(keys), dtype=bool)
        for name in dict.fromkeys(names.tolist()):
            rows = np.flatnonzero(names == name)
            keep[rows] = self._first_seen(name, keys[rows], codes[rows], rows)
        return keep

    def _first_seen(self, space: str | None, keys: np.ndarray, codes: np.ndarray,
                    at: np.ndarray) -> np.ndarray:
        """Fixed-width ``S16`` compares as raw bytes here: every value is exactly 16 bytes, so
        the trailing-NUL stripping numpy applies cannot make two different values equal."""
        keep = np.zeros(len(keys), dtype=bool)
        unique, first = np.unique(keys, return_index=True)
        keep[first] = True
        firsts = np.full(len(keys), -1, dtype=np.int64)
        if len(unique) < len(keys):  # a key twice in the batch: the later ones name the first
            firsts[~keep] = codes[first[np.searchsorted(unique, keys[~keep])]]
        runs = self._runs.setdefault(space, [])
        for run, origin in runs:
            pos = np.minimum(np.searchsorted(run, keys), len(run) - 1)
            hit = run[pos] == keys
            if hit.any():
                firsts[hit] = origin[pos[hit]]
                keep &= ~hit
        self.firsts[at] = firsts
        new = keep[first]  # np.unique's keys are sorted: the new run needs no sort
        if new.any():  # an empty run would have no last key to clip the search to
            runs.append((unique[new], codes[first[new]]))
        while len(runs) > 1 and 2 * len(runs[-1][0]) >= len(runs[-2][0]):
            (newer, new_origin), (older, old_origin) = runs.pop(), runs.pop()
            at_new = np.searchsorted(older, newer) + np.arange(len(newer))  # a linear merge
            from_old = np.ones(len(older) + len(newer), dtype=bool)
            from_old[at_new] = False
            merged = np.empty(len(from_old), dtype=older.dtype)
            merged_origin = np.empty(len(from_old), dtype=np.int64)
            merged[at_new], merged[from_old] = newer, older
            merged_origin[at_new], merged_origin[from_old] = new_origin, old_origin
            runs.append((merged, merged_origin))
        return keep


@dataclass(frozen=True)
class ValidatedBatch:
    """A batch's valid rows in the exact legacy schema, and its rejected rows with reasons."""

    good: pa.RecordBatch
    rows: np.ndarray
    """Source row index of each good row."""
    rejected: tuple[Rejected, ...]
    uuids: pa.FixedSizeBinaryArray
    """Node UUID of each good row."""


Dropper = Callable[[int], dict[int, str | None]]
"""Given how many rows passed validation (and were first seen), which of them to reject as
duplicates all the same (their positions among those rows, each with where its first
occurrence is, ``FILE row N``): rows whose node UUID an earlier part of the source holds,
found by whoever sees all parts."""


def _duplicate(uuid: bytes, first: str | None) -> str:
    where = f", first at {first}" if first else ""
    return f"duplicate id: an earlier row has the same node UUID ({uuid.hex()}){where}"


def _utf8_bad(arr: pa.Array) -> np.ndarray:
    """Rows of a string/binary column that are not valid UTF-8 (Python only on failure)."""
    bad = np.zeros(len(arr), dtype=bool)
    if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
        try:
            arr.validate(full=True)
            return bad
        except pa.ArrowInvalid:
            arr = arr.view(pa.binary() if pa.types.is_string(arr.type) else pa.large_binary())
    try:
        arr.cast(pa.large_utf8())
        return bad
    except pa.ArrowInvalid:
        for i, value in enumerate(arr.to_pylist()):
            if value is not None:
                try:
                    value.decode("utf-8")
                except UnicodeDecodeError:
                    bad[i] = True
        return bad


def _outside_ns(col: pa.Array) -> np.ndarray:
    """Rows of a coarser timestamp column (s, ms, us) that nanoseconds cannot hold."""
    per = {"s": 10**9, "ms": 10**6, "us": 10**3}.get(getattr(col.type, "unit", "ns"))
    if per is None:
        return np.zeros(len(col), dtype=bool)
    ticks = np.asarray(col.cast(pa.int64()).fill_null(0).to_numpy(zero_copy_only=False))
    return np.abs(ticks) > (2**63 - 1) // per  # type: ignore[no-any-return]


def _mask(arr: pa.Array) -> np.ndarray:
    return np.asarray(arr.fill_null(True).to_numpy(zero_copy_only=False), dtype=bool)


def _reasons(batch: pa.RecordBatch) -> list[list[str]]:
    n = batch.num_rows
    reasons: list[list[str]] = [[] for _ in range(n)]

    def flag(mask: np.ndarray, text: Any) -> None:
        for i in np.flatnonzero(mask):
            reasons[i].append(text(int(i)) if callable(text) else text)

    ident = batch.column("id")
    flag(_mask(ident.is_null()), "id is null")
    flag(_mask(pc.equal(pc.binary_length(ident), 0)) & ~_mask(ident.is_null()), "id is empty")
    flag(_utf8_bad(ident), "id is not valid UTF-8")
    emb = batch.column("embedding")
    null_emb = _mask(emb.is_null())
    flag(null_emb, "embedding is null")
    lengths = pc.list_value_length(emb).fill_null(DIM).to_numpy(zero_copy_only=False)
    flag(lengths != DIM, lambda i: f"embedding has {lengths[i]} values, expected {DIM}")
    flat = pc.list_flatten(emb)
    if flat.null_count:
        holes = np.zeros(n, dtype=bool)
        parents = pc.list_parent_indices(emb).to_numpy(zero_copy_only=False)
        holes[parents[_mask(flat.is_null())]] = True
        flag(holes, "embedding holds null values")
    for name in _REQUIRED:
        col = batch.column(name)
        flag(_mask(col.is_null()), f"{name} is null")
    for name in ("last_access", "created_at"):
        flag(_outside_ns(batch.column(name)),
             f"{name} is outside the timestamp[ns] range (years 1677 to 2262)")
    for name in _UNIT_RANGE:
        col = batch.column(name)
        vals = col.to_numpy(zero_copy_only=False)
        out = ~_mask(col.is_null()) & ~((vals >= 0) & (vals <= 1))
        flag(out, lambda i, name=name, vals=vals:
             f"{name} is {np.float32(vals[i])!s}, outside [0, 1]")
    if "content" in batch.schema.names:
        flag(_utf8_bad(batch.column("content")), "content is not valid UTF-8")
    if "embedding_provenance" in batch.schema.names:
        prov = batch.column("embedding_provenance")
        if not pa.types.is_null(prov.type) and prov.null_count < len(prov):
            _provenance_reasons(prov, flag)
    return reasons


def _provenance_reasons(prov: pa.Array, flag: Any) -> None:
    present = ~_mask(prov.is_null())
    for name in ("model_name", "model_version", "dimension", "created_at"):
        flag(present & _mask(pc.struct_field(prov, name).is_null()),
             f"embedding_provenance.{name} is null")
    md = pc.struct_field(prov, "metadata")
    flag(present & _mask(md.is_null()), "embedding_provenance.metadata is null")
    if md.items.null_count:
        offsets = md.offsets.to_numpy()
        owner = np.repeat(np.arange(len(md)), np.diff(offsets))
        items = md.items.slice(offsets[0], offsets[-1] - offsets[0])
        bad = np.zeros(len(md), dtype=bool)
        bad[owner[_mask(items.is_null())]] = True
        flag(present & bad, "embedding_provenance.metadata holds a null value")


def _value(col: pa.Array, i: int) -> Any:
    """One value as Python; text that is not valid UTF-8 as its bytes (a damaged source must
    reach the quarantine, not crash it)."""
    try:
        return col[i].as_py()
    except UnicodeDecodeError:
        if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
            return col.view(pa.large_binary() if pa.types.is_large_string(col.type)
                            else pa.binary())[i].as_py()
        return "(holds text that is not valid UTF-8)"


def validate_batch(chunk: SourceBatch, seen: SeenIds, drop: Dropper | None = None
                   ) -> ValidatedBatch:
    """Split a source batch into conformed valid rows and rejected rows, updating ``seen``;
    ``drop`` rejects some of the valid rows as duplicates of rows ``seen`` never saw."""
    batch = chunk.batch
    check_schema(batch.schema, chunk.source)
    source_rows = batch.column(ROW_COLUMN).to_numpy(zero_copy_only=False)
    reasons = _reasons(batch)
    valid = np.array([not r for r in reasons], dtype=bool)
    good = conform(batch if valid.all() else batch.filter(pa.array(valid)))
    uuids = node_uuids(good.column("id"))
    valid_idx = np.flatnonzero(valid)
    keep = seen.first_seen(uuids, good.column("space"), ((chunk.source,), source_rows[valid_idx]))
    origins = seen.firsts.copy()
    spaces = good.column("space").to_pylist() if drop or not keep.all() else []
    if drop is not None:
        kept = np.flatnonzero(keep)
        for position, first in drop(len(kept)).items():
            keep[kept[position]] = False
            seen.redirect(spaces[kept[position]], uuids[int(kept[position])].as_py(), first)
    for j in np.flatnonzero(~keep).tolist():
        uuid = uuids[j].as_py()
        first = seen.first_of(spaces[j], uuid, int(origins[j]))
        reasons[valid_idx[j]].append(_duplicate(uuid, first))
    rejected = list(chunk.rejected)
    ids = batch.column("id")
    for i, why in enumerate(reasons):
        if why:
            ident = _value(ids, i)
            rejected.append(Rejected(
                chunk.source,
                int(source_rows[i]),
                ident if isinstance(ident, str) or ident is None else repr(ident),
                "; ".join(why),
                render_record(batch.slice(i, 1), chunk.source, _value),
            ))
    rejected.sort(key=lambda r: r.row)
    if keep.all():
        return ValidatedBatch(good, source_rows[valid_idx], tuple(rejected), uuids)
    kept = pa.array(keep)
    return ValidatedBatch(good.filter(kept), source_rows[valid_idx[keep]], tuple(rejected),
                          uuids.filter(kept))
