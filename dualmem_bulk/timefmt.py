"""RFC 3339 timestamps to and from int64 nanoseconds since the epoch, vectorized.

Engram's ``DateTime<Utc>`` values travel as RFC 3339 text (serde/chrono) and are stored here as
``timestamp[ns, UTC]``. Neither library parser fits: ``pyarrow``'s cast rejects the lowest
instant int64 can hold (1677-09-21T00:12:43.145224192Z) and polars' ``%:z`` does not accept
``Z``. So the fields are split by one RE2 regex and the calendar arithmetic is done in int64
numpy, exactly (days from the civil date, Howard Hinnant's algorithm), including before 1970.

Accepted: ``YYYY-MM-DDTHH:MM:SS``, an optional fraction of 1 to 9 digits, then ``Z`` or
``+HH:MM``/``-HH:MM`` (converted to UTC). As chrono does, ``t``/space for the ``T`` and ``z`` for
``Z`` are accepted too. Leap seconds (``:60``) and instants outside the int64 ns range are not.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dualmem_bulk.schema import TIMESTAMP_TYPE

__all__ = ["format_rfc3339", "parse_rfc3339", "parse_rfc3339_lenient"]

_PATTERN = (
    r"^(?P<y>\d{4})-(?P<mo>\d{2})-(?P<d>\d{2})[Tt ](?P<h>\d{2}):(?P<mi>\d{2}):(?P<s>\d{2})"
    r"(?:\.(?P<f>\d{1,9}))?(?P<z>[Zz]|(?P<sign>[+-])(?P<oh>\d{2}):(?P<om>\d{2}))$"
)
_EXPECTED = (
    "expected RFC 3339 YYYY-MM-DDTHH:MM:SS[.1-9 digits](Z|+HH:MM|-HH:MM) between "
    "1677-09-21T00:12:43.145224192Z and 2262-04-11T23:47:16.854775807Z"
)
_NS = 1_000_000_000
_DAY_S = 86_400
# int64 ns spans [-9223372036.854775808 s, 9223372036.854775807 s].
_MIN_S, _MIN_FRAC = -9_223_372_037, 145_224_192
_MAX_S, _MAX_FRAC = 9_223_372_036, 854_775_807


def _as_string_array(values: pa.Array | pa.ChunkedArray | Sequence[str | None]) -> pa.Array:
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if not isinstance(values, pa.Array):
        values = pa.array(values, pa.utf8())
    if not (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)):
        values = values.cast(pa.large_utf8())
    return values


def _ints(parts: pa.StructArray, name: str) -> np.ndarray:
    """One extracted digit group as int64 (0 where the group is empty or the row failed)."""
    col = pc.if_else(pc.equal(pc.utf8_length(parts.field(name)), 0), "0", parts.field(name))
    return np.asarray(pc.cast(col.fill_null("0"), pa.int64()).to_numpy(zero_copy_only=False))


def _days_from_civil(y: np.ndarray, m: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Days since 1970-01-01 of proleptic Gregorian dates (exact, any sign)."""
    y = y - (m <= 2)
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (m + np.where(m > 2, -3, 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return np.asarray(era * 146_097 + doe - 719_468)


def _civil_from_days(z: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(year, month, day) of days since 1970-01-01; the inverse of :func:`_days_from_civil`."""
    z = z + 719_468
    era = z // 146_097
    doe = z - era * 146_097
    yoe = (doe - doe // 1460 + doe // 36_524 - doe // 146_096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = np.where(mp < 10, mp + 3, mp - 9)
    return yoe + era * 400 + (m <= 2), m, d


def _days_in_month(y: np.ndarray, m: np.ndarray) -> np.ndarray:
    leap = ((y % 4 == 0) & (y % 100 != 0)) | (y % 400 == 0)
    table = np.array([0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], dtype=np.int64)
    return np.asarray(table[np.clip(m, 0, 12)] + ((m == 2) & leap))


def parse_rfc3339_lenient(
    values: pa.Array | pa.ChunkedArray | Sequence[str | None],
) -> tuple[pa.TimestampArray, np.ndarray]:
    """Parse RFC 3339 strings; return ``timestamp[ns, UTC]`` and a bool mask of rows that failed.

    Failed rows are null in the result; null inputs stay null and are not marked bad. Readers
    that quarantine rows one by one use this; :func:`parse_rfc3339` raises instead.

    Example:
        >>> ts, bad = parse_rfc3339_lenient(["1969-12-31T23:59:59.999999999Z", "soon", None])
        >>> ts.cast(pa.int64()).to_pylist(), bad.tolist()
        ([-1, None, None], [False, True, False])
    """
    arr = _as_string_array(values)
    parts = pc.extract_regex(arr, _PATTERN)
    present = np.asarray(arr.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
    matched = present & np.asarray(parts.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
    y, mo, d = _ints(parts, "y"), _ints(parts, "mo"), _ints(parts, "d")
    h, mi, s = _ints(parts, "h"), _ints(parts, "mi"), _ints(parts, "s")
    oh, om = _ints(parts, "oh"), _ints(parts, "om")
    frac_digits = pc.utf8_rpad(parts.field("f").fill_null(""), 9, "0")
    frac = np.asarray(pc.cast(frac_digits, pa.int64()).to_numpy(zero_copy_only=False))
    sign = np.where(
        np.asarray(pc.equal(parts.field("sign"), "-").fill_null(False).to_numpy(
            zero_copy_only=False), dtype=bool), -1, 1)
    ok = matched & (mo >= 1) & (mo <= 12) & (d >= 1) & (d <= _days_in_month(y, mo))
    ok &= (h < 24) & (mi < 60) & (s < 60) & (oh < 24) & (om < 60)
    secs = _days_from_civil(y, mo, d) * _DAY_S + h * 3600 + mi * 60 + s
    secs -= sign * (oh * 3600 + om * 60)
    ok &= ((secs > _MIN_S) & (secs < _MAX_S)) | ((secs == _MIN_S) & (frac >= _MIN_FRAC)) | (
        (secs == _MAX_S) & (frac <= _MAX_FRAC)
    )
    secs = np.where(ok, secs, 0)
    # Shift the lowest second up by one before scaling so the product stays inside int64.
    low = secs == _MIN_S
    ns = np.where(low, (secs + 1) * _NS + (frac - _NS), secs * _NS + frac)
    result = pa.array(ns, pa.int64(), mask=~ok).cast(TIMESTAMP_TYPE)
    return result, present & ~ok


def parse_rfc3339(values: pa.Array | pa.ChunkedArray | Sequence[str | None]) -> pa.TimestampArray:
    """Parse RFC 3339 strings to ``timestamp[ns, UTC]``; nulls stay null.

    Raises ``ValueError`` naming the first value that does not parse and its index.

    Example:
        >>> parse_rfc3339(["2024-02-29T12:00:00.5+01:00"]).cast(pa.int64()).to_pylist()
        [1709204400500000000]
    """
    result, bad = parse_rfc3339_lenient(values)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        value = _as_string_array(values)[i].as_py()
        raise ValueError(
            f"invalid timestamp at index {i}: {value!r} ({int(bad.sum())} bad in all); {_EXPECTED}"
        )
    return result


def _digits(values: np.ndarray, width: int) -> np.ndarray:
    """ASCII digits of non-negative ints, zero-padded: shape ``(len(values), width)``."""
    powers = 10 ** np.arange(width - 1, -1, -1, dtype=np.int64)
    return ((values[:, None] // powers) % 10 + ord("0")).astype(np.uint8)


def format_rfc3339(values: pa.Array | pa.ChunkedArray) -> pa.StringArray:
    """Format timestamps (or int64 ns) as chrono's serde writes ``DateTime<Utc>``.

    ``YYYY-MM-DDTHH:MM:SS``, then the fraction only when it is non-zero, with the fewest of 3, 6
    or 9 digits that is exact, then ``Z``. Nulls stay null.

    Example:
        >>> format_rfc3339(pa.array([-1, 0, 1_500_000_000], pa.int64())).to_pylist()
        ['1969-12-31T23:59:59.999999999Z', '1970-01-01T00:00:00Z', '1970-01-01T00:00:01.500Z']
    """
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if pa.types.is_timestamp(values.type) and values.type.unit != "ns":
        values = values.cast(pa.timestamp("ns", values.type.tz))
    n = len(values)
    valid = np.asarray(values.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
    ns = np.asarray(values.cast(pa.int64()).fill_null(0).to_numpy(zero_copy_only=False))
    days, day_ns = np.divmod(ns, _DAY_S * _NS)
    secs, frac = np.divmod(day_ns, _NS)
    y, mo, d = _civil_from_days(days)
    out = np.empty((n, 30), dtype=np.uint8)
    out[:, :] = np.frombuffer(b"0000-00-00T00:00:00.000000000Z", dtype=np.uint8)
    out[:, 0:4] = _digits(y, 4)
    out[:, 5:7] = _digits(mo, 2)
    out[:, 8:10] = _digits(d, 2)
    out[:, 11:13] = _digits(secs // 3600, 2)
    out[:, 14:16] = _digits(secs // 60 % 60, 2)
    out[:, 17:19] = _digits(secs % 60, 2)
    out[:, 20:29] = _digits(frac, 9)
    width = np.select(
        [frac == 0, frac % 1_000_000 == 0, frac % 1000 == 0], [20, 24, 27], default=30
    )
    width = np.where(valid, width, 0)
    rows = np.flatnonzero(valid)
    out[rows, width[rows] - 1] = ord("Z")
    data = out[np.arange(30) < width[:, None]]
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(width, out=offsets[1:])
    validity = None if valid.all() else pa.py_buffer(np.packbits(valid, bitorder="little"))
    return pa.Array.from_buffers(
        pa.large_utf8(), n, [validity, pa.py_buffer(offsets), pa.py_buffer(data)]
    ).cast(pa.utf8())
