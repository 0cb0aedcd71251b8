"""A failed view has a way back (issue 9, item 7): ``status`` gives the reason and the fix,
a cause fixable in the target is retried with back-off, ``syncline retry VIEW`` restarts a
view failed for any other reason."""

from __future__ import annotations

import json
import time

import psycopg

from syncline.testing.harness import Pipeline


def status(p: Pipeline) -> tuple[int, dict[str, object]]:
    r = p.cli("status", "--json")
    return r.returncode, json.loads(r.stdout)


def view_state(p: Pipeline, name: str) -> dict[str, object]:
    return status(p)[1]["views"][name]  # type: ignore[index, no-any-return]


def wait_state(p: Pipeline, name: str, state: str, timeout: float = 60) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while True:
        v = view_state(p, name)
        if v["state"] == state:
            return v
        assert time.monotonic() < deadline, f"{name} is {v}, not {state}\n" + p.output()[-3000:]
        time.sleep(0.3)


def test_constraint_in_the_replica_is_retried_once_fixed(pipeline: Pipeline) -> None:
    p = pipeline
    p.sql("CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t VALUES (1, 'ok')")
    p.start()
    p.wait_caught_up()
    p.sql("ALTER TABLE public.t ADD CONSTRAINT no_bad CHECK (v <> 'bad')", p.replica_db)
    p.sql("INSERT INTO t VALUES (2, 'bad'), (3, 'fine')")
    v = wait_state(p, "replica", "failed")
    assert "no_bad" in str(v["error"]) and "constraint" in str(v["action"])
    # the cause is still there: each retry (1 s, 2 s, ... apart; "starting" while it runs)
    # fails again, and status says what fixes it all along, also during a retry
    p.sql("INSERT INTO t VALUES (4, 'more')")  # the other views go on
    states = set()
    deadline = time.monotonic() + 6
    while time.monotonic() < deadline:
        plain = p.cli("status")
        assert plain.returncode == 1, plain.stdout  # a failed view: status exits 1
        assert "to fix:" in plain.stdout and "repl…" not in plain.stdout, plain.stdout
        states.add(view_state(p, "replica")["state"])
    assert states <= {"failed", "starting"}, states
    # a retry held up inside the failing batch (a lock in the replica) is not "running"
    with psycopg.connect(p.replica_dsn) as held:
        held.execute("LOCK TABLE public.t IN ACCESS EXCLUSIVE MODE")
        # the next retry (or the one already under way when the lock was taken) reads the
        # batch and waits for the lock: seen in the replica's own lock table
        waiting = "SELECT count(*) FROM pg_locks WHERE relation = 'public.t'::regclass AND NOT granted"
        deadline = time.monotonic() + 60
        while held.execute(waiting).fetchone() == (0,):
            assert time.monotonic() < deadline, p.output()[-3000:]
            time.sleep(0.2)
        v = view_state(p, "replica")
        assert v["state"] == "starting" and "no_bad" in str(v["error"]), v
        assert "constraint" in str(v["action"]), v
    wait_state(p, "replica", "failed")
    assert p.sql("SELECT count(*) FROM public.t", p.replica_db) == [(1,)]
    p.sql("ALTER TABLE public.t DROP CONSTRAINT no_bad", p.replica_db)
    wait_state(p, "replica", "running", timeout=120)  # retried by itself, with back-off
    p.wait_caught_up(timeout=120)
    assert view_state(p, "replica")["state"] == "running"
    assert "retrying in" in p.output()
    assert p.stop() == 0
    p.assert_equal()


def test_retry_command_restarts_a_failed_view(pipeline: Pipeline) -> None:
    import redis

    p = pipeline
    p.sql("CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t VALUES (1, 'ok')")
    p.start()
    p.wait_caught_up()
    assert p.redis is not None
    r = redis.Redis.from_url(p.redis.url)
    try:
        # the view's key set of the table replaced by a value of another type (WRONGTYPE)
        r.delete("_syncline:keys:cache:public.t")
        r.set("_syncline:keys:cache:public.t", "not a set")
        p.sql("INSERT INTO t VALUES (5, 'five')")
        v = wait_state(p, "cache", "failed")
        assert "retry cache" in str(v["action"]) and v.get("next_retry_seconds") is None
        out = p.cli("retry", "replica")
        assert out.returncode == 0 and "not failed" in out.stdout
        r.delete("_syncline:keys:cache:public.t")  # fixed, but this kind is not retried alone
        time.sleep(4)
        assert view_state(p, "cache")["state"] == "failed"
        out = p.cli("retry", "cache")
        assert out.returncode == 0 and "requested" in out.stdout, out.stdout + out.stderr
        wait_state(p, "cache", "running")
        p.wait_caught_up(timeout=120)
        assert view_state(p, "cache")["state"] == "running"
        bad = p.cli("retry", "nosuchview")
        assert bad.returncode == 2 and "no view named nosuchview" in bad.stderr
    finally:
        r.close()
    assert p.stop() == 0
    p.assert_equal()
