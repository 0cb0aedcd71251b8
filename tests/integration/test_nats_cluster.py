"""The log on a three-server JetStream cluster (replicas = 3) under faults, with writers
running: the stream's leader is killed and comes back, every link to the cluster is cut for
10 s, syncline is killed inside a big transaction. Afterwards every view equals the source,
nothing was applied twice (counters equal), and no key went back to an older version (an
insert-only audit of versions, applied through the log, is complete and in order).

``SYNCLINE_CLUSTER_ROUNDS=N`` repeats the faults (default 1, the short form for CI)."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from syncline.testing import audit, natsserver
from syncline.testing.harness import Pipeline
from syncline.testing.natsserver import NatsServer, nats_cluster
from syncline.testing.netcut import NetCut
from syncline.testing.pgcluster import PgCluster


def test_three_server_cluster_under_faults(pg: PgCluster, tmp_path: Path) -> None:
    rounds = int(os.environ.get("SYNCLINE_CLUSTER_ROUNDS") or 1)
    group = nats_cluster(tmp_path / "cluster", 3)
    relays = [NetCut(s.port) for s in group]
    p = Pipeline(
        pg,
        tmp_path / "p",
        views=("postgres", "redis"),
        log_kind="nats",
        nats_servers=tuple(f"nats://127.0.0.1:{r.port}" for r in relays),
        nats_replicas=3,
    )
    stop = threading.Event()
    errors: list[BaseException] = []
    threads = [threading.Thread(target=audit.writer, args=(p.source_dsn, i, stop, errors)) for i in range(2)]
    try:
        p.sql(audit.SCHEMA)
        p.start()
        for t in threads:
            t.start()
        p.wait_caught_up(120)
        stream = p.cfg.log.stream
        for r in range(rounds):
            # the stream's leader dies (kill -9) and comes back
            name = natsserver.stream_leader(group[(r + 1) % 3].url, stream)
            leader: NatsServer = next(s for s in group if s.name == name)
            leader.kill()
            time.sleep(5)
            leader.start()
            # every link to the cluster is cut for 10 s
            for relay in relays:
                relay.cut()
            time.sleep(10)
            for relay in relays:
                relay.restore()
            # syncline dies inside a big transaction
            p.sql(
                f"INSERT INTO bulk SELECT g + {r * 100_000}, repeat('b', 200) FROM generate_series(1, 60000) g"
            )
            time.sleep(0.7)
            p.kill()
            time.sleep(1)
            p.start()
            time.sleep(3)
        stop.set()
        for t in threads:
            t.join()
        assert not errors, errors
        p.wait_caught_up(240)
        faults = {
            "NATS stream leader SIGKILL": rounds,
            "network cut, all NATS links, 10 s": rounds,
            "SIGKILL: whole run (in a big transaction)": rounds,
        }
        p.assert_equal(faults=faults, audited=True)
    finally:
        stop.set()
        for t in threads:
            if t.is_alive():
                t.join()
        p.close()
        for relay in relays:
            relay.close()
        for s in group:
            s.kill()
