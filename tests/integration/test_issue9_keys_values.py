"""Keys and values a new user meets in the first week (issue 9): primary keys with INCLUDE
columns, char(n) in DuckDB, PostgreSQL's extreme legal values, extension types. Every test
runs the real pipeline into all four views and ends with the harness comparison and
``syncline verify``."""

from __future__ import annotations

from syncline.testing.harness import Pipeline


def test_primary_key_with_include_columns(pipeline: Pipeline) -> None:
    """Only the key columns (indnkeyatts) are the key: the INCLUDE column may be NULL and
    may change without the row changing identity."""
    p = pipeline
    p.sql(
        "CREATE TABLE inc (a int, c text, b text, n int, PRIMARY KEY (a, c) INCLUDE (b));"
        " INSERT INTO inc VALUES (1, 'x', NULL, 1), (2, 'y', 'b2', 2)"
    )
    p.start()
    p.wait_caught_up()
    p.sql("INSERT INTO inc VALUES (3, 'z', NULL, 3)")
    p.sql("UPDATE inc SET b = 'now set' WHERE a = 1")
    p.sql("UPDATE inc SET b = NULL WHERE a = 2")
    p.sql("UPDATE inc SET a = 20, b = 'moved' WHERE a = 2")  # the key changes
    p.sql("UPDATE inc SET c = 'zz' WHERE a = 3")
    p.sql("DELETE FROM inc WHERE a = 1")
    p.wait_caught_up()
    assert not p.failed_views()
    assert p.stop() == 0
    p.assert_equal()
    p.assert_verified()
    nulls = p.sql(
        "SELECT a.attname, a.attnotnull FROM pg_attribute a WHERE a.attrelid = 'public.inc'::regclass"
        " AND a.attname = 'b'",
        p.replica_db,
    )
    assert nulls == [("b", False)]
    key = p.sql(
        "SELECT array_agg(a.attname ORDER BY a.attname) FROM pg_index i JOIN pg_attribute a"
        " ON a.attrelid = i.indrelid AND a.attnum = ANY((i.indkey::int2[])[0:i.indnkeyatts - 1])"
        " WHERE i.indrelid = 'public.inc'::regclass AND i.indisprimary",
        p.replica_db,
    )
    assert key == [(["a", "c"],)]


LIMITS_DDL = """
CREATE TABLE lim (
  id int PRIMARY KEY,
  i2 smallint, i4 integer, i8 bigint, n numeric, n38 numeric(38,10), f4 real, f8 double precision,
  ts timestamp, tstz timestamptz, d date, tm time, tmtz timetz, iv interval, m money,
  vb bit varying, b8 bit(8), by bytea, t text, o oid, u uuid, j jsonb, arr int[], tsarr timestamp[],
  tsr tsrange, ch char(5)
)
"""
COLS = "id, i2, i4, i8, n, n38, f4, f8, ts, tstz, d, tm, tmtz, iv, m, vb, b8, by, t, o, u, j, arr, tsarr, tsr, ch"
BIG_NUM = "9" * 131072 + "." + "9" * 16383
# every value is a SQL expression; min and max legal values of each type
MINS = (
    "-32768, -2147483648, -9223372036854775808, '-" + BIG_NUM + "',"
    " -9999999999999999999999999999.9999999999, '-3.4028235e+38', '-1.7976931348623157e+308',"
    " '4713-01-01 00:00:00 BC', '4713-01-01 00:00:00+00 BC', '4713-01-01 BC', '00:00:00',"
    " '00:00:00+15:59', '-178000000 years', '-92233720368547758.08', B'', B'00000000', '\\x',"
    " '', 0, '00000000-0000-0000-0000-000000000000', '[]', '{}', '{\"4713-01-01 00:00:00 BC\"}',"
    " '[-infinity,infinity]', ''"
)
MAXS = (
    "32767, 2147483647, 9223372036854775807, '" + BIG_NUM + "',"
    " 9999999999999999999999999999.9999999999, '3.4028235e+38', '1.7976931348623157e+308',"
    " '294276-12-31 23:59:59.999999', '294276-12-31 23:59:59.999999+00', '5874897-12-31',"
    " '24:00:00', '24:00:00-15:59', '178000000 years 2147483647 days 2562047788:00:54.775807',"
    " '92233720368547758.07', repeat('10', 50000)::varbit, B'11111111',"
    " decode(repeat('ff00', 500000), 'hex'),"
    " 'odd: ' || chr(1) || chr(8) || chr(9) || chr(10) || chr(13) || chr(27) || chr(127) || ' \\ \" '''"
    " || chr(128512) || chr(1114111) || ' end',"
    " 4294967295, 'ffffffff-ffff-ffff-ffff-ffffffffffff',"
    " (repeat('[', 1000) || repeat(']', 1000))::jsonb, ARRAY(SELECT g FROM generate_series(1, 100000) g),"
    " '{\"294276-12-31 23:59:59.999999\",NULL}', '(,)', 'abcde'"
)
SPECIALS = (
    "NULL, NULL, NULL, 'NaN', NULL, 'NaN', '-Infinity', '-infinity', 'infinity',"
    " '-infinity', NULL, NULL, '0', NULL, NULL, NULL, NULL, NULL, NULL, NULL, 'null', '{NULL}',"
    " '{infinity,-infinity}', 'empty', 'a'"
)
MORE_SPECIALS = (
    "0, 0, 0, '-0.000000000000000000001', 0, '1e-45', '5e-324', 'infinity', '-infinity',"
    " 'infinity', '00:00:00.000001', '00:00:00-15:59', '-1 days +02:00:00', 0, B'1', B'10101010', '\\x00',"
    " ' ', 1, '00000000-0000-0000-0000-000000000001', '\"\"', '{{1,2},{3,4}}', '{}', '(,\"2000-01-01 00:00:00\")', ' a '"
)


