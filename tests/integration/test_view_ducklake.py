"""The DuckLake view against a real lake (SQLite catalog, Parquet files) fed by a real
``syncline run``: readers in other processes while it writes and while it is killed,
``syncline sql --at`` against the source's own history, and the errors of bad input."""

from __future__ import annotations

import json
import random
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from contextlib import closing
from pathlib import Path
from typing import Any

import psycopg
import pytest

from syncline.core.errors import ConfigError
from syncline.core.events import Checkpoint
from syncline.sources.postgres.lsn import format_lsn, parse_lsn
from syncline.testing.harness import Pipeline
from syncline.testing.pgcluster import PgCluster
from syncline.views.ducklake import lake

ACCOUNTS = 40
START = 1000

READER = textwrap.dedent(
    """
    import json, os, sys, time
    from syncline.views.ducklake import lake
    catalog, data, stop = sys.argv[1], sys.argv[2], sys.argv[3]
    q = ("SELECT (SELECT sum(balance) FROM public.accounts), (SELECT sum(moves) FROM public.accounts), "
         "(SELECT count(*) FROM public.accounts), (SELECT count(*) FROM public.transfers)")
    reads, errors, seen = 0, [], []
    deadline = time.monotonic() + 300
    con = None
    while not os.path.exists(stop) and time.monotonic() < deadline:
        try:
            if con is None:
                con = lake.connect(catalog, data, read_only=True)
            row = con.execute(q).fetchone()
        except Exception as e:  # not there yet, or the catalog busy: read again
            errors.append(type(e).__name__ + ": " + str(e).splitlines()[0])
            if con is not None:
                con.close()
            con = None
            time.sleep(0.05)
            continue
        reads += 1
        seen.append([None if v is None else int(v) for v in row])
        full = [s[3] for s in seen if s[2]]
        with open(stop + ".tmp", "w") as f:  # how far it got, for the test to wait on
            json.dump({"reads": len(full), "states": len(set(full))}, f)
        os.replace(stop + ".tmp", stop + ".progress")
        if reads % 10 == 0:  # a new attachment now and then, as a new reader would
            con.close()
            con = None
        time.sleep(0.01)
    print(json.dumps({"reads": reads, "errors": errors[-5:], "seen": seen}))
    """
)


def until_read(progress: Path, reads: int, states: int, p: Pipeline) -> None:
    """Until a reader has read ``reads`` times and seen ``states`` states of the lake (the
    reader runs until the test is done with it: the view's pace under load is not the
    test's to guess)."""
    deadline = time.monotonic() + 120
    while True:
        try:
            got = json.loads(progress.read_text())
        except (OSError, ValueError):
            got = {"reads": 0, "states": 0}
        if got["reads"] >= reads and got["states"] >= states:
            return
        assert time.monotonic() < deadline, f"the reader got only this far: {got}\n{p.output()[-3000:]}"
        assert not p.failed_views(), p.output()[-3000:]
        time.sleep(0.3)


def transfer(conn: psycopg.Connection[Any], rnd: random.Random, accounts: int = ACCOUNTS) -> None:
    """One transfer between two random accounts (in the caller's transaction): the sum of
    balances stays, each account's ``moves`` counts its transfers."""
    a, b = rnd.sample(range(1, accounts + 1), 2)
    amount = rnd.randint(1, 50)
    conn.execute("UPDATE accounts SET balance = balance - %s, moves = moves + 1 WHERE id = %s", (amount, a))
    conn.execute("UPDATE accounts SET balance = balance + %s, moves = moves + 1 WHERE id = %s", (amount, b))
    conn.execute("INSERT INTO transfers (src, dst, amount) VALUES (%s, %s, %s)", (a, b, amount))


