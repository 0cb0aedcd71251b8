"""Kill -9 at random moments under a mixed workload, restart, and require every view to
equal the source: nothing lost, nothing applied twice, no half transaction."""

from __future__ import annotations

import random
import threading
import time

import psycopg

from syncline.testing.harness import Pipeline

SCHEMA = """
CREATE TABLE accounts (id int PRIMARY KEY, balance bigint NOT NULL, note text);
CREATE TABLE events (id bigserial PRIMARY KEY, account int, payload jsonb, at timestamptz DEFAULT now());
CREATE TABLE docs (id int PRIMARY KEY, body text, rev int);
ALTER TABLE docs ALTER body SET STORAGE EXTERNAL;
INSERT INTO accounts SELECT g, 1000, 'start' FROM generate_series(1, 500) g;
INSERT INTO docs SELECT g, repeat(md5(g::text), 500), 0 FROM generate_series(1, 50) g;
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


def test_sigkill_at_random_moments(pipeline: Pipeline) -> None:
    p = pipeline
    p.sql(SCHEMA)
    rnd = random.Random(int(time.time()))
    stop = threading.Event()
    done = [0]
    threads = [threading.Thread(target=workload, args=(p.source_dsn, i, stop, done)) for i in range(2)]
    for t in threads:
        t.start()
    try:
        p.start()
        kills = 0
        while kills < 20:
            time.sleep(rnd.uniform(0.2, 2.5))
            if kills % 3 == 2:
                p.kill_supervisor_only()
            else:
                p.kill()
            kills += 1
            p.start()
        time.sleep(1.5)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert done[0] > 100
    p.wait_caught_up(timeout=300)
    assert p.stop() == 0
    p.assert_equal()
