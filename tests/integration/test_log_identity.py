"""(issue 13, item 8) A log is known by a random id, stored in the log and with every view's
checkpoint: a view never resumes by record number in another log, even one whose records
repeat the old numbers and source positions."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import duckdb
import redis

from syncline.testing.harness import Pipeline
from syncline.testing.pgcluster import PgCluster


def _log_id(p: Pipeline) -> str:
    with sqlite3.connect(p.log_path / "log.db") as c:
        row = c.execute("SELECT value FROM meta WHERE key = 'log_id'").fetchone()
    assert row and len(row[0]) == 16, row
    return str(row[0])


def _stored_ids(p: Pipeline) -> dict[str, str]:
    """The log id each store's checkpoint names (run stopped)."""
    out: dict[str, str] = {}
    if "duckdb" in p.views:
        with duckdb.connect(str(p.workdir / "wh.duckdb"), read_only=True) as c:
            out["warehouse"] = c.execute("SELECT log_id FROM _syncline.positions").fetchall()[0][0]
    if "postgres" in p.views:
        out["replica"] = str(p.sql("SELECT log_id FROM _syncline.positions", db=p.replica_db)[0][0])
    if p.redis is not None:
        got = redis.Redis.from_url(p.redis.url).hget("_syncline:position:cache", "log_id")
        out["cache"] = (got or b"").decode()
    with sqlite3.connect(p.log_path / "compact.db") as c:
        out["_compactor"] = str(c.execute("SELECT log_id FROM position").fetchone()[0])
    return out


def _another_log_refused(p: Pipeline, every: list[str]) -> None:
    """With ``run`` stopped, the log's id changed (its records kept): every view in ``every``
    must fail at start and say the log was replaced."""
    first = _log_id(p)
    with sqlite3.connect(p.log_path / "log.db") as c:
        c.execute("UPDATE meta SET value = '00000000deadbeef' WHERE key = 'log_id'")
    p.start()
    assert p.wait_failed(set(every)) == every, p.output()[-3000:]
    out = p.output()
    assert "is another log (id 00000000deadbeef, the view's store names " + first in out, out[-3000:]
    assert "Traceback" not in out


def test_a_view_does_not_resume_in_another_log_with_the_same_numbers(pg: PgCluster, tmp_path: Path) -> None:
    """The log's records kept as they are, its id changed (as a log emptied and refilled up to
    the same record and position would be): before ids, every view resumed after its record
    as if nothing had happened; each must stop and say the log was replaced."""
    p = Pipeline(pg, tmp_path, views=("postgres", "duckdb", "redis", "tantivy"))
    try:
        p.sql("CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t VALUES (1, 'a')")
        p.start()
        p.wait_caught_up()
        assert p.stop() == 0
        assert set(_stored_ids(p).values()) == {_log_id(p)}
        _another_log_refused(p, ["_compactor", "cache", "replica", "search", "warehouse"])
    finally:
        p.close()


def test_stores_written_before_logs_had_ids_resume_and_take_the_id(pg: PgCluster, tmp_path: Path) -> None:
    """A store whose checkpoint has no log id (written by an older version) resumes by record
    number and source position as before, and names the log from its next batch on."""
    p = Pipeline(pg, tmp_path, views=("postgres", "duckdb", "redis"))
    try:
        p.sql("CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t VALUES (1, 'a')")
        p.start()
        p.wait_caught_up()
        assert p.stop() == 0
        with duckdb.connect(str(tmp_path / "wh.duckdb")) as c:  # as an older version left it
            c.execute("ALTER TABLE _syncline.positions DROP COLUMN log_id")
        p.sql("ALTER TABLE _syncline.positions DROP COLUMN log_id", db=p.replica_db)
        assert p.redis is not None
        redis.Redis.from_url(p.redis.url).hdel("_syncline:position:cache", "log_id")
        with sqlite3.connect(p.log_path / "compact.db") as c:
            c.execute("UPDATE position SET log_id = ''")
        p.sql("INSERT INTO t VALUES (2, 'b')")
        p.start()
        p.wait_caught_up()
        assert not p.failed_views(), p.output()[-3000:]
        assert p.stop() == 0
        assert set(_stored_ids(p).values()) == {_log_id(p)}
        p.assert_equal()
    finally:
        p.close()


def test_a_lake_written_from_another_log_is_refused(pg: PgCluster, tmp_path: Path) -> None:
    """The lakes keep the log id in their checkpoints too (DuckLake: its positions table and
    snapshot info; Iceberg: every snapshot's summary): a lake that another pipeline's log
    wrote, under the same view name, is refused, not resumed by record number."""
    p = Pipeline(pg, tmp_path, views=("ducklake", "iceberg"))
    try:
        p.sql("CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t VALUES (1, 'a')")
        p.start()
        p.wait_caught_up()
        assert p.stop() == 0
        _another_log_refused(p, ["_compactor", "iceberg", "lake"])
    finally:
        p.close()
