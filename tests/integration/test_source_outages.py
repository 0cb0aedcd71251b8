"""Source-side faults (issue 9, item 13): the source restarted (immediate) 10 times while streaming
and during the first snapshot, the walsender terminated, the network cut for 1 s and 10 s (60 s in make soak),
a standby promoted. Each ends with every view equal to the source; a promotion, which loses
the logical slot before PostgreSQL 17, fails closed until `syncline resync`."""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from syncline.config import load_config
from syncline.testing.harness import Pipeline
from syncline.testing.netcut import NetCut
from syncline.testing.pgcluster import PgCluster, running_cluster, standby_of

SCHEMA = """
CREATE TABLE acc (id int PRIMARY KEY, n bigint NOT NULL, note text);
INSERT INTO acc SELECT g, 0, 'start' FROM generate_series(1, 2000) g;
"""


class Writer:
    """Writes to the source directly (not through any cut) and rides out its restarts."""

    def __init__(self, dsn: str, seed: int = 7) -> None:
        self.dsn = dsn
        self.rnd = random.Random(seed)
        self.stop_event = threading.Event()
        self.commits = 0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop_event.is_set():
            try:
                with psycopg.connect(self.dsn, autocommit=True, connect_timeout=2) as c:
                    while not self.stop_event.is_set():
                        k = self.rnd.randint(1, 2500)
                        c.execute(
                            "INSERT INTO acc VALUES (%s, 1, 'w') ON CONFLICT (id) DO UPDATE SET n = acc.n + 1",
                            (k,),
                        )
                        if self.rnd.random() < 0.1:
                            c.execute("DELETE FROM acc WHERE id = %s", (self.rnd.randint(1, 2500),))
                        self.commits += 1
                        time.sleep(0.002)
            except psycopg.OperationalError:
                time.sleep(0.2)

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(30)


def point_source_at(p: Pipeline, port: int) -> None:
    """Rewrite the config so syncline reaches the source through ``port``."""
    text = p.config_path.read_text()
    old = f'dsn = "{p.source_dsn}"'
    assert old in text
    new_dsn = p.source_dsn.replace(f":{p.cluster.port}/", f":{port}/")
    p.config_path.write_text(text.replace(old, f'dsn = "{new_dsn}"'))
    p.cfg = load_config(p.config_path)


@pytest.fixture
def own_source(pg: PgCluster, tmp_path: Path) -> Iterator[Pipeline]:
    """A pipeline whose source is a private server (so it can be restarted), views on ``pg``."""
    with running_cluster() as src:
        p = Pipeline(src, tmp_path, views=("postgres", "duckdb", "redis", "tantivy"), replica_cluster=pg)
        try:
            yield p
        finally:
            p.close()


def _alive(p: Pipeline) -> None:
    assert p.proc is not None and p.proc.poll() is None, p.output()[-3000:]


def test_source_immediate_restart_while_streaming(own_source: Pipeline) -> None:
    p = own_source
    p.sql(SCHEMA)
    p.start()
    p.wait_caught_up()
    w = Writer(p.source_dsn)
    restarts = int(os.environ.get("SYNCLINE_SOURCE_RESTARTS") or 10)
    try:
        time.sleep(2)
        for i in range(restarts):
            p.cluster.stop("immediate")
            time.sleep(0.3 + (i % 3) * 0.5)  # down for 0.3 to 1.3 s
            p.cluster.start()
            time.sleep(1.0 + (i % 2) * 1.5)  # streaming again (or still reconnecting)
    finally:
        w.stop()
    assert w.commits > 100
    p.wait_caught_up(timeout=180)
    _alive(p)
    assert p.stop() == 0
    p.assert_equal(faults={"PostgreSQL restart (immediate), streaming": restarts})


def test_source_immediate_restart_during_the_first_snapshot(own_source: Pipeline) -> None:
    p = own_source
    p.sql(
        SCHEMA + "CREATE TABLE big (id int PRIMARY KEY, pad text);"
        "INSERT INTO big SELECT g, repeat('p', 100) FROM generate_series(1, 400000) g"
    )
    p.start()
    deadline = time.monotonic() + 60
    while not p.sql(f"SELECT 1 FROM pg_replication_slots WHERE slot_name = '{p.slot}'"):
        assert time.monotonic() < deadline, p.output()[-3000:]
        time.sleep(0.05)
    time.sleep(0.5)
    assert "copy of public.big done" not in p.output()  # the restart lands inside the copy
    p.cluster.stop("immediate")
    time.sleep(1)
    p.cluster.start()
    p.wait_caught_up(timeout=300)
    # the slot survived: the copy went on (from its last chunk), it did not start over
    assert "dropping slot" not in p.output() and "copy of public.big done" in p.output()
    _alive(p)
    assert p.stop() == 0
    p.assert_equal(faults={"PostgreSQL restart (immediate), in the first copy": 1})


