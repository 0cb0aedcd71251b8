"""``wait`` on a failed view returns at once (issue 9, item 8): CLI exit 2, ``GET /wait``
503, ``wait_for`` raising; a timeout names only the views behind; tables created after
``run`` started are not claimed."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from syncline.client import Client, TablesNotFollowed, ViewFailed, WaitTimeout, wait_for
from syncline.testing.harness import Pipeline
from syncline.testing.pgcluster import PgCluster, free_port


def cli_wait(p: Pipeline, *args: str, timeout: float = 120) -> tuple[int, str, float]:
    t0 = time.monotonic()
    r = p.cli("wait", *args, timeout=timeout)
    return r.returncode, r.stdout + r.stderr, time.monotonic() - t0


def http_wait(base: str, query: str) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(f"{base}/wait?{query}", timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        body = e.read()
        e.close()
        return e.code, json.loads(body)


def test_wait_on_failed_view_returns_at_once(pg: PgCluster, tmp_path: Path) -> None:
    port = free_port()
    p = Pipeline(pg, tmp_path, views=("postgres", "duckdb", "redis"), http_listen=f"127.0.0.1:{port}")
    base = f"http://127.0.0.1:{port}"
    try:
        p.sql("CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t VALUES (1, 'ok')")
        p.start()
        p.wait_caught_up()
        # a constraint only the replica has: the next row stops the replica view for good
        p.sql("ALTER TABLE public.t ADD CONSTRAINT no_bad CHECK (v <> 'bad')", p.replica_db)
        p.sql("INSERT INTO t VALUES (2, 'bad')")
        assert "replica" in p.wait_failed({"replica"}, timeout=60), p.output()[-3000:]

        code, out, secs = cli_wait(p, "--view", "replica", "--timeout", "60")
        assert code == 2 and secs < 30, out
        assert "view replica has failed" in out and "no_bad" in out
        code, out, _ = cli_wait(p, "--timeout", "60")  # every view: replica is among them
        assert code == 2 and "replica" in out
        code, out, _ = cli_wait(p, "--view", "warehouse", "--view", "cache", "--timeout", "60")
        assert code == 0, out

        status, doc = http_wait(base, "view=replica&timeout=60")
        assert status == 503 and doc["view"] == "replica" and "no_bad" in str(doc["error"])
        status, doc = http_wait(base, "view=cache&timeout=60")
        assert status == 200 and doc["applied"] is True

        with pytest.raises(ViewFailed, match="replica"):
            Client(base).wait_for(None, ["replica"], timeout=60)
        with pytest.raises(ViewFailed, match="replica"):
            wait_for(None, ["replica"], timeout=60, config=p.config_path)

        # a timeout names only the views that are behind: stop the cache's Redis
        assert p.redis is not None
        p.redis.stop()
        p.sql("INSERT INTO t VALUES (3, 'fine')")
        code, out, _ = cli_wait(p, "--view", "warehouse", "--view", "cache", "--timeout", "3")
        assert code == 1, out
        assert "cache" in out and "warehouse" not in out, out
        with pytest.raises(WaitTimeout) as exc:
            wait_for(None, ["warehouse", "cache"], timeout=3, config=p.config_path)
        assert "cache" in str(exc.value) and "warehouse" not in str(exc.value)
        p.redis.start()
        assert wait_for(None, ["cache"], timeout=120, config=p.config_path) is None
    finally:
        p.close()


def test_wait_does_not_claim_tables_before_they_are_followed(pipeline: Pipeline) -> None:
    p = pipeline
    p.sql("CREATE TABLE t (id int PRIMARY KEY)")
    p.start()
    p.wait_caught_up()
    code, out, _ = cli_wait(p, "--timeout", "30")
    assert code == 0, out
    p.kill()  # nobody follows the new table now
    p.sql("CREATE TABLE later (id int PRIMARY KEY); INSERT INTO later VALUES (1)")
    code, out, took = cli_wait(p, "--timeout", "3")
    assert code == 1 and took >= 3, out
    assert "public.later" in out and "not followed" in out
    with pytest.raises(TablesNotFollowed, match=r"public\.later"):
        wait_for(None, None, timeout=2, config=p.config_path)
    p.start()  # followed and copied while run runs: wait returns once the rows are in
    code, out, _ = cli_wait(p, "--timeout", "60")
    assert code == 0, out
    if "postgres" in p.views:
        assert p.sql("SELECT id FROM public.later", p.replica_db) == [(1,)]
