"""What differs between PostgreSQL versions (run on every version of ``make test-matrix``):
failover slots (17+), the server version check."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from syncline.testing.harness import Pipeline
from syncline.testing.pgcluster import PgCluster


def test_failover_slot(pg: PgCluster, tmp_path: Path) -> None:
    """``source.failover = true``: on 17+ the slot is created as a failover slot; before 17,
    one clear error and nothing created."""
    version = int(pg.psql("SHOW server_version_num").strip())
    p = Pipeline(pg, tmp_path, views=("postgres",), extra_source="failover = true")
    try:
        p.sql("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1)")
        if version < 170000:
            r = subprocess.run(
                [sys.executable, "-m", "syncline", "run", "-c", str(p.config_path)],
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert r.returncode == 1, r.stdout + r.stderr
            assert "needs PostgreSQL 17 or newer" in r.stderr
            assert not p.sql(f"SELECT 1 FROM pg_replication_slots WHERE slot_name = '{p.slot}'")
            return
        p.start()
        p.wait_caught_up()
        p.sql("INSERT INTO t VALUES (2)")
        p.wait_caught_up()
        assert p.sql(f"SELECT failover FROM pg_replication_slots WHERE slot_name = '{p.slot}'") == [(True,)]
        assert p.stop() == 0
        p.assert_equal()
    finally:
        p.close()
