"""A followed table whose primary key is dropped and added back between two polls of the
table follower: its rows streamed without a key would be left out by the keyed views
(Redis) while the replica keeps them. The capture sees the keyless Relation in the stream,
leaves the table (emptied in every view, in stream order) and, keyed again, copies it
again: every view ends equal to the source."""

from __future__ import annotations

from pathlib import Path

from syncline.testing.harness import Pipeline
from syncline.testing.pgcluster import PgCluster

TABLES = 8


def test_a_key_dropped_and_added_back_between_two_polls(pg: PgCluster, tmp_path: Path) -> None:
    p = Pipeline(pg, tmp_path, views=("postgres", "redis"))
    try:
        for i in range(TABLES):
            p.sql(
                f"CREATE TABLE k{i} (id int PRIMARY KEY, v text); INSERT INTO k{i} VALUES (1, 'a'), (2, 'b')"
            )
        p.start()
        p.wait_caught_up()
        for i in range(TABLES):
            # a window of ~0.2 s without a key: shorter than the follower's poll interval, so
            # the poll misses most of them; the insert streams in that window
            p.sql(f"ALTER TABLE k{i} DROP CONSTRAINT k{i}_pkey")
            p.sql(f"INSERT INTO k{i} VALUES (3, 'c')")
            p.sql("SELECT pg_sleep(0.2)")
            p.sql(f"ALTER TABLE k{i} ADD PRIMARY KEY (id)")
            p.sql(f"UPDATE k{i} SET v = 'bb' WHERE id = 2")
        p.wait_caught_up(timeout=120, new_tables=True)
        assert p.stop() == 0
        p.assert_equal()
    finally:
        p.close()
