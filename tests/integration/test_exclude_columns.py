"""Columns left out at capture (``[source] exclude_columns``, issue 13): canary bytes written
to excluded columns through every path a value takes (the first copy, a table created
later and copied online, inserts, updates with TOASTed values left unchanged, a REPLICA
IDENTITY FULL table's old rows, a transaction streamed in progress, a partitioned table)
appear nowhere afterwards: not in the log's files, not in any of the four views, not in
any output. ``verify`` compares the kept columns and finds the views equal."""

from __future__ import annotations

import contextlib
from pathlib import Path

import duckdb
import psycopg
import redis

from syncline.testing.compare import (
    compare_duckdb,
    compare_postgres,
    compare_redis,
    compare_tantivy,
    source_tables,
)
from syncline.testing.harness import Pipeline
from syncline.testing.pgcluster import PgCluster

CANARY = "CANARYc0ffee77"
EXCLUDE = ["public.people.secret", "*.*.ssn*", "public.events.note"]
EXCLUDED = {("people", "secret"), ("people", "ssn_hash"), ("later", "ssn"), ("events", "note")}


def _kept(dsn: str) -> dict[str, list[str]]:
    return {
        q: [c for c in cols if (q.split(".", 1)[1], c) not in EXCLUDED]
        for q, cols in source_tables(dsn).items()
    }


def _files_with_canary(root: Path) -> list[str]:
    hits = []
    needles = (CANARY.encode(), CANARY.encode().hex().encode())
    for f in root.rglob("*"):
        if f.is_file() and "redis" not in f.parts:
            with contextlib.suppress(OSError):
                data = f.read_bytes()
                if any(n in data for n in needles):
                    hits.append(str(f))
    return hits


def test_excluded_columns_reach_no_log_view_or_output(pg: PgCluster, tmp_path: Path) -> None:
    extra = "exclude_columns = [" + ", ".join(f'"{p}"' for p in EXCLUDE) + "]"
    p = Pipeline(pg, tmp_path, views=("postgres", "duckdb", "redis", "tantivy"), extra_source=extra)
    try:
        big = f"repeat('{CANARY}', 20000)"  # TOASTed, compressed or not
        p.sql(
            "CREATE TABLE people (id int PRIMARY KEY, name text, secret text, ssn_hash bytea);"
            "ALTER TABLE people ALTER secret SET STORAGE EXTERNAL;"
            f"INSERT INTO people SELECT g, 'n' || g, '{CANARY}' || g,"
            f" convert_to('{CANARY}', 'UTF8') FROM generate_series(1, 50) g;"
            f"INSERT INTO people VALUES (51, 'toasted', {big}, NULL);"
            "CREATE TABLE events (id int PRIMARY KEY, kind text, note text) PARTITION BY RANGE (id);"
            "CREATE TABLE events_a PARTITION OF events FOR VALUES FROM (0) TO (1000);"
            "CREATE TABLE events_b PARTITION OF events FOR VALUES FROM (1000) TO (2000);"
            f"INSERT INTO events SELECT g, 'k', '{CANARY}' FROM generate_series(990, 1010) g;"
        )
        p.start()
        p.wait_caught_up()
        p.sql(
            # a table created while running: copied online, then streamed
            f"CREATE TABLE later (id int PRIMARY KEY, v text, ssn text);"
            f"INSERT INTO later SELECT g, 'v', '{CANARY}' FROM generate_series(1, 30) g;"
            # REPLICA IDENTITY FULL: updates and deletes carry the whole old row
            "ALTER TABLE later REPLICA IDENTITY FULL;"
            "UPDATE later SET v = 'w' WHERE id <= 10;"
            "DELETE FROM later WHERE id > 25;"
        )
        p.sql(
            # the TOASTed secret is left unchanged by this update; then changed
            "UPDATE people SET name = 'still toasted' WHERE id = 51;"
            f"UPDATE people SET secret = {big} || 'x', ssn_hash = convert_to('{CANARY}2', 'UTF8')"
            " WHERE id BETWEEN 1 AND 5;"
            "DELETE FROM people WHERE id = 6;"
            f"INSERT INTO events VALUES (1500, 'late', '{CANARY}');"
            "UPDATE events SET kind = 'moved', id = id + 500 WHERE id = 995;"
        )
        # one transaction far above logical_decoding_work_mem (64kB here): streamed in progress
        p.sql(
            "BEGIN;"
            f"INSERT INTO people SELECT g, 'bulk', '{CANARY}' || repeat('s', 200), NULL"
            " FROM generate_series(1000, 4000) g;"
            "COMMIT"
        )
        p.wait_caught_up(timeout=180, new_tables=True)
        assert p.stop() == 0, p.output()[-3000:]
        r = p.cli("verify")  # after `run`: DuckDB allows one process per file
        assert r.returncode == 0, r.stdout + r.stderr
        assert CANARY not in r.stdout + r.stderr

        # the views hold exactly the kept columns of every row
        kept = _kept(p.source_dsn)
        assert kept["public.people"] == ["id", "name"], kept
        diffs = [
            *compare_postgres(p.source_dsn, p.replica_dsn, kept),
            *compare_duckdb(p.source_dsn, str(tmp_path / "wh.duckdb"), kept),
            *compare_tantivy(p.source_dsn, str(tmp_path / "search"), kept),
        ]
        assert p.redis is not None
        diffs += compare_redis(p.source_dsn, p.redis.url, kept)
        bad = [str(d) for d in diffs if not d.equal]
        assert not bad, bad
        with psycopg.connect(p.replica_dsn) as c:
            cols = c.execute(
                "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = 'public'"
            ).fetchall()
        assert not EXCLUDED & {(str(t), str(c)) for t, c in cols}, cols
        con = duckdb.connect(str(tmp_path / "wh.duckdb"), read_only=True)
        try:
            cols = con.execute(
                "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = 'public'"
            ).fetchall()
            texts = con.execute("SELECT string_agg(CAST(t AS VARCHAR), '') FROM public.people t").fetchone()
        finally:
            con.close()
        assert not EXCLUDED & {(str(t), str(c)) for t, c in cols}, cols
        assert texts is not None and CANARY not in str(texts[0])
        client = redis.Redis.from_url(p.redis.url)
        dump = b"".join(
            k + b"".join(a + b for a, b in client.hgetall(k).items())
            for k in client.scan_iter()
            if client.type(k) == b"hash"
        )
        assert CANARY.encode() not in dump

        # nothing anywhere on disk (the log, its spool and compacted state, DuckDB, tantivy)
        # nor in the output
        assert _files_with_canary(tmp_path) == []
        assert CANARY not in p.output()
    finally:
        p.close()


def test_a_key_column_cannot_be_excluded(pg: PgCluster, tmp_path: Path) -> None:
    p = Pipeline(pg, tmp_path, views=("postgres",), extra_source='exclude_columns = ["public.k.id"]')
    try:
        p.sql("CREATE TABLE k (id int PRIMARY KEY, v text); INSERT INTO k VALUES (1, 'a')")
        code, out = p.run_to_exit()
        assert code != 0, out
        assert "source.exclude_columns: public.k.id is a key column" in out, out
        assert "Traceback" not in out, out
    finally:
        p.close()
