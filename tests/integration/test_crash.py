"""Kill -9 at random moments under a mixed workload, restart, and require every view to
equal the source: nothing lost, nothing applied twice, no half transaction.

Reproducible: the seed is printed (and named in every failure); ``SYNCLINE_CRASH_SEED=N``
replays it, ``SYNCLINE_CRASH_ROUNDS=N`` sets the number of kills (default 8; `make soak`: 200). Kills hit the
whole process group, the supervisor alone, or one worker (the capture or a view, which the
supervisor restarts); the first lands inside the first snapshot. After every restart the
sum of all balances (transfers keep it constant) is checked in the replica and in Redis: a
view showing half a transaction fails it."""

from __future__ import annotations

import os
import random
import signal
import threading
import time

import psycopg
import pytest

from syncline.testing import faults
from syncline.testing.harness import Pipeline

SCHEMA = """
CREATE TABLE accounts (id int PRIMARY KEY, balance bigint NOT NULL, note text);
CREATE TABLE events (id bigserial PRIMARY KEY, account int, payload jsonb, at timestamptz DEFAULT now());
CREATE TABLE docs (id int PRIMARY KEY, body text, rev int);
ALTER TABLE docs ALTER body SET STORAGE EXTERNAL;
INSERT INTO accounts SELECT g, 1000, 'start' FROM generate_series(1, 500) g;
INSERT INTO docs SELECT g, repeat(md5(g::text), 500), 0 FROM generate_series(1, 50) g;
CREATE TABLE bulk (id int PRIMARY KEY, pad text);
INSERT INTO bulk SELECT g, repeat('b', 60) FROM generate_series(1, 250000) g;
"""
EXTRA_VIEWS = ("ducklake", "iceberg")
"""The DuckLake view beside the four, read by this process while ``run`` writes it."""
ACCOUNTS = 500
TOTAL = ACCOUNTS * 1000
"""The sum of all balances: every transaction keeps it."""
SUM_REDIS = """
local s, n = 0, 0
for _, k in ipairs(redis.call('KEYS', ARGV[1])) do
  s = s + tonumber(redis.call('HGET', k, 'balance') or '0')
  n = n + 1
end
return {n, s}
"""


def workload(dsn: str, seed: int, stop: threading.Event, done: list[int]) -> None:
    rnd = random.Random(seed)
    with psycopg.connect(dsn) as conn:
        while not stop.is_set():
            r = rnd.random()
            try:
                if r < 0.45:  # transfer: two updates and an event in one transaction
                    a, b = rnd.sample(range(1, 501), 2)
                    amt = rnd.randint(1, 50)
                    conn.execute("UPDATE accounts SET balance = balance - %s WHERE id = %s", (amt, a))
                    conn.execute("UPDATE accounts SET balance = balance + %s WHERE id = %s", (amt, b))
                    conn.execute(
                        "INSERT INTO events (account, payload) VALUES (%s, %s)",
                        (a, f'{{"to": {b}, "amount": {amt}}}'),
                    )
                elif r < 0.6:  # TOAST: touch a doc without changing its body
                    conn.execute("UPDATE docs SET rev = rev + 1 WHERE id = %s", (rnd.randint(1, 50),))
                elif r < 0.7:
                    conn.execute(
                        "DELETE FROM events WHERE id IN (SELECT id FROM events ORDER BY random() LIMIT 3)"
                    )
                elif r < 0.72:  # a bigger transaction, streamed by the server
                    conn.execute(
                        "INSERT INTO events (account, payload) SELECT g % 500 + 1, '{\"bulk\": true}'"
                        " FROM generate_series(1, 1500) g"
                    )
                elif r < 0.8:  # move a key
                    k = rnd.randint(1, 500)
                    conn.execute("UPDATE accounts SET id = id + 100000 WHERE id = %s", (k,))
                    conn.execute("UPDATE accounts SET id = id - 100000 WHERE id = %s", (k + 100000,))
                elif r < 0.82:
                    conn.execute("SAVEPOINT s")
                    conn.execute("INSERT INTO events (account, payload) VALUES (1, '{\"rolled\": 1}')")
                    conn.execute("ROLLBACK TO SAVEPOINT s")
                    conn.execute(
                        "UPDATE accounts SET note = %s WHERE id = %s",
                        (f"n{rnd.random()}", rnd.randint(1, 500)),
                    )
                else:
                    conn.execute(
                        "UPDATE accounts SET note = %s WHERE id = %s",
                        (f"n{rnd.random()}", rnd.randint(1, 500)),
                    )
                if rnd.random() < 0.03:
                    conn.rollback()
                else:
                    conn.commit()
                done[0] += 1
            except (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure):
                conn.rollback()
            except psycopg.errors.UniqueViolation:
                conn.rollback()


def check_lake_sum(p: Pipeline, seed: int) -> None:
    """The lake, read from this process while ``run`` writes it: one snapshot per query."""
    import duckdb

    from syncline.views.ducklake import lake

    if not lake.exists(p.lake_catalog):
        return
    try:
        con = lake.connect(p.lake_catalog, str(p.workdir / "lake"), read_only=True)
    except duckdb.Error:
        return  # the catalog is being created
    try:
        n, got = con.execute("SELECT count(*), sum(balance) FROM public.accounts").fetchone()
    except duckdb.CatalogException:
        return  # not created yet
    finally:
        con.close()
    if n == ACCOUNTS:
        assert got == TOTAL, f"seed {seed}: lake sum of balances {got} != {TOTAL}"


