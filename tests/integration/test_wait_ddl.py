"""``wait`` after a DDL that changes rows without row events (a column's type rewritten, a
column added with a default, an enum label renamed), renames or drops: the capture learns
of it from its catalogue poll, not from the stream, so ``wait`` must also wait for that
poll. Each round asks right after the DDL (CLI, HTTP API, Python API) and compares the
replica with the source at once, ``run`` still running."""

from __future__ import annotations

import time
from pathlib import Path

import psycopg

from syncline.client import Client, wait_for
from syncline.log import open_observer
from syncline.sources.registry import open_admin
from syncline.testing.harness import Pipeline
from syncline.testing.pgcluster import PgCluster
from tests.integration.test_http import free_port, get_json, wait_http


def _assert_replica_equal(p: Pipeline, when: str) -> None:
    bad = [str(d) for d in p.compare()["replica"] if not d.equal]
    assert not bad, f"after {when}, wait returned before the replica had it: {bad}\n{p.output()[-2000:]}"


def _copied(p: Pipeline, table: str) -> int | None:
    """Rows the running copy of ``table`` has logged so far (None: no copy)."""
    obs = open_observer(p.cfg.log)
    try:
        c = open_admin(p.cfg).copying(obs).get(table)
    finally:
        obs.close()
    return None if c is None else int(c["rows"])


def _replica_tables(p: Pipeline) -> set[str]:
    with psycopg.connect(p.replica_dsn) as c:
        rows = c.execute(
            "SELECT schemaname || '.' || tablename FROM pg_tables WHERE schemaname = 'public'"
        ).fetchall()
    return {str(r[0]) for r in rows}


def test_wait_covers_ddl_the_capture_learns_of_from_the_catalogue(pg: PgCluster, tmp_path: Path) -> None:
    port = free_port()
    p = Pipeline(pg, tmp_path, views=("postgres",), http_listen=f"127.0.0.1:{port}")
    try:
        p.sql(
            "CREATE TYPE mood AS ENUM ('sad', 'ok');"
            "CREATE TABLE item (id int PRIMARY KEY, price numeric, m mood);"
            "INSERT INTO item SELECT g, g * 1.5, 'ok' FROM generate_series(1, 3000) g;"
            "CREATE TABLE old1 (id int PRIMARY KEY); INSERT INTO old1 SELECT generate_series(1, 10);"
            "CREATE TABLE old2 (id int PRIMARY KEY); INSERT INTO old2 SELECT generate_series(1, 10)"
        )
        p.start()
        base = f"http://127.0.0.1:{port}"
        wait_http(base)
        p.wait_caught_up()

        def cli_wait() -> None:
            r = p.cli("wait", "--timeout", "60", timeout=90)
            assert r.returncode == 0, r.stdout + r.stderr + p.output()[-3000:]

        def http_wait() -> None:
            Client(base).wait_for(None, timeout=60)

        def api_wait() -> None:
            wait_for(None, config=p.config_path, timeout=60)

        rounds = [
            ("ALTER TABLE item ALTER COLUMN price TYPE text USING price::text || ' EUR'", cli_wait),
            ("ALTER TABLE item ADD COLUMN stock int DEFAULT 7", http_wait),
            ("ALTER TYPE mood RENAME VALUE 'ok' TO 'fine'", api_wait),
            ("ALTER TABLE item ALTER COLUMN stock TYPE bigint USING stock * 1000 + id", http_wait),
            ("ALTER TABLE item ADD COLUMN made timestamptz DEFAULT clock_timestamp()", cli_wait),
            ("UPDATE item SET price = 'x' WHERE id = 1; ALTER TABLE item DROP COLUMN made", api_wait),
        ]
        for ddl, wait in rounds:
            p.sql(ddl)
            wait()
            _assert_replica_equal(p, ddl)
        for table, wait in (("old1", cli_wait), ("old2", http_wait)):
            p.sql(f"DROP TABLE {table}")
            wait()
            with psycopg.connect(p.replica_dsn) as c:
                left = (
                    c.execute(f"SELECT count(*) FROM {table}").fetchone()
                    if f"public.{table}" in (_replica_tables(p))
                    else (0,)
                )
            assert left == (0,), f"{table} dropped, still {left} rows in the replica after wait"
        # a table just created: its name in the answer, whether the poll has seen it or not
        p.sql(
            "CREATE TABLE fresh (id int PRIMARY KEY, v text);"
            "INSERT INTO fresh SELECT g, 'x' FROM generate_series(1, 50000) g"
        )
        code, doc = get_json(base + "/wait?timeout=0.2")
        assert code == 503 and doc["unfollowed"] == ["public.fresh"], (code, doc)
        http_wait()
        _assert_replica_equal(p, "a table created")
        assert p.stop() == 0
        p.assert_equal()
    finally:
        p.close()


