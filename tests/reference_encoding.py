"""An independent, plain-Python implementation of the documented checksum encoding.

It is built from the encoding's prose (the module docstring of ``dualmem_bulk.checksum`` and
the README) with ``struct`` and ``blake3`` only: no pyarrow, no import from ``dualmem_bulk``.
The tests compare the package's vectorized kernels with it, and ``data/fixtures/make_fixtures.py``
uses it to compute the expected digests of the golden fixtures.

A row is a dict of plain Python values:

- ``id``: ``str``;
- ``embedding``: 768 float32 values as a numpy array (any float32/uint32 array: only its raw
  bits are used), or the 3,072 raw little-endian bytes, so NaN payloads and -0.0 survive;
- ``activation``, ``confidence``, ``decay_rate``: a float32 as a numpy ``float32`` scalar, the 4
  raw little-endian bytes, or a Python ``float`` (packed with ``struct``: fine for every value
  except a signalling NaN, which C's double-to-float conversion may quieten);
- ``last_access``, ``created_at``: ``int`` nanoseconds since the epoch (negative before 1970);
- ``access_count``: ``int`` (u64);
- ``content``: ``str`` or ``None``;
- ``embedding_provenance``: ``None`` or a dict with ``model_name``, ``model_version``,
  ``dimension`` (int), ``language`` (``str | None``), ``created_at`` (int unix seconds),
  ``quality_score`` (float32 as above, or ``None``) and ``metadata`` (a dict, or a list of
  ``(key, value)`` pairs in any order).

Encoding, all integers little-endian: ``u32 len + utf8(id)``; the embedding's raw float32 bits;
``activation`` f32; ``confidence`` f32; ``last_access`` i64; ``access_count`` u64;
``created_at`` i64; ``decay_rate`` f32; content ``u8 0`` or ``u8 1, u32 len, utf8``; provenance
``u8 0`` or ``u8 1`` + model_name, model_version (``u32 len, utf8`` each), dimension u64,
language (``u8 0`` or ``u8 1, u32 len, utf8``), created_at u64, quality_score (``u8 0`` or
``u8 1, f32``), metadata ``u32 count`` then entries sorted by key bytes, each ``u32 len, key,
u32 len, value``. Row checksum: BLAKE3-256 of that. Table digest: the row count and the sum of
the checksums read as unsigned 256-bit little-endian integers, modulo 2^256, shown as the 64 hex
digits of the sum's 32-byte little-endian form.

The episode checksum (README, "Checksums") covers the columns the row checksum leaves out:
BLAKE3-256 of ``space`` as an optional string, then ``u8 0`` for a null ``episode`` or ``u8 1``
followed by ``where_location`` (optional string); ``who`` (``u8 0``, or ``u8 1, u32 count`` and
each string as ``u32 len, utf8``; a null string adds no bytes); ``vividness_confidence``,
``reliability_confidence``, ``decay_rate`` (each ``u8 0`` or ``u8 1, f32``); ``decay_function``
(``u8 0``, or ``u8 1``, ``variant`` as ``u32 len, utf8`` (null as ""), ``tau_hours`` f32,
``beta`` f32, ``consolidation_threshold`` u64, ``short_term_tau`` f32, ``long_term_beta`` f32,
``transition_point`` u64, each optional as ``u8 0`` or ``u8 1`` + value); ``metadata`` as in
the row checksum (a null map as count 0). An episode is a dict of those keys, floats given as
for the row, ``metadata`` a dict or ``(key, value)`` pairs or ``None``.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from blake3 import blake3

__all__ = ["DIM", "encode_episode", "encode_row", "episode_checksum", "f32_bytes",
           "row_checksum", "table_digest"]

DIM = 768
_MOD = 1 << 256


def _str(text: str) -> bytes:
    raw = text.encode("utf-8")
    return struct.pack("<I", len(raw)) + raw


def f32_bytes(value: Any) -> bytes:
    """The 4 little-endian bytes of a float32 given as raw bytes, numpy scalar or Python float."""
    if isinstance(value, bytes | bytearray):
        if len(value) != 4:
            raise ValueError(f"a float32 as bytes must be 4 bytes, got {len(value)}")
        return bytes(value)
    if isinstance(value, np.generic | np.ndarray):
        return _le4(np.asarray(value), "a float32")
    return struct.pack("<f", value)


def _le4(arr: np.ndarray, what: str) -> bytes:
    """Raw little-endian bytes of a float32/uint32 array (a byte-order change keeps the bits)."""
    if arr.dtype.itemsize != 4 or arr.dtype.kind not in "fu":
        raise TypeError(f"{what} must be float32 (or its uint32 bits), got {arr.dtype}")
    return arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()


def _embedding_bytes(value: Any) -> bytes:
    if isinstance(value, bytes | bytearray):
        raw = bytes(value)
    else:
        raw = _le4(np.asarray(value), "embedding")
    if len(raw) != 4 * DIM:
        raise ValueError(f"embedding must be {DIM} float32 values, got {len(raw)} bytes")
    return raw


def _optional_str(value: str | None) -> bytes:
    return b"\x00" if value is None else b"\x01" + _str(value)


def _metadata(metadata: Mapping[str, str] | Iterable[tuple[str, str]] | None) -> bytes:
    if metadata is None:
        return struct.pack("<I", 0)
    pairs = list(metadata.items()) if isinstance(metadata, Mapping) else list(metadata)
    pairs.sort(key=lambda kv: kv[0].encode("utf-8"))
    return struct.pack("<I", len(pairs)) + b"".join(_str(k) + _str(v) for k, v in pairs)


def _provenance(prov: Mapping[str, Any] | None) -> bytes:
    if prov is None:
        return b"\x00"
    quality = prov["quality_score"]
    return b"".join([
        b"\x01",
        _str(prov["model_name"]),
        _str(prov["model_version"]),
        struct.pack("<Q", prov["dimension"]),
        _optional_str(prov["language"]),
        struct.pack("<Q", prov["created_at"]),
        b"\x00" if quality is None else b"\x01" + f32_bytes(quality),
        _metadata(prov["metadata"]),
    ])


def encode_row(row: Mapping[str, Any]) -> bytes:
    """The canonical encoding of one legacy Memory row (see the module docstring)."""
    return b"".join([
        _str(row["id"]),
        _embedding_bytes(row["embedding"]),
        f32_bytes(row["activation"]),
        f32_bytes(row["confidence"]),
        struct.pack("<qQq", row["last_access"], row["access_count"], row["created_at"]),
        f32_bytes(row["decay_rate"]),
        _optional_str(row["content"]),
        _provenance(row["embedding_provenance"]),
    ])


def row_checksum(row: Mapping[str, Any]) -> bytes:
    """BLAKE3-256 of :func:`encode_row`."""
    return blake3(encode_row(row)).digest()


def table_digest(rows: Iterable[Mapping[str, Any]]) -> tuple[int, str]:
    """``(row count, 64 hex digits)``: the sum of the row checksums modulo 2^256, little-endian."""
    count, total = 0, 0
    for row in rows:
        total = (total + int.from_bytes(row_checksum(row), "little")) % _MOD
        count += 1
    return count, total.to_bytes(32, "little").hex()


def _optional_f32(value: Any) -> bytes:
    return b"\x00" if value is None else b"\x01" + f32_bytes(value)


def _optional_u64(value: int | None) -> bytes:
    return b"\x00" if value is None else b"\x01" + struct.pack("<Q", value)


def _who(names: list[str | None] | None) -> bytes:
    if names is None:
        return b"\x00"
    return b"\x01" + struct.pack("<I", len(names)) + b"".join(
        b"" if name is None else _str(name) for name in names)


def _decay(decay: Mapping[str, Any] | None) -> bytes:
    if decay is None:
        return b"\x00"
    return b"".join([
        b"\x01",
        _str(decay["variant"] or ""),
        _optional_f32(decay["tau_hours"]),
        _optional_f32(decay["beta"]),
        _optional_u64(decay["consolidation_threshold"]),
        _optional_f32(decay["short_term_tau"]),
        _optional_f32(decay["long_term_beta"]),
        _optional_u64(decay["transition_point"]),
    ])


def encode_episode(space: str | None, episode: Mapping[str, Any] | None) -> bytes:
    """The encoding the episode checksum hashes (see the module docstring)."""
    if episode is None:
        return _optional_str(space) + b"\x00"
    return b"".join([
        _optional_str(space),
        b"\x01",
        _optional_str(episode["where_location"]),
        _who(episode["who"]),
        _optional_f32(episode["vividness_confidence"]),
        _optional_f32(episode["reliability_confidence"]),
        _optional_f32(episode["decay_rate"]),
        _decay(episode["decay_function"]),
        _metadata(episode["metadata"]),
    ])


def episode_checksum(space: str | None, episode: Mapping[str, Any] | None) -> bytes:
    """BLAKE3-256 of :func:`encode_episode`."""
    return blake3(encode_episode(space, episode)).digest()
