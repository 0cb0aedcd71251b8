"""Tables without a primary key (issue 9, item 5): REPLICA IDENTITY FULL tables keep equal
rows and NULLs in the replica and DuckDB, an update or delete acts on one matching row as
PostgreSQL's own subscriber does; USING INDEX tables are keyed by the index; Redis and
tantivy refuse a keyless table with one clear error; ``verify`` compares multisets; ``!``
patterns leave a table out."""

from __future__ import annotations

import time
from pathlib import Path

from syncline.testing.harness import Pipeline
from syncline.testing.pgcluster import PgCluster

SCHEMA = """
CREATE TABLE t (a int, b text, j json, big text);
ALTER TABLE t REPLICA IDENTITY FULL;
ALTER TABLE t ALTER big SET STORAGE EXTERNAL;
INSERT INTO t VALUES (1, 'x', '{"k": 1}', NULL), (1, 'x', '{"k": 1}', NULL),
    (NULL, 'n', NULL, repeat('z', 5000)), (2, NULL, '[1, 2]', NULL), (NULL, NULL, NULL, NULL);
CREATE TABLE u (a int NOT NULL, b text);
CREATE UNIQUE INDEX u_a ON u (a);
ALTER TABLE u REPLICA IDENTITY USING INDEX u_a;
INSERT INTO u VALUES (1, 'one'), (2, NULL);
"""

CHANGES = """
INSERT INTO t VALUES (1, 'x', '{"k": 1}', NULL), (3, 'y', '{"k": 3}', repeat('q', 6000));
DELETE FROM t WHERE ctid = (SELECT ctid FROM t WHERE a = 1 LIMIT 1);
UPDATE t SET b = 'x2' WHERE ctid = (SELECT ctid FROM t WHERE a = 1 LIMIT 1);
UPDATE t SET a = 5 WHERE a IS NULL AND b = 'n';
UPDATE t SET b = 'toast kept' WHERE a = 3;
UPDATE t SET a = 0 WHERE a IS NULL AND b IS NULL;
INSERT INTO t SELECT 7, 'bulk', '{}', NULL FROM generate_series(1, 300);
DELETE FROM t WHERE ctid IN (SELECT ctid FROM t WHERE a = 7 LIMIT 100);
UPDATE u SET a = 3 WHERE a = 1;
UPDATE u SET b = 'two' WHERE a = 2;
INSERT INTO u VALUES (4, NULL);
DELETE FROM u WHERE a = 3;
"""


def test_full_identity_without_key_keeps_equal_rows(pg: PgCluster, tmp_path: Path) -> None:
    p = Pipeline(pg, tmp_path, views=("postgres", "duckdb"))
    try:
        p.sql(SCHEMA)
        p.start()
        p.wait_caught_up()
        p.sql(CHANGES)
        p.wait_caught_up()
        assert p.sql("SELECT count(*) FROM public.t WHERE a = 1", p.replica_db) == [(2,)]
        assert p.sql("SELECT count(*) FROM public.t WHERE a = 7", p.replica_db) == [(200,)]
        # the replica keeps the table without a primary key, as the source has it
        assert p.sql(
            "SELECT count(*) FROM pg_constraint WHERE conrelid = 'public.t'::regclass", p.replica_db
        ) == [(0,)]
        r = p.cli("verify", "-q", "--view", "replica")
        assert r.returncode == 0, r.stdout + r.stderr
        # a duplicate row more in the replica: verify must not call the table equal
        p.sql("INSERT INTO public.t VALUES (1, 'x2', '{\"k\": 1}', NULL)", p.replica_db)
        r = p.cli("verify", "-q", "--view", "replica")
        assert r.returncode == 1, r.stdout + r.stderr
        assert "public.t: different" in r.stdout and "(copy 2)" in r.stdout, r.stdout
        p.sql(
            "DELETE FROM public.t WHERE ctid = (SELECT max(ctid) FROM public.t WHERE b = 'x2')", p.replica_db
        )
        assert p.stop() == 0
        p.assert_equal()
        p.assert_verified()  # DuckDB too, now that run is stopped
        # and from the compacted log after a restart
        p.start()
        p.sql("DELETE FROM t WHERE a = 1; INSERT INTO t VALUES (1, 'back', NULL, NULL)")
        p.wait_caught_up()
        assert p.stop() == 0
        p.assert_equal()
    finally:
        p.close()


