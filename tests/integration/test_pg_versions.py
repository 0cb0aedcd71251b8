"""What differs between PostgreSQL versions (run on every version of ``make test-matrix``):
failover slots (17+), the server version check."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from syncline.testing.harness import Pipeline
from syncline.testing.pgcluster import PgCluster, running_cluster, standby_of

from .test_source_outages import SCHEMA, Writer, promote, wait_for


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


def test_a_failover_slot_survives_a_promotion(pg: PgCluster, tmp_path: Path) -> None:
    """(issue 13) PostgreSQL 17+: the slot is a failover slot, a standby keeps a copy
    (``sync_replication_slots``), and the primary sends no change the standby has not
    (``synchronized_standby_slots``). The primary dies (immediate), the standby is promoted,
    syncline is pointed at it and goes on from its log: nothing lost, nothing twice, no
    resync. Before 17 a promotion fails closed (``test_source_outages.py``)."""
    if int(pg.psql("SHOW server_version_num").strip()) < 170000:
        with pytest.raises(subprocess.CalledProcessError):  # no failover slots to keep
            pg.psql("ALTER SYSTEM SET sync_replication_slots = on")
        return
    with running_cluster() as primary:
        p = Pipeline(
            primary, tmp_path, views=("postgres", "redis"), replica_cluster=pg, extra_source="failover = true"
        )
        standby: PgCluster | None = None
        try:
            p.sql(SCHEMA)
            standby = standby_of(primary, slot="standby1", sync_slots=True)
            primary.psql("ALTER SYSTEM SET synchronized_standby_slots = 'standby1'")
            primary.psql("SELECT pg_reload_conf()")
            p.start()
            p.wait_caught_up()
            w = Writer(p.source_dsn)
            time.sleep(3)
            w.stop()
            p.wait_caught_up()
            # a synced slot is temporary (dropped at promotion) until the standby has caught up
            # with the primary's copy of it
            slot = f"SELECT synced AND NOT temporary FROM pg_replication_slots WHERE slot_name = '{p.slot}'"
            wait_for(standby.dsn(), slot, "the standby never synced the failover slot")
            promote(p, primary, standby)
            p.sql("UPDATE acc SET note = 'after failover' WHERE id < 50; DELETE FROM acc WHERE id > 1900")
            p.start()
            r = p.cli("wait", "--timeout", "120", timeout=180)
            assert r.returncode == 0, r.stderr + p.output()[-3000:]
            assert "is missing" not in p.output()
            assert p.stop() == 0
            p.assert_equal(faults={"standby promoted, failover slot (PostgreSQL 17+)": 1})
        finally:
            p.close()
            if standby is not None:
                standby.cleanup("immediate")
