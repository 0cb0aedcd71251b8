"""The embedded log: retention trims what every view applied; a view added later is filled
from the compacted log (latest row per key) without touching the source."""

from __future__ import annotations

import time
from pathlib import Path

from syncline.config import load_config
from syncline.log.embedded.store import connect, get_meta
from syncline.testing.compare import compare_postgres, source_tables
from syncline.testing.harness import Pipeline
from syncline.testing.pgcluster import PgCluster


def trimmed(p: Pipeline) -> int:
    conn = connect(p.log_path, readonly=True)
    try:
        return int(get_meta(conn, "trimmed_seq", "0"))
    finally:
        conn.close()


def test_new_view_is_filled_from_the_compacted_log(pg: PgCluster, tmp_path: Path) -> None:
    p = Pipeline(pg, tmp_path, views=("postgres",))
    try:
        p.sql(
            "CREATE TYPE color AS ENUM ('red', 'blue');"
            "CREATE TABLE a (id int PRIMARY KEY, v text, c color, big text);"
            "ALTER TABLE a ALTER big SET STORAGE EXTERNAL;"
            "INSERT INTO a SELECT g, 'v', 'red', repeat(md5(g::text), 300) FROM generate_series(1, 500) g;"
            "CREATE TABLE b (id int PRIMARY KEY)"
        )
        p.start()
        p.wait_caught_up()
        p.sql("UPDATE a SET v = 'updated' WHERE id <= 100")  # TOAST column unchanged
        p.sql("DELETE FROM a WHERE id > 400")
        p.sql("ALTER TABLE a ADD COLUMN n int")
        p.sql("INSERT INTO a VALUES (1000, 'new', 'blue', 'small', 7)")
        p.sql("UPDATE a SET id = 2000 WHERE id = 5")  # key moves, TOAST unchanged
        p.sql("INSERT INTO b SELECT generate_series(1, 10)")
        p.sql("TRUNCATE b")
        p.sql("INSERT INTO b VALUES (42)")
        p.wait_caught_up()
        deadline = time.monotonic() + 30
        while trimmed(p) < 2 and time.monotonic() < deadline:
            p.sql("UPDATE a SET v = 'tick' WHERE id = 1")
            p.wait_caught_up()
            time.sleep(1)
        assert trimmed(p) >= 2, "retention did not trim the log"
        assert p.stop() == 0
        # a new view joins: the log no longer holds the snapshot
        pg.psql("CREATE DATABASE late_replica")
        with open(p.config_path, "a") as f:
            f.write(f'[views.late]\nkind = "postgres"\ndsn = "{pg.dsn("late_replica")}"\n')
        p.cfg = load_config(p.config_path)
        p.start()
        p.wait_caught_up()
        p.sql("UPDATE a SET v = 'after fill' WHERE id = 2")
        p.wait_caught_up()
        assert p.stop() == 0
        assert "filling it from the compacted log" in p.output()
        tables = source_tables(p.source_dsn)
        for dsn in (p.replica_dsn, pg.dsn("late_replica")):
            diffs = [d for d in compare_postgres(p.source_dsn, dsn, tables) if not d.equal]
            assert not diffs, dsn + "\n".join(map(str, diffs)) + p.output()[-3000:]
    finally:
        p.close()
