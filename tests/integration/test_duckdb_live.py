"""The plain DuckDB view read while ``syncline run`` holds its file (issue 14): ``verify``
and ``sql`` borrow the file from the view's worker for each read, and the worker goes on
applying afterwards. Writers write throughout."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import psycopg

from syncline.testing.harness import Pipeline
from syncline.testing.pgcluster import PgCluster


def _writer(dsn: str, stop: threading.Event, done: list[int]) -> None:
    with psycopg.connect(dsn, autocommit=True) as c:
        i = 0
        while not stop.is_set():
            i += 1
            c.execute("INSERT INTO t VALUES (%s, %s)", (100_000 + i, f"w{i}"))
            c.execute("UPDATE t SET v = %s WHERE id = %s", (f"u{i}", i % 2000 + 1))
            done[0] = i
            time.sleep(0.005)


def test_verify_and_sql_read_a_duckdb_view_while_run_runs(pg: PgCluster, tmp_path: Path) -> None:
    p = Pipeline(pg, tmp_path, views=("duckdb",))
    stop = threading.Event()
    done = [0]
    writer = threading.Thread(target=_writer, args=(p.source_dsn, stop, done))
    try:
        p.start()
        p.sql("CREATE TABLE t (id int PRIMARY KEY, v text)")
        p.sql("INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 2000) g")
        p.wait_caught_up(new_tables=True)
        writer.start()
        time.sleep(0.5)
        r = p.cli("verify", "--json", "-q")
        assert r.returncode == 0, r.stdout + r.stderr + p.output()[-3000:]
        got = json.loads(r.stdout)["views"]["warehouse"]
        assert got["status"] == "equal" and got["tables"]["public.t"]["view_rows"] >= 2000, got
        r = p.cli("sql", "warehouse", "SELECT count(*) AS n FROM public.t WHERE id <= 2000")
        assert r.returncode == 0 and r.stdout.split() == ["n", "2000"], r.stdout + r.stderr
        assert "let go of the file" in r.stderr, r.stderr
        r = p.cli("sql", "warehouse", "-q", "SELECT current_setting('enable_progress_bar') AS bar")
        assert r.returncode == 0 and r.stdout.split() == ["bar", "False"], r.stdout + r.stderr
        before = done[0]
        time.sleep(1)
        stop.set()
        writer.join()
        assert done[0] > before  # the writers never waited for the reads
        p.wait_caught_up()  # the worker took its file back and applied on
        status = json.loads(p.cli("status", "--json").stdout)
        assert status["views"]["warehouse"]["state"] == "running", status["views"]["warehouse"]
        assert "resuming on its store" in p.output()
        assert p.stop() == 0
        p.assert_equal()
    finally:
        stop.set()
        if writer.is_alive():
            writer.join()
        p.close()
