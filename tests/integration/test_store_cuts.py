"""Network cuts between each view and its store (issue 13): the replica's PostgreSQL and the
Redis cache are reached through relays the test cuts (every connection closed, new ones
refused) for 1 s and for 10 s, one store at a time and both at once, under the audit
workload. The views wait the cuts out and end equal to the source, counted: nothing lost,
nothing applied twice, nothing out of order. ``SYNCLINE_CUT_SECONDS=60`` (``make soak``)
makes the long cuts longer."""

from __future__ import annotations

import os
import time
from pathlib import Path

from syncline.config import load_config
from syncline.testing import audit
from syncline.testing.harness import Pipeline
from syncline.testing.netcut import NetCut
from syncline.testing.pgcluster import PgCluster


def test_views_ride_out_cuts_to_their_stores(pg: PgCluster, tmp_path: Path) -> None:
    long_cut = float(os.environ.get("SYNCLINE_CUT_SECONDS") or 10)
    p = Pipeline(pg, tmp_path, views=("postgres", "redis"))
    assert p.redis is not None
    pg_relay, redis_relay = NetCut(pg.port), NetCut(p.redis.port)
    writers = audit.Writers(p.source_dsn)
    try:
        text = p.config_path.read_text()
        replica = p.replica_dsn.replace(f":{pg.port}/", f":{pg_relay.port}/")
        text = text.replace(f'"{p.replica_dsn}"', f'"{replica}"')
        text = text.replace(f'"{p.redis.url}"', f'"redis://127.0.0.1:{redis_relay.port}/0"')
        p.config_path.write_text(text)
        p.cfg = load_config(p.config_path)
        p.sql(audit.SCHEMA)
        p.start()
        writers.start()
        p.wait_caught_up()
        cuts: dict[str, int] = {}
        for relays, what in (
            ((pg_relay,), "replica"),
            ((redis_relay,), "Redis"),
            ((pg_relay, redis_relay), "replica and Redis at once"),
        ):
            for seconds in (1.0, long_cut):
                for r in relays:
                    r.cut()
                time.sleep(seconds)
                for r in relays:
                    r.restore()
                time.sleep(1.5)
                key = f"network cut, view store ({what}), {seconds:.0f} s"
                cuts[key] = cuts.get(key, 0) + 1
        writers.stop()
        p.wait_caught_up(timeout=180)
        assert p.failed_views() == []
        out = p.output()
        assert p.stop() == 0, out[-3000:]
        p.assert_equal(faults=cuts, audited=True)
        assert "Traceback" not in out, out[-3000:]
    finally:
        writers.close()
        pg_relay.close()
        redis_relay.close()
        p.close()
