"""The conformance suite: every view kind, fed by the real pipeline (``syncline run`` as a
process) from a real PostgreSQL, must end equal to the source, value for value, in
PostgreSQL's text form. Each test runs the postgres and duckdb views side by side."""

from __future__ import annotations

import os
import threading
import time

import psycopg
import pytest

from syncline.core.events import Checkpoint
from syncline.log import open_cursor
from syncline.testing.harness import Pipeline

ZOO_DDL = """
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE DOMAIN posint AS integer CHECK (VALUE > 0);
CREATE TYPE pair AS (a int, b text);
CREATE TABLE zoo (
  id int PRIMARY KEY,
  n numeric, n2 numeric(12,3), f8 float8, f4 float4, i2 smallint, i8 bigint, b boolean,
  t text, vc varchar(10), ch char(3),
  ts timestamp, tstz timestamptz, d date, tm time, tmtz timetz, iv interval,
  arr int[], arr2 text[], j json, jb jsonb, by bytea, u uuid, ip inet, mac macaddr,
  e mood, dom posint, comp pair, r int4range, tsr tstzrange, m money, bits bit(4),
  earr mood[], "Mixed Case" text, pt point
);
"""


pytestmark = pytest.mark.parametrize("pipeline", ["embedded", "nats"], indirect=True)
"""Every conformance test runs on each log backend."""
EXTRA_VIEWS = ("ducklake", "iceberg")
"""The DuckLake view beside the four (the warehouse kinds all meet the suite)."""

BIG_NUMERIC = "1" + "234567890" * 111 + "." + "5" * 20
ZOO_ROWS = [
    # id, n, n2, f8, f4, ts, tstz, iv, arr, arr2, j, jb, by
    dict(
        n=BIG_NUMERIC,
        n2="-123456789.125",
        f8="-0",
        f4="1.5",
        ts="infinity",
        tstz="2021-03-14 02:30:00 America/New_York",
        d="0044-03-15 BC",
        iv="1 year 2 mons 3 days 04:05:06.789",
        arr="{{1,2},{3,NULL}}",
        arr2='{"a b","c,d","\\"q\\"",NULL,"NULL"}',
        j='{"a": 1,  "a": 2}',
        jb='{"b": [1, 2.50, null], "a": "x"}',
        by="\\x00ff10",
        t="tab\there\nnewline \\ back",
        e="happy",
        comp='(1,"x y")',
        r="[1,10)",
        tsr='["2020-01-01 00:00:00+00",infinity)',
    ),
    dict(
        n="NaN",
        n2="NaN",
        f8="NaN",
        f4="-Infinity",
        ts="-infinity",
        tstz="infinity",
        d="infinity",
        iv="-1 days +02:00:00",
        arr="{}",
        arr2="{}",
        j="[]",
        jb="{}",
        by="\\x",
        t="",
        e="sad",
        comp="(,)",
        r="empty",
        tsr="empty",
    ),
    dict(
        n="Infinity",
        n2="0.001",
        f8="Infinity",
        f4="3.4028235e+38",
        ts="0044-03-15 12:00:00 BC",
        tstz="0001-01-01 00:00:00+00 BC",
        d="2021-11-07",
        iv="0",
        arr="{NULL}",
        arr2='{"ü","日本"}',
        j='{"k": "v"}',
        jb='{"nested": {"deep": [true, false]}}',
        by="\\xdeadbeef",
        t="üñïçødé ☃",
        e="ok",
        comp='(-5,"")',
        r="(,5]",
        tsr="(,)",
    ),
    dict(
        n="-Infinity",
        n2="1.5",
        f8="1.7976931348623157e+308",
        f4="1e-45",
        ts="2021-03-14 02:30:00.123456",
        tstz="2021-11-07 01:30:00-04",
        d="1999-12-31",
        iv="178000000 years",
        arr="{{{1}},{{2}}}",
        arr2="{a}",
        j="1",
        jb="1",
        by="\\x00",
        t="x",
        e="sad",
        comp="(0,a)",
        r="[0,1]",
        tsr=None,
    ),
    dict(
        n="0.000000000000000000001",
        n2=None,
        f8="5e-324",
        f4="-0",
        ts=None,
        tstz=None,
        d=None,
        iv=None,
        arr=None,
        arr2=None,
        j=None,
        jb=None,
        by=None,
        t=None,
        e=None,
        comp=None,
        r=None,
        tsr=None,
    ),
]


