"""An application's life as outside workloads play it: syncline starts before any table
exists, then migrations and DML of every kind run (tables created with rows, fast and
volatile defaults, type changes, enum renames, renames, inheritance, partitions attached
and detached, nested partitions, truncate cascade, two-phase commit, MERGE, keys dropped
and re-added, a 60k-row transaction, triggers, time zones, odd names, a schema dropped), while `syncline run` is killed at random moments. Every view must end equal."""

from __future__ import annotations

import os
import random
import subprocess
import time
from pathlib import Path

from syncline.testing.harness import Pipeline
from syncline.testing.pgcluster import PgCluster

WORKLOADS = Path(__file__).parent.parent / "data" / "workloads"


def test_workloads_from_an_empty_database_with_random_kills(pg: PgCluster, tmp_path: Path) -> None:
    seed = int(os.environ.get("SYNCLINE_CRASH_SEED") or random.randrange(1 << 31))
    print(f"outside workload seed {seed}")
    rnd = random.Random(seed)
    views = ("postgres", "duckdb", "redis", "tantivy")
    if not os.environ.get("PG_BINDIR"):  # the lakes once, on the machine's PostgreSQL
        views += ("ducklake", "iceberg")
    p = Pipeline(pg, tmp_path, views=views, tables="*.*")
    try:
        p.start()
        time.sleep(1.5)
        psql = str(pg.bindir / "psql")
        script = " && ".join(
            f"{psql} -X -q -d '{p.source_dsn}' -f {f} >/dev/null 2>&1; true"
            for f in (
                WORKLOADS / "migrations.sql",
                WORKLOADS / "types_and_dml.sql",
                WORKLOADS / "edge_cases.sql",
            )
        )
        app = subprocess.Popen(["bash", "-c", script])
        kills = 0
        while app.poll() is None:
            time.sleep(rnd.uniform(0.3, 2.0))
            if rnd.random() < 0.5:
                p.kill()
            else:
                p.kill_supervisor_only()
            kills += 1
            p.start()
        assert app.returncode == 0
        r = p.cli("wait", "--timeout", "180", timeout=240)
        assert r.returncode == 0, f"seed {seed}: {r.stderr}\n{p.output()[-3000:]}"
        assert not p.failed_views(), f"seed {seed}: {p.output()[-3000:]}"
        assert p.stop() == 0
        v = p.cli("verify", "-q", timeout=600)
        assert v.returncode == 0, f"seed {seed}, {kills} kills:\n{v.stdout[-4000:]}{v.stderr[-2000:]}"
        assert "public.lots: equal (30000 rows)" in v.stdout and "public.big: equal" in v.stdout, v.stdout
        assert "public.part2: equal (3 rows)" in v.stdout and "app2." not in v.stdout, v.stdout
    finally:
        p.close()
