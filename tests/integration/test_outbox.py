"""The outbox (``kind = "outbox"``, issue 16 item 4): rows inserted into an outbox table
become entries of a Redis stream in commit order, exactly once in effect, while writers run,
the application prunes the table, and ``syncline run`` is killed (SIGKILL) at random."""

from __future__ import annotations

import asyncio
import json
import os
import random
import threading
import time
from pathlib import Path

import nats
import psycopg
import pytest
import redis

from syncline.config import load_config
from syncline.sources.postgres.lsn import parse_lsn
from syncline.testing.harness import Pipeline
from syncline.testing.natsserver import NatsServer
from syncline.testing.pgcluster import PgCluster

WRITERS = 3
EVENTS = 300
"""Transactions per writer; each inserts one or two events, or rolls back."""


def add_outbox(p: Pipeline, stream: str = "events", extra: str = "", nats_url: str = "") -> None:
    assert p.redis is not None
    target = (
        f'servers = ["{nats_url}"]\nsubject = "shop.events"\n'
        if nats_url
        else f'url = "{p.redis.url}"\nstream = "{stream}"\n'
    )
    with p.config_path.open("a") as f:
        f.write(f'[views.events]\nkind = "outbox"\ntable = "public.outbox"\n{target}{extra}')
    p.cfg = load_config(p.config_path)


def read_entries(p: Pipeline, nats_url: str) -> list[dict[str, str]]:
    """Every entry of the Redis stream, or every message of the JetStream stream, in order."""
    if not nats_url:
        assert p.redis is not None
        r = redis.Redis.from_url(p.redis.url, decode_responses=True)
        try:
            return [f for _, f in r.xrange("events")]
        finally:
            r.close()

    async def go() -> list[dict[str, str]]:
        nc = await nats.connect(nats_url)
        try:
            js = nc.jetstream()
            info = await js.stream_info("SHOP_EVENTS")
            out = []
            for seq in range(info.state.first_seq, info.state.last_seq + 1):
                m = await js.get_msg("SHOP_EVENTS", seq)
                doc = json.loads(m.data or b"{}")
                assert m.headers and m.headers["Syncline-Lsn"] == doc["_lsn"]
                out.append(doc)
            return out
        finally:
            await nc.close()

    return asyncio.run(go())


def writer(dsn: str, w: int, rnd: random.Random, stop: threading.Event, sent: list[tuple[int, int]]) -> None:
    """Transactions that insert a business row and one or two events (``n`` counts a
    writer's committed events from 1); one in eight rolls back (its events must not appear)."""
    n = 0
    with psycopg.connect(dsn, autocommit=True) as conn:
        for i in range(EVENTS):
            if stop.is_set():
                break
            k = 2 if rnd.random() < 0.3 else 1
            rollback = rnd.random() < 0.125
            try:
                with conn.transaction():
                    conn.execute("INSERT INTO orders (writer, i) VALUES (%s, %s)", (w, i))
                    for j in range(k):
                        conn.execute(
                            "INSERT INTO outbox (writer, n, payload) VALUES (%s, %s, %s)",
                            (w, n + j + 1, None if i % 10 == 9 else f'{{"order": {i}}}'),
                        )
                    if rollback:
                        raise _Rollback
            except _Rollback:
                continue
            sent.extend((w, n + j + 1) for j in range(k))
            n += k
            time.sleep(rnd.uniform(0, 0.03))


class _Rollback(Exception):
    pass


