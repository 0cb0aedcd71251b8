"""Pure tests of the DuckDB view's value handling: array text, intervals, floats, mapping."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from syncline.core.events import Column
from syncline.views.duckdb.values import (
    ArrayParseError,
    astronomical_to_bc,
    bc_to_astronomical,
    list_depth,
    map_column,
    parse_array,
    parse_interval,
    pg_float4,
    pg_float8,
    quote_ident,
    render_array,
    render_interval,
    value_depth,
)

# ------------------------------------------------------------------ array text

elements = st.one_of(st.none(), st.text(max_size=8))


def rectangular(depth: int) -> st.SearchStrategy[list[object]]:
    """PostgreSQL-shaped arrays: every sub-array of one level has the same length."""
    if depth == 1:
        return st.lists(elements, min_size=1, max_size=5)
    return st.integers(1, 3).flatmap(lambda n: st.lists(rectangular(depth - 1), min_size=n, max_size=n))


@given(st.integers(1, 3).flatmap(rectangular))
@settings(max_examples=300)
def test_array_round_trip(value: list[object]) -> None:
    text = render_array(value)
    assert parse_array(text) == value


@given(st.lists(elements, max_size=6))
def test_array_round_trip_flat_any_length(value: list[object]) -> None:
    assert parse_array(render_array(value)) == value


@given(st.lists(st.one_of(st.none(), st.text(max_size=6)), max_size=4))
def test_array_render_parse_render_is_stable(value: list[object]) -> None:
    text = render_array(value)
    assert render_array(parse_array(text)) == text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{}", []),
        ("{1,2,3}", ["1", "2", "3"]),
        ('{NULL,null,"NULL"}', [None, None, "NULL"]),
        ('{"a,b","",  x  , "q\\"uote","back\\\\slash"}', ["a,b", "", "x", 'q"uote', "back\\slash"]),
        ("{{1,2},{NULL,4}}", [["1", "2"], [None, "4"]]),
        ("[0:1]={7,8}", ["7", "8"]),
        ("[1:1][1:2]={{a,b}}", [["a", "b"]]),
        ("{a\\,b}", ["a,b"]),
        ('{"2024-01-01 00:00:00+00",infinity}', ["2024-01-01 00:00:00+00", "infinity"]),
        ("{ {1} , {2} }", [["1"], ["2"]]),
    ],
)
def test_parse_array_cases(text: str, expected: list[object]) -> None:
    assert parse_array(text) == expected


@pytest.mark.parametrize("bad", ["", "{", "{1,}", "{1", "1,2", "{1}x", '{"a}', "{,}"])
def test_parse_array_rejects(bad: str) -> None:
    with pytest.raises(ArrayParseError):
        parse_array(bad)


def test_render_array_quoting() -> None:
    assert render_array(["a b", "", "null", None, "x", "{", "\\"]) == ('{"a b","","null",NULL,x,"{","\\\\"}')
    assert render_array([["1"], ["2"]]) == "{{1},{2}}"
    assert render_array(["a;b", "c"], ";") == '{"a;b";c}'


def test_value_depth() -> None:
    assert value_depth([]) == 0
    assert value_depth(["1", None]) == 1
    assert value_depth([["1"], ["2"]]) == 2
    assert value_depth([[["1"]]]) == 3


# ------------------------------------------------------------------ intervals


@pytest.mark.parametrize(
    ("text", "parts"),
    [
        ("00:00:00", (0, 0, 0)),
        ("1 year 2 mons 3 days 04:05:06.789", (14, 3, 14_706_789_000)),
        ("-1 days +02:03:00", (0, -1, 7_380_000_000)),
        ("-1 years -2 mons +3 days -04:05:06", (-14, 3, -14_706_000_000)),
        ("1 day -00:00:01", (0, 1, -1_000_000)),
        ("-00:00:00.000001", (0, 0, -1)),
        ("25:00:00", (0, 0, 90_000_000_000)),
        ("1 mon", (1, 0, 0)),
        (
            "178956970 years 7 mons 2147483647 days 2562047788:00:54.775806",
            (2147483647, 2147483647, 9223372036854775806),
        ),
        (
            "-178956970 years -8 mons -2147483648 days -2562047788:00:54.775807",
            (-2147483648, -2147483648, -9223372036854775807),
        ),
        ("infinity", (2147483647, 2147483647, 9223372036854775807)),
        ("-infinity", (-2147483648, -2147483648, -9223372036854775808)),
    ],
)
def test_interval_text(text: str, parts: tuple[int, int, int]) -> None:
    assert parse_interval(text) == parts
    assert render_interval(*parts) == text


@given(
    st.integers(-(2**31), 2**31 - 1),
    st.integers(-(2**31), 2**31 - 1),
    st.integers(-(2**63), 2**63 - 1),
)
def test_interval_round_trip(months: int, days: int, micros: int) -> None:
    assert parse_interval(render_interval(months, days, micros)) == (months, days, micros)


# ------------------------------------------------------------------ floats


@pytest.mark.parametrize(
    ("x", "text"),
    [
        (0.0, "0"),
        (-0.0, "-0"),
        (float("nan"), "NaN"),
        (float("inf"), "Infinity"),
        (float("-inf"), "-Infinity"),
        (1.0, "1"),
        (0.1, "0.1"),
        (1e15, "1e+15"),
        (1e14, "100000000000000"),
        (123456789012345.6, "123456789012345.6"),
        (1.5e-7, "1.5e-07"),
        (0.0001, "0.0001"),
        (1e300, "1e+300"),
        (-2.5, "-2.5"),
        (5e-324, "5e-324"),
    ],
)
def test_pg_float8(x: float, text: str) -> None:
    assert pg_float8(x) == text


def f32(x: float) -> float:
    return float(struct.unpack("f", struct.pack("f", x))[0])


@pytest.mark.parametrize(
    ("x", "text"),
    [
        (f32(0.1), "0.1"),
        (f32(123456.0), "123456"),
        (f32(1234567.0), "1.234567e+06"),
        (f32(3.4028235e38), "3.4028235e+38"),
        (f32(1e-45), "1e-45"),
        (-0.0, "-0"),
        (f32(1.5), "1.5"),
    ],
)
def test_pg_float4(x: float, text: str) -> None:
    assert pg_float4(x) == text


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_pg_float8_round_trips(x: float) -> None:
    assert float(pg_float8(x)) == x


@given(st.floats(width=32, allow_nan=False, allow_infinity=False))
def test_pg_float4_round_trips(x: float) -> None:
    assert f32(float(pg_float4(x))) == x


# ------------------------------------------------------------------ dates


@pytest.mark.parametrize(
    ("pg", "duck"),
    [
        ("2024-01-01", "2024-01-01"),
        ("0001-03-15 BC", "0000-03-15"),
        ("0044-03-15 BC", "-0043-03-15"),
        ("0044-03-15 12:00:00.5 BC", "-0043-03-15 12:00:00.5"),
        ("0044-03-15 12:00:00+00 BC", "-0043-03-15 12:00:00+00"),
        ("infinity", "infinity"),
    ],
)
def test_bc_conversion(pg: str, duck: str) -> None:
    assert bc_to_astronomical(pg) == duck


def test_duckdb_bc_text_back() -> None:
    assert astronomical_to_bc("0044-03-15 (BC)") == "0044-03-15 BC"
    assert astronomical_to_bc("0044-03-15 (BC) 12:00:00") == "0044-03-15 12:00:00 BC"
    assert astronomical_to_bc("2024-01-01") == "2024-01-01"


# ------------------------------------------------------------------ mapping


def col(type_name: str, category: str = "U", element: str = "") -> Column:
    return Column("c", 0, -1, type_name, category=category, element=element, base=type_name)


@pytest.mark.parametrize(
    ("type_name", "category", "element", "sql"),
    [
        ("smallint", "N", "", "SMALLINT"),
        ("integer", "N", "", "INTEGER"),
        ("bigint", "N", "", "BIGINT"),
        ("numeric(10,2)", "N", "", "DECIMAL(10,2)"),
        ("numeric(38,0)", "N", "", "DECIMAL(38,0)"),
        ("numeric(39,2)", "N", "", "VARCHAR"),
        ("numeric(5,-2)", "N", "", "VARCHAR"),
        ("numeric", "N", "", "VARCHAR"),
        ("real", "N", "", "REAL"),
        ("double precision", "N", "", "DOUBLE"),
        ("boolean", "B", "", "BOOLEAN"),
        ("text", "S", "", "VARCHAR"),
        ("character varying(20)", "S", "", "VARCHAR"),
        ("character(5)", "S", "", "VARCHAR"),
        ("date", "D", "", "DATE"),
        ("timestamp without time zone", "D", "", "TIMESTAMP"),
        ("timestamp(3) with time zone", "D", "", "TIMESTAMPTZ"),
        ("time without time zone", "D", "", "TIME"),
        ("time with time zone", "D", "", "VARCHAR"),
        ("interval", "T", "", "INTERVAL"),
        ("interval year to month", "T", "", "INTERVAL"),
        ("json", "U", "", "JSON"),
        ("jsonb", "U", "", "JSON"),
        ("bytea", "U", "", "BLOB"),
        ("uuid", "U", "", "UUID"),
        ("inet", "I", "", "VARCHAR"),
        ("mood", "E", "", "VARCHAR"),
        ("int4range", "R", "", "VARCHAR"),
        ("integer[]", "A", "integer", "INTEGER[]"),
        ("text[]", "A", "text", "VARCHAR[]"),
        ("timestamp with time zone[]", "A", "timestamp with time zone", "TIMESTAMPTZ[]"),
        ("box[]", "A", "box", "VARCHAR"),
        ("mood[]", "A", "mood", "VARCHAR[]"),
    ],
)
def test_mapping(type_name: str, category: str, element: str, sql: str) -> None:
    assert map_column(col(type_name, category, element)).sql == sql


def test_list_depth_and_quote_ident() -> None:
    assert list_depth("INTEGER[][]") == 2
    assert list_depth("VARCHAR") == 0
    assert quote_ident('we"ird.name') == '"we""ird.name"'
