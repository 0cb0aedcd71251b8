"""DDL that moves rows to other keys in the keyed views (Redis, tantivy): a renamed table or
schema (its rows move to the new name, whether the rename is the last thing the table sees
or rows change after it, and a new table under the old name starts without them; its
columns renamed or dropped in the same change), and a
changed key (the table is copied again, emptied first)."""

from __future__ import annotations

from pathlib import Path

from syncline.testing.harness import Pipeline
from syncline.testing.pgcluster import PgCluster
from tests.integration.test_living_schema import converge, wait_followed


def test_keyed_views_follow_renamed_tables_and_schemas(pg: PgCluster, tmp_path: Path) -> None:
    p = Pipeline(pg, tmp_path, views=("redis", "tantivy"), tables="*.*")
    try:
        p.start()
        p.sql(
            "CREATE TABLE public.a (id int PRIMARY KEY, v text);"
            "INSERT INTO a SELECT g, 'a' || g FROM generate_series(1, 20) g;"
            "CREATE TABLE public.b (id int PRIMARY KEY, v text);"
            "INSERT INTO b SELECT g, 'b' || g FROM generate_series(1, 20) g;"
            "CREATE SCHEMA s1; CREATE TABLE s1.t1 (id int PRIMARY KEY, v text); INSERT INTO s1.t1 VALUES (1, 'old')"
        )
        wait_followed(p)
        # the last thing a sees (the poll logs it), with a column renamed and one dropped in
        # the same shape: the stored rows move, then their fields change
        p.sql("ALTER TABLE a ADD COLUMN gone int")
        p.sql(
            "ALTER TABLE a RENAME TO a2; ALTER TABLE a2 RENAME COLUMN v TO w; ALTER TABLE a2 DROP COLUMN gone"
        )
        p.sql("ALTER TABLE b RENAME TO b2; UPDATE b2 SET v = v || '!' WHERE id <= 5")
        p.sql("ALTER SCHEMA s1 RENAME TO s2")
        wait_followed(p)
        p.sql(
            "CREATE SCHEMA s1; CREATE TABLE s1.t1 (id int PRIMARY KEY, v text); INSERT INTO s1.t1 VALUES (2, 'new');"
            "CREATE TABLE public.a (id int PRIMARY KEY, v text); INSERT INTO a VALUES (100, 'new a')"
        )
        wait_followed(p)
        p.sql("UPDATE s2.t1 SET v = 'old2'; DELETE FROM a2 WHERE id = 1")
        converge(p)
        p.assert_verified()
    finally:
        p.close()


def test_keyed_views_follow_a_changed_key(pg: PgCluster, tmp_path: Path) -> None:
    p = Pipeline(pg, tmp_path, views=("postgres", "redis", "tantivy"))
    try:
        p.sql(
            "CREATE TABLE a (id int PRIMARY KEY, code text NOT NULL, v text);"
            "INSERT INTO a SELECT g, 'c' || g, 'v' || g FROM generate_series(1, 20) g;"
            "CREATE TABLE b (id int PRIMARY KEY, code text NOT NULL, v text);"
            "INSERT INTO b SELECT g, 'c' || g, 'v' || g FROM generate_series(1, 10) g"
        )
        p.start()
        wait_followed(p)
        # a table without a key, created later: the keyed views leave it out (a warning)
        p.sql(
            "CREATE TABLE f (id int NOT NULL, v text); ALTER TABLE f REPLICA IDENTITY FULL;"
            "INSERT INTO f SELECT g, 'f' || g FROM generate_series(1, 10) g"
        )
        wait_followed(p)
        # another key in one statement: the keyed views stored the rows under the old one
        p.sql("ALTER TABLE a DROP CONSTRAINT a_pkey, ADD PRIMARY KEY (code)")
        p.sql("UPDATE a SET v = 'x' WHERE id <= 3")
        # a key for a table that had none: the keyed views left it out until now
        p.sql("ALTER TABLE f ADD PRIMARY KEY (id)")
        wait_followed(p)
        p.kill()
        p.sql("ALTER TABLE b DROP CONSTRAINT b_pkey, ADD PRIMARY KEY (code, id)")  # while run is down
        p.start()
        converge(p)
    finally:
        p.close()
