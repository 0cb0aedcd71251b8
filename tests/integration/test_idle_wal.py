"""(issue 13) An idle publication does not hold the server's WAL: while the captured tables
see no change and the rest of the server writes hundreds of megabytes of WAL (a table not
captured, another database), the slot moves on, and the WAL it retains stays under 64 MB."""

from __future__ import annotations

import time
from pathlib import Path

from syncline.testing.harness import Pipeline
from syncline.testing.pgcluster import PgCluster

LIMIT = 64 << 20


def _retained(p: Pipeline) -> int:
    row = p.sql(
        "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint FROM pg_replication_slots"
        f" WHERE slot_name = '{p.slot}'"
    )
    return int(row[0][0])  # type: ignore[call-overload]


def test_an_idle_publication_keeps_retained_wal_small(pg: PgCluster, tmp_path: Path) -> None:
    p = Pipeline(pg, tmp_path, views=("postgres",), tables="public.quiet")
    try:
        p.sql("CREATE TABLE quiet (id int PRIMARY KEY); INSERT INTO quiet VALUES (1)")
        p.sql("CREATE TABLE busy (id int, pad text)")
        pg.psql("CREATE DATABASE other_db")
        pg.psql("CREATE TABLE IF NOT EXISTS noise (id int, pad text)", "other_db")
        p.start()
        p.wait_caught_up()
        first = p.current_lsn()
        for i in range(12):  # about 25 MB of WAL each
            if i % 2:
                pg.psql(
                    "INSERT INTO noise SELECT g, repeat('n', 200) FROM generate_series(1, 100000) g",
                    "other_db",
                )
            else:
                p.sql("INSERT INTO busy SELECT g, repeat('b', 200) FROM generate_series(1, 100000) g")
        assert p.current_lsn() - first > 200 << 20  # the server wrote that much WAL meanwhile
        p.sql("CHECKPOINT")
        deadline = time.monotonic() + 60
        while (got := _retained(p)) >= LIMIT:
            assert time.monotonic() < deadline, f"the slot retains {got >> 20} MB of WAL"
            p.sql("CHECKPOINT")
            time.sleep(0.5)
        p.sql("INSERT INTO quiet VALUES (2); DROP TABLE busy")  # (compared: every table of the source)
        p.wait_caught_up()
        assert p.stop() == 0
        p.assert_equal()
    finally:
        p.close()
        pg.psql("DROP DATABASE IF EXISTS other_db")
