"""Time travel on the lakes, checked against a replica that was stopped at that position.

One ``syncline run`` feeds a PostgreSQL replica, a DuckLake view and an Iceberg view. Rounds
of writes (transfers, notes inserted, edited and deleted) end with every view caught up and
``run`` killed: the replica then holds the state at its recorded position, which the test
dumps. More writes happen while ``run`` is down, then it starts again and catches up, so the
lakes apply the backlog in batches of their own. At the end, ``syncline sql --at`` (the CLI,
for DuckLake) and ``syncline.client.sql(..., at=...)`` (the Python API, for Iceberg) must
answer each stopped position from a batch at exactly that position, with exactly the rows
the replica held there.
"""

from __future__ import annotations

import json
import random
import re
import threading
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from syncline.client import sql
from syncline.sources.postgres.lsn import format_lsn, parse_lsn
from syncline.testing.harness import Pipeline
from syncline.testing.pgcluster import PgCluster
from syncline.views.ducklake.query import QueryError
from tests.integration.test_view_ducklake import transfer

ACCOUNTS = 30
START = 1000
TABLES = {
    "accounts": "SELECT id, balance, moves FROM {t} ORDER BY id",
    "transfers": "SELECT id, src, dst, amount FROM {t} ORDER BY id",
    "notes": "SELECT id, body, rev FROM {t} ORDER BY id",
}


def _writes(dsn: str, rnd: random.Random, stop: threading.Event | None, count: int = 0) -> int:
    """Transfers between accounts and notes inserted, edited and deleted, in transactions
    of one to four statements; until ``stop`` is set, or ``count`` transactions."""
    done = 0
    with psycopg.connect(dsn, autocommit=True) as conn:
        while (stop is not None and not stop.is_set()) or (stop is None and done < count):
            with conn.transaction():
                transfer(conn, rnd, ACCOUNTS)
                note = rnd.randint(1, 60)
                roll = rnd.random()
                if roll < 0.4:
                    conn.execute(
                        "INSERT INTO notes VALUES (%s, %s, 0) ON CONFLICT (id) DO UPDATE "
                        "SET body = excluded.body, rev = notes.rev + 1",
                        (note, f"note {note} é ✓ {rnd.random():.6f}"),
                    )
                elif roll < 0.7:
                    conn.execute("UPDATE notes SET body = body || '+', rev = rev + 1 WHERE id = %s", (note,))
                else:
                    conn.execute("DELETE FROM notes WHERE id = %s", (note,))
            done += 1
            time.sleep(rnd.random() * 0.003)
    return done


def _replica_state(p: Pipeline) -> tuple[int, dict[str, list[list[Any]]]]:
    """The replica's recorded position and every row of the three tables, read while
    ``run`` is down (nothing changes it)."""
    with psycopg.connect(p.replica_dsn) as conn:
        (pos,) = conn.execute("SELECT commit_lsn FROM _syncline.positions WHERE view = 'replica'").fetchone()  # type: ignore[misc]
        state = {
            name: [list(r) for r in conn.execute(q.format(t=f"public.{name}")).fetchall()]
            for name, q in TABLES.items()
        }
    return int(pos), state


def _lake_cli(p: Pipeline, at: int) -> tuple[int, dict[str, list[list[Any]]]]:
    """``syncline sql lake --at`` per table: the position that answered (from stderr) and the rows."""
    state: dict[str, list[list[Any]]] = {}
    answered = set()
    for name, q in TABLES.items():
        r = p.cli("sql", "lake", "--at", format_lsn(at), "--json", q.format(t=f"public.{name}"))
        assert r.returncode == 0, r.stderr
        state[name] = [list(json.loads(line).values()) for line in r.stdout.splitlines()]
        answered.add(parse_lsn(r.stderr.split("source position ")[1].split(",")[0]))
    assert len(answered) == 1, answered
    return answered.pop(), state


def _iceberg_api(p: Pipeline, at: int) -> tuple[int, dict[str, list[list[Any]]]]:
    """``syncline.client.sql(config, "iceberg", ..., at=...)`` per table."""
    state: dict[str, list[list[Any]]] = {}
    answered = set()
    for name, q in TABLES.items():
        got = sql(p.config_path, "iceberg", q.format(t=f"public.{name}"), at=format_lsn(at))
        assert got.position is not None
        answered.add(parse_lsn(got.position))
        state[name] = [list(r) for r in got.rows]
    assert len(answered) == 1, answered
    return answered.pop(), state


def test_sql_at_a_position_equals_a_replica_stopped_there(pg: PgCluster, tmp_path: Path) -> None:
    p = Pipeline(pg, tmp_path, views=("postgres", "ducklake", "iceberg"))
    rnd = random.Random(11)
    stops: list[tuple[int, dict[str, list[list[Any]]]]] = []
    try:
        p.start()  # before the application creates its tables
        p.sql(
            "CREATE TABLE accounts (id int PRIMARY KEY, balance int NOT NULL, moves int NOT NULL);"
            f"INSERT INTO accounts SELECT g, {START}, 0 FROM generate_series(1, {ACCOUNTS}) g;"
            "CREATE TABLE transfers (id bigserial PRIMARY KEY, src int, dst int, amount int);"
            "CREATE TABLE notes (id int PRIMARY KEY, body text NOT NULL, rev int NOT NULL)"
        )
        p.wait_caught_up(new_tables=True)
        for _ in range(4):
            stop = threading.Event()
            writer = threading.Thread(target=_writes, args=(p.source_dsn, rnd, stop))
            writer.start()
            time.sleep(1.5 + rnd.random())
            stop.set()
            writer.join()
            p.wait_caught_up()
            p.kill()  # the replica stops here: its position and rows are the reference
            stops.append(_replica_state(p))
            _writes(p.source_dsn, rnd, None, count=rnd.randint(20, 80))  # while run is down
            p.start()
        p.wait_caught_up()
        assert len({pos for pos, _ in stops}) == len(stops), "a round wrote nothing"
        for pos, want in stops:
            assert sum(r[1] for r in want["accounts"]) == ACCOUNTS * START
            answered, got = _lake_cli(p, pos)
            assert answered == pos, (format_lsn(answered), format_lsn(pos))
            assert got == want, f"ducklake --at {format_lsn(pos)} differs from the replica stopped there"
            answered, got = _iceberg_api(p, pos)
            assert answered == pos, (format_lsn(answered), format_lsn(pos))
            assert got == want, f"iceberg at {format_lsn(pos)} differs from the replica stopped there"
        # the Python API's bad input: one QueryError each
        for view, query, at, says in (
            ("nope", "SELECT 1", None, "no view named 'nope'"),
            ("iceberg", "SELECT 1", "nonsense", "at: expected a position"),
            ("iceberg", "DELETE FROM public.notes", None, "only read"),
            ("lake", "SELECT 1", 16, "before the retained snapshots"),
            ("replica", "SELECT 1", None, "not a warehouse"),
        ):
            with pytest.raises(QueryError, match=re.escape(says)):
                sql(p.config_path, view, query, at=at)
        assert p.stop() == 0
        p.assert_equal()
    finally:
        p.close()