def test_keyed_views_refuse_a_keyless_table_and_exclusion_leaves_it_out(
    pg: PgCluster, tmp_path: Path
) -> None:
    schema = (
        "CREATE TABLE audit (at timestamptz DEFAULT now(), what text);"
        "ALTER TABLE audit REPLICA IDENTITY FULL;"
        "CREATE TABLE item (id int PRIMARY KEY, name text);"
        "INSERT INTO item VALUES (1, 'lamp'); INSERT INTO audit (what) VALUES ('created lamp')"
    )
    p = Pipeline(pg, tmp_path / "a", views=("redis",))
    try:
        p.sql(schema)
        p.start()
        assert p.proc is not None
        rc = p.proc.wait(60)
        assert rc != 0
        out = p.output()
        assert "cannot follow table public.audit: it has no primary key" in out, out
        assert '"!public.audit"' in out and "Traceback" not in out, out
    finally:
        p.close()

    # refused again at a second attempt of the first start: the table was there at the first
    p = Pipeline(pg, tmp_path / "a2", views=("redis",))
    try:
        p.sql(schema)
        for _ in range(2):
            p.start()
            assert p.proc is not None and p.proc.wait(60) != 0
            assert "cannot follow table public.audit: it has no primary key" in p.output()
    finally:
        p.close()

    p = Pipeline(
        pg, tmp_path / "b", views=("redis", "tantivy"), tables=("public.*", "!public.audit", "nosuch.*")
    )
    try:
        p.sql(schema)
        p.start()
        p.wait_caught_up()
        p.sql("INSERT INTO item VALUES (2, 'desk'); INSERT INTO audit (what) VALUES ('created desk')")
        p.wait_caught_up()
        assert "source.tables pattern 'nosuch.*' matches no table" in p.output()
        p.assert_verified()  # verify follows source.tables: audit is not compared
        assert p.sql("SELECT count(*) FROM pg_publication_tables WHERE tablename = 'audit'") == [(0,)]
        assert p.stop() == 0
    finally:
        p.close()


def test_text_fields_naming_no_column_warn(pg: PgCluster, tmp_path: Path) -> None:
    p = Pipeline(pg, tmp_path, views=("tantivy",))
    try:
        p.config_path.write_text(
            p.config_path.read_text()
            + 'text_fields = ["name", "nmae"]\ntables = ["public.item", "public.nope"]\n'
        )
        p.sql("CREATE TABLE item (id int PRIMARY KEY, name text); INSERT INTO item VALUES (1, 'lamp')")
        p.start()
        p.wait_caught_up()
        deadline = time.monotonic() + 10
        while "nmae" not in p.output() and time.monotonic() < deadline:
            time.sleep(0.2)
        out = p.output()
        assert "text_fields names 'nmae', a column of none of its tables" in out, out
        assert "tables pattern 'public.nope' matches no captured table" in out, out
        assert "'name'" not in out.split("text_fields names", 1)[1].splitlines()[0]
        assert p.stop() == 0
    finally:
        p.close()


def test_a_keyless_table_created_while_the_first_start_was_interrupted_is_left_out(
    pg: PgCluster, tmp_path: Path
) -> None:
    """A first start that did not finish (here: a slot of that name already existed), then
    the application creates a keyless table: the next start is still a first start, but the
    table came later, so the keyed view leaves it out with a warning instead of refusing."""
    p = Pipeline(pg, tmp_path, views=("postgres", "redis"))
    try:
        p.sql("CREATE TABLE item (id int PRIMARY KEY); INSERT INTO item VALUES (1)")
        p.sql(f"SELECT pg_create_logical_replication_slot('{p.slot}', 'pgoutput')")
        p.start()
        assert p.proc is not None and p.proc.wait(60) != 0
        assert "already exists but this log never used it" in p.output(), p.output()
        p.sql(f"SELECT pg_drop_replication_slot('{p.slot}')")
        p.sql(
            "CREATE TABLE loose (a int, b text); ALTER TABLE loose REPLICA IDENTITY FULL;"
            "INSERT INTO loose VALUES (1, 'x'), (1, 'x')"
        )
        p.start()
        p.wait_caught_up()
        assert "its rows are left out of this view" in p.output(), p.output()[-3000:]
        assert p.sql("SELECT count(*) FROM public.loose", p.replica_db) == [(2,)]
        assert p.stop() == 0
        diffs = p.compare()
        assert all(d.equal for d in diffs["replica"]), diffs
        assert [d.table for d in diffs["cache"] if not d.equal] == ["public.loose"], diffs  # left out
    finally:
        p.close()
