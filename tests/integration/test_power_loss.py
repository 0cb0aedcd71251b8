"""(issue 13) Power loss on the embedded log: the machine running ``syncline run`` loses
power at random moments (every process dies and the log's directory keeps only what was
fsynced, :mod:`syncline.testing.powerloss`) while the source and the views' stores (replica,
Redis, a DuckDB file elsewhere) live on. After each cut ``run`` starts again; in the end
every view equals the source, counted by the audit workload.

``SYNCLINE_POWER_CUTS=N`` sets the number of cuts (default 6; ``make soak`` runs 40);
``SYNCLINE_POWER_SEED=N`` replays a run."""

from __future__ import annotations

import os
import random
import time
from pathlib import Path

import pytest

from syncline.testing import audit
from syncline.testing.harness import Pipeline
from syncline.testing.pgcluster import PgCluster
from syncline.testing.powerloss import PowerLoss


def test_power_loss_on_the_embedded_log_loses_nothing(
    pg: PgCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cuts = int(os.environ.get("SYNCLINE_POWER_CUTS") or 6)
    seed = int(os.environ.get("SYNCLINE_POWER_SEED") or random.randrange(1 << 31))
    print(f"power loss seed {seed} (SYNCLINE_POWER_SEED={seed} replays it), {cuts} cuts")
    rnd = random.Random(seed)
    p = Pipeline(pg, tmp_path / "p", views=("postgres", "redis", "duckdb"))
    power = PowerLoss(p.log_path, tmp_path / "power")
    for k, v in power.env().items():
        monkeypatch.setenv(k, v)
    writers = audit.Writers(p.source_dsn)
    big = 0
    try:
        p.sql(audit.SCHEMA + "INSERT INTO bulk SELECT g, 'first' FROM generate_series(1, 30000) g")
        p.start()
        writers.start()
        for i in range(cuts):
            time.sleep(rnd.uniform(0.3, 2.5))
            if i % 2 == 1:  # a transaction the server streams in progress, cut or not
                big += 1
                first = 1_000_000 * big
                p.sql(f"INSERT INTO bulk SELECT g, 'big' FROM generate_series({first}, {first + 39_999}) g")
                time.sleep(rnd.uniform(0.0, 1.5))
            p.kill()  # every process of the run, gone
            power.cut()
            p.start()
        time.sleep(1.0)
        writers.stop()
        p.wait_caught_up(timeout=300)
        assert not p.failed_views(), p.output()[-3000:]
        assert p.stop() == 0, p.output()[-3000:]
        assert power.cuts == cuts
        p.assert_equal(faults={"power loss: embedded log": cuts}, audited=True)
    except BaseException as e:
        raise AssertionError(f"seed {seed}: {e}") from e
    finally:
        writers.close()
        p.close()