def zoo_insert(rid: int, row: dict[str, str | None]) -> tuple[str, tuple[object, ...]]:
    cols = [
        "id",
        *row.keys(),
        "i2",
        "i8",
        "b",
        "vc",
        "ch",
        "tm",
        "tmtz",
        "u",
        "ip",
        "mac",
        "dom",
        "m",
        "bits",
        "earr",
        "Mixed Case",
        "pt",
    ]
    vals: list[object] = [
        rid,
        *row.values(),
        -32768,
        9223372036854775807,
        rid % 2 == 0,
        "vc",
        "ab",
        "23:59:59.999999",
        "12:00:00+05:30",
        "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
        "2001:db8::1/64",
        "08:00:2b:01:02:03",
        rid,
        "12.34",
        "1010",
        "{sad,happy}",
        "MiXeD",
        "(1.5,-2)",
    ]
    q = "INSERT INTO zoo ({}) VALUES ({})".format(  # noqa: S608 - fixed test columns
        ", ".join(f'"{c}"' for c in cols), ", ".join(["%s"] * len(cols))
    )
    return q, tuple(vals)


def run_sql(p: Pipeline, statements: list[tuple[str, tuple[object, ...]]]) -> None:
    with psycopg.connect(p.source_dsn, autocommit=True) as conn:
        for q, args in statements:
            conn.execute(q, args)  # type: ignore[arg-type]


def test_type_zoo_snapshot_and_stream(pipeline: Pipeline) -> None:
    p = pipeline
    p.sql(ZOO_DDL)
    run_sql(p, [zoo_insert(i + 1, r) for i, r in enumerate(ZOO_ROWS)])  # snapshot path
    p.start()
    p.wait_caught_up()
    run_sql(p, [zoo_insert(i + 101, r) for i, r in enumerate(ZOO_ROWS)])  # streaming path
    p.sql("UPDATE zoo SET n = '-0.5', f8 = '-1e-300', jb = jb || '{\"z\": 1}' WHERE id IN (1, 101)")
    p.sql("UPDATE zoo SET id = id + 1000 WHERE id = 2")  # primary-key update
    p.sql("DELETE FROM zoo WHERE id IN (3, 103)")
    p.wait_caught_up()
    assert p.stop() == 0
    p.assert_equal()


def test_toast_unchanged_values_are_kept(pipeline: Pipeline) -> None:
    p = pipeline
    p.sql(
        "CREATE TABLE docs (id int PRIMARY KEY, body text, note text, meta jsonb);"
        "ALTER TABLE docs ALTER body SET STORAGE EXTERNAL;"
        "CREATE TABLE docs_full (id int PRIMARY KEY, body text, note text);"
        "ALTER TABLE docs_full REPLICA IDENTITY FULL;"
        "ALTER TABLE docs_full ALTER body SET STORAGE EXTERNAL;"
        "INSERT INTO docs SELECT g, repeat(md5(g::text), 2000), 'a',"
        " (SELECT jsonb_agg(md5(x::text)) FROM generate_series(1, 400) x) FROM generate_series(1, 3) g;"
        "INSERT INTO docs_full SELECT g, repeat(md5(g::text), 2000), 'a' FROM generate_series(1, 3) g;"
    )
    p.start()
    p.wait_caught_up()
    p.sql(
        "INSERT INTO docs SELECT g, repeat(md5(g::text), 3000), 'new', '[1]' FROM generate_series(10, 12) g"
    )
    p.sql("UPDATE docs SET note = 'b'")  # body and meta unchanged: sent as 'u'
    p.sql("UPDATE docs SET id = id + 100 WHERE id IN (1, 10)")  # key moves, TOAST unchanged
    p.sql("BEGIN; UPDATE docs SET note = 'c' WHERE id = 2; UPDATE docs SET note = 'd' WHERE id = 2; COMMIT")
    p.sql("UPDATE docs_full SET note = 'b'")
    p.sql("UPDATE docs_full SET id = id + 100 WHERE id = 1")
    p.wait_caught_up()
    assert p.stop() == 0
    p.assert_equal()
    rows = p.sql("SELECT count(*) FROM docs WHERE length(body) > 60000", p.replica_db)
    assert rows[0][0] == 6


