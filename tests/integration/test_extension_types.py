"""Types from extensions (issue 9, item 2) and enum labels added later (item 7): the
replica creates the extension in the source's schema, or fails with one clear error that a
fix in the replica clears by itself; the other views store the text form."""

from __future__ import annotations

import time
from pathlib import Path

from syncline.testing.harness import Pipeline
from syncline.testing.pgcluster import PgCluster

SCHEMA = """
CREATE EXTENSION hstore;
CREATE SCHEMA ext;
CREATE EXTENSION citext SCHEMA ext;
CREATE TYPE mood AS ENUM ('sad', 'ok');
CREATE TABLE t (id int PRIMARY KEY, attrs hstore, email ext.citext, tags hstore[], m mood);
INSERT INTO t VALUES (1, 'a=>1, "b c"=>NULL', 'Ann@Example.com', ARRAY['x=>y']::hstore[], 'ok');
"""


def test_extension_types_and_later_enum_labels(pipeline: Pipeline) -> None:
    p = pipeline
    p.sql(SCHEMA)
    p.start()
    p.wait_caught_up()
    p.sql("ALTER TYPE mood ADD VALUE 'happy'; ALTER TYPE mood ADD VALUE 'meh' BEFORE 'sad'")
    p.sql(
        "INSERT INTO t VALUES (2, 'k=>v', 'BOB@x.org', NULL, 'happy'), (3, NULL, NULL, NULL, 'meh');"
        "UPDATE t SET attrs = attrs || 'z=>9', m = 'happy' WHERE id = 1"
    )
    p.wait_caught_up()
    if "postgres" in p.views:
        # citext compares case-insensitively in the replica too: it is the real type
        assert p.sql(
            "SELECT id FROM public.t WHERE email OPERATOR(ext.=) 'ann@example.COM'::ext.citext", p.replica_db
        ) == [(1,)]
        assert p.sql(
            "SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace"
            " WHERE extname = 'citext'",
            p.replica_db,
        ) == [("ext",)]
    assert p.stop() == 0
    p.assert_equal()
    p.assert_verified()


def test_extension_in_another_schema_of_the_replica_is_a_clear_fixable_error(
    pg: PgCluster, tmp_path: Path
) -> None:
    p = Pipeline(pg, tmp_path, views=("postgres",))
    try:
        _another_schema(p)
    finally:
        p.close()


def _another_schema(p: Pipeline) -> None:
    p.sql(
        "CREATE SCHEMA ext; CREATE EXTENSION citext SCHEMA ext;"
        "CREATE TABLE u (id int PRIMARY KEY, email ext.citext); INSERT INTO u VALUES (1, 'A')"
    )
    p.sql("CREATE EXTENSION citext SCHEMA public", p.replica_db)
    p.start()
    deadline = time.monotonic() + 60
    while "ALTER EXTENSION citext SET SCHEMA ext" not in p.cli("status").stdout:
        assert time.monotonic() < deadline, p.cli("status").stdout + p.output()[-3000:]
        time.sleep(0.5)
    p.sql("CREATE SCHEMA ext; ALTER EXTENSION citext SET SCHEMA ext", p.replica_db)
    while '"state": "running"' not in p.cli("status", "--json").stdout.split('"replica"')[1][:300]:
        assert time.monotonic() < deadline + 120, p.output()[-3000:]
        time.sleep(0.5)  # retried by itself
    p.wait_caught_up()
    assert p.stop() == 0
    p.assert_equal()
