"""RFC 3339 <-> int64 ns: exact at the edges, checked against a datetime-based oracle."""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dualmem_bulk.timefmt import format_rfc3339, parse_rfc3339, parse_rfc3339_lenient

I64_MIN, I64_MAX = -(2**63), 2**63 - 1
EPOCH = datetime(1970, 1, 1)


def oracle_format(ns: int) -> str:
    """chrono's serde form, computed independently with Python integers and datetime."""
    secs, frac = divmod(ns, 10**9)
    base = (EPOCH + timedelta(seconds=secs)).strftime("%Y-%m-%dT%H:%M:%S")
    if frac == 0:
        return base + "Z"
    if frac % 10**6 == 0:
        return f"{base}.{frac // 10**6:03d}Z"
    if frac % 1000 == 0:
        return f"{base}.{frac // 1000:06d}Z"
    return f"{base}.{frac:09d}Z"


def ints(ts: pa.Array) -> list[int | None]:
    return ts.cast(pa.int64()).to_pylist()  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("text", "ns"),
    [
        ("1970-01-01T00:00:00Z", 0),
        ("1969-12-31T23:59:59.999999999Z", -1),
        ("1969-12-31T23:59:59Z", -(10**9)),
        ("1677-09-21T00:12:43.145224192Z", I64_MIN),
        ("2262-04-11T23:47:16.854775807Z", I64_MAX),
        ("2000-02-29T12:00:00.5Z", 951825600500000000),
        ("2024-02-29T00:00:00.123Z", 1709164800123000000),
        ("1900-03-01T00:00:00Z", -2203891200 * 10**9),
        ("2021-03-04T05:06:07.000001Z", 1614834367000001000),
        ("2021-03-04T05:06:07.1+01:00", 1614830767100000000),
        ("2021-03-04T05:06:07-05:30", 1614854167000000000),
        ("1970-01-01T00:00:00-00:00", 0),
        ("2021-03-04t05:06:07z", 1614834367000000000),
        ("2021-03-04 05:06:07Z", 1614834367000000000),
    ],
)
def test_parse_known_instants(text: str, ns: int) -> None:
    assert ints(parse_rfc3339([text])) == [ns]


@pytest.mark.parametrize(
    "text",
    [
        "2021-13-01T00:00:00Z",
        "2023-02-29T00:00:00Z",
        "1900-02-29T00:00:00Z",
        "2021-04-31T00:00:00Z",
        "2021-01-01T24:00:00Z",
        "2021-01-01T00:60:00Z",
        "2016-12-31T23:59:60Z",
        "2021-01-01T00:00:00.1234567890Z",
        "2021-01-01T00:00:00.Z",
        "2021-01-01T00:00:00",
        "2021-01-01T00:00:00+0100",
        "2021-01-01T00:00:00+24:00",
        "2021-01-01",
        "1677-09-21T00:12:43.145224191Z",
        "2262-04-11T23:47:16.854775808Z",
        "2262-04-11T23:47:16.854775807-00:01",
        "",
        " 2021-01-01T00:00:00Z",
        "\uff12\uff10\uff12\uff11-01-01T00:00:00Z",  # full-width digits are not \d
    ],
    ids=lambda t: repr(t),
)
def test_parse_rejects(text: str) -> None:
    ts, bad = parse_rfc3339_lenient(["2021-01-01T00:00:00Z", text, None])
    assert bad.tolist() == [False, True, False]
    assert ints(ts) == [1609459200000000000, None, None]
    with pytest.raises(ValueError, match=r"at index 1: .*expected RFC 3339"):
        parse_rfc3339(["2021-01-01T00:00:00Z", text])


def test_parse_accepts_arrow_inputs_and_keeps_nulls() -> None:
    chunked = pa.chunked_array([["1970-01-01T00:00:01Z", None], ["1970-01-01T00:00:02Z"]])
    out = parse_rfc3339(chunked)
    assert out.type == pa.timestamp("ns", "UTC")
    assert ints(out) == [10**9, None, 2 * 10**9]
    large = pa.array(["1970-01-01T00:00:00.000000001Z"], pa.large_utf8())
    assert ints(parse_rfc3339(large)) == [1]