def pruner(dsn: str, stop: threading.Event) -> None:
    """The application deletes its published events (here: all but the newest 20)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        while not stop.wait(0.3):
            conn.execute("DELETE FROM outbox WHERE id < (SELECT max(id) - 20 FROM outbox)")


@pytest.mark.parametrize("target", ["redis", "nats"])
def test_outbox_publishes_each_committed_event_once_in_commit_order(
    pg: PgCluster, tmp_path: Path, target: str
) -> None:
    seed = int(os.environ.get("SYNCLINE_CRASH_SEED") or random.randrange(1 << 31))
    print(f"outbox seed {seed}")
    rnd = random.Random(seed)
    p = Pipeline(pg, tmp_path, views=("redis",))
    server = NatsServer(tmp_path / "nats") if target == "nats" else None
    nats_url = server.url if server else ""
    add_outbox(p, nats_url=nats_url)
    assert p.redis is not None
    stop = threading.Event()
    sent: list[tuple[int, int]] = []
    threads: list[threading.Thread] = []
    try:
        p.sql(
            "CREATE TABLE orders (id bigserial PRIMARY KEY, writer int, i int);"
            "CREATE TABLE outbox (id bigserial PRIMARY KEY, writer int NOT NULL, n int NOT NULL,"
            " payload jsonb, note text, created timestamptz NOT NULL DEFAULT now());"
            # rows there before syncline follows the table are copied, not events
            "INSERT INTO outbox (writer, n, payload) VALUES (0, 1, '{}'), (0, 2, NULL)"
        )
        p.start()
        p.wait_caught_up()
        threads = [
            threading.Thread(target=writer, args=(p.source_dsn, w, random.Random(rnd.random()), stop, sent))
            for w in range(1, WRITERS + 1)
        ] + [threading.Thread(target=pruner, args=(p.source_dsn, stop))]
        for t in threads:
            t.start()
        kills = 0
        while any(t.is_alive() for t in threads[:WRITERS]):
            time.sleep(rnd.uniform(0.5, 1.5))
            if kills < 3 and any(t.is_alive() for t in threads[:WRITERS]):
                p.kill()
                kills += 1
                p.start()
        assert kills >= 1, "the writers finished before any kill"
        stop.set()
        for t in threads:
            t.join()
        # not an event: updates and deletes of the outbox, a truncate of another table
        p.sql("UPDATE outbox SET note = 'seen'; DELETE FROM outbox WHERE writer = 0; TRUNCATE orders")
        p.wait_caught_up(timeout=120)
        assert p.stop() == 0, p.output()[-3000:]

        entries = read_entries(p, nats_url)
        got = [(int(f["writer"]), int(f["n"])) for f in entries]
        assert not [e for e in got if e[0] == 0], got[:5]
        for w in range(1, WRITERS + 1):
            mine = [n for ww, n in got if ww == w]
            expected = [n for ww, n in sent if ww == w]
            assert mine == expected, f"seed {seed}, writer {w}: {mine[:20]}... vs {expected[:20]}..."
        assert len(got) == len(sent), f"seed {seed}: {len(got)} entries for {len(sent)} events"
        lsns = [parse_lsn(f["_lsn"]) for f in entries]
        assert lsns == sorted(lsns), "entries out of commit order"
        first = next(f for f in entries if "payload" in f)
        assert first["payload"].startswith('{"order"') and "note" not in first and "created" in first
        assert any("payload" not in f for f in entries)  # NULL: no field
    finally:
        if server is not None:
            server.stop()
        stop.set()
        for t in threads:
            if t.is_alive():
                t.join()
        p.close()


def test_outbox_bad_input(pg: PgCluster, tmp_path: Path) -> None:
    p = Pipeline(pg, tmp_path, views=("redis",))
    try:
        add_outbox(p)
        text = p.config_path.read_text()
        p.config_path.write_text(text.replace('table = "public.outbox"', 'table = "public.*"'))
        r = p.cli("status")
        assert r.returncode == 2 and "views.events.table: expected one table as schema.table" in r.stderr, (
            r.stderr
        )
        p.config_path.write_text(text)
        # verify compares copies of tables: the outbox is left out, or refused when named
        p.sql("CREATE TABLE outbox (id int PRIMARY KEY, v text)")
        p.start()
        p.wait_caught_up()
        v = p.cli("verify", "-q")
        assert v.returncode == 0 and "events" not in v.stdout, v.stdout + v.stderr
        v = p.cli("verify", "--view", "events")
        assert v.returncode == 2 and "holds events, not a copy of tables" in v.stderr, v.stderr
        # the stream's key holds another type: one clear error and the fix
        assert p.redis is not None
        red = redis.Redis.from_url(p.redis.url)
        red.set("events", "not a stream")
        p.sql("INSERT INTO outbox VALUES (1, 'x')")
        deadline = time.monotonic() + 60
        while "events" not in p.failed_views():
            assert time.monotonic() < deadline, p.output()[-3000:]
            time.sleep(0.3)
        st = p.cli("status")
        assert "remove or rename the key 'events'" in st.stdout, st.stdout
        red.close()
    finally:
        p.close()


def test_outbox_never_shows_part_of_a_transaction(pg: PgCluster, tmp_path: Path) -> None:
    """A transaction larger than a batch is published whole, by one MULTI/EXEC."""
    p = Pipeline(pg, tmp_path, views=("redis",))
    add_outbox(p, extra="batch_events = 500\n")
    assert p.redis is not None
    try:
        p.sql("CREATE TABLE outbox (id int PRIMARY KEY, v text)")
        p.start()
        p.wait_caught_up()
        r = redis.Redis.from_url(p.redis.url)
        seen: list[int] = []
        done = threading.Event()

        def watch() -> None:
            while not done.is_set():
                seen.append(int(r.xlen("events")))

        t = threading.Thread(target=watch)
        t.start()
        p.sql("INSERT INTO outbox SELECT g, 'x' FROM generate_series(1, 20000) g")
        p.wait_caught_up(timeout=120)
        done.set()
        t.join()
        assert set(seen) <= {0, 20000}, sorted(set(seen))[:10]
        assert r.xlen("events") == 20000
        r.close()
        assert p.stop() == 0
    finally:
        p.close()