def test_minimum_and_maximum_legal_values(pipeline: Pipeline) -> None:
    """No value PostgreSQL accepts may stop a view: the extremes of every supported type,
    in the snapshot and streamed, through all four views (DuckDB falls back to text where
    a typed column cannot hold a value, e.g. timestamps after 294247 AD)."""
    p = pipeline
    p.sql(LIMITS_DDL + "; CREATE TABLE lim_src (LIKE lim INCLUDING ALL)")
    p.sql(f"INSERT INTO lim ({COLS}) VALUES (1, {MINS}), (2, {MAXS}), (3, {SPECIALS})")
    p.start()
    p.wait_caught_up(timeout=300)
    p.sql(
        f"INSERT INTO lim ({COLS}) VALUES (11, {MINS}), (12, {MAXS}), (13, {SPECIALS}), (14, {MORE_SPECIALS})"
    )
    # updates that flip every column between its extremes
    p.sql(f"INSERT INTO lim_src ({COLS}) VALUES (1, {MAXS}), (2, {MINS})")
    rest = COLS.removeprefix("id, ")
    p.sql(f"UPDATE lim SET ({rest}) = (SELECT {rest} FROM lim_src s WHERE s.id = lim.id) WHERE id IN (1, 2)")
    p.sql("UPDATE lim SET t = 'changed' WHERE id = 12")  # unchanged TOAST values elsewhere
    p.wait_caught_up(timeout=300)
    assert not p.failed_views(), p.output()[-3000:]
    assert p.stop() == 0
    p.assert_equal()
    p.assert_verified()


def test_char_n_compares_as_in_postgres_in_duckdb(pipeline: Pipeline) -> None:
    import duckdb

    p = pipeline
    p.sql("CREATE TABLE lang (id int PRIMARY KEY, name char(20)); INSERT INTO lang VALUES (1, 'English')")
    p.start()
    p.wait_caught_up()
    p.sql("INSERT INTO lang VALUES (2, 'French'); UPDATE lang SET name = 'German ' WHERE id = 1")
    p.wait_caught_up()
    assert p.stop() == 0
    p.assert_equal()
    p.assert_verified()
    con = duckdb.connect(str(p.workdir / "wh.duckdb"), read_only=True)
    try:
        got = con.execute("SELECT id FROM public.lang WHERE name = 'French' OR name = 'German' ORDER BY id")
        assert got.fetchall() == [(1,), (2,)]
    finally:
        con.close()
