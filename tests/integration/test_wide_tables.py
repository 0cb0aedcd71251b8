"""A table wider than PostgreSQL's 100 function arguments (issue 13): every view follows it
and ``syncline verify`` checks it (its row text is built in groups of columns)."""

from __future__ import annotations

from syncline.testing.harness import Pipeline

WIDTH = 250


def test_a_table_of_250_columns_is_followed_and_verified(pipeline: Pipeline) -> None:
    p = pipeline
    cols = ", ".join(f"c{i} text" for i in range(WIDTH))
    p.sql(f"CREATE TABLE wide (id int PRIMARY KEY, {cols})")
    values = ", ".join("NULL" if i % 7 == 0 else f"'v{i}'" for i in range(WIDTH))
    p.sql(f"INSERT INTO wide VALUES (1, {values}), (2, {values}), (3, {values})")
    p.start()
    p.wait_caught_up()
    p.sql("UPDATE wide SET c0 = 'now set', c249 = NULL WHERE id = 1")
    p.sql("DELETE FROM wide WHERE id = 2")
    p.wait_caught_up()
    assert not p.failed_views()
    assert p.stop() == 0
    p.assert_equal()
    p.assert_verified()
    # a view that differs in the last group of columns is found
    p.sql("UPDATE wide SET c240 = 'changed on the replica only' WHERE id = 3", p.replica_db)
    r = p.cli("verify", "-q", "--view", "replica")
    assert r.returncode == 1, r.stdout + r.stderr
