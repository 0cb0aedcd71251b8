"""PostgreSQL's own benchmark as an outside workload: ``syncline run`` starts on an empty
database, ``pgbench -i`` creates its tables (keys added after the load, one table never gets
one), then ``pgbench`` runs TPC-B-like transactions while ``run`` is killed (SIGKILL) and
started again; every view must equal the source. The history table, which has no key,
is followed once it is given ``REPLICA IDENTITY FULL``, as the warning says."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path

from syncline.testing.harness import Pipeline
from syncline.testing.pgcluster import PgCluster
from tests.integration.test_living_schema import wait_followed


def _pgbench(pg: PgCluster, db: str, *args: str) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(
        [str(pg.bindir / "pgbench"), "-h", "127.0.0.1", "-p", str(pg.port), "-U", "postgres", *args, db],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PGTZ": "America/Los_Angeles"},
    )
    assert r.returncode == 0, r.stdout + r.stderr
    return r


def test_pgbench_with_run_killed_in_the_middle(pg: PgCluster, tmp_path: Path) -> None:
    p = Pipeline(pg, tmp_path, views=("postgres", "duckdb"))  # keyed views leave keyless tables out
    try:
        p.start()  # before pgbench creates its tables
        _pgbench(pg, p.source_db, "-i", "-s", "1", "-q")
        wait_followed(p)
        out = p.output()
        assert "public.pgbench_history is not followed: it has no primary key" in out, out[-3000:]
        p.sql("ALTER TABLE pgbench_history REPLICA IDENTITY FULL")  # as the warning says
        wait_followed(p)
        done: list[subprocess.CompletedProcess[str]] = []
        bench = threading.Thread(
            target=lambda: done.append(_pgbench(pg, p.source_db, "-c", "2", "-j", "2", "-T", "12"))
        )
        bench.start()
        try:
            time.sleep(4)
            p.kill()
            time.sleep(1)
            p.start()
        finally:
            bench.join()
        assert done and "number of transactions actually processed" in done[0].stdout
        wait_followed(p)
        p.wait_caught_up(timeout=180)
        assert p.stop() == 0
        p.assert_equal()
        assert p.sql("SELECT sum(abalance) FROM public.pgbench_accounts", p.replica_db) == p.sql(
            "SELECT sum(abalance) FROM public.pgbench_accounts"
        )
    finally:
        p.close()