def test_truncate_cascade_and_restart_identity(pipeline: Pipeline) -> None:
    p = pipeline
    p.sql(
        "CREATE TABLE parent (id serial PRIMARY KEY, v text);"
        "CREATE TABLE child (id serial PRIMARY KEY, pid int REFERENCES parent(id));"
        "CREATE TABLE other (id int PRIMARY KEY);"
        "INSERT INTO parent (v) SELECT 'p' FROM generate_series(1, 50);"
        "INSERT INTO child (pid) SELECT g FROM generate_series(1, 50) g;"
        "INSERT INTO other SELECT generate_series(1, 10);"
    )
    p.start()
    p.wait_caught_up()
    p.sql("TRUNCATE parent CASCADE")
    p.sql("INSERT INTO parent (v) SELECT 'q' FROM generate_series(1, 5)")
    p.sql(
        "BEGIN; INSERT INTO other VALUES (11); TRUNCATE parent, child, other RESTART IDENTITY; "
        "INSERT INTO parent (v) VALUES ('after'); INSERT INTO other VALUES (1); COMMIT"
    )
    p.wait_caught_up()
    assert p.stop() == 0
    p.assert_equal()
    assert p.sql("SELECT id, v FROM parent", p.replica_db) == [(1, "after")]


def test_schema_changes_mid_stream(pipeline: Pipeline) -> None:
    p = pipeline
    p.sql(
        "CREATE TABLE items (id int PRIMARY KEY, a text, b int, c int);"
        "INSERT INTO items SELECT g, 'x' || g, g, g FROM generate_series(1, 20) g"
    )
    p.start()
    p.wait_caught_up()
    p.sql("ALTER TABLE items ADD COLUMN d numeric(10,2)")
    p.sql("INSERT INTO items VALUES (100, 'new', 1, 2, 3.25)")
    p.sql("UPDATE items SET d = 1.5 WHERE id < 5")
    p.sql("ALTER TABLE items DROP COLUMN b")
    p.sql("INSERT INTO items VALUES (101, 'dropped b', 7, 8.5)")
    p.sql("ALTER TABLE items RENAME COLUMN a TO title")
    p.sql("UPDATE items SET title = 'renamed' WHERE id = 1")
    p.sql("ALTER TABLE items ALTER COLUMN c TYPE bigint")
    p.sql("UPDATE items SET c = 9000000000 WHERE id = 2")
    p.sql(
        f"CREATE TABLE later (id int PRIMARY KEY, v text); ALTER PUBLICATION p_{p.slot[2:]} ADD TABLE later"
    )
    p.sql("INSERT INTO later VALUES (1, 'hello')")
    p.wait_caught_up()
    assert p.stop() == 0
    p.assert_equal()


def test_quoted_names_composite_keys_and_ddl_inside_a_transaction(pipeline: Pipeline) -> None:
    """Schema, table and column names that need quoting (spaces, capitals, a keyword), a
    composite key whose text holds the key separator, type changes with TOASTed rows, DDL
    inside a transaction between two updates, then truncate and reuse."""
    p = pipeline
    p.sql(
        'CREATE TABLE "Order Items" ("Id" int, "k 2" text, "Val" text, "select" int, big text,'
        ' PRIMARY KEY ("Id", "k 2"));'
        "INSERT INTO \"Order Items\" SELECT g, 'a:' || g, 'x', g, repeat('z', 9000) || g"
        " FROM generate_series(1, 30) g"
    )
    p.start()
    p.wait_caught_up()
    p.sql('UPDATE "Order Items" SET "Val" = \'y\' WHERE "Id" = 1')
    p.sql('DELETE FROM "Order Items" WHERE "Id" = 2')
    p.sql('ALTER TABLE "Order Items" ALTER COLUMN "select" TYPE numeric(30,2)')
    p.sql('UPDATE "Order Items" SET "select" = 1.25 WHERE "Id" = 3')
    p.sql(
        'BEGIN; UPDATE "Order Items" SET "select" = 2 WHERE "Id" = 4;'
        ' ALTER TABLE "Order Items" ADD COLUMN "New Col" char(3), ADD COLUMN flag boolean;'
        ' UPDATE "Order Items" SET "New Col" = \'x\', flag = true WHERE "Id" % 2 = 0; COMMIT'
    )
    p.sql('TRUNCATE "Order Items"')
    p.sql("INSERT INTO \"Order Items\" VALUES (1, 'a:1', 'again', 1, repeat('q', 20000), 'ab', false)")
    p.sql('UPDATE "Order Items" SET "Val" = \'last\' WHERE "Id" = 1')
    p.wait_caught_up()
    assert p.stop() == 0
    p.assert_equal()
    p.assert_verified()


