"""``GET /wait`` borrows its source connections from a small pool of the HTTP server: a burst
of waits costs the source a few backends, not one per wait, and a source restart breaks no
wait after it."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from syncline.client import Client
from syncline.runtime.http import WAIT_CONNECTIONS
from syncline.testing.harness import Pipeline
from syncline.testing.pgcluster import PgCluster, free_port
from tests.integration.test_http import get_json, wait_http

WAITS = 32
"""Concurrent waiters in the burst: well above the pool's size."""

BACKENDS = (
    "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'"
    " AND application_name = 'syncline' AND datname = current_database()"
)


@pytest.fixture
def served(pg: PgCluster, tmp_path: Path) -> Iterator[tuple[Pipeline, str]]:
    port = free_port()
    p = Pipeline(pg, tmp_path, views=("postgres",), http_listen=f"127.0.0.1:{port}")
    try:
        p.sql("CREATE TABLE items (id int PRIMARY KEY, v text)")
        p.start()
        base = f"http://127.0.0.1:{port}"
        wait_http(base)
        Client(base).wait_for(None, timeout=60)
        yield p, base
    finally:
        p.close()


def _most_backends(dsn: str, stop: threading.Event, most: list[int]) -> None:
    """The most syncline backends on the source seen until ``stop``, sampled every 10 ms."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        while not stop.is_set():
            row = conn.execute(BACKENDS).fetchone()
            assert row is not None
            most[0] = max(most[0], int(row[0]))
            time.sleep(0.01)


def _sampled(dsn: str, seconds: float, work: threading.Thread | None = None) -> int:
    stop, most = threading.Event(), [0]
    sampler = threading.Thread(target=_most_backends, args=(dsn, stop, most))
    sampler.start()
    try:
        if work is None:
            time.sleep(seconds)
        else:
            work.start()
            work.join()
    finally:
        stop.set()
        sampler.join()
    return most[0]


def test_a_burst_of_waits_shares_a_few_source_connections(served: tuple[Pipeline, str]) -> None:
    p, base = served
    idle = _sampled(p.source_dsn, 1.5)  # the capture's own
    codes: list[int] = []
    errors: list[str] = []

    def waiter(i: int) -> None:
        deadline = time.monotonic() + 4
        with psycopg.connect(p.source_dsn, autocommit=True) as conn:
            n = 0
            while time.monotonic() < deadline:
                n += 1
                conn.execute("INSERT INTO items VALUES (%s, 'w')", (i * 100_000 + n,))
                code, doc = get_json(base + "/wait?timeout=20")
                codes.append(code)
                if code != 200:
                    errors.append(str(doc))

    def burst() -> None:
        threads = [threading.Thread(target=waiter, args=(i,)) for i in range(WAITS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    most = _sampled(p.source_dsn, 0, threading.Thread(target=burst))
    assert not errors, errors[:3]
    assert len(codes) >= WAITS * 2, len(codes)
    # each wait's checks borrowed a pooled connection: the burst added at most the pool's
    # size (without the pool every wait in progress held a backend of its own)
    assert most - idle <= WAIT_CONNECTIONS, (idle, most)
    assert most > idle, (idle, most)  # the sampler saw the pool at work
    assert p.stop() == 0
    p.assert_equal()


def test_waits_answer_while_the_source_is_down_and_after_it_restarted(served: tuple[Pipeline, str]) -> None:
    p, base = served
    code, doc = get_json(base + "/wait?timeout=5")  # the pool now holds a connection
    assert code == 200, doc
    p.cluster.stop("immediate")
    try:
        code, doc = get_json(base + "/wait?timeout=1")
        assert code == 503 and "cannot connect to the source" in doc["error"], doc
    finally:
        p.cluster.start()
    p.sql("INSERT INTO items VALUES (1, 'after')")
    Client(base).wait_for(None, timeout=120)  # the broken pooled connection was replaced
    assert p.sql("SELECT v FROM public.items", p.replica_db) == [("after",)]
    assert p.stop() == 0
    p.assert_equal()
