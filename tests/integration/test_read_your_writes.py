"""Read-your-writes: once ``wait`` succeeds for the position of a just-committed transaction,
a read of the view sees it, for every view kind, while other clients keep writing."""

from __future__ import annotations

import random
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import duckdb
import psycopg
import pytest
import redis

from syncline.client import ClientError, current_position, wait_for
from syncline.config import load_config
from syncline.sources.postgres.lsn import parse_lsn
from syncline.testing.harness import Pipeline
from syncline.testing.pgcluster import PgCluster, free_port
from syncline.views.tantivy.view import search

ROUNDS = 30


class Writers:
    """Concurrent clients updating other rows of the same table while the test reads."""

    def __init__(self, dsn: str, n: int = 2) -> None:
        self.stop = threading.Event()
        self.errors: list[BaseException] = []
        self.writes = 0
        self.threads = [threading.Thread(target=self._run, args=(dsn, i), daemon=True) for i in range(n)]
        for t in self.threads:
            t.start()

    def _run(self, dsn: str, i: int) -> None:
        rnd = random.Random(i)
        try:
            with psycopg.connect(dsn, autocommit=True) as conn:
                while not self.stop.is_set():
                    k = 1000 + rnd.randrange(100)
                    if rnd.random() < 0.2:
                        conn.execute("DELETE FROM items WHERE id = %s", (k,))
                    else:
                        conn.execute(
                            "INSERT INTO items VALUES (%s, %s, 'busy writer') ON CONFLICT (id)"
                            " DO UPDATE SET v = items.v + 1",
                            (k, rnd.randrange(1000)),
                        )
                    self.writes += 1
                    time.sleep(0.005)
        except BaseException as e:
            self.errors.append(e)

    def close(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(10)
        assert not self.errors, self.errors
        assert self.writes > 0


def make_pipeline(pg: PgCluster, tmp_path: Path, views: tuple[str, ...], **kw: str) -> Pipeline:
    p = Pipeline(pg, tmp_path, views=views, **kw)
    p.sql("CREATE TABLE items (id int PRIMARY KEY, v int NOT NULL, note text)")
    p.sql("INSERT INTO items SELECT g, g, 'seed' FROM generate_series(1000, 1099) g")  # the writers'
    p.sql(f"INSERT INTO items SELECT g, g, 'seed' FROM generate_series(2000, {2000 + ROUNDS}) g")  # ours
    return p


def with_commit_interval(p: Pipeline, seconds: float) -> None:
    """Tantivy commits at most every ``seconds``: wait must still mean committed."""
    text = p.config_path.read_text()
    assert 'kind = "tantivy"' in text
    p.config_path.write_text(
        text.replace('kind = "tantivy"', f'kind = "tantivy"\ncommit_interval = {seconds}')
    )
    p.cfg = load_config(p.config_path)


@pytest.fixture
def pipeline_all(pg: PgCluster, tmp_path: Path) -> Iterator[Pipeline]:
    port = free_port()
    p = make_pipeline(pg, tmp_path, ("postgres", "redis", "tantivy"), http_listen=f"127.0.0.1:{port}")
    with_commit_interval(p, 0.3)
    try:
        p.start()
        p.wait_caught_up()
        yield p
    finally:
        p.close()


def test_wait_then_read_sees_the_write(pipeline_all: Pipeline) -> None:
    p = pipeline_all
    url = f"http://{p.cfg.http.listen}"
    assert p.redis is not None
    cache = redis.Redis.from_url(p.redis.url, decode_responses=True)
    replica = psycopg.connect(p.replica_dsn, autocommit=True)
    writers = Writers(p.source_dsn)
    took = []
    try:
        with psycopg.connect(p.source_dsn) as app:
            for i in range(1, ROUNDS + 1):
                if i % 3 == 0:  # the commit returns before its WAL is flushed
                    app.execute("SET synchronous_commit = off")
                    app.commit()
                key = i if i % 2 else 2000 + i  # a new row, or an update
                note = f"marker{i}x{random.randrange(10**6)}"
                app.execute(
                    "INSERT INTO items VALUES (%s, %s, %s) ON CONFLICT (id) DO UPDATE"
                    " SET v = excluded.v, note = excluded.note",
                    (key, -i, note),
                )
                app.commit()
                pos = current_position(app)
                t0 = time.monotonic()
                if i % 2:  # through the HTTP API, or reading the log directly
                    wait_for(pos, timeout=30, url=url)
                else:
                    wait_for(pos, ["replica", "cache", "search"], timeout=30, config=p.cfg)
                took.append(time.monotonic() - t0)
                # at once: every view has it
                row = replica.execute("SELECT v, note FROM items WHERE id = %s", (key,)).fetchone()
                assert row == (-i, note), (i, row)
                assert cache.hgetall(f"public.items:{key}") == {"id": str(key), "v": str(-i), "note": note}
                hits = search(str(p.workdir / "search"), note, limit=5)
                assert [h["key"] for h in hits] == [str(key)], (i, hits)
                assert hits[0]["fields"]["v"] == str(-i)
                if i % 3 == 0:
                    app.execute("SET synchronous_commit = on")
                    app.commit()
    finally:
        writers.close()
        replica.close()
        cache.close()
    assert max(took) < 10, took
    # the CLI: exit 0 once applied (then the read sees it), 1 on timeout
    with psycopg.connect(p.source_dsn, autocommit=True) as app:
        app.execute("UPDATE items SET note = 'from the cli' WHERE id = 1")
        pos = current_position(app)
    cli = [sys.executable, "-m", "syncline", "wait", "-c", str(p.config_path)]
    r = subprocess.run([*cli, "--lsn", pos, "--view", "cache"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    with redis.Redis.from_url(p.redis.url, decode_responses=True) as c:
        assert c.hget("public.items:1", "note") == "from the cli"
    r = subprocess.run(
        [*cli, "--lsn", "FFFFFFFF/0", "--timeout", "0.2"], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 1 and "timeout" in r.stderr
    assert p.stop() == 0


def test_current_position_refuses_an_open_transaction(pg: PgCluster, tmp_path: Path) -> None:
    p = Pipeline(pg, tmp_path, views=())
    try:
        p.sql("CREATE TABLE t (id int PRIMARY KEY)")
        with psycopg.connect(p.source_dsn) as conn:
            conn.execute("INSERT INTO t VALUES (1)")
            with pytest.raises(ClientError, match="inside a transaction"):
                current_position(conn)
            conn.commit()
            before = current_position(conn)
            assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
            conn.execute("INSERT INTO t VALUES (2)")
            conn.commit()
            assert parse_lsn(current_position(conn)) > parse_lsn(before)
    finally:
        p.close()


def test_duckdb_wait_then_read(pg: PgCluster, tmp_path: Path) -> None:
    """DuckDB admits one process at a time, and ``run`` holds the warehouse: after wait
    succeeds the whole ``run`` is SIGKILLed at once and the warehouse read: the write must
    be there (the position ``wait`` reads is recorded only after DuckDB's commit)."""
    port = free_port()
    p = make_pipeline(pg, tmp_path, ("duckdb",), http_listen=f"127.0.0.1:{port}")
    url = f"http://127.0.0.1:{port}"
    writers = Writers(p.source_dsn)
    try:
        with psycopg.connect(p.source_dsn, autocommit=True) as app:
            for i in range(1, 6):
                p.start()
                wait_for(None, ["warehouse"], timeout=60, config=p.cfg)  # running, caught up
                for j in range(3):  # a few rounds per run; the last one is read
                    key = 10 * i + j
                    app.execute("INSERT INTO items VALUES (%s, %s, 'duck')", (key, -key))
                    pos = current_position(app)
                    _wait_http(url, pos)
                p.kill()
                got = _read_warehouse(tmp_path / "wh.duckdb", key)
                assert got == [(-key,)], (i, got)
    finally:
        writers.close()
        p.close()


def _wait_http(url: str, pos: str) -> None:
    deadline = time.monotonic() + 60
    while True:  # the API is up once run has bound it
        try:
            wait_for(pos, ["warehouse"], timeout=30, url=url)
            return
        except ClientError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def _read_warehouse(path: Path, key: int) -> list[tuple[object, ...]]:
    deadline = time.monotonic() + 10
    while True:  # the killed view process may hold its lock a moment longer
        try:
            with duckdb.connect(str(path), read_only=True) as wh:
                return wh.execute("SELECT v FROM public.items WHERE id = ?", [key]).fetchall()
        except duckdb.IOException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