def check_iceberg_sum(p: Pipeline, seed: int) -> None:
    """The Iceberg table, read by pyiceberg from this process while ``run`` writes it: one
    table snapshot per scan."""
    from pyiceberg.exceptions import NoSuchTableError

    from syncline.views.iceberg import lake

    catalog = str(p.workdir / "iceberg.sqlite")
    if not lake.exists(catalog):
        return
    try:
        table = lake.open_catalog(catalog, str(p.workdir / "iceberg")).load_table(("public", "accounts"))
    except (NoSuchTableError, OSError):
        return  # not created yet
    if table.current_snapshot() is None:
        return
    got = table.scan(selected_fields=("balance",)).to_arrow().column("balance").to_pylist()
    if len(got) == ACCOUNTS:
        assert sum(got) == TOTAL, f"seed {seed}: Iceberg sum of balances {sum(got)} != {TOTAL}"


def check_sums(p: Pipeline, seed: int) -> None:
    """No view shows part of a transaction: the balances add up to TOTAL once a view holds
    every account (while accounts is being copied, rows the stream changed are in the views
    before the copy brings the others: a copy by watermark chunks is partial until done)."""
    import redis

    if "postgres" in p.views:
        try:
            n, got = p.sql("SELECT count(*), sum(balance) FROM public.accounts", p.replica_db)[0]
        except psycopg.errors.UndefinedTable:
            n, got = 0, None  # not created yet (the snapshot is under way)
        if n == ACCOUNTS:
            assert got == TOTAL, f"seed {seed}: replica sum of balances {got} != {TOTAL}"
    if "ducklake" in p.views:
        check_lake_sum(p, seed)
    if "iceberg" in p.views:
        check_iceberg_sum(p, seed)
    if p.redis is not None:
        r = redis.Redis.from_url(p.redis.url)
        try:
            n, got = (int(x) for x in r.eval(SUM_REDIS, 0, "public.accounts:*"))  # atomic in Redis
        except redis.exceptions.ConnectionError:
            return
        finally:
            r.close()
        if n == ACCOUNTS:
            assert got == TOTAL, f"seed {seed}: Redis sum of balances {got} != {TOTAL}"


@pytest.mark.parametrize("pipeline", ["embedded", "nats"], indirect=True)
def test_sigkill_at_random_moments(pipeline: Pipeline) -> None:
    p = pipeline
    p.sql(SCHEMA)
    seed = int(os.environ.get("SYNCLINE_CRASH_SEED") or random.randrange(1 << 31))
    rounds = int(os.environ.get("SYNCLINE_CRASH_ROUNDS") or 8)
    print(f"crash test seed {seed} (SYNCLINE_CRASH_SEED={seed} replays it), {rounds} kills")
    rnd = random.Random(seed)
    stop = threading.Event()
    done = [0]
    threads = [threading.Thread(target=workload, args=(p.source_dsn, seed + i, stop, done)) for i in range(2)]
    for t in threads:
        t.start()
    kinds: list[str] = []
    try:
        p.start()
        time.sleep(1.0)
        p.kill()  # inside the first snapshot (250k rows take seconds)
        assert "snapshot done" not in p.output(), f"seed {seed}: the first kill missed the snapshot"
        kinds.append("group in snapshot")
        p.start()
        for _ in range(rounds - 1):
            time.sleep(rnd.uniform(0.2, 2.5))
            check_sums(p, seed)
            kind = rnd.choice(["group", "group", "supervisor", "capture", "view"])
            if kind in ("capture", "view"):
                procs = {t: pid for pid, t in p.workers().items()}
                names = [
                    t for t in procs if ("capture" in t) == (kind == "capture") and "supervisor" not in t
                ]
                if names:
                    name = rnd.choice(sorted(names))
                    os.kill(procs[name], signal.SIGKILL)  # the supervisor restarts it
                    kinds.append(name)
                    continue
                kind = "group"
            if kind == "supervisor":
                p.kill_supervisor_only()
            else:
                p.kill()
            kinds.append(kind)
            p.start()
        time.sleep(1.5)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert done[0] > 100, f"seed {seed}"
    try:
        p.wait_caught_up(timeout=300)
    except AssertionError as e:
        raise AssertionError(f"seed {seed}, kills {kinds}: {e}") from None
    check_sums(p, seed)
    assert p.stop() == 0, f"seed {seed}"
    assert p.sql("SELECT sum(balance) FROM accounts")[0][0] == TOTAL
    compared = p.compare()
    faults.record([_fault(k) for k in kinds], **faults.from_diffs(d for ds in compared.values() for d in ds))
    bad = [f"{v}: {d}" for v, diffs in compared.items() for d in diffs if not d.equal]
    assert not bad, f"seed {seed}, kills {kinds}:\n" + "\n".join(bad)


def _fault(kill: str) -> str:
    """The fault summary's name for a kill of the crash test."""
    if kill.startswith("group"):
        return "SIGKILL: whole run" + (" (in the first copy)" if "snapshot" in kill else "")
    if kill == "supervisor":
        return "SIGKILL: supervisor alone"
    if "capture" in kill:
        return "SIGKILL: capture"
    return "SIGKILL: compactor" if "_compactor" in kill else "SIGKILL: view worker"
