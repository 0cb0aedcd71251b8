"""A Redis that restarts empty, or is down for a while, while ``syncline run`` runs: the
cache is refilled (from the log or the compacted log) and ends equal to the source."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis

from syncline.testing.harness import Pipeline, RedisServer
from syncline.testing.pgcluster import PgCluster

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server not installed")

ROWS = 20_000


@pytest.fixture
def p(pg: PgCluster, tmp_path: Path) -> Iterator[Pipeline]:
    pipe = Pipeline(pg, tmp_path, views=("postgres", "redis"))
    try:
        yield pipe
    finally:
        pipe.close()


class Writer:
    """Updates, inserts and deletes in small transactions until stopped."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.stop = threading.Event()
        self.commits = 0
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            with psycopg.connect(self.dsn, autocommit=True) as conn:
                i = 0
                while not self.stop.is_set():
                    i += 1
                    with conn.transaction():
                        conn.execute("UPDATE t SET n = n + 1 WHERE id %% 97 = %s", (i % 97,))
                        conn.execute("INSERT INTO t VALUES (%s, md5(%s::text), 0)", (ROWS + i, i))
                        conn.execute("DELETE FROM t WHERE id = %s", (i * 7 % ROWS + 1,))
                    self.commits += 1
                    time.sleep(0.005)
        except BaseException as e:  # reported by finish()
            self.error = e

    def finish(self) -> None:
        self.stop.set()
        self.thread.join(30)
        assert self.error is None, self.error
        assert self.commits > 0


def setup_running(p: Pipeline) -> RedisServer:
    p.sql("CREATE TABLE t (id int PRIMARY KEY, v text, n int)")
    p.sql(f"INSERT INTO t SELECT g, md5(g::text), 0 FROM generate_series(1, {ROWS}) g")
    p.start()
    p.wait_caught_up(timeout=180)
    assert p.redis is not None
    return p.redis


def cache_keys(server: RedisServer) -> int:
    r = redis.Redis.from_url(server.url)
    try:
        return int(r.dbsize())
    finally:
        r.close()


def test_redis_restarted_empty_is_refilled(p: Pipeline) -> None:
    server = setup_running(p)
    writer = Writer(p.source_dsn)
    time.sleep(1.0)
    server.stop()
    server.start()  # same port, empty: no persistence
    assert cache_keys(server) == 0
    time.sleep(1.0)
    writer.finish()
    p.wait_caught_up(timeout=180)
    assert cache_keys(server) > ROWS  # refilled, not only the rows changed since
    # a restart while the pipeline is idle (between batches) is noticed too
    server.stop()
    server.start()
    p.sql("UPDATE t SET v = 'after' WHERE id = 1")
    p.wait_caught_up(timeout=180)
    assert p.stop() == 0
    p.assert_equal(faults={"Redis restarted empty": 2})
    assert "Redis lost data" in p.output() or "Redis unavailable" in p.output()


def test_redis_down_for_a_while_loses_nothing(p: Pipeline) -> None:
    server = setup_running(p)
    writer = Writer(p.source_dsn)
    time.sleep(0.5)
    server.stop()
    time.sleep(4.0)  # writes go on while Redis is down
    server.start()
    time.sleep(1.0)
    writer.finish()
    p.sql("DELETE FROM t WHERE id <= 100; UPDATE t SET n = -1 WHERE id BETWEEN 101 AND 200")
    p.wait_caught_up(timeout=180)
    assert p.failed_views() == []
    assert p.stop() == 0
    p.assert_equal(faults={"Redis down 4 s": 1})