def test_two_phase_and_subtransactions(pipeline: Pipeline) -> None:
    p = pipeline
    p.sql("CREATE TABLE t (id int PRIMARY KEY, v text)")
    p.start()
    p.wait_caught_up()
    p.sql("BEGIN; INSERT INTO t VALUES (1, 'prepared'); PREPARE TRANSACTION 'g1'")
    p.sql("BEGIN; INSERT INTO t VALUES (2, 'rolled back'); PREPARE TRANSACTION 'g2'")
    p.sql("COMMIT PREPARED 'g1'")
    p.sql("ROLLBACK PREPARED 'g2'")
    p.sql(
        "BEGIN; INSERT INTO t VALUES (3, 'a'); SAVEPOINT s1; INSERT INTO t VALUES (4, 'gone');"
        " SAVEPOINT s2; INSERT INTO t VALUES (5, 'gone too'); ROLLBACK TO s1;"
        " INSERT INTO t VALUES (6, 'kept'); SAVEPOINT s3; UPDATE t SET v = 'b' WHERE id = 3;"
        " RELEASE s3; COMMIT"
    )
    # the same in a transaction big enough to be streamed (logical_decoding_work_mem = 64kB)
    p.sql(
        "BEGIN; INSERT INTO t SELECT g, 'big' FROM generate_series(1000, 6000) g; SAVEPOINT s;"
        " INSERT INTO t SELECT g, 'aborted' FROM generate_series(7000, 12000) g; ROLLBACK TO s;"
        " INSERT INTO t SELECT g, 'after' FROM generate_series(13000, 14000) g;"
        " SAVEPOINT x; UPDATE t SET v = 'upd' WHERE id < 3000; RELEASE x; COMMIT"
    )
    p.sql("BEGIN; INSERT INTO t SELECT g, 'whole abort' FROM generate_series(20000, 30000) g; ROLLBACK")
    p.wait_caught_up()
    assert p.stop() == 0
    p.assert_equal()
    assert p.sql("SELECT count(*) FROM t WHERE id BETWEEN 7000 AND 12000", p.replica_db)[0][0] == 0


def test_interleaved_big_transactions_commit_order(pipeline: Pipeline) -> None:
    p = pipeline
    p.sql("CREATE TABLE a (id int PRIMARY KEY, v text); CREATE TABLE b (id int PRIMARY KEY, v text)")
    # the log is read back whole below: retention must not trim what the views applied
    p.keep_log()
    p.start()
    p.wait_caught_up()
    c1 = psycopg.connect(p.source_dsn)
    c2 = psycopg.connect(p.source_dsn)
    try:
        c1.execute("INSERT INTO a SELECT g, 'first started' FROM generate_series(1, 20000) g")
        c2.execute("INSERT INTO b SELECT g, 'second started' FROM generate_series(1, 20000) g")
        c1.execute("INSERT INTO a SELECT g, 'more' FROM generate_series(20001, 30000) g")
        c2.commit()  # the transaction that started second commits first
        c1.execute("UPDATE a SET v = 'late' WHERE id % 7 = 0")
        c1.commit()
    finally:
        c1.close()
        c2.close()
    p.wait_caught_up()
    assert p.stop() == 0
    p.assert_equal()
    reader = open_cursor(p.cfg.log)
    try:
        records = []
        cp = Checkpoint()
        while txns := reader.read(cp, 100_000):
            records += txns
            cp = Checkpoint(txns[-1].seq, txns[-1].commit_lsn)
    finally:
        reader.close()
    lsns = [r.commit_lsn for r in records]
    xids = [r.xid for r in records if r.last and not r.snapshot]
    assert lsns == sorted(lsns), "log not in commit order"
    assert len(xids) >= 2 and xids[-2] > xids[-1], "second-started transaction must come first"