def test_walsender_terminated(pipeline: Pipeline) -> None:
    p = pipeline
    p.sql(SCHEMA)
    p.start()
    p.wait_caught_up()
    w = Writer(p.source_dsn)
    terminated = 0
    try:
        for _ in range(3):
            time.sleep(1)
            killed = p.sql(
                "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots"
                f" WHERE slot_name = '{p.slot}' AND active_pid IS NOT NULL"
            )
            assert killed in ([(True,)], [])
            terminated += len(killed)
    finally:
        w.stop()
    p.wait_caught_up(timeout=120)
    _alive(p)
    assert "retrying" in p.output()
    assert p.stop() == 0
    p.assert_equal(faults={"walsender terminated": terminated})


def test_network_cuts_of_1s_and_10s(pipeline: Pipeline) -> None:
    """The capture's connections to the source cut (no reset: they hang) for 1 s, then for
    ``SYNCLINE_CUT_SECONDS`` (10; ``make soak``: 60)."""
    long_cut = int(os.environ.get("SYNCLINE_CUT_SECONDS") or 10)
    p = pipeline
    p.sql(SCHEMA)
    relay = NetCut(p.cluster.port)
    try:
        point_source_at(p, relay.port)
        p.start()
        p.wait_caught_up()
        w = Writer(p.source_dsn)
        try:
            time.sleep(1)
            relay.cut()
            time.sleep(1)
            relay.restore()
            time.sleep(2)
            relay.cut()
            time.sleep(long_cut)
            _alive(p)  # the outage is waited out, not fatal
            relay.restore()
            time.sleep(2)
        finally:
            w.stop()
        p.wait_caught_up(timeout=180)
        assert p.stop() == 0
        p.assert_equal(faults={"network cut, source, 1 s": 1, f"network cut, source, {long_cut} s": 1})
    finally:
        relay.close()


def wait_for(dsn: str, query: str, what: str, timeout: float = 60) -> None:
    """Until ``query`` answers true on ``dsn`` (an AssertionError saying ``what`` after ``timeout``)."""
    deadline = time.monotonic() + timeout
    while True:
        with psycopg.connect(dsn, autocommit=True) as c:
            row = c.execute(query).fetchone()
        if row and row[0]:
            return
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def promote(p: Pipeline, primary: PgCluster, standby: PgCluster) -> None:
    """Fail over: once the standby has replayed all the primary wrote, ``run`` and the primary
    die (immediate), the standby is promoted, and the pipeline points at it (``run`` stopped)."""
    lsn = primary.psql("SELECT pg_current_wal_lsn()").strip()
    wait_for(standby.dsn(), f"SELECT pg_last_wal_replay_lsn() >= '{lsn}'", "the standby lags")
    p.kill()
    primary.stop("immediate")
    standby.psql("SELECT pg_promote()")
    point_source_at(p, standby.port)
    p.cluster, p.source_dsn = standby, standby.dsn(p.source_db)


def test_standby_promoted_fails_closed_until_resync(pg: PgCluster, tmp_path: Path) -> None:
    with running_cluster() as primary:
        p = Pipeline(primary, tmp_path, views=("postgres", "duckdb"), replica_cluster=pg)
        standby: PgCluster | None = None
        try:
            p.sql(SCHEMA)
            standby = standby_of(primary)
            p.start()
            p.wait_caught_up()
            w = Writer(p.source_dsn)
            time.sleep(2)
            w.stop()
            promote(p, primary, standby)
            p.sql("UPDATE acc SET note = 'after failover' WHERE id < 50; DELETE FROM acc WHERE id > 1900")
            p.start()
            assert p.proc is not None and p.proc.wait(60) != 0  # fail closed: the slot is gone
            assert "is missing" in p.output() and "syncline resync" in p.output()
            r = p.cli("resync")
            assert r.returncode == 0, r.stdout + r.stderr
            p.start()
            r = p.cli("wait", "--timeout", "120", timeout=180)
            assert r.returncode == 0, r.stderr + p.output()[-3000:]
            assert p.stop() == 0
            p.assert_equal(faults={"standby promoted (fails closed, then resync)": 1})
        finally:
            p.close()
            if standby is not None:
                standby.cleanup("immediate")