def verify_finds_then_repairs(p: Pipeline, view: str, table: str, keys: tuple[list[str], ...]) -> None:
    """``verify`` (run stopped) finds exactly ``keys`` (missing, different, extra) in
    ``table`` of ``view``; ``verify --repair`` mends them."""
    r = p.cli("verify", "--json", "-q")
    assert r.returncode == 1, r.stdout + r.stderr
    got = json.loads(r.stdout)["views"][view]["tables"][table]
    assert (got["missing_keys"], got["different_keys"], got["extra_keys"]) == keys
    r = p.cli("verify", "--repair", "-q")
    assert r.returncode == 0, r.stdout + r.stderr


def _transfers(dsn: str, stop: threading.Event, done: list[int]) -> None:
    rnd = random.Random(7)
    with psycopg.connect(dsn, autocommit=True) as conn:
        while not stop.is_set():
            with conn.transaction():
                transfer(conn, rnd)
            done[0] += 1
            time.sleep(rnd.random() * 0.004)


def test_readers_in_other_processes_see_whole_transactions_while_run_writes_and_dies(
    pg: PgCluster, tmp_path: Path
) -> None:
    p = Pipeline(pg, tmp_path, views=("ducklake",))
    stop_reader = tmp_path / "stop-reader"
    progress = tmp_path / "stop-reader.progress"
    try:
        p.start()  # before the application creates its tables
        reader = subprocess.Popen(
            [
                sys.executable,
                "-c",
                READER,
                str(tmp_path / "lake.sqlite"),
                str(tmp_path / "lake"),
                str(stop_reader),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        p.sql(
            "CREATE TABLE accounts (id int PRIMARY KEY, balance int NOT NULL, moves int NOT NULL);"
            f"INSERT INTO accounts SELECT g, {START}, 0 FROM generate_series(1, {ACCOUNTS}) g;"
            "CREATE TABLE transfers (id bigserial PRIMARY KEY, src int, dst int, amount int)"
        )
        stop, done = threading.Event(), [0]
        writer = threading.Thread(target=_transfers, args=(p.source_dsn, stop, done))
        writer.start()
        try:
            until_read(progress, 3, 1, p)  # the view writes, the reader reads
            time.sleep(3)
            p.kill()  # SIGKILL in the middle of the stream, readers reading
            time.sleep(1)
            p.start()
            p.wait_caught_up()  # the restarted run writes again
            time.sleep(3)
            until_read(progress, 12, 3, p)
        finally:
            stop.set()
            writer.join()
        stop_reader.touch()
        out, _ = reader.communicate(timeout=60)
        assert reader.returncode == 0
        got = json.loads(out)
        p.wait_caught_up()
        p.assert_verified()  # syncline verify while run runs
        assert p.stop() == 0
        p.assert_equal()
    finally:
        stop_reader.touch()
        p.close()
    # the catalog is in SQLite's WAL mode: in its default journal mode each commit of the
    # view locked readers out, and they stalled 1-2 s (8 reads in 14 s under load)
    with closing(sqlite3.connect(tmp_path / "lake.sqlite")) as cat:
        assert cat.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    states = [s for s in got["seen"] if s[2] == ACCOUNTS]
    assert len(states) >= 12, got
    bad = [s for s in states if s[0] != ACCOUNTS * START or s[1] != 2 * s[3]]
    assert not bad, f"reads that saw part of a transaction: {bad[:5]}"
    counts = sorted({s[3] for s in states})
    assert len(counts) >= 3, f"the readers saw the lake change only {len(counts)} times: {counts}"
    assert counts[-1] <= done[0]


def _snapshots(tmp_path: Path) -> list[lake.Snapshot]:
    """The snapshots view ``lake`` committed, read by another connection."""
    con = lake.connect(str(tmp_path / "lake.sqlite"), str(tmp_path / "lake"), read_only=True)
    try:
        return lake.snapshots(con, "lake")
    finally:
        con.close()


def _serial_history(dsn: str, n: int) -> list[int]:
    """``n`` transactions one after another, each setting counter.v = i and appending i to
    hist; returns the WAL position read after each commit (index 0: before the first)."""
    rnd = random.Random(3)
    after = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        after.append(parse_lsn(str(conn.execute("SELECT pg_current_wal_insert_lsn()").fetchone()[0])))  # type: ignore[index]
        for i in range(1, n + 1):
            with conn.transaction():
                conn.execute("UPDATE counter SET v = %s", (i,))
                conn.execute("INSERT INTO hist VALUES (%s)", (i,))
            after.append(parse_lsn(str(conn.execute("SELECT pg_current_wal_insert_lsn()").fetchone()[0])))  # type: ignore[index]
            time.sleep(rnd.random() * 0.03)
    return after


QUERY = "SELECT c.v, (SELECT count(*) FROM public.hist) AS n, (SELECT max(i) FROM public.hist) AS m FROM public.counter c"


def _answer(p: Pipeline, at: int) -> tuple[int, int]:
    """(the state's i, the position it answered at) of ``sql --at``; the state must be
    one of the history's (counter, count and max of hist agree)."""
    r = p.cli("sql", "lake", "--at", format_lsn(at), "--json", QUERY)
    assert r.returncode == 0, r.stderr
    (row,) = [json.loads(line) for line in r.stdout.splitlines()]
    assert row["v"] == row["n"] == (row["m"] or 0), row
    answered = parse_lsn(r.stderr.split("source position ")[1].split(",")[0])
    return int(row["v"]), answered


def test_sql_at_a_position_answers_with_the_source_state_of_that_position(
    pg: PgCluster, tmp_path: Path
) -> None:
    p = Pipeline(pg, tmp_path, views=("ducklake",))
    try:
        p.start()
        p.sql(
            "CREATE TABLE counter (id int PRIMARY KEY, v int); INSERT INTO counter VALUES (1, 0);"
            "CREATE TABLE hist (i int PRIMARY KEY)"
        )
        p.wait_caught_up(new_tables=True)
        after = _serial_history(p.source_dsn, 120)
        p.wait_caught_up()
        snaps = _snapshots(tmp_path)
        positions = [s.checkpoint.commit_lsn for s in snaps if s.checkpoint.commit_lsn > after[0]]
        assert len(positions) >= 4, f"too few batches to test time travel: {positions}"
        st = p.cli("status", "--json")
        history = json.loads(st.stdout)["views"]["lake"]["snapshots"]
        assert history["retained"] == len(snaps) and history["newest_lsn"] == format_lsn(positions[-1]), (
            history
        )
        assert "snapshots retained" in p.cli("status").stdout
        for pos in positions:
            # a snapshot's own position: exactly the state after the last transaction at or before it
            i, answered = _answer(p, pos)
            assert answered == pos
            assert after[i - 1] < pos < after[i] if i else pos < after[1], (
                i,
                format_lsn(pos),
                [format_lsn(a) for a in after[max(i - 2, 0) : i + 2]],
            )
        rnd = random.Random(5)
        for j in rnd.sample(range(len(after)), 12):
            if after[j] < positions[0] or after[j] > positions[-1]:
                continue
            # between snapshots: the newest snapshot at or before the position, named on stderr
            i, answered = _answer(p, after[j])
            assert i <= j and answered <= after[j]
            assert answered == max(q for q in positions if q <= after[j])

        # bad input: one clear error each, nothing changed
        r = p.cli("sql", "lake", "--at", "0/10", QUERY)
        assert r.returncode == 2 and "before the retained snapshots" in r.stderr, r.stderr
        r = p.cli("sql", "lake", "--at", "FFFFFF/0", QUERY)
        assert r.returncode == 2 and "syncline wait --lsn" in r.stderr, r.stderr
        for write in (
            "DELETE FROM public.hist",
            "SELECT 1; DROP TABLE public.hist",
            f"ATTACH 'ducklake:sqlite:{tmp_path / 'lake.sqlite'}' AS w",
            "COPY (SELECT 1) TO '/tmp/x.csv'",
        ):
            r = p.cli("sql", "lake", write)
            assert r.returncode == 2 and "only read" in r.stderr, (write, r.stderr)
        r = p.cli("sql", "lake", "--at", "nonsense", QUERY)
        assert r.returncode == 2 and "--at" in r.stderr
        r = p.cli("sql", "lake", "-q", "SELECT count(*) AS n FROM public.hist")
        assert r.returncode == 0 and r.stdout.split() == ["n", "120"], r.stdout + r.stderr
        # DuckDB draws a progress bar on stdout past 2 s, even into a pipe: never in our output
        r = p.cli("sql", "lake", "-q", "SELECT current_setting('enable_progress_bar') AS bar")
        assert r.returncode == 0 and r.stdout.split() == ["bar", "False"], r.stdout + r.stderr
        assert p.stop() == 0
        p.assert_equal()
    finally:
        p.close()


def test_a_postgresql_catalog(pg: PgCluster, tmp_path: Path) -> None:
    """The lake's catalog in a PostgreSQL database (a DSN with a password that is never shown)."""
    pg.psql("CREATE DATABASE lakecat")
    pg.psql(
        "DO $$ BEGIN CREATE ROLE lakeowner LOGIN SUPERUSER PASSWORD 'hunter2-secret'; "
        "EXCEPTION WHEN duplicate_object THEN NULL; END $$"
    )
    dsn = f"postgresql://lakeowner:hunter2-secret@127.0.0.1:{pg.port}/lakecat"
    p = Pipeline(pg, tmp_path, views=("ducklake",), lake_catalog=dsn)
    try:
        p.start()
        p.sql("CREATE TABLE t (id int PRIMARY KEY, v text, iv interval)")
        p.sql("INSERT INTO t SELECT g, 'v' || g, make_interval(secs => -g) FROM generate_series(1, 500) g")
        p.sql("UPDATE t SET v = 'w' WHERE id % 2 = 0")
        p.wait_caught_up()
        p.assert_verified()
        r = p.cli("sql", "lake", "SELECT count(*) AS n, min(iv) AS lo FROM public.t")
        assert r.returncode == 0 and r.stdout.split()[2:] == ["500", "-00:00:01"], r.stdout + r.stderr
        bad = p.cli("sql", "lake", "SELECT * FROM nowhere")
        assert bad.returncode == 2
        assert p.stop() == 0
        p.assert_equal()
        out = p.output() + r.stderr + bad.stderr
        assert "hunter2" not in out
        tables = {n for (n,) in p.sql("SELECT tablename FROM pg_tables", db="lakecat")}
        assert "ducklake_snapshot" in tables, tables
        # a catalog that cannot be reached: one clear error, no password
        gone = tmp_path / "gone.toml"
        gone.write_text(p.config_path.read_text().replace(f":{pg.port}/lakecat", ":1/lakecat"))
        for args in (["sql", "lake", "SELECT 1"], ["verify", "--view", "lake"], ["status"]):
            r = subprocess.run(
                [sys.executable, "-m", "syncline", *args, "-c", str(gone)],
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert "hunter2" not in r.stdout + r.stderr, (args, r.stdout, r.stderr)
            if args[0] == "sql":
                assert r.returncode == 2 and "cannot open the lake" in r.stderr, r.stderr
    finally:
        p.close()


def test_maintenance_expires_old_snapshots_and_flushes_rows_into_parquet(
    pg: PgCluster, tmp_path: Path
) -> None:
    p = Pipeline(pg, tmp_path, views=("ducklake",))
    with p.config_path.open("a") as f:  # the lake's section is the config's last
        f.write("retention = 2\nmaintenance_interval = 1\nbatch_interval = 0.2\n")
    try:
        p.start()
        p.sql("CREATE TABLE t (id int PRIMARY KEY, v int, changed timestamptz DEFAULT now())")
        p.sql("INSERT INTO t (id, v) SELECT g, 0 FROM generate_series(1, 200) g")
        p.wait_caught_up(new_tables=True)
        first = p.current_lsn()
        for i in range(1, 16):
            p.sql(f"UPDATE t SET v = {i} WHERE id % 15 = {i % 15}")
            time.sleep(0.4)
        p.wait_caught_up()
        snaps = _snapshots(tmp_path)
        files = list((tmp_path / "lake").rglob("*.parquet"))
        assert files, "no row was flushed into a Parquet file"
        assert snaps and snaps[0].checkpoint.commit_lsn > first, [
            format_lsn(s.checkpoint.commit_lsn) for s in snaps
        ]
        r = p.cli("sql", "lake", "--at", format_lsn(first), "SELECT count(*) FROM public.t")
        assert r.returncode == 2 and "before the retained snapshots" in r.stderr, r.stderr
        assert "lake maintenance done" in p.output()
        # the snapshots retained after the merges and clean-ups still answer
        for snap in (snaps[0], snaps[-1]):
            r = p.cli(
                "sql", "lake", "--at", format_lsn(snap.checkpoint.commit_lsn), "SELECT count(*) FROM public.t"
            )
            assert r.returncode == 0 and r.stdout.split() == ["count_star()", "200"], r.stdout + r.stderr
        r = p.cli("sql", "lake", "SELECT min(changed) <= now() AS ok, sum(v) AS s FROM public.t")
        assert r.returncode == 0, r.stderr
        assert "failed" not in p.output(), p.output()[-3000:]
        assert p.stop() == 0
        p.assert_equal()
    finally:
        p.close()


def test_verify_repair_mends_a_lake_changed_behind_syncline(pg: PgCluster, tmp_path: Path) -> None:
    p = Pipeline(pg, tmp_path, views=("ducklake",))
    try:
        p.start()
        p.sql("CREATE TABLE t (id int PRIMARY KEY, v text)")
        p.sql("INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 300) g")
        p.wait_caught_up(new_tables=True)
        assert p.stop() == 0
        con = lake.connect(str(tmp_path / "lake.sqlite"), str(tmp_path / "lake"), read_only=False)
        try:  # someone writes the lake behind syncline's back
            con.execute("DELETE FROM public.t WHERE id = 7")
            con.execute("UPDATE public.t SET v = 'wrong' WHERE id = 8")
            con.execute("INSERT INTO public.t VALUES (9999, 'extra')")
        finally:
            con.close()
        verify_finds_then_repairs(p, "lake", "public.t", (["7"], ["8"], ["9999"]))
        p.start()
        p.wait_caught_up()
        assert p.stop() == 0
        p.assert_equal()
    finally:
        p.close()


def test_a_catalog_another_view_writes_is_refused_at_load(tmp_path: Path) -> None:
    cfg = tmp_path / "syncline.toml"
    cfg.write_text(
        textwrap.dedent(
            f"""
            [source]
            dsn = "postgresql://nobody@127.0.0.1:1/x"
            [log]
            path = "{tmp_path / "log"}"
            [views.a]
            kind = "ducklake"
            catalog = "{tmp_path / "lake.sqlite"}"
            [views.b]
            kind = "ducklake"
            catalog = "{tmp_path / "." / "lake.sqlite"}"
            """
        )
    )
    r = subprocess.run(
        [sys.executable, "-m", "syncline", "status", "-c", str(cfg)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2
    assert "views.b" in r.stderr or "'b'" in r.stderr or " b " in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_a_lake_that_holds_another_views_tables_is_refused(tmp_path: Path) -> None:
    from syncline.core.config_models import ViewConfig
    from syncline.core.errors import ViewError
    from syncline.views.ducklake import create_view

    opts = {"catalog": str(tmp_path / "lake.sqlite"), "data_path": str(tmp_path / "lake")}
    first = create_view(ViewConfig(name="lake", kind="ducklake", options=dict(opts)))
    first.open()
    first.connection.execute("BEGIN TRANSACTION")
    first._write_position(Checkpoint.stored(1, 100, "log-a"))  # as its first batch does
    first.connection.execute("COMMIT")
    first.close()
    other = create_view(ViewConfig(name="lake2", kind="ducklake", options=dict(opts)))
    with pytest.raises(ViewError, match="holds the tables of view 'lake'"):
        other.open()
    assert create_view(ViewConfig(name="lake", kind="ducklake", options=dict(opts))).open().seq == 1


def test_a_busy_catalog_is_retried_not_failed(tmp_path: Path) -> None:
    """A commit that lost to another process's (a conflict, a locked SQLite catalog) is a
    transient error: the worker applies the batch again from the log."""
    import duckdb

    from syncline.core.config_models import ViewConfig
    from syncline.core.errors import TransientViewError
    from syncline.views.base import Batch
    from syncline.views.ducklake import create_view

    opts = {"catalog": str(tmp_path / "lake.sqlite"), "data_path": str(tmp_path / "lake")}
    view = create_view(ViewConfig(name="lake", kind="ducklake", options=dict(opts)))
    batch = Batch([], {}, Checkpoint.stored(2, 200, "x"), 0, commit=True)
    for text in ("Failed to commit DuckLake transaction: database is locked", "Transaction conflict: t"):
        err = view._error(duckdb.TransactionException(text), batch)
        assert isinstance(err, TransientViewError), (text, err)
    assert not isinstance(view._error(duckdb.BinderException("no such column"), batch), TransientViewError)


def test_an_extension_built_for_another_duckdb_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import duckdb

    built = duckdb.__version__
    monkeypatch.setattr(duckdb, "__version__", "9.9.9")
    with pytest.raises(ConfigError) as e:
        lake.extension_path("ducklake", "duckdb_extension_ducklake")
    assert "DuckDB 9.9.9 is installed" in str(e.value) and built in str(e.value)
    with pytest.raises(ConfigError, match="not installed"):
        lake.extension_path("nothing", "duckdb_extension_nothing_here")


def test_maintenance_keeps_the_newest_batch_after_an_idle_spell(pg: PgCluster, tmp_path: Path) -> None:
    """A lake idle for longer than ``retention``, then one batch: the maintenance after it
    keeps that batch's snapshot (the view's position, what ``--at`` and ``status`` show),
    whatever time DuckLake stamps it with. (CI: every snapshot of the view expired.)"""
    p = Pipeline(pg, tmp_path, views=("ducklake",))
    with p.config_path.open("a") as f:  # the lake's section is the config's last
        f.write("retention = 1\nmaintenance_interval = 0.5\n")
    try:
        p.start()
        p.sql("CREATE TABLE t (id int PRIMARY KEY, v int)")
        p.sql("INSERT INTO t SELECT g, 0 FROM generate_series(1, 20) g")
        p.wait_caught_up(new_tables=True)
        for i in range(3):
            time.sleep(2.5)  # idle: longer than the retention
            p.sql(f"UPDATE t SET v = {i + 1} WHERE id = 1")
            p.wait_caught_up()
            time.sleep(0.5)
            snaps = _snapshots(tmp_path)
            assert snaps, f"round {i}: the view's newest batch expired:\n{p.output()[-2000:]}"
            r = p.cli(
                "sql",
                "lake",
                "--at",
                format_lsn(snaps[-1].checkpoint.commit_lsn),
                "-q",
                "SELECT v FROM public.t WHERE id = 1",
            )
            assert r.returncode == 0 and r.stdout.split() == ["v", str(i + 1)], r.stdout + r.stderr
        assert p.stop() == 0
        p.assert_equal()
    finally:
        p.close()