def test_partitioned_table_appears_under_root(pipeline: Pipeline) -> None:
    p = pipeline
    p.sql(
        "CREATE TABLE meas (id int, region text, v int, PRIMARY KEY (id, region)) PARTITION BY LIST (region);"
        "CREATE TABLE meas_eu PARTITION OF meas FOR VALUES IN ('eu');"
        "CREATE TABLE meas_us PARTITION OF meas FOR VALUES IN ('us');"
        "INSERT INTO meas VALUES (1, 'eu', 1), (2, 'us', 2)"
    )
    p.start()
    p.wait_caught_up()
    p.sql(
        "INSERT INTO meas VALUES (3, 'eu', 3), (4, 'us', 4); UPDATE meas SET v = 10 WHERE id = 1;"
        "UPDATE meas SET region = 'us' WHERE id = 3; DELETE FROM meas WHERE id = 2"
    )
    # a partition attached mid-stream, its columns in another order than the root's
    p.sql(
        "CREATE TABLE meas_ap (v int, region text NOT NULL, id int NOT NULL);"
        " ALTER TABLE meas ATTACH PARTITION meas_ap FOR VALUES IN ('ap')"
    )
    p.sql("INSERT INTO meas VALUES (5, 'ap', 5); UPDATE meas SET v = 50, region = 'ap' WHERE id = 4")
    p.sql("BEGIN; UPDATE meas SET v = 51 WHERE id = 5; DELETE FROM meas WHERE id = 1; COMMIT")
    p.wait_caught_up()
    assert p.stop() == 0
    p.assert_equal()
    names = p.sql("SELECT relname FROM pg_class WHERE relname LIKE 'meas%' AND relkind = 'r'", p.replica_db)
    assert names == [("meas",)]


@pytest.mark.slow
@pytest.mark.base_views
def test_one_huge_transaction(pipeline: Pipeline) -> None:
    """600,000 rows in one transaction (``SYNCLINE_BIG_ROWS``; ``make soak``: a million),
    then a tenth of them updated in another. On the NATS log `make test` moves 250,000 (the
    same path: streamed, spooled, chunked): ``SYNCLINE_NATS_BIG_ROWS`` sets it (``make
    soak``: a million). The lake views (EXTRA_VIEWS) take their large transaction in
    ``test_view_iceberg.py::test_one_large_transaction_into_both_lakes`` (CI time)."""
    p = pipeline
    rows = int(os.environ.get("SYNCLINE_BIG_ROWS") or 600_000)
    if p.log_kind == "nats":
        rows = int(os.environ.get("SYNCLINE_NATS_BIG_ROWS") or 250_000)
    p.sql("CREATE TABLE big (id int PRIMARY KEY, v text, n int)")
    p.start()
    p.wait_caught_up()
    p.sql(f"INSERT INTO big SELECT g, md5(g::text), g FROM generate_series(1, {rows}) g")
    p.sql("UPDATE big SET n = -n WHERE id % 10 = 0")
    p.wait_caught_up(timeout=600)
    assert p.stop() == 0
    p.assert_equal()


def test_snapshot_and_stream_have_no_gap_or_overlap(pipeline: Pipeline) -> None:
    """Writes running while the snapshot is taken land exactly once."""
    p = pipeline
    p.sql(
        "CREATE TABLE c (id int PRIMARY KEY, n int);"
        " INSERT INTO c SELECT g, 0 FROM generate_series(1, 50000) g"
    )
    stop = threading.Event()

    def writer() -> None:
        with psycopg.connect(p.source_dsn, autocommit=True) as conn:
            i = 0
            while not stop.is_set():
                i += 1
                conn.execute("UPDATE c SET n = n + 1 WHERE id = %s", (i % 50000 + 1,))
                conn.execute("INSERT INTO c VALUES (%s, 1)", (100000 + i,))

    th = threading.Thread(target=writer)
    th.start()
    try:
        time.sleep(0.3)
        p.start()
        time.sleep(3)
    finally:
        stop.set()
        th.join()
    p.wait_caught_up()
    assert p.stop() == 0
    p.assert_equal()