def test_rows_rewritten_while_run_was_down_during_a_copy_or_in_the_key(pg: PgCluster, tmp_path: Path) -> None:
    """A DDL that rewrites rows (1) while ``run`` is killed, with a partition attached with
    rows and a table renamed then: the next start's first poll must find them (the columns
    and partitions it acted on are in the log); (2) while the table is being copied: the
    chunks read before hold the old values, the copy starts over; (3) in a key column: the
    rows under the old keys must go."""
    p = Pipeline(pg, tmp_path, views=("postgres",))
    try:
        p.sql(
            "CREATE TABLE item (id int PRIMARY KEY, price numeric);"
            "INSERT INTO item SELECT g, g * 1.5 FROM generate_series(1, 2000) g;"
            "CREATE TABLE big (id int PRIMARY KEY, v int, pad text);"
            "INSERT INTO big SELECT g, g, repeat('p', 200) FROM generate_series(1, 150000) g;"
            "CREATE TABLE coded (id int PRIMARY KEY, v text);"
            "INSERT INTO coded SELECT g, 'v' || g FROM generate_series(1, 500) g;"
            "CREATE TABLE parted (id int PRIMARY KEY, v text) PARTITION BY RANGE (id);"
            "CREATE TABLE parted_1 PARTITION OF parted FOR VALUES FROM (0) TO (1000);"
            "INSERT INTO parted SELECT g, 'a' FROM generate_series(1, 999) g"
        )
        p.start()
        p.wait_caught_up()

        def cli_wait() -> None:
            r = p.cli("wait", "--timeout", "90", timeout=120)
            assert r.returncode == 0, r.stdout + r.stderr + p.output()[-3000:]

        p.kill()  # SIGKILL
        p.sql("ALTER TABLE item ALTER COLUMN price TYPE text USING price::text || ' EUR'")
        p.sql(
            "CREATE TABLE parted_2 (id int PRIMARY KEY, v text);"
            "INSERT INTO parted_2 SELECT g, 'b' FROM generate_series(1000, 1499) g;"
            "ALTER TABLE parted ATTACH PARTITION parted_2 FOR VALUES FROM (1000) TO (2000);"
            "ALTER TABLE coded RENAME TO coded_renamed; ALTER TABLE coded_renamed RENAME TO coded2"
        )
        p.start()
        cli_wait()
        _assert_replica_equal(p, "a type rewritten, a partition attached, a table renamed while run was down")
        assert "public.coded" not in _replica_tables(p)

        r = p.cli("snapshot", "--table", "public.big", "--no-wait")
        assert r.returncode == 0, r.stdout + r.stderr
        deadline = time.monotonic() + 60
        while not (_copied(p, "public.big") or 0) > 0:  # chunks with the old values logged
            assert time.monotonic() < deadline, "the copy of big never logged a chunk"
            time.sleep(0.02)
        assert _copied(p, "public.big") is not None, "the copy ended before the DDL: make big bigger"
        p.sql("ALTER TABLE big ALTER COLUMN v TYPE bigint USING v * 1000")
        cli_wait()
        _assert_replica_equal(p, "a type rewritten during the table's copy")

        p.sql("ALTER TABLE coded2 ALTER COLUMN id TYPE text USING 'k' || id")
        cli_wait()
        _assert_replica_equal(p, "a key column rewritten")
        assert p.stop() == 0
        p.assert_equal()
    finally:
        p.close()
