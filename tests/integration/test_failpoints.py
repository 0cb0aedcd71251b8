"""A crash at each named failpoint (``syncline.core.failpoints``), between the durable
steps of the capture, a table copy, a view and the log's retention: the process dies
there (SIGKILL), the supervisor restarts it, and afterwards every view equals the source,
counted by the audit workload (nothing lost, nothing applied twice, nothing out of order).

The workload reaches every failpoint: small transactions all along (audit writers), a
first copy of three windows, a table created with rows while `run` runs, and one transaction of 60,000 rows that the server streams
in progress and the views apply in several batches."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from syncline.core.failpoints import NAMES
from syncline.testing import audit
from syncline.testing.harness import Pipeline
from syncline.testing.pgcluster import PgCluster

HIT = {
    "capture.logged_not_synced": 40,
    "capture.synced_not_confirmed": 20,
    "capture.streamed_in_progress": 500,
    "copy.chunk_logged": 2,
    "follow.joined_not_saved": 1,
    "follow.shape_logged": 1,
    "view.mid_transaction": 1,
    "view.committed_not_reported": 30,
    "retention.before_trim": 2,
}
"""The hit of each failpoint that kills (a later one than the first, where the process has
work behind it)."""


def test_every_failpoint_is_exercised() -> None:
    assert set(HIT) == set(NAMES)


@pytest.mark.parametrize("name", sorted(HIT))
def test_a_crash_at_a_failpoint_loses_nothing(
    name: str, pg: PgCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fired = tmp_path / "fired"
    fired.mkdir()
    monkeypatch.setenv("SYNCLINE_FAILPOINTS", f"{name}={HIT[name]}")
    monkeypatch.setenv("SYNCLINE_FAILPOINT_DIR", str(fired))
    p = Pipeline(pg, tmp_path / "p", views=("postgres", "redis"))
    writers = audit.Writers(p.source_dsn)
    try:
        p.sql(audit.SCHEMA + "INSERT INTO bulk SELECT g, 'first' FROM generate_series(1, 45000) g")
        p.start()
        writers.start()
        # streamed only when it starts after the slot is consistent, i.e. after the first copy
        p.wait_caught_up(timeout=120)
        if name == "follow.joined_not_saved":
            # rows committed before the capture sees the table: only its copy brings them
            p.sql(
                "CREATE TABLE late (id int PRIMARY KEY, v text);"
                " INSERT INTO late SELECT g, md5(g::text) FROM generate_series(1, 500) g"
            )
        if name == "follow.shape_logged":
            p.sql("ALTER TABLE bulk ADD COLUMN note text")  # no default: logged by the catalogue poll
        p.sql("INSERT INTO bulk SELECT g, repeat('b', 100) FROM generate_series(100000, 159999) g")
        deadline = time.monotonic() + 90
        while not (fired / name).exists():
            assert time.monotonic() < deadline, f"failpoint {name} never fired\n{p.output()[-3000:]}"
            time.sleep(0.1)
        time.sleep(1.0)  # the workload goes on while the supervisor restarts what died
        writers.stop()
        p.wait_caught_up(timeout=180)
        assert p.stop() == 0, p.output()[-3000:]
        p.assert_equal(faults={f"failpoint {name}": 1}, audited=True)
    finally:
        writers.close()
        p.close()


def test_a_shape_logged_before_later_ddl_is_the_shape_of_its_place(
    pg: PgCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A column added without a default reaches the log through the catalogue poll (pgoutput
    sends a new shape only with the table's next change). The poll logs a message in the
    WAL; the stream decodes it later, after more DDL may have run. Read at decode time, the
    shape was the catalogue's of *then*: here a column dropped and another renamed, before
    an insert that still wrote the old columns; the views renamed b to d, then dropped the
    renamed column and added it back empty (CI: test_schema_changes_mid_stream[nats], the
    title column of 20 rows NULL in the replica). The shape must travel in the message."""
    fired = tmp_path / "fired"
    fired.mkdir()
    monkeypatch.setenv("SYNCLINE_FAILPOINTS", "follow.shape_logged=1")
    monkeypatch.setenv("SYNCLINE_FAILPOINT_DIR", str(fired))
    p = Pipeline(pg, tmp_path / "p", views=("postgres", "duckdb"))
    try:
        p.sql(
            "CREATE TABLE t (id int PRIMARY KEY, a text, b int); INSERT INTO t SELECT g, 'a' || g, g FROM generate_series(1, 50) g"
        )
        p.start()
        p.wait_caught_up()
        p.sql("ALTER TABLE t ADD COLUMN d int")  # the poll logs (id, a, b, d), then dies
        deadline = time.monotonic() + 60
        while not (fired / "follow.shape_logged").exists():
            assert time.monotonic() < deadline, f"the shape was never logged\n{p.output()[-3000:]}"
            time.sleep(0.02)
        p.kill()  # before the stream decodes that message
        p.sql("INSERT INTO t VALUES (100, 'new', 7, 8)")  # (id, a, b, d), after the message
        p.sql("ALTER TABLE t DROP COLUMN b; ALTER TABLE t RENAME COLUMN a TO title")
        p.sql("UPDATE t SET title = 'one' WHERE id = 1")
        monkeypatch.delenv("SYNCLINE_FAILPOINTS")
        p.start()
        p.wait_caught_up()
        assert p.stop() == 0
        p.assert_equal()
        got = p.sql("SELECT count(*) FROM t WHERE title LIKE 'a%'", db=p.replica_db)
        assert got == [(49,)], got
    finally:
        p.close()
