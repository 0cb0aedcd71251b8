"""``syncline verify``: every view kind, against a real pipeline."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis

from syncline.cli.main import main
from syncline.log.embedded.store import EmbeddedLogWriter, repair_request_state
from syncline.testing.harness import Pipeline
from syncline.testing.pgcluster import PgCluster
from syncline.verify.engine import Options, verify
from syncline.verify.repair import append_repair, catch_up, submit_repair

ROWS = 2500
TABLE = "public.items"


@pytest.fixture
def pipe(pg: PgCluster, tmp_path: Path) -> Iterator[Pipeline]:
    p = Pipeline(pg, tmp_path, views=("postgres", "duckdb", "redis", "tantivy"))
    try:
        yield p
    finally:
        p.close()


def run_verify(p: Pipeline, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["verify", "-c", str(p.config_path), "-q", "--chunk-rows", "500", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def verify_json(p: Pipeline, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, Any]]:
    code, out, err = run_verify(p, capsys, "--json", *args)
    assert out, err
    return code, json.loads(out)


def tamper(p: Pipeline) -> None:
    """Behind syncline's back, in every view: key 1 changed, key 2 deleted, key 9999 added."""
    with psycopg.connect(p.replica_dsn, autocommit=True) as c:
        c.execute("UPDATE public.items SET name = 'tampered' WHERE id = 1")
        c.execute("DELETE FROM public.items WHERE id = 2")
        c.execute("INSERT INTO public.items VALUES (9999, 'ghost', 1.5, true)")
    import duckdb

    con = duckdb.connect(str(p.workdir / "wh.duckdb"))
    con.execute("UPDATE public.items SET name = 'tampered' WHERE id = 1")
    con.execute("DELETE FROM public.items WHERE id = 2")
    con.execute("INSERT INTO public.items (id, name, price, flag) VALUES (9999, 'ghost', 1.5, true)")
    con.close()
    assert p.redis is not None
    r = redis.Redis.from_url(p.redis.url, decode_responses=True)
    r.hset(f"{TABLE}:1", "name", "tampered")
    r.delete(f"{TABLE}:2")
    r.hset(f"{TABLE}:9999", mapping={"id": "9999", "name": "ghost", "price": "1.50", "flag": "true"})
    r.close()
    import tantivy

    from syncline.views.tantivy.view import F_ID, F_KEY, F_ROW, F_TABLE, doc_id

    index: Any = tantivy.Index.open(str(p.workdir / "search"))
    w = index.writer(50_000_000, 1)

    def add(key: str, row: dict[str, str]) -> None:
        d = tantivy.Document()
        d.add_text(F_ID, doc_id(TABLE, (key,)))
        d.add_text(F_KEY, key)
        d.add_text(F_TABLE, TABLE)
        d.add_bytes(F_ROW, json.dumps(row).encode())
        w.add_document(d)

    for k in ("1", "2"):
        w.delete_documents_by_term(F_ID, doc_id(TABLE, (k,)))
    add("1", {"id": "1", "name": "tampered", "price": "1.00", "flag": "true"})
    add("9999", {"id": "9999", "name": "ghost", "price": "1.50", "flag": "true"})
    w.commit()
    w.wait_merging_threads()


