"""Keys and values a new user meets in the first week (issue 9): primary keys with INCLUDE
columns, char(n) in DuckDB, PostgreSQL's extreme legal values, extension types. Every test
runs the real pipeline into all four views and ends with the harness comparison and
``syncline verify``."""

from __future__ import annotations

import subprocess
import sys

from syncline.testing.harness import Pipeline


def verify(p: Pipeline) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "syncline", "verify", "-q", "-c", str(p.config_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stdout + r.stderr


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
    verify(p)
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
