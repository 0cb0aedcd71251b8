"""A schema that lives (issue 10): syncline started on an empty database follows tables as
the application creates them, with every row (including rows written in the creating
transaction and rows written before the table was added to the publication), follows a
table that gets its key later, and empties a table that is dropped."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg

from syncline.log import open_control
from syncline.testing.harness import Pipeline
from syncline.testing.pgcluster import PgCluster


def duckdb_tables(p: Pipeline) -> set[str]:
    import duckdb

    with duckdb.connect(str(p.workdir / "wh.duckdb"), read_only=True) as con:
        return {str(r[0]) for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}


@contextlib.contextmanager
def capture_paused(p: Pipeline) -> Iterator[None]:
    """The capture process stopped (SIGSTOP) for the block: what the block writes is in the
    WAL before the capture can look at the catalogue or start a window."""
    capture = next(pid for pid, title in p.workers().items() if title.endswith("capture"))
    os.kill(capture, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(capture, signal.SIGCONT)


def wait_output(p: Pipeline, text: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while text not in p.output():
        assert time.monotonic() < deadline, p.output()[-3000:]
        time.sleep(0.1)


def request_copy(p: Pipeline, tables: list[str]) -> None:
    """A copy request as `syncline snapshot` stores it (the command itself reads the
    publication first, which a DDL holding its lock can make wait)."""
    control = open_control(p.cfg.log)
    try:
        control.request_copy(tables)
    finally:
        control.close()


def wait_followed(p: Pipeline, timeout: float = 90) -> None:
    r = p.cli("wait", "--timeout", str(timeout), timeout=timeout + 30)
    assert r.returncode == 0, r.stdout + r.stderr + p.output()[-3000:]


def converge(p: Pipeline, timeout: float = 90) -> None:
    """Every table followed and copied and every view caught up, `run` stopped cleanly, and
    every view equal to the source."""
    wait_followed(p, timeout)
    p.wait_caught_up()
    assert p.failed_views() == [], p.output()[-3000:]
    assert p.stop() == 0
    p.assert_equal()


def test_start_on_an_empty_database_then_migrate(pipeline: Pipeline) -> None:
    p = pipeline
    p.start()
    deadline = time.monotonic() + 60
    while "no table matches source.tables" not in p.output():
        assert time.monotonic() < deadline, p.output()
        assert p.proc is not None and p.proc.poll() is None, p.output()
        time.sleep(0.1)
    # a migration: tables created with rows in the same transaction, a partitioned table
    p.sql(
        "BEGIN;"
        "CREATE TABLE customer (id int PRIMARY KEY, name text);"
        "INSERT INTO customer SELECT g, 'c' || g FROM generate_series(1, 30000) g;"
        "CREATE TABLE orders (id bigserial PRIMARY KEY, customer int, total numeric)"
        "  PARTITION BY RANGE (id);"
        "CREATE TABLE orders_1 PARTITION OF orders FOR VALUES FROM (1) TO (100000);"
        "CREATE TABLE orders_2 PARTITION OF orders FOR VALUES FROM (100000) TO (MAXVALUE);"
        "INSERT INTO orders (customer, total) SELECT g % 100 + 1, g FROM generate_series(1, 500) g;"
        "COMMIT"
    )
    # writers keep changing the new tables while they are copied
    stop = threading.Event()

    def writer() -> None:
        with psycopg.connect(p.source_dsn, autocommit=True) as c:
            i = 0
            while not stop.is_set():
                i += 1
                c.execute("UPDATE customer SET name = name || '+' WHERE id = %s", (i * 7919 % 30000 + 1,))
                c.execute("INSERT INTO orders (customer, total) VALUES (%s, %s)", (i % 100 + 1, i))
                if i % 10 == 0:
                    c.execute("DELETE FROM customer WHERE id = %s", (i * 104729 % 30000 + 1,))

    t = threading.Thread(target=writer)
    t.start()
    try:
        time.sleep(4)
    finally:
        stop.set()
        t.join()
    # a table created without a key and given one later; one dropped
    p.sql(
        "CREATE TABLE tag AS SELECT g AS id, 'tag' || g AS label FROM generate_series(1, 50) g;"
        "CREATE TABLE scratch (id int PRIMARY KEY); INSERT INTO scratch VALUES (1), (2)"
    )
    wait_followed(p)
    assert "table public.tag is not followed: it has no primary key" in p.output()
    p.sql("ALTER TABLE tag ADD PRIMARY KEY (id); UPDATE tag SET label = 'x' WHERE id = 3")
    wait_followed(p)
    p.sql("DROP TABLE scratch")
    time.sleep(2)
    wait_followed(p)
    if "postgres" in p.views:
        deadline = time.monotonic() + 30
        while p.sql("SELECT to_regclass('public.scratch')", p.replica_db) != [(None,)]:
            assert time.monotonic() < deadline, p.output()[-3000:]
            time.sleep(0.3)
    assert p.stop() == 0
    p.assert_equal()
    p.assert_verified()
    if "duckdb" in p.views:
        assert "scratch" not in duckdb_tables(p)


def test_new_keyless_table_is_copied_whole(pg: PgCluster, tmp_path: Path) -> None:
    p = Pipeline(pg, tmp_path, views=("postgres", "duckdb"))
    try:
        p.sql("CREATE TABLE first (id int PRIMARY KEY)")
        p.start()
        p.wait_caught_up()
        p.sql(
            "CREATE TABLE log (at int, what text); ALTER TABLE log REPLICA IDENTITY FULL;"
            "INSERT INTO log VALUES (1, 'a'), (1, 'a'), (2, NULL)"
        )
        wait_followed(p)
        p.sql("INSERT INTO log VALUES (3, 'c'); DELETE FROM log WHERE ctid = (SELECT min(ctid) FROM log)")
        p.wait_caught_up()
        # a table dropped while run is stopped leaves the views at the next start
        p.sql("CREATE TABLE temp1 (id int PRIMARY KEY); INSERT INTO temp1 VALUES (1)")
        wait_followed(p)
        assert p.sql("SELECT count(*) FROM public.temp1", p.replica_db) == [(1,)]
        assert p.stop() == 0
        p.sql("DROP TABLE temp1; CREATE TABLE noid (a int); INSERT INTO noid VALUES (1)")
        p.start()
        deadline = time.monotonic() + 30
        while p.sql("SELECT to_regclass('public.temp1')", p.replica_db) != [(None,)]:
            assert time.monotonic() < deadline, p.output()[-3000:]
            time.sleep(0.3)
        assert "table public.noid is not followed" in p.output()
        r = p.cli("verify", "-q", "--view", "replica")  # noid is not followed: not compared
        assert r.returncode == 0, r.stdout + r.stderr
        assert p.stop() == 0
        p.sql("DROP TABLE noid")
        p.assert_equal()
    finally:
        p.close()


def test_ddl_that_rewrites_rows_is_copied_again(pipeline: Pipeline) -> None:
    p = pipeline
    p.sql(
        "CREATE TYPE mood AS ENUM ('sad', 'ok');"
        "CREATE TABLE item (id int PRIMARY KEY, price numeric, m mood);"
        "INSERT INTO item SELECT g, g * 1.5, 'ok' FROM generate_series(1, 2000) g"
    )
    p.start()
    p.wait_caught_up()
    p.sql("ALTER TABLE item ADD COLUMN stock int DEFAULT 7")
    p.sql("ALTER TABLE item ADD COLUMN added timestamptz DEFAULT clock_timestamp()")
    p.sql("ALTER TABLE item ALTER COLUMN price TYPE text USING price::text || ' EUR'")
    p.sql("ALTER TYPE mood RENAME VALUE 'ok' TO 'fine'")
    time.sleep(3)  # noticed on the next look at the catalogue
    wait_followed(p)
    assert p.stop() == 0
    p.assert_equal()


def test_snapshot_command_copies_a_table_again_online(pipeline: Pipeline) -> None:
    p = pipeline
    p.sql(
        "CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t SELECT g, 'v' FROM generate_series(1, 45000) g"
    )
    p.start()
    p.wait_caught_up()
    if "postgres" in p.views:  # damage the replica behind syncline's back
        p.sql("UPDATE public.t SET v = 'damaged' WHERE id % 1000 = 0", p.replica_db)
    bad = p.cli("snapshot", "--table", "public.nope")
    assert bad.returncode == 2 and "no followed table matches" in bad.stderr, bad.stderr
    r = p.cli("snapshot", "--table", "public.*", timeout=300)
    assert r.returncode == 0 and "done" in r.stdout, r.stdout + r.stderr
    wait_followed(p)
    assert p.stop() == 0
    p.assert_equal()


def test_renamed_schema_and_a_new_table_under_the_old_name(pg: PgCluster, tmp_path: Path) -> None:
    p = Pipeline(pg, tmp_path, views=("postgres", "duckdb"), tables="*.*")
    try:
        _renamed_schema(p)
    finally:
        p.close()


def _renamed_schema(p: Pipeline) -> None:
    p.start()
    p.sql(
        "CREATE SCHEMA s1; CREATE TABLE s1.t1 (id int PRIMARY KEY, v text); INSERT INTO s1.t1 VALUES (1, 'old')"
    )
    p.sql("CREATE TABLE public.keep (id int PRIMARY KEY)")
    wait_followed(p)
    p.sql("ALTER SCHEMA s1 RENAME TO s2")
    time.sleep(2)
    p.sql(
        "CREATE SCHEMA s1; CREATE TABLE s1.t1 (id int PRIMARY KEY, v text);"
        "INSERT INTO s1.t1 VALUES (2, 'new'), (3, 'new')"
    )
    wait_followed(p)
    p.sql("UPDATE s2.t1 SET v = 'old2'")
    wait_followed(p)
    assert p.sql("SELECT id, v FROM s2.t1", p.replica_db) == [(1, "old2")]
    assert p.sql("SELECT id, v FROM s1.t1 ORDER BY id", p.replica_db) == [(2, "new"), (3, "new")]
    assert p.stop() == 0
    p.assert_verified()


def test_attach_detach_and_drop_partitions(pipeline: Pipeline) -> None:
    p = pipeline
    p.sql(
        "CREATE TABLE m (id int, region text, v int, PRIMARY KEY (id, region)) PARTITION BY LIST (region);"
        "CREATE TABLE m_eu PARTITION OF m FOR VALUES IN ('eu');"
        "CREATE TABLE m_us PARTITION OF m FOR VALUES IN ('us');"
        "INSERT INTO m SELECT g, CASE WHEN g % 2 = 0 THEN 'eu' ELSE 'us' END, g FROM generate_series(1, 100) g;"
        "CREATE TABLE m_asia (id int NOT NULL, region text NOT NULL, v int);"
        "INSERT INTO m_asia SELECT g, 'asia', g FROM generate_series(1000, 1010) g"
    )
    p.start()
    p.wait_caught_up()
    p.sql("ALTER TABLE m ATTACH PARTITION m_asia FOR VALUES IN ('asia')")
    time.sleep(2.5)
    wait_followed(p)
    p.sql("ALTER TABLE m DETACH PARTITION m_us; DROP TABLE m_us")
    time.sleep(2.5)
    wait_followed(p)
    p.sql("UPDATE m SET v = -v WHERE id < 10")
    wait_followed(p)
    assert p.stop() == 0
    p.assert_equal()
    p.assert_verified()


def test_kill_during_a_watermark_copy_resumes_it(pg: PgCluster, tmp_path: Path) -> None:
    p = Pipeline(pg, tmp_path, views=("postgres", "duckdb"))
    stop = threading.Event()
    try:
        p.sql("CREATE TABLE first (id int PRIMARY KEY)")
        p.start()
        p.wait_caught_up()
        p.sql(
            "CREATE TABLE big (id int PRIMARY KEY, v int, pad text);"
            "INSERT INTO big SELECT g, 0, repeat('x', 200) FROM generate_series(1, 300000) g"
        )

        def writer() -> None:
            with psycopg.connect(p.source_dsn, autocommit=True) as c:
                i = 0
                while not stop.is_set():
                    i += 1
                    k = i * 7919 % 300000 + 1
                    c.execute("UPDATE big SET v = v + 1 WHERE id = %s", (k,))
                    if i % 50 == 0:
                        c.execute("DELETE FROM big WHERE id = %s", (k,))
                        c.execute("INSERT INTO big VALUES (%s, -1, 'again')", (k,))

        t = threading.Thread(target=writer)
        t.start()
        deadline = time.monotonic() + 60
        while "rows so far" not in p.output():
            assert time.monotonic() < deadline, p.output()[-3000:]
            time.sleep(0.05)
        st = json.loads(p.cli("status", "--json").stdout)
        big = st["log"]["copying"]["public.big"]
        assert big["rows"] >= 20000 and big["estimate"] >= 250000 and big["rows_per_second"] > 0, big
        assert "public.big(" in p.cli("status").stdout
        p.kill()  # inside the copy
        p.start()
        deadline = time.monotonic() + 60
        while "resuming the copy of public.big" not in p.output():
            assert time.monotonic() < deadline, p.output()[-3000:]
            time.sleep(0.1)
        m = re.search(r"resuming the copy of public\.big after (\d+) rows", p.output())
        assert m is not None and int(m.group(1)) > 0, p.output()[-3000:]  # resumed, not restarted
        time.sleep(1)
        stop.set()
        t.join()
        wait_followed(p, timeout=180)
        assert p.stop() == 0
        p.assert_equal()
    finally:
        stop.set()
        p.close()


def test_keyed_views_leave_out_a_keyless_table_created_later(pg: PgCluster, tmp_path: Path) -> None:
    p = Pipeline(pg, tmp_path, views=("redis", "tantivy"))
    try:
        p.sql("CREATE TABLE item (id int PRIMARY KEY, name text)")
        p.start()
        p.wait_caught_up()
        p.sql(
            "CREATE TABLE audit (at int, what text); ALTER TABLE audit REPLICA IDENTITY FULL;"
            "INSERT INTO audit VALUES (1, 'x'); INSERT INTO item VALUES (1, 'lamp')"
        )
        wait_followed(p)
        p.sql("INSERT INTO audit VALUES (2, 'y'); INSERT INTO item VALUES (2, 'desk')")
        p.wait_caught_up()
        out = p.output()
        assert "cannot follow table public.audit" in out and "left out of this view" in out, out
        assert not p.failed_views()
        p.assert_verified()  # verify leaves the table out of these views too
        assert p.stop() == 0
        p.start()  # a restart is not refused for it (only a first start is)
        p.sql("INSERT INTO item VALUES (3, 'chair')")
        p.wait_caught_up()
        assert p.stop() == 0
    finally:
        p.close()


def test_resync_after_a_lost_slot(pg: PgCluster, tmp_path: Path) -> None:
    p = Pipeline(pg, tmp_path, views=("postgres", "duckdb"))
    try:
        p.sql(
            "CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t SELECT g, 'v' FROM generate_series(1, 30) g"
        )
        p.start()
        p.wait_caught_up()
        assert p.stop() == 0
        p.sql(f"SELECT pg_drop_replication_slot('{p.slot}')")  # lost, as after a failover
        p.sql(
            "DELETE FROM t WHERE id <= 10; UPDATE t SET v = 'gap' WHERE id = 20; INSERT INTO t VALUES (99, 'new')"
        )
        p.start()
        assert p.proc is not None and p.proc.wait(60) != 0
        assert "syncline resync" in p.output()
        r = p.cli("resync")
        assert r.returncode == 0 and "new slot" in r.stdout, r.stdout + r.stderr
        again = p.cli("resync")
        assert again.returncode == 2 and "healthy" in again.stderr, again.stderr
        p.start()
        wait_followed(p)
        p.sql("UPDATE t SET v = 'after' WHERE id = 30")
        p.wait_caught_up()
        assert p.stop() == 0
        p.assert_equal()
    finally:
        p.close()


def test_replica_sequences_follow_the_source(pg: PgCluster, tmp_path: Path) -> None:
    p = Pipeline(pg, tmp_path, views=("postgres",))
    try:
        p.sql(
            "CREATE TABLE a (id bigserial PRIMARY KEY, v text);"
            "CREATE TABLE b (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, v text);"
            "CREATE TABLE tick (id int PRIMARY KEY, n int); INSERT INTO tick VALUES (1, 0)"
        )
        p.start()
        p.wait_caught_up()
        p.sql(
            "INSERT INTO a (v) SELECT 'x' FROM generate_series(1, 42); INSERT INTO b (v) VALUES ('y'), ('z')"
        )
        want = p.sql("SELECT last_value FROM a_id_seq")[0][0], p.sql("SELECT last_value FROM b_id_seq")[0][0]
        deadline = time.monotonic() + 30
        while True:
            p.sql("UPDATE tick SET n = n + 1")  # batches carry the sequences to the replica
            p.wait_caught_up()
            have = p.sql(
                "SELECT to_regclass('public.a_id_seq'), to_regclass('public.b_id_seq')", p.replica_db
            )
            got = None
            if None not in have[0]:
                got = p.sql(
                    "SELECT (SELECT last_value FROM public.a_id_seq), (SELECT last_value FROM public.b_id_seq)",
                    p.replica_db,
                )[0]
            if got == want:
                break
            assert time.monotonic() < deadline, (got, want)
            time.sleep(0.5)
        assert p.stop() == 0
    finally:
        p.close()


def test_partitioned_root_columns_reshuffled_and_unlogged_tables(pipeline: Pipeline) -> None:
    p = pipeline
    p.sql(
        "CREATE TABLE r (id int, region text, b text, PRIMARY KEY (id, region)) PARTITION BY LIST (region);"
        "CREATE TABLE r_a PARTITION OF r FOR VALUES IN ('a'); CREATE TABLE r_b PARTITION OF r FOR VALUES IN ('b');"
        "INSERT INTO r SELECT g, 'a', 'x' FROM generate_series(1, 20) g"
    )
    p.start()
    p.wait_caught_up()
    p.sql("UPDATE r SET region = 'b' WHERE id <= 5")  # cross-partition updates
    p.sql("ALTER TABLE r DROP COLUMN b, ADD COLUMN c int, ADD COLUMN b text")
    p.sql("UPDATE r SET region = 'a', c = 1, b = 'y' WHERE id <= 3; UPDATE r SET c = 2 WHERE id > 15")
    p.sql("CREATE UNLOGGED TABLE scratchpad (id int PRIMARY KEY); INSERT INTO scratchpad VALUES (1)")
    time.sleep(2.5)  # the next look at the catalogue queues a copy of r (b was dropped and re-added)
    wait_followed(p)
    p.wait_caught_up()
    assert p.proc is not None and p.proc.poll() is None
    p.sql("DROP TABLE scratchpad")
    assert p.stop() == 0
    p.assert_equal()


def test_inheritance_parent_and_child_are_followed_each_on_its_own(pg: PgCluster, tmp_path: Path) -> None:
    p = Pipeline(pg, tmp_path, views=("postgres", "duckdb"))
    try:
        p.start()
        p.wait_caught_up()  # streaming: the tables below are followed as they appear
        p.sql(
            "CREATE TABLE parent (id int PRIMARY KEY, v text);"
            "CREATE TABLE child (extra int) INHERITS (parent); ALTER TABLE child ADD PRIMARY KEY (id);"
            "INSERT INTO parent VALUES (1, 'p'); INSERT INTO child VALUES (2, 'c', 5)"
        )
        wait_followed(p)
        p.sql("UPDATE parent SET v = v || '!'")  # through the parent: both tables' rows change
        p.wait_caught_up()
        published = {
            r[0]
            for r in p.sql(f"SELECT tablename FROM pg_publication_tables WHERE pubname = 'p_{p.slot[2:]}'")
        }
        assert {"parent", "child"} <= published, published
        assert p.sql("SELECT id, v FROM public.parent", p.replica_db) == [(1, "p!")]
        assert p.stop() == 0
        p.assert_equal()
    finally:
        p.close()


def test_a_table_that_loses_its_key_leaves_and_comes_back(pg: PgCluster, tmp_path: Path) -> None:
    p = Pipeline(pg, tmp_path, views=("postgres", "duckdb"))
    try:
        p.sql("CREATE TABLE k (id int PRIMARY KEY, v text); INSERT INTO k VALUES (1, 'a'), (2, 'b')")
        p.start()
        p.wait_caught_up()
        p.sql("ALTER TABLE k DROP CONSTRAINT k_pkey")
        deadline = time.monotonic() + 30
        while "lost its primary key" not in p.output():
            assert time.monotonic() < deadline, p.output()[-3000:]
            time.sleep(0.2)
        # no longer published: the application's updates are not refused
        p.sql("UPDATE k SET v = 'b2' WHERE id = 2; INSERT INTO k VALUES (3, 'c')")
        p.sql("ALTER TABLE k ADD PRIMARY KEY (id)")
        time.sleep(2)
        wait_followed(p)
        assert p.stop() == 0
        p.assert_equal()
    finally:
        p.close()


def test_a_write_begun_before_the_table_joined_the_publication_is_not_lost(
    pg: PgCluster, tmp_path: Path
) -> None:
    """A transaction that changed a new table before it joined the publication (that change is
    decoded as unpublished) and commits after: its effect must come from the copy, so the
    copy waits for it to end."""
    p = Pipeline(pg, tmp_path, views=("postgres",))
    try:
        p.start()
        p.wait_caught_up()
        # the capture paused: it cannot add the table before the held transaction wrote to it
        with capture_paused(p):
            p.sql(
                "CREATE TABLE t (id int PRIMARY KEY, v text);"
                "INSERT INTO t SELECT g, 'old' FROM generate_series(1, 100) g"
            )
            held = psycopg.connect(p.source_dsn)
            held.execute("UPDATE t SET v = 'new' WHERE id = 7")  # not committed yet
        with held:
            deadline = time.monotonic() + 30
            while not p.sql("SELECT 1 FROM pg_publication_tables WHERE tablename = 't'"):
                assert time.monotonic() < deadline, p.output()[-3000:]
                time.sleep(0.1)
            time.sleep(3)  # a copy that did not wait would be done by now, with 'old'
            assert "public.t" in p.copying(), p.output()[-3000:]
            held.commit()
        wait_followed(p)
        assert p.sql("SELECT v FROM public.t WHERE id = 7", p.replica_db) == [("new",)], p.output()[-3000:]
        assert p.stop() == 0
        p.assert_equal()
    finally:
        p.close()


def test_a_first_start_killed_during_its_copy_resumes_it(pg: PgCluster, tmp_path: Path) -> None:
    """The first copy is watermark chunks too: killed part-way, the next start goes on from
    its last chunk (not from row 0), and every view ends equal."""
    p = Pipeline(pg, tmp_path, views=("postgres", "duckdb"))
    try:
        p.sql(
            "CREATE TABLE big (id int PRIMARY KEY, v int, pad text);"
            "INSERT INTO big SELECT g, 0, repeat('x', 100) FROM generate_series(1, 200000) g"
        )
        p.start()
        deadline = time.monotonic() + 60
        while "rows so far" not in p.output():
            assert time.monotonic() < deadline, p.output()[-3000:]
            time.sleep(0.05)
        p.sql("UPDATE big SET v = 1 WHERE id % 997 = 0")
        p.kill()
        p.start()
        deadline = time.monotonic() + 60
        while "resuming the copy of public.big" not in p.output():
            assert time.monotonic() < deadline, p.output()[-3000:]
            time.sleep(0.1)
        m = re.search(r"resuming the copy of public\.big after (\d+) rows", p.output())
        assert m is not None and int(m.group(1)) >= 20000, p.output()[-3000:]  # not from 0
        # source.copy_parallel = 2 (the default): two chunks of 20,000 rows per window
        assert "copy of public.big: 40000 rows so far" in p.output(), p.output()[-3000:]
        assert "dropping slot" not in p.output()
        p.wait_caught_up(timeout=180)
        assert p.stop() == 0
        p.assert_equal()
    finally:
        p.close()


def test_resync_after_the_server_invalidated_the_slot(pg: PgCluster, tmp_path: Path) -> None:
    """``max_slot_wal_keep_size`` exceeded while `run` was stopped: the server invalidates the
    slot (wal_status = lost); `run` refuses it, `resync` replaces it and the views converge."""
    p = Pipeline(pg, tmp_path, views=("postgres",))
    try:
        p.sql(
            "CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t SELECT g, 'v' FROM generate_series(1, 100) g"
        )
        p.start()
        p.wait_caught_up()
        assert p.stop() == 0
        pg.psql("ALTER SYSTEM SET max_slot_wal_keep_size = '1MB'")
        pg.psql("SELECT pg_reload_conf()")
        for i in range(40):  # about 40 MB of WAL past the slot
            p.sql(f"UPDATE t SET v = repeat('x', 1000) || {i}; SELECT pg_switch_wal()")
            if i % 10 == 9:
                p.sql("CHECKPOINT")
            status = p.sql(f"SELECT wal_status FROM pg_replication_slots WHERE slot_name = '{p.slot}'")
            if status == [("lost",)]:
                break
        assert status == [("lost",)], status
        p.sql("DELETE FROM t WHERE id <= 10")
        p.start()
        assert p.proc is not None and p.proc.wait(60) != 0
        assert "wal_status = lost" in p.output() and "syncline resync" in p.output(), p.output()[-2000:]
        r = p.cli("resync")
        assert r.returncode == 0 and "new slot" in r.stdout, r.stdout + r.stderr
        p.start()
        converge(p)
    finally:
        pg.psql("ALTER SYSTEM RESET max_slot_wal_keep_size")
        pg.psql("SELECT pg_reload_conf()")
        p.close()


def test_copies_wait_while_a_view_is_far_behind(pg: PgCluster, tmp_path: Path) -> None:
    """A new table's copy does not start while a running view is more than 5,000 log records
    behind (the copy would bury the live stream); it runs once the view has caught up."""
    p = Pipeline(pg, tmp_path, views=("postgres",))
    try:
        p.sql("CREATE TABLE busy (id int PRIMARY KEY, n int); INSERT INTO busy VALUES (1, 0)")
        p.start()
        p.wait_caught_up()
        with psycopg.connect(p.replica_dsn) as blocker:
            blocker.execute("LOCK TABLE public.busy IN ACCESS EXCLUSIVE MODE")  # the view stalls
            with psycopg.connect(p.source_dsn, autocommit=True) as c:
                for i in range(6000):  # 6,000 transactions: 6,000 log records
                    c.execute("UPDATE busy SET n = %s WHERE id = 1", (i,))
            p.sql("CREATE TABLE late (id int PRIMARY KEY); INSERT INTO late SELECT generate_series(1, 1000)")
            deadline = time.monotonic() + 30
            while "copies wait: a view is more than" not in p.output():
                assert time.monotonic() < deadline, p.output()[-3000:]
                time.sleep(0.2)
            time.sleep(2)
            assert "public.late" in p.copying(), p.output()[-3000:]  # still waiting
            blocker.rollback()
        converge(p, timeout=120)
    finally:
        p.close()


def test_a_chunk_read_while_a_ddl_holds_the_table_gets_the_new_shape(pg: PgCluster, tmp_path: Path) -> None:
    """A chunk that waits for an ALTER COLUMN TYPE to commit reads its rows in the new type:
    the shape logged with the chunk must be the one after the ALTER, not the one before."""
    p = Pipeline(pg, tmp_path, views=("postgres",))
    try:
        p.sql(
            "CREATE TABLE item (id int PRIMARY KEY, price numeric); INSERT INTO item SELECT g, g FROM generate_series(1, 50) g"
        )
        p.start()
        p.wait_caught_up()
        with psycopg.connect(p.source_dsn) as ddl:
            ddl.execute("ALTER TABLE item ALTER COLUMN price TYPE text USING price::text || ' EUR'")
            # the request as `syncline snapshot` stores it (the command itself reads the
            # publication, which waits for the ALTER's lock on PostgreSQL 16)
            request_copy(p, ["public.item"])
            time.sleep(3)  # the chunk is started and waits for the ALTER's lock
            ddl.commit()
        converge(p)
    finally:
        p.close()


def test_a_commit_not_yet_visible_is_not_overwritten_by_a_chunk(pg: PgCluster, tmp_path: Path) -> None:
    """A commit waiting for a synchronous standby is in the WAL (streamed, logged, applied)
    while new snapshots still see its transaction as running. A chunk read then would log the
    row as it was before that commit, after it: the copy must wait until it is visible."""
    p = Pipeline(pg, tmp_path, views=("postgres",))
    writer = psycopg.connect(p.source_dsn, autocommit=True)
    update = threading.Thread(target=writer.execute, args=("UPDATE t SET v = 'new' WHERE id = 7",))
    try:
        p.sql(
            "CREATE TABLE t (id int PRIMARY KEY, v text);"
            "INSERT INTO t SELECT g, 'old' FROM generate_series(1, 100) g"
        )
        p.start()
        wait_followed(p)
        # only the writer's commits wait for the (absent) synchronous standby
        p.sql("ALTER SYSTEM SET synchronous_commit = 'local'")
        p.sql("ALTER SYSTEM SET synchronous_standby_names = 'nobody'")
        p.sql("SELECT pg_reload_conf()")
        time.sleep(0.5)
        writer.execute("SET synchronous_commit = on")
        update.start()
        deadline = time.monotonic() + 30
        while p.sql("SELECT v FROM public.t WHERE id = 7", p.replica_db) != [("new",)]:
            assert time.monotonic() < deadline, p.output()[-3000:]
            time.sleep(0.1)
        assert p.sql("SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'SyncRep'") == [(1,)]
        assert p.sql("SELECT v FROM t WHERE id = 7") == [("old",)]  # not visible yet
        request_copy(p, ["public.t"])
        time.sleep(4)  # a chunk that did not wait would have logged 'old' by now
        assert "public.t" in p.copying(), p.output()[-3000:]
        assert p.sql("SELECT v FROM public.t WHERE id = 7", p.replica_db) == [("new",)], p.output()[-3000:]
        p.sql("ALTER SYSTEM RESET synchronous_standby_names")
        p.sql("SELECT pg_reload_conf()")
        update.join(30)
        converge(p)
        assert p.sql("SELECT v FROM public.t WHERE id = 7", p.replica_db) == [("new",)]
    finally:
        p.sql("ALTER SYSTEM RESET synchronous_standby_names")
        p.sql("ALTER SYSTEM RESET synchronous_commit")
        p.sql("SELECT pg_reload_conf()")
        if update.is_alive():
            update.join(30)
        writer.close()
        p.close()


def test_dropped_tables_leave_the_views_or_stay_when_kept(pg: PgCluster, tmp_path: Path) -> None:
    """DROP TABLE drops the replica's table (and it stays dropped after a restart); a view with
    keep_dropped_tables keeps the table and its rows, until a new table takes its name."""
    import duckdb

    p = Pipeline(pg, tmp_path, views=("postgres", "duckdb"))
    try:
        text = p.config_path.read_text()
        p.config_path.write_text(
            text.replace('kind = "duckdb"', 'kind = "duckdb"\nkeep_dropped_tables = true')
        )
        p.sql(
            "CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 5) g;"
            "CREATE TABLE u (id int PRIMARY KEY); INSERT INTO u VALUES (1), (2)"
        )
        p.start()
        wait_followed(p)
        assert p.sql("SELECT count(*) FROM public.t", p.replica_db) == [(5,)]
        p.sql("DROP TABLE t")
        deadline = time.monotonic() + 30
        while p.sql("SELECT to_regclass('public.t')", p.replica_db) != [(None,)]:
            assert time.monotonic() < deadline, p.output()[-3000:]
            time.sleep(0.2)
        p.sql("INSERT INTO u VALUES (3)")
        p.wait_caught_up()
        assert p.stop() == 0
        with duckdb.connect(str(p.workdir / "wh.duckdb"), read_only=True) as con:
            assert con.execute("SELECT count(*) FROM public.t").fetchall() == [(5,)]
        # a restart does not bring the dropped table back into the replica
        p.start()
        p.sql("INSERT INTO u VALUES (4)")
        p.wait_caught_up()
        assert p.sql("SELECT to_regclass('public.t')", p.replica_db) == [(None,)], p.output()[-3000:]
        # a new table under the kept one's name replaces it
        p.sql("CREATE TABLE t (id int PRIMARY KEY, w int); INSERT INTO t VALUES (10, 1), (11, 2)")
        converge(p)
        with duckdb.connect(str(p.workdir / "wh.duckdb"), read_only=True) as con:
            assert sorted(con.execute("SELECT id, w FROM public.t").fetchall()) == [(10, 1), (11, 2)]
    finally:
        p.close()


def test_a_partition_detached_during_writes_copies_the_root_again_exactly(
    pg: PgCluster, tmp_path: Path
) -> None:
    """A copy that starts over (a partition detached) empties the table at its low watermark:
    a change made inside the window to a key the chunk leaves out must survive."""
    p = Pipeline(pg, tmp_path, views=("postgres",), tables="public.m", extra_source="copy_parallel = 1")
    try:
        p.sql(
            "CREATE TABLE m (id int, region text, v text, PRIMARY KEY (id, region)) PARTITION BY LIST (region);"
            "CREATE TABLE m_eu PARTITION OF m FOR VALUES IN ('eu');"
            "CREATE TABLE m_us PARTITION OF m FOR VALUES IN ('us');"
            "INSERT INTO m SELECT g, CASE WHEN g % 2 = 0 THEN 'eu' ELSE 'us' END, 'old'"
            " FROM generate_series(1, 20) g"
        )
        p.start()
        wait_followed(p)
        held = psycopg.connect(p.source_dsn)
        with capture_paused(p):
            p.sql("ALTER TABLE m DETACH PARTITION m_us; DROP TABLE m_us")
            # the window's chunk waits for this lock, after its low watermark
            held.execute("LOCK TABLE m IN ACCESS EXCLUSIVE MODE")
        with held:
            wait_output(p, "partitions detached or dropped: copying it again")
            time.sleep(1)
            held.execute("UPDATE m SET v = 'new' WHERE id = 2")
            held.commit()
        converge(p)
        assert p.sql("SELECT v FROM public.m WHERE id = 2", p.replica_db) == [("new",)]
    finally:
        p.close()


def test_an_update_keeping_toasted_values_inside_a_copy_window_keeps_them(
    pg: PgCluster, tmp_path: Path
) -> None:
    """pgoutput leaves an unchanged TOASTed value out of an update. Inside a new table's
    copy window such an update touches its key, so the chunk's row is not logged and the
    views have no stored row to take the value from: the copy must supply it."""
    p = Pipeline(pg, tmp_path, views=("postgres", "tantivy"), extra_source="copy_parallel = 1")
    barrier = psycopg.connect(p.source_dsn)
    locker = psycopg.connect(p.source_dsn)
    try:
        p.start()
        p.wait_caught_up()
        with capture_paused(p):
            p.sql(
                "CREATE TABLE doc (id int PRIMARY KEY, body text, rev int);"
                "ALTER TABLE doc ALTER body SET STORAGE EXTERNAL;"
                "INSERT INTO doc SELECT g, repeat(md5(g::text), 200), 0 FROM generate_series(1, 20) g"
            )
            barrier.execute("SELECT pg_current_xact_id()")  # running when doc joins: the copy waits
        wait_output(p, "following new table public.doc")
        # the first chunk will wait for this lock, after its low watermark
        locker.execute("LOCK TABLE doc IN ACCESS EXCLUSIVE MODE")
        barrier.commit()
        time.sleep(1.5)
        locker.execute("UPDATE doc SET rev = rev + 1 WHERE id IN (3, 4)")  # body unchanged: not sent
        locker.commit()
        converge(p)
        assert p.sql("SELECT count(*), sum(rev) FROM public.doc", p.replica_db) == [(20, 2)]
    finally:
        barrier.close()
        locker.close()
        p.close()


def test_columns_renamed_dropped_or_added_with_no_row_change_after_reach_the_views(
    pg: PgCluster, tmp_path: Path
) -> None:
    """pgoutput sends a table's new shape only with its next change: DDL that is the last
    thing a table sees must still reach every view (the catalogue poll logs it)."""
    p = Pipeline(pg, tmp_path, views=("postgres", "duckdb", "redis", "tantivy"))
    try:
        p.sql(
            "CREATE TABLE t (id int PRIMARY KEY, a text, b int, c text);"
            "INSERT INTO t SELECT g, 'a' || g, g, 'c' FROM generate_series(1, 20) g"
        )
        p.start()
        wait_followed(p)
        p.sql("ALTER TABLE t RENAME COLUMN a TO a2")
        p.sql("ALTER TABLE t DROP COLUMN b")
        p.sql("ALTER TABLE t ADD COLUMN d int")
        want = [("id",), ("a2",), ("c",), ("d",)]
        q = "SELECT column_name FROM information_schema.columns WHERE table_name = 't' ORDER BY ordinal_position"
        deadline = time.monotonic() + 30
        while p.sql(q, p.replica_db) != want:
            assert time.monotonic() < deadline, (p.sql(q, p.replica_db), p.output()[-3000:])
            time.sleep(0.2)
        converge(p)
    finally:
        p.close()
