"""Faults around the pipeline: a view's store down, the log's disk full."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from syncline.log.embedded.store import connect, get_meta
from syncline.testing.harness import Pipeline
from syncline.testing.pgcluster import PgCluster, running_cluster


@pytest.fixture
def second_cluster() -> Iterator[PgCluster]:
    with running_cluster() as c:
        yield c


def test_view_store_down_retries_and_catches_up(
    pg: PgCluster, second_cluster: PgCluster, tmp_path: Path
) -> None:
    p = Pipeline(pg, tmp_path, views=("postgres",), replica_cluster=second_cluster)
    try:
        p.sql("CREATE TABLE t (id int PRIMARY KEY, v text)")
        p.start()
        p.wait_caught_up()
        second_cluster.stop()  # the replica's server goes away
        for i in range(20):
            p.sql(f"INSERT INTO t SELECT g, 'v{i}' FROM generate_series({i * 100}, {i * 100 + 99}) g")
        time.sleep(3)
        # the capture went on: the log has the changes and the slot advanced
        conn = connect(p.log_path, readonly=True)
        try:
            received = int(get_meta(conn, "received_lsn", "0"))
        finally:
            conn.close()
        assert received >= p.current_lsn() - 1024 * 1024
        assert p.proc is not None and p.proc.poll() is None
        second_cluster.start()
        p.wait_caught_up(timeout=120)
        assert p.stop() == 0
        assert "retrying in" in p.output()
        p.assert_equal(faults={"view store down (replica server stopped)": 1})
    finally:
        p.close()


def _mount_tmpfs(where: Path, size: str) -> bool:
    where.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True
    )
    return r.returncode == 0


def test_log_disk_full_stops_cleanly_without_advancing_the_slot(pg: PgCluster, tmp_path: Path) -> None:
    logdir = tmp_path / "small"
    if not _mount_tmpfs(logdir, "3M"):
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        p = Pipeline(pg, tmp_path / "w", views=("postgres",), log_path=logdir / "log")
        try:
            p.sql("CREATE TABLE t (id int PRIMARY KEY, v text)")
            p.start()
            p.wait_caught_up()
            p.sql("INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 100000) g")
            assert p.proc is not None
            rc = p.proc.wait(60)
            p.proc = None
            assert rc != 0
            out = p.output()
            assert "disk is full" in out or "database or disk is full" in out
            # one clear line, no tracebacks (issue 13): the last line says what to do
            assert "Traceback" not in out, out[-4000:]
            last = out.strip().splitlines()[-1]
            assert last.startswith("syncline: error:") and "disk" in last and "full" in last, last
            conn = connect(p.log_path, readonly=True)
            try:
                durable = int(get_meta(conn, "received_lsn", "0"))
            finally:
                conn.close()
            row = p.sql(
                f"SELECT (confirmed_flush_lsn - '0/0')::bigint FROM pg_replication_slots"
                f" WHERE slot_name = '{p.slot}'"
            )
            assert int(row[0][0]) <= durable  # type: ignore[call-overload]
            # more room: a restart resumes and loses nothing
            subprocess.run(["mount", "-o", "remount,size=300M", str(logdir)], check=True)
            p.start()
            p.wait_caught_up(timeout=120)
            assert p.stop() == 0
            p.assert_equal(faults={"log disk full": 1})
        finally:
            p.close()
    finally:
        subprocess.run(["umount", "-l", str(logdir)], capture_output=True)
