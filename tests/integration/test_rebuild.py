"""``syncline rebuild VIEW`` (issue 10): a fresh copy built from the log while `run` streams
and writers write, verified, swapped in atomically; readers querying the view in a loop never
miss a row that existed before and after. A damaged view comes back whole."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
import redis
import tantivy

from syncline.testing.harness import Pipeline
from syncline.testing.pgcluster import PgCluster

ROWS = 20_000
"""Rows of ``t`` that exist from the start to the end (writers only touch ids above)."""


def _writer(p: Pipeline, stop: threading.Event) -> None:
    with psycopg.connect(p.source_dsn, autocommit=True) as c:
        i = 0
        while not stop.is_set():
            i += 1
            c.execute(
                "INSERT INTO t VALUES (%s, %s) ON CONFLICT (id) DO UPDATE SET v = excluded.v",
                (ROWS + i % 500, f"w{i}"),
            )
            c.execute("UPDATE t SET v = %s WHERE id = %s", (f"u{i}", i % ROWS + 1))
            time.sleep(0.002)


def _loop(read: Callable[[], int], stop: threading.Event, seen: list[int], errors: list[str]) -> None:
    while not stop.is_set():
        try:
            seen.append(read())
        except Exception as e:  # a reader that fails is a miss too
            errors.append(f"{type(e).__name__}: {e}")
        time.sleep(0.01)


def _reader(p: Pipeline, kind: str) -> Callable[[], int]:
    """Rows of ``t`` with id <= ROWS (they exist throughout) the view misses, as a reader in
    another process sees it."""
    if kind == "postgres":

        def pg() -> int:
            with psycopg.connect(p.replica_dsn, autocommit=True) as c:
                row = c.execute("SELECT count(*) FROM public.t WHERE id <= %s", (ROWS,)).fetchone()
                return ROWS - (int(row[0]) if row else 0)

        return pg
    if kind == "redis":
        assert p.redis is not None
        client = redis.Redis.from_url(p.redis.url)
        keys = [f"public.t:{i}" for i in range(1, ROWS + 1)]

        def rd() -> int:
            return len(keys) - int(client.exists(*keys))

        return rd
    if kind == "tantivy":
        from syncline.views.tantivy.view import F_ROW, F_TABLE

        path = str(p.workdir / "search")

        def tv() -> int:
            idx = tantivy.Index.open(path)
            s = idx.searcher()
            q = tantivy.Query.term_query(idx.schema, F_TABLE, "public.t")
            n = s.search(q, 1).count or 0
            ids = set()
            for _score, addr in s.search(q, n).hits:
                raw = s.doc(addr).get_first(F_ROW)
                row = json.loads(bytes(raw)) if raw is not None else {}
                if int(row["id"]) <= ROWS:
                    ids.add(int(row["id"]))
            return ROWS - len(ids)

        return tv
    if kind == "ducklake":
        from syncline.views.ducklake import lake

        def dl() -> int:
            con = lake.connect(p.lake_catalog, str(p.workdir / "lake"), read_only=True)
            try:
                row = con.execute("SELECT count(*) FROM public.t WHERE id <= ?", [ROWS]).fetchone()
            finally:
                con.close()
            return ROWS - (int(row[0]) if row else 0)

        return dl
    if kind == "iceberg":
        from pyiceberg.expressions import LessThanOrEqual

        from syncline.views.iceberg import lake as ice

        def ib() -> int:  # pyiceberg, the table's current snapshot
            cat = ice.open_catalog(str(p.workdir / "iceberg.sqlite"), str(p.workdir / "iceberg"))
            t = cat.load_table(("public", "t"))
            return (
                ROWS
                - t.scan(row_filter=LessThanOrEqual("id", ROWS), selected_fields=("id",)).to_arrow().num_rows
            )

        return ib
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["postgres", "duckdb", "ducklake", "iceberg", "redis", "tantivy"])
def test_rebuild_while_readers_read_and_writers_write(pg: PgCluster, tmp_path: Path, kind: str) -> None:
    p = Pipeline(pg, tmp_path, views=(kind,))
    stop = threading.Event()
    threads: list[threading.Thread] = []
    try:
        p.sql(
            f"CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t SELECT g, 'v' FROM generate_series(1, {ROWS}) g"
        )
        p.start()
        p.wait_caught_up()
        name = {
            "postgres": "replica",
            "duckdb": "warehouse",
            "ducklake": "lake",
            "iceberg": "iceberg",
            "redis": "cache",
            "tantivy": "search",
        }[kind]
        # damage behind syncline's back: the rebuild must bring it back
        if kind == "postgres":
            p.sql("UPDATE public.t SET v = 'damaged' WHERE id % 1000 = 0", p.replica_db)
        if kind == "redis":
            assert p.redis is not None
            redis.Redis.from_url(p.redis.url).hset("public.t:5", "v", "damaged")
        if kind == "ducklake":
            from syncline.views.ducklake import lake

            con = lake.connect(p.lake_catalog, str(p.workdir / "lake"), read_only=False)
            try:
                con.execute("UPDATE public.t SET v = 'damaged' WHERE id % 1000 = 0")
            finally:
                con.close()
        if kind == "iceberg":  # the published table only: the rebuild must overwrite it
            import pyarrow as pa
            from pyiceberg.expressions import EqualTo

            from syncline.views.iceberg import lake as ice

            cat = ice.open_catalog(str(p.workdir / "iceberg.sqlite"), str(p.workdir / "iceberg"))
            t = cat.load_table(("public", "t"))
            bad = pa.table({"id": pa.array([1000], pa.int32()), "v": pa.array(["damaged"], pa.string())})
            t.overwrite(bad, overwrite_filter=EqualTo("id", 1000))
        threads.append(threading.Thread(target=_writer, args=(p, stop)))
        seen: list[int] = []
        errors: list[str] = []
        if kind != "duckdb":  # DuckDB: one process per file, no outside reader while `run` runs
            threads.append(threading.Thread(target=_loop, args=(_reader(p, kind), stop, seen, errors)))
        for t in threads:
            t.start()
        time.sleep(1)
        r = p.cli("rebuild", name, timeout=300)
        assert r.returncode == 0, r.stdout + r.stderr + p.output()[-3000:]
        assert "verified and swapped in" in r.stdout, r.stdout
        assert "verified:" in r.stderr, r.stderr
        time.sleep(1)
        stop.set()
        for t in threads:
            t.join()
        if kind != "duckdb":
            assert not errors, errors[:5]
            assert len(seen) >= 5, seen
            missed = [n for n in seen if n]
            assert not missed, f"{len(missed)} of {len(seen)} reads missed rows: {missed[:10]}"
        p.wait_caught_up()
        status = json.loads(p.cli("status", "--json").stdout)
        assert status["views"][name]["state"] == "running", status["views"][name]
        assert "resuming on its store" in p.output()
        assert p.stop() == 0
        p.assert_equal()
        # the old copy (in the shadow's place after the swap) is gone
        if kind == "duckdb":
            assert (p.workdir / "wh.duckdb").exists() and not (p.workdir / "wh.duckdb.rebuild").exists()
        if kind == "tantivy":
            assert (p.workdir / "search").is_dir() and not (p.workdir / "search.rebuild").exists()
        if kind == "redis":
            assert p.redis is not None
            shadow = redis.Redis.from_url(p.redis.url.rsplit("/", 1)[0] + "/1")
            assert shadow.dbsize() == 0  # rebuild_db: the view's database + 1
    finally:
        stop.set()
        for t in threads:
            if t.is_alive():
                t.join()
        p.close()


def test_rebuild_with_run_stopped_and_bad_input(pg: PgCluster, tmp_path: Path) -> None:
    p = Pipeline(pg, tmp_path, views=("duckdb", "tantivy"))
    try:
        p.sql(
            "CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t SELECT g, 'v' FROM generate_series(1, 500) g"
        )
        p.start()
        p.wait_caught_up()
        assert p.stop() == 0
        p.sql("UPDATE t SET v = 'later' WHERE id < 10")
        bad = p.cli("rebuild", "nope")
        assert bad.returncode == 2 and "no view named nope" in bad.stderr, bad.stderr
        # run stopped: the copy cannot reach the source's position, so it cannot be verified
        unverified = p.cli("rebuild", "search")
        assert unverified.returncode == 2 and "--no-verify" in unverified.stderr, unverified.stderr
        r = p.cli("rebuild", "search", "--no-verify")
        assert r.returncode == 0 and "swapped in (not verified)" in r.stdout, r.stdout + r.stderr
        p.start()
        p.wait_caught_up()
        assert p.stop() == 0
        p.assert_equal()
    finally:
        p.close()