def test_verify_every_view_kind(pipe: Pipeline, capsys: pytest.CaptureFixture[str]) -> None:
    p = pipe
    p.sql("CREATE TABLE items (id int PRIMARY KEY, name text, price numeric(10,2), flag boolean)")
    p.sql(f"INSERT INTO items SELECT i, 'item ' || i, i, i % 2 = 0 FROM generate_series(1, {ROWS}) i")
    p.start()
    p.wait_caught_up()

    # live: equal views exit 0; repair needs `run` stopped
    code, rep = verify_json(p, capsys, "--view", "replica", "--view", "cache", "--view", "search")
    assert code == 0, rep
    assert rep["status"] == "equal"
    t = rep["views"]["replica"]["tables"][TABLE]
    assert t["status"] == "equal" and t["source_rows"] == ROWS and t["view_rows"] == ROWS
    assert t["chunks"] == 5 and t["differing_chunks"] == 0
    assert set(rep["views"]) == {"replica", "cache", "search"}
    # the warehouse's file is borrowed from `run`'s worker for each read (DuckDB: one process)
    code, out, err = run_verify(p, capsys, "--view", "warehouse")
    assert code == 0 and "warehouse (duckdb): equal" in out, out + err

    # live: a replica row changed behind syncline's back is found while `run` runs
    with psycopg.connect(p.replica_dsn, autocommit=True) as c:
        c.execute("UPDATE public.items SET name = 'live tamper' WHERE id = 5")
    code, rep = verify_json(p, capsys, "--view", "replica")
    assert code == 1
    assert rep["views"]["replica"]["tables"][TABLE]["different_keys"] == ["5"]
    # live repair: a request the capture takes at a transaction boundary. Key 5 is updated
    # at the source right after the repair read it: the logged update is newer, so the
    # capture drops key 5 from the repair instead of writing the older row after it; key 7
    # is repaired.
    with psycopg.connect(p.replica_dsn, autocommit=True) as c:
        c.execute("UPDATE public.items SET name = 'live tamper' WHERE id = 7")
    results = verify(p.cfg, Options(chunk_rows=500, views=["replica"]))
    assert results["replica"].tables[TABLE].diff.different == ["5", "7"]
    request, info = submit_repair(
        p.cfg, results, after_read=lambda: p.sql("UPDATE items SET name = 'newer' WHERE id = 5")
    )
    assert request > 0 and info["upserts"] == 2
    p.wait_caught_up()
    assert p.stop() == 0
    if repair_request_state(p.log_path, request)[0] == "pending":  # not taken by this capture
        writer = EmbeddedLogWriter(p.log_path)
        try:
            assert writer.apply_repair_requests() == 1
        finally:
            writer.close()
    state, seq, dropped = repair_request_state(p.log_path, request)
    assert (state, dropped) == ("done", 1) and seq > 0
    p.start()
    p.wait_caught_up()
    assert p.sql("SELECT id, name FROM items WHERE id IN (5, 7) ORDER BY id", db=p.replica_db) == [
        (5, "newer"),
        (7, "item 7"),
    ]
    # the same through the CLI while `run` runs: taken by a capture that handles requests,
    # otherwise withdrawn with a clear error
    with psycopg.connect(p.replica_dsn, autocommit=True) as c:
        c.execute("UPDATE public.items SET name = 'live tamper' WHERE id = 5")
    code, out, err = run_verify(p, capsys, "--view", "replica", "--repair", "--repair-timeout", "1")
    assert code == 0 or (code == 2 and "stop `run`" in err), out + err
    live_repaired = code == 0
    assert p.stop() == 0

    # stopped: every kind reports the changed, missing and extra keys
    tamper(p)
    code, rep = verify_json(p, capsys)
    assert code == 1 and rep["status"] == "different"
    for name in ("replica", "warehouse", "cache", "search"):
        v = rep["views"][name]
        assert v["status"] == "different", (name, v)
        t = v["tables"][TABLE]
        assert t["missing_keys"] == ["2"], (name, t)
        assert t["extra_keys"] == ["9999"], (name, t)
        want = ["1", "5"] if name == "replica" and not live_repaired else ["1"]
        assert t["different_keys"] == want, (name, t)
        assert (t["missing"], t["extra"], t["different"]) == (1, 1, len(want))
        assert t["chunks"] == 5 and 1 <= t["differing_chunks"] <= 4
    code, out, _ = run_verify(p, capsys, "--view", "cache")
    assert code == 1 and "missing: 2" in out and "extra: 9999" in out and "different: 1" in out

    # differing chunks read a few at a time (bounded memory): same keys
    small = verify(p.cfg, Options(chunk_rows=500, max_rows=500, views=["warehouse"]))
    d = small["warehouse"].tables[TABLE].diff
    assert (d.missing, d.extra, d.different) == (["2"], ["9999"], ["1"])

    # repair racing a live update of key 1: the source changes right after the repair read
    # it; the view must end with the newest value, never the repaired (older) one
    cfg = p.cfg
    results = verify(cfg, Options(chunk_rows=500))

    def race() -> None:
        p.sql("UPDATE items SET name = 'newest' WHERE id = 1")

    info = append_repair(cfg, results, after_read=race)
    assert info["seq"] > 0 and info["upserts"] == (2 if live_repaired else 3), info
    assert info["deletes"] == 1, info
    for v in cfg.views:
        catch_up(cfg, v)
    assert p.sql("SELECT name FROM items WHERE id = 1", db=p.replica_db) == [("item 1",)]
    p.start()
    p.wait_caught_up()
    assert p.stop() == 0
    assert p.sql("SELECT name FROM items WHERE id = 1", db=p.replica_db) == [("newest",)]
    code, rep = verify_json(p, capsys)
    assert code == 0, rep
    p.assert_equal()

    # `verify --repair` on the command line: found, repaired, verified again
    tamper(p)
    code, rep = verify_json(p, capsys, "--repair")
    assert code == 0, rep
    for name in ("replica", "warehouse", "cache", "search"):
        v = rep["views"][name]
        assert v["status"] == "equal" and v["repair"]["seq"] > 0, (name, v)
        assert v["repair"]["before"]["tables"][TABLE]["missing_keys"] == ["2"]
    from syncline.runtime.status import status

    log_st = status(p.cfg)["log"]
    assert log_st["repairs"] >= 2 and log_st["last_repair_seq"] == rep["views"]["replica"]["repair"]["seq"]
    code, rep = verify_json(p, capsys)
    assert code == 0, rep
    p.start()
    p.wait_caught_up()
    p.sql("UPDATE items SET name = 'after repair' WHERE id = 3")
    p.wait_caught_up()
    assert p.stop() == 0
    p.assert_equal()
