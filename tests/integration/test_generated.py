"""Stored generated columns (issue 9, item 6): pgoutput does not send them; every view must
still hold their values, in the snapshot and in streamed changes, including partitioned
tables, tables without a key, and updates that leave a TOASTed input unchanged."""

from __future__ import annotations

from syncline.testing.harness import Pipeline

SCHEMA = """
CREATE TABLE g (
    id int PRIMARY KEY, price numeric, qty int,
    total numeric GENERATED ALWAYS AS (price * qty) STORED,
    name text, shout text GENERATED ALWAYS AS (upper(name) || '!') STORED,
    big text, big_len int GENERATED ALWAYS AS (length(big)) STORED,
    many boolean GENERATED ALWAYS AS (qty > 2) STORED);
ALTER TABLE g ALTER big SET STORAGE EXTERNAL;
INSERT INTO g (id, price, qty, name, big) VALUES
    (1, 2.5, 2, 'lamp', repeat('x', 4000)), (2, NULL, 5, NULL, NULL);
CREATE TABLE p (id int, region text, amount int,
    doubled int GENERATED ALWAYS AS (amount * 2) STORED, PRIMARY KEY (id, region))
    PARTITION BY LIST (region);
CREATE TABLE p_eu PARTITION OF p FOR VALUES IN ('eu');
CREATE TABLE p_us PARTITION OF p FOR VALUES IN ('us');
INSERT INTO p (id, region, amount) VALUES (1, 'eu', 10), (2, 'us', 20);
CREATE TABLE k (a int, b int GENERATED ALWAYS AS (a + 1) STORED);
ALTER TABLE k REPLICA IDENTITY FULL;
INSERT INTO k (a) VALUES (1), (1), (NULL);
"""

CHANGES = """
INSERT INTO g (id, price, qty, name, big) VALUES (3, 1.25, 3, 'desk', repeat('y', 5000));
UPDATE g SET qty = 4 WHERE id = 1;
UPDATE g SET name = 'chair' WHERE id = 2;
UPDATE g SET big = 'short' WHERE id = 3;
DELETE FROM g WHERE id = 2;
INSERT INTO g (id, price, qty, name) SELECT i, i, i, 'n' || i FROM generate_series(10, 500) i;
UPDATE p SET amount = 11 WHERE id = 1;
UPDATE p SET region = 'us' WHERE id = 1;
INSERT INTO p (id, region, amount) VALUES (3, 'eu', 30);
UPDATE k SET a = 2 WHERE ctid = (SELECT ctid FROM k WHERE a = 1 LIMIT 1);
DELETE FROM k WHERE a IS NULL;
"""


def test_generated_columns_reach_every_view(pipeline: Pipeline) -> None:
    p = pipeline
    keyed = [v for v in p.views if v in ("postgres", "duckdb")]
    p.sql(SCHEMA if keyed == list(p.views) else SCHEMA.split("CREATE TABLE k")[0])
    p.start()
    p.wait_caught_up()
    p.sql(CHANGES if keyed == list(p.views) else CHANGES.split("UPDATE k")[0])
    p.wait_caught_up()
    if "postgres" in p.views:
        assert p.sql("SELECT total, shout, big_len, many FROM public.g WHERE id = 1", p.replica_db) == [
            (10, "LAMP!", 4000, True)
        ]
    assert p.stop() == 0
    p.assert_equal()
    p.assert_verified()


def test_generated_columns_without_key(pipeline: Pipeline) -> None:
    p = Pipeline(pipeline.cluster, pipeline.workdir / "k", views=("postgres", "duckdb"))
    try:
        p.sql(SCHEMA)
        p.start()
        p.wait_caught_up()
        p.sql(CHANGES)
        p.wait_caught_up()
        assert sorted(p.sql("SELECT a, b FROM public.k", p.replica_db)) == [(1, 2), (2, 3)]
        assert p.stop() == 0
        p.assert_equal()
        p.assert_verified()
    finally:
        p.close()