@pytest.mark.parametrize(
    ("ns", "text"),
    [
        (0, "1970-01-01T00:00:00Z"),
        (-1, "1969-12-31T23:59:59.999999999Z"),
        (1_500_000_000, "1970-01-01T00:00:01.500Z"),
        (1_000_001_000, "1970-01-01T00:00:01.000001Z"),
        (1_010_000_000, "1970-01-01T00:00:01.010Z"),
        (1_000_000_010, "1970-01-01T00:00:01.000000010Z"),
        (I64_MIN, "1677-09-21T00:12:43.145224192Z"),
        (I64_MAX, "2262-04-11T23:47:16.854775807Z"),
        (951782400 * 10**9, "2000-02-29T00:00:00Z"),
    ],
)
def test_format_known_instants(ns: int, text: str) -> None:
    assert format_rfc3339(pa.array([ns], pa.int64())).to_pylist() == [text]


def test_format_nulls_units_and_chunks() -> None:
    values = pa.array([1, None, -1], pa.timestamp("ns", "UTC"))
    assert format_rfc3339(values).to_pylist() == [
        "1970-01-01T00:00:00.000000001Z", None, "1969-12-31T23:59:59.999999999Z"]
    micros = pa.array([1], pa.timestamp("us", "UTC"))
    assert format_rfc3339(micros).to_pylist() == ["1970-01-01T00:00:00.000001Z"]
    chunked = pa.chunked_array([pa.array([0], pa.int64()), pa.array([10**6], pa.int64())])
    assert format_rfc3339(chunked).to_pylist() == [
        "1970-01-01T00:00:00Z", "1970-01-01T00:00:00.001Z"]
    assert format_rfc3339(pa.array([], pa.int64())).to_pylist() == []


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(I64_MIN, I64_MAX), min_size=1, max_size=20))
def test_format_matches_oracle_and_parses_back(values: list[int]) -> None:
    text = format_rfc3339(pa.array(values, pa.int64())).to_pylist()
    assert text == [oracle_format(v) for v in values]
    assert ints(parse_rfc3339(text)) == values


@settings(max_examples=200, deadline=None)
@given(
    st.integers(I64_MIN, I64_MAX),
    st.integers(-(23 * 60 + 59), 23 * 60 + 59),
    st.integers(0, 9),
)
def test_parse_offsets_and_precisions(ns: int, offset_min: int, digits: int) -> None:
    """A UTC instant written in local time at any offset, with 0-9 fraction digits."""
    step = 10 ** (9 - digits)
    ns -= ns % step
    if ns < I64_MIN:
        ns += step
    secs, frac = divmod(ns, 10**9)
    local = EPOCH + timedelta(seconds=secs, minutes=offset_min)
    sign = "-" if offset_min < 0 else "+"
    zone = f"{sign}{abs(offset_min) // 60:02d}:{abs(offset_min) % 60:02d}"
    fraction = f".{frac:09d}"[: 1 + digits] if digits else ""
    text = local.strftime("%Y-%m-%dT%H:%M:%S") + fraction + zone
    ts, bad = parse_rfc3339_lenient([text])
    assert ints(ts) == [ns]
    assert not bad[0]


def test_vectorized_round_trip_over_the_whole_range() -> None:
    """Many values at once (the hot path), including both int64 extremes."""
    rng = np.random.default_rng(5)
    values = np.concatenate([
        rng.integers(I64_MIN, I64_MAX, 50_000, dtype=np.int64, endpoint=True),
        np.array([I64_MIN, I64_MIN + 1, -1, 0, 1, I64_MAX - 1, I64_MAX], dtype=np.int64),
    ])
    text = format_rfc3339(pa.array(values))
    back = parse_rfc3339(text).cast(pa.int64()).to_numpy()
    assert np.array_equal(back, values)
    sample = text.to_pylist()[:: 997]
    assert sample == [oracle_format(int(v)) for v in values[:: 997]]
