"""A Redis view applied in two partitions by key hash: under the crash test's workload
(transfers, unchanged TOAST values, keys moved, big streamed transactions, savepoints),
with one partition's applier killed now and then, then a truncate and schema changes, the
view equals the source; status and `wait` see the view as far as its slowest partition."""

from __future__ import annotations

import json
import os
import random
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from syncline.config import load_config
from syncline.testing.harness import Pipeline
from syncline.testing.pgcluster import PgCluster
from syncline.views.partition import partition_of
from tests.integration.test_crash import SCHEMA, workload


@pytest.fixture(params=["embedded", "nats"])
def parts(pg: PgCluster, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Pipeline]:
    p = Pipeline(pg, tmp_path, views=("redis",), log_kind=request.param, redis_partitions=2)
    try:
        yield p
    finally:
        p.close()


def partition_pids(p: Pipeline) -> dict[str, int]:
    return {t.split("view ", 1)[1]: pid for pid, t in p.workers().items() if "view cache." in t}


def test_two_partitions_equal_the_source_through_kills_truncates_and_schema_changes(parts: Pipeline) -> None:
    p = parts
    p.sql(SCHEMA)
    seed = int(os.environ.get("SYNCLINE_CRASH_SEED") or random.randrange(1 << 31))
    print(f"seed {seed}")
    rnd = random.Random(seed)
    p.start()
    p.wait_caught_up(timeout=300)
    pids = partition_pids(p)
    assert sorted(pids) == ["cache.p0of2", "cache.p1of2"], p.workers()
    stop = threading.Event()
    done = [0]
    threads = [threading.Thread(target=workload, args=(p.source_dsn, seed + i, stop, done)) for i in range(2)]
    for t in threads:
        t.start()
    try:
        for _ in range(4):
            time.sleep(rnd.uniform(1.0, 3.0))
            victim = rnd.choice(sorted(pids))
            old = pids[victim]
            os.kill(old, signal.SIGKILL)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:  # the supervisor restarts it (a new process)
                pids = partition_pids(p)
                if len(pids) == 2 and pids.get(victim) != old:
                    break
                time.sleep(0.2)
            assert len(pids) == 2 and pids[victim] != old, (
                f"seed {seed}: {victim} not restarted:\n{p.output()[-3000:]}"
            )
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert done[0] > 50, f"seed {seed}: the workload barely ran ({done[0]} transactions)"
    p.wait_caught_up(timeout=300)
    p.sql("TRUNCATE events")
    p.sql("ALTER TABLE accounts ADD COLUMN extra int")
    p.sql("UPDATE accounts SET extra = id WHERE id % 3 = 0")
    p.sql("ALTER TABLE accounts RENAME COLUMN note TO remark")
    p.sql("UPDATE accounts SET extra = 0 WHERE id = 1")  # a rename reaches views with a change
    p.sql("INSERT INTO events (account, payload) SELECT g, '{}' FROM generate_series(1, 300) g")
    p.wait_caught_up(timeout=300)
    st = json.loads(p.cli("status", "--json").stdout)["views"]["cache"]
    assert st["state"] == "running", st
    assert sorted(st["partitions"]) == ["0/2", "1/2"], st
    for part in st["partitions"].values():
        assert part["state"] == "running" and part["applied_events"] > 0, st
    assert p.cli("wait", "--view", "cache", "--timeout", "60").returncode == 0
    text = p.cli("status").stdout
    assert "cache[0/2]" in text and "cache[1/2]" in text, text
    assert p.stop() == 0
    p.assert_equal()
    # the rows were split by key hash: each partition wrote (and holds for truncate) its keys
    assert p.redis is not None
    r = redis.Redis.from_url(p.redis.url, decode_responses=True)
    held = [r.smembers(f"_syncline:keys:cache.p{i}of2:public.accounts") for i in range(2)]
    r.close()
    assert held[0] and held[1] and not held[0] & held[1], held
    assert len(held[0] | held[1]) == 500
    for i, keys in enumerate(held):
        assert all(partition_of((k.rsplit(":", 1)[1],), 2) == i for k in keys)


def test_another_partition_count_is_refused_with_the_fix(pg: PgCluster, tmp_path: Path) -> None:
    p = Pipeline(pg, tmp_path, views=("redis",), redis_partitions=2)
    try:
        p.sql(
            "CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t SELECT g, 'x' FROM generate_series(1, 100) g"
        )
        p.start()
        p.wait_caught_up()
        assert p.stop() == 0
        text = p.config_path.read_text()
        p.config_path.write_text(text.replace("partitions = 2", "partitions = 3"))
        p.cfg = load_config(p.config_path)
        r = p.cli("apply", "--view", "cache", "--partition", "1/2")
        assert r.returncode == 2 and "is applied in 3 partitions" in r.stderr, r.stderr
        p.start()
        deadline = time.monotonic() + 60
        st: dict[str, object] = {}
        while time.monotonic() < deadline:
            st = json.loads(p.cli("status", "--json").stdout)["views"]["cache"]
            if st["state"] == "failed":
                break
            time.sleep(0.5)
        assert st["state"] == "failed", st
        assert "applied in 2 partition(s) and is now configured with 3" in str(st["error"]), st
        assert "set partitions = 2 again" in str(st["action"]), st
    finally:
        p.close()
