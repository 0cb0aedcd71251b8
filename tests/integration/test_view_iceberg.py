"""The Iceberg view against a real warehouse (pyiceberg's SQL catalog on SQLite or
PostgreSQL, Parquet files) fed by a real ``syncline run``: readers in other processes
(pyiceberg, DuckDB's iceberg extension) while it writes and while it is killed,
``syncline sql --at`` against the source's own history, maintenance, and the errors of bad
input."""

from __future__ import annotations

import json
import random
import re
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from syncline.client import sql
from syncline.config import load_config
from syncline.core.errors import ViewError
from syncline.sources.postgres.lsn import format_lsn, parse_lsn
from syncline.testing.compare import compare_iceberg, source_tables
from syncline.testing.harness import Pipeline
from syncline.testing.pgcluster import PgCluster
from syncline.views.iceberg import lake
from tests.integration.test_view_ducklake import (
    ACCOUNTS,
    QUERY,
    START,
    _serial_history,
    _transfers,
    until_read,
    verify_finds_then_repairs,
)

VIEW = "iceberg"  # the harness's name for the view

READER = textwrap.dedent(
    """
    import json, os, sys, time
    import pyarrow.compute as pc
    from syncline.views.iceberg import lake
    catalog, warehouse, stop = sys.argv[1], sys.argv[2], sys.argv[3]
    q = ("SELECT (SELECT sum(balance) FROM public.accounts), (SELECT sum(moves) FROM public.accounts), "
         "(SELECT count(*) FROM public.accounts), (SELECT count(*) FROM public.transfers)")
    reads, errors, table, whole = 0, [], [], []
    deadline = time.monotonic() + 300
    cat = None
    while not os.path.exists(stop) and time.monotonic() < deadline:
        try:
            if cat is None:  # a new catalog now and then, as a new reader would
                cat = lake.open_catalog(catalog, warehouse)
            # (a) pyiceberg: one table's current snapshot
            got = cat.load_table(("public", "accounts")).scan().to_arrow()
            one = [pc.sum(got["balance"]).as_py(), pc.sum(got["moves"]).as_py(), got.num_rows]
            # (b) DuckDB's iceberg_scan, every table at one batch's position
            con, read = lake.reading_connection(cat, "iceberg")
            try:
                row = con.execute(q).fetchone()
            finally:
                con.close()
        except Exception as e:  # not there yet: read again
            errors.append(type(e).__name__ + ": " + (str(e).splitlines() or [""])[0])
            cat = None
            time.sleep(0.05)
            continue
        reads += 1
        table.append([None if v is None else int(v) for v in one])
        whole.append([None if v is None else int(v) for v in row])
        states = len({s[3] for s in whole if s[2] is not None and s[2] > 0})
        with open(stop + ".tmp", "w") as f:  # how far it got, for the test to wait on
            json.dump({"reads": reads, "states": states}, f)
        os.replace(stop + ".tmp", stop + ".progress")
        if reads % 5 == 0:
            cat = None
        time.sleep(0.01)
    print(json.dumps({"reads": reads, "errors": errors[-5:], "table": table, "whole": whole}))
    """
)


def _assert_same(diffs: list[Any], rows: dict[str, int]) -> None:
    """A comparison with the source: equal, and of the tables (and row counts) expected."""
    bad = [str(d) for d in diffs if not d.equal]
    assert not bad, "the Iceberg view differs from the source:\n" + "\n".join(bad)
    got = {d.table: (d.source_rows, d.view_rows) for d in diffs}
    for table, n in rows.items():
        if n >= 0:
            assert got.get(table) == (n, n), (table, got)
        else:
            assert table in got and got[table][0] == got[table][1] > 0, (table, got)


def _snapshot_count(tmp_path: Path, ident: tuple[str, str]) -> int:
    """How many snapshots the Iceberg table holds (0 while it does not exist)."""
    from pyiceberg.exceptions import NoSuchTableError

    try:
        cat = lake.open_catalog(str(tmp_path / "iceberg.sqlite"), str(tmp_path / "iceberg"))
        return len(cat.load_table(ident).snapshots())
    except NoSuchTableError:
        return 0


def _until_more_snapshots(p: Pipeline, tmp_path: Path, ident: tuple[str, str], than: int) -> int:
    deadline = time.monotonic() + 120
    while (n := _snapshot_count(tmp_path, ident)) <= than:
        assert time.monotonic() < deadline, f"{ident} not published:\n{p.output()[-3000:]}"
        assert not p.failed_views(), p.output()[-3000:]
        time.sleep(0.3)
    return n


def test_readers_in_other_processes_see_whole_transactions_while_run_writes_and_dies(
    pg: PgCluster, tmp_path: Path
) -> None:
    p = Pipeline(pg, tmp_path, views=(VIEW,))
    stop_readers = tmp_path / "stop-readers"
    progress = tmp_path / "stop-readers.progress"
    accounts = ("public", "accounts")
    try:
        p.start()  # before the application creates its tables
        reader = subprocess.Popen(
            [
                sys.executable,
                "-c",
                READER,
                str(tmp_path / "iceberg.sqlite"),
                str(tmp_path / "iceberg"),
                str(stop_readers),
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
            _until_more_snapshots(p, tmp_path, accounts, 0)  # the view publishes, readers read
            until_read(progress, 3, 1, p)
            time.sleep(2)
            p.kill()  # SIGKILL in the middle of the stream, readers reading
            killed = _snapshot_count(tmp_path, accounts)
            time.sleep(1)
            p.start()
            _until_more_snapshots(p, tmp_path, accounts, killed)  # the restarted run publishes
            time.sleep(3)
            until_read(progress, 12, 3, p)
        finally:
            stop.set()
            writer.join()
        p.wait_caught_up()
        stop_readers.touch()
        out, _ = reader.communicate(timeout=120)
        assert reader.returncode == 0
        got = json.loads(out)
        p.assert_verified()  # syncline verify while run runs
        assert p.stop() == 0
        _assert_same(p.compare()[VIEW], {"public.accounts": ACCOUNTS, "public.transfers": done[0]})
    finally:
        stop_readers.touch()
        p.close()
    # The accounts come in one transaction: a table may show none of them only while it is
    # being created (an Iceberg table exists, empty, before its first snapshot), never some.
    for kind in ("table", "whole"):
        counts = [s[2] for s in got[kind]]
        assert set(counts) <= {0, ACCOUNTS}, f"{kind} reads that saw part of the accounts: {counts}"
        assert 0 not in counts[counts.index(ACCOUNTS) :], f"{kind}: accounts gone again: {counts}"
    # (a) one table's current snapshot: whole transactions of that table
    table = [s for s in got["table"] if s[2] == ACCOUNTS]
    assert len(table) >= 10, got
    bad = [s for s in table if s[0] != ACCOUNTS * START or s[1] % 2]
    assert not bad, f"pyiceberg reads that saw part of a transaction: {bad[:5]}"
    assert len({s[1] for s in table}) >= 3, f"pyiceberg saw the table change too few times: {table}"
    # (b) every table at one batch's position: whole transactions across tables
    whole = [s for s in got["whole"] if s[2] == ACCOUNTS]
    assert len(whole) >= 10, got
    bad = [s for s in whole if s[0] != ACCOUNTS * START or s[1] != 2 * s[3]]
    assert not bad, f"consistent reads that saw part of a transaction: {bad[:5]}"
    counts = sorted({s[3] for s in whole})
    assert len(counts) >= 3, f"the readers saw the warehouse change only {len(counts)} times: {counts}"
    assert counts[-1] <= done[0]
    # each reader's states only move forward, across the kill and the restart
    moved = [s[1] for s in table]
    assert moved == sorted(moved), f"pyiceberg saw the table go back in time: {moved}"
    seen = [s[3] for s in whole]
    assert seen == sorted(seen), f"consistent reads went back in time: {seen}"


def _batches(tmp_path: Path) -> list[lake.Snapshot]:
    """The batches view ``iceberg`` committed that the warehouse retains, read by another catalog."""
    return lake.batches(lake.open_catalog(str(tmp_path / "iceberg.sqlite"), str(tmp_path / "iceberg")), VIEW)


def _answer(p: Pipeline, at: int) -> tuple[int, int]:
    """(the state's i, the position it answered at) of ``sql --at``; the state must be
    one of the history's (counter, count and max of hist agree)."""
    r = p.cli("sql", VIEW, "--at", format_lsn(at), "--json", QUERY)
    assert r.returncode == 0, r.stderr
    (row,) = [json.loads(line) for line in r.stdout.splitlines()]
    assert row["v"] == row["n"] == (row["m"] or 0), row
    answered = parse_lsn(r.stderr.split("source position ")[1].split(",")[0])
    return int(row["v"]), answered


def test_sql_at_a_position_answers_with_the_source_state_of_that_position(
    pg: PgCluster, tmp_path: Path
) -> None:
    p = Pipeline(pg, tmp_path, views=(VIEW,))
    with p.config_path.open("a") as f:  # the view's section is the config's last
        f.write("batch_interval = 0.3\n")
    try:
        p.start()
        p.sql(
            "CREATE TABLE counter (id int PRIMARY KEY, v int); INSERT INTO counter VALUES (1, 0);"
            "CREATE TABLE hist (i int PRIMARY KEY)"
        )
        p.wait_caught_up(new_tables=True)
        after = _serial_history(p.source_dsn, 120)
        p.wait_caught_up()
        snaps = _batches(tmp_path)
        positions = [s.checkpoint.commit_lsn for s in snaps if s.checkpoint.commit_lsn > after[0]]
        assert len(positions) >= 4, f"too few batches to test time travel: {positions}"
        st = p.cli("status", "--json")
        history = json.loads(st.stdout)["views"][VIEW]["snapshots"]
        assert history["retained"] == len(snaps) and history["newest_lsn"] == format_lsn(positions[-1]), (
            history
        )
        assert history["oldest_lsn"] == format_lsn(snaps[0].checkpoint.commit_lsn), history
        assert "snapshots retained" in p.cli("status").stdout
        for pos in positions:
            # a batch's own position: exactly the state after the last transaction at or before it
            i, answered = _answer(p, pos)
            assert answered == pos
            assert after[i - 1] < pos < after[i] if i else pos < after[1], (
                i,
                format_lsn(pos),
                [format_lsn(a) for a in after[max(i - 2, 0) : i + 2]],
            )
        rnd = random.Random(5)
        asked = 0
        for j in rnd.sample(range(len(after)), 12):
            if after[j] < positions[0] or after[j] > positions[-1]:
                continue
            # between batches: the newest batch at or before the position, named on stderr
            i, answered = _answer(p, after[j])
            assert i <= j and answered <= after[j]
            assert answered == max(q for q in positions if q <= after[j])
            asked += 1
        assert asked >= 3, "too few positions between batches were asked"

        # bad input: one clear error each, nothing changed
        r = p.cli("sql", VIEW, "--at", "0/10", QUERY)
        assert r.returncode == 2 and "before the retained snapshots" in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
        r = p.cli("sql", VIEW, "--at", "FFFFFF/0", QUERY)
        assert r.returncode == 2 and "syncline wait --lsn" in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
        for write in (
            "DELETE FROM public.hist",
            "SELECT 1; DROP TABLE public.hist",
            f"ATTACH '{tmp_path / 'iceberg.sqlite'}' AS w",
            f"COPY (SELECT 1) TO '{tmp_path / 'x.parquet'}'",
            "INSERT INTO public.hist VALUES (1000)",
        ):
            r = p.cli("sql", VIEW, write)
            assert r.returncode == 2 and "only read" in r.stderr, (write, r.stderr)
            assert len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert not (tmp_path / "x.parquet").exists()
        r = p.cli("sql", VIEW, "--at", "nonsense", QUERY)
        assert r.returncode == 2 and "--at" in r.stderr
        r = p.cli("sql", VIEW, "-q", "SELECT count(*) AS n, max(i) AS m FROM public.hist")
        assert r.returncode == 0 and r.stdout.split() == ["n", "m", "120", "120"], r.stdout + r.stderr
        r = p.cli("sql", VIEW, "-q", "SELECT current_setting('enable_progress_bar') AS bar")
        assert r.returncode == 0 and r.stdout.split() == ["bar", "False"], r.stdout + r.stderr
        assert p.stop() == 0
        _assert_same(p.compare()[VIEW], {"public.counter": 1, "public.hist": 120})
    finally:
        p.close()


def test_a_postgresql_catalog(pg: PgCluster, tmp_path: Path) -> None:
    """The catalog in a PostgreSQL database (a DSN with a password that is never shown)."""
    pg.psql("CREATE DATABASE icebergcat")
    pg.psql(
        "DO $$ BEGIN CREATE ROLE icebergowner LOGIN SUPERUSER PASSWORD 'hunter3-secret'; "
        "EXCEPTION WHEN duplicate_object THEN NULL; END $$"
    )
    dsn = f"postgresql://icebergowner:hunter3-secret@127.0.0.1:{pg.port}/icebergcat"
    p = Pipeline(pg, tmp_path, views=(VIEW,))
    sqlite_line = f'catalog = "{tmp_path / "iceberg.sqlite"}"'
    text = p.config_path.read_text()
    assert sqlite_line in text
    # a PostgreSQL catalog without a warehouse: one clear error at load
    nowh = tmp_path / "nowarehouse.toml"
    nowh.write_text(
        text.replace(sqlite_line, f'catalog = "{dsn}"').replace(f'warehouse = "{tmp_path / "iceberg"}"\n', "")
    )
    r = subprocess.run(
        [sys.executable, "-m", "syncline", "status", "-c", str(nowh)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2 and "warehouse" in r.stderr and "PostgreSQL" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "hunter3" not in r.stdout + r.stderr, r.stderr
    p.config_path.write_text(text.replace(sqlite_line, f'catalog = "{dsn}"'))
    warehouse = str(tmp_path / "iceberg")
    try:
        p.start()
        p.sql("CREATE TABLE t (id int PRIMARY KEY, v text, iv interval)")
        p.sql("INSERT INTO t SELECT g, 'v' || g, make_interval(secs => -g) FROM generate_series(1, 500) g")
        p.sql("UPDATE t SET v = 'w' WHERE id % 2 = 0")
        p.sql("DELETE FROM t WHERE id > 490")
        p.wait_caught_up()
        verified = p.cli("verify")
        assert verified.returncode == 0, verified.stdout + verified.stderr
        r = p.cli("sql", VIEW, "SELECT count(*) AS n, count(*) FILTER (WHERE v = 'w') AS w FROM public.t")
        assert r.returncode == 0 and r.stdout.split()[2:] == ["490", "245"], r.stdout + r.stderr
        bad = p.cli("sql", VIEW, "SELECT * FROM nowhere")
        assert bad.returncode == 2 and bad.stderr.strip(), bad.stderr
        st = p.cli("status", "--json")
        snaps = json.loads(st.stdout)["views"][VIEW]["snapshots"]
        assert snaps["retained"] >= 1 and "newest_lsn" in snaps, snaps
        st_text = p.cli("status")
        assert "snapshots retained" in st_text.stdout, st_text.stdout
        assert p.stop() == 0
        _assert_same(
            compare_iceberg(p.source_dsn, dsn, warehouse, source_tables(p.source_dsn)), {"public.t": 490}
        )
        out = "".join(
            (p.output(), r.stdout, r.stderr, bad.stderr, st.stdout, st.stderr, st_text.stdout, st_text.stderr)
        )
        out += verified.stdout + verified.stderr
        assert "hunter3" not in out
        # the catalog is in that database; no SQLite catalog was made
        tables = {str(n) for (n,) in p.sql("SELECT table_name FROM iceberg_tables", db="icebergcat")}
        assert {"t", "positions"} <= tables, tables
        assert not (tmp_path / "iceberg.sqlite").exists()
        assert list((tmp_path / "iceberg").rglob("*.parquet"))
        # a catalog that cannot be reached: one clear error, no password
        gone = tmp_path / "gone.toml"
        gone.write_text(p.config_path.read_text().replace(f":{pg.port}/icebergcat", ":1/icebergcat"))
        for args in (["sql", VIEW, "SELECT 1"], ["verify", "--view", VIEW], ["status"], ["status", "--json"]):
            r = subprocess.run(
                [sys.executable, "-m", "syncline", *args, "-c", str(gone)],
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert "hunter3" not in r.stdout + r.stderr, (args, r.stdout, r.stderr)
            if args[0] == "sql":
                assert r.returncode == 2 and "cannot read the warehouse" in r.stderr, r.stderr
                assert len(r.stderr.strip().splitlines()) == 1, r.stderr
            if args[0] == "verify":
                assert r.returncode != 0, r.stdout + r.stderr
            if args == ["status"]:
                assert "cannot read the catalog" in r.stdout, r.stdout + r.stderr
    finally:
        p.close()


def _log_count(p: Pipeline, text: str) -> int:
    return p.output().count(text)


def _wait_log(p: Pipeline, text: str, more_than: int, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while _log_count(p, text) <= more_than:
        assert time.monotonic() < deadline, f"no new {text!r} in the log:\n{p.output()[-3000:]}"
        time.sleep(0.2)


def _files(table: Any) -> set[str]:
    """The data and manifest files the table's retained snapshots reference (local paths)."""
    keep: set[str] = set()
    for s in table.snapshots():
        for m in s.manifests(table.io):
            keep.add(m.manifest_path.removeprefix("file://"))
            for e in m.fetch_manifest_entry(table.io, discard_deleted=True):
                keep.add(e.data_file.file_path.removeprefix("file://"))
    return keep


def test_maintenance_expires_old_snapshots_compacts_and_deletes_unreferenced_files(
    pg: PgCluster, tmp_path: Path
) -> None:
    p = Pipeline(pg, tmp_path, views=(VIEW,))
    base = p.config_path.read_text()
    # first without maintenance (it never comes due): the files pile up
    p.config_path.write_text(
        base + "retention = 1\nmaintenance_interval = 3600\ncompact_files = 4\nbatch_interval = 0.2\n"
    )
    catalog, warehouse = str(tmp_path / "iceberg.sqlite"), tmp_path / "iceberg"
    try:
        p.start()
        p.sql("CREATE TABLE t (id int PRIMARY KEY, v int, changed timestamptz DEFAULT now())")
        p.sql("INSERT INTO t (id, v) SELECT g, 0 FROM generate_series(1, 200) g")
        p.wait_caught_up(new_tables=True)
        first = p.current_lsn()
        for i in range(1, 13):
            p.sql(f"UPDATE t SET v = {i} WHERE id % 15 = {i % 15}")
            time.sleep(0.35)
        p.wait_caught_up()
        assert p.stop() == 0
        cat = lake.open_catalog(catalog, str(warehouse))
        t = cat.load_table(("public", "t"))
        files_before = int(t.current_snapshot().summary["total-data-files"])
        snaps_before = len(t.snapshots())
        parquet_before = len(list(warehouse.rglob("*.parquet")))
        batches_before = len(lake.batches(cat, VIEW))
        assert files_before >= 5, f"copy-on-write left only {files_before} data files"
        assert snaps_before >= 10 and batches_before >= 5, (snaps_before, batches_before)
        assert "Iceberg maintenance done" not in p.output()

        # now with maintenance every second
        p.config_path.write_text(
            base + "retention = 1\nmaintenance_interval = 1\ncompact_files = 4\nbatch_interval = 0.2\n"
        )
        p.start()
        for i in range(13, 31):
            p.sql(f"UPDATE t SET v = {i} WHERE id % 15 = {i % 15}")
            time.sleep(0.3)
        p.wait_caught_up()
        # a last batch after more than retention and interval: its maintenance expires all but it
        time.sleep(2.5)
        done = _log_count(p, "Iceberg maintenance done")
        p.sql("UPDATE t SET v = -1 WHERE id = 1")
        p.wait_caught_up()
        _wait_log(p, "Iceberg maintenance done", done)
        out = p.output()
        compacted = [
            int(n) for n in re.findall(r"Iceberg maintenance done in [\d.]+s: (\d+) tables compacted", out)
        ]
        assert compacted and max(compacted) >= 1, out[-3000:]
        assert "maintenance failed" not in out, out[-3000:]

        cat = lake.open_catalog(catalog, str(warehouse))
        t = cat.load_table(("public", "t"))
        files_after = int(t.current_snapshot().summary["total-data-files"])
        assert files_after < 4 < files_before, (files_before, files_after)
        assert len(t.inspect.files()) == files_after
        assert len(t.snapshots()) <= 6 < snaps_before, (snaps_before, len(t.snapshots()))
        # every Parquet file left is one a retained snapshot needs, of some table
        on_disk = {str(f) for f in warehouse.rglob("*.parquet")}
        needed: set[str] = set()
        for tbl in [*lake.view_tables(cat, VIEW), cat.load_table(lake.POSITIONS)]:
            needed |= _files(tbl)
        assert on_disk and on_disk <= needed, sorted(on_disk - needed)[:5]
        assert len(on_disk) < parquet_before, (parquet_before, len(on_disk))
        # the expired batches no longer answer --at; the retained ones still do
        batches = lake.batches(cat, VIEW)
        assert batches and batches[0].checkpoint.commit_lsn > first
        r = p.cli("sql", VIEW, "--at", format_lsn(first), "SELECT count(*) FROM public.t")
        assert r.returncode == 2 and "before the retained snapshots" in r.stderr, r.stderr
        for b in (batches[0], batches[-1]):
            r = p.cli(
                "sql",
                VIEW,
                "--at",
                format_lsn(b.checkpoint.commit_lsn),
                "-q",
                "SELECT count(*) AS n FROM public.t",
            )
            assert r.returncode == 0 and r.stdout.split() == ["n", "200"], r.stdout + r.stderr
        r = p.cli("sql", VIEW, "-q", "SELECT sum(v) AS s, min(v) AS lo FROM public.t")
        src = p.sql("SELECT sum(v), min(v) FROM t")[0]
        assert r.returncode == 0 and r.stdout.split() == ["s", "lo", str(src[0]), str(src[1])], (
            r.stdout + r.stderr
        )
        p.assert_verified()
        assert p.stop() == 0
        _assert_same(p.compare()[VIEW], {"public.t": 200})
    finally:
        p.close()


def test_every_retained_batch_answers_after_maintenance_expires_snapshots(
    pg: PgCluster, tmp_path: Path
) -> None:
    """A table that changes rarely beside one that changes often: expiring snapshots older
    than ``retention`` must leave, for every batch still retained, each table's snapshot at
    or before it (the rare table's may be far older than the retention)."""
    p = Pipeline(pg, tmp_path, views=(VIEW,))
    with p.config_path.open("a") as f:  # the view's section is the config's last
        f.write("retention = 5\nmaintenance_interval = 1\nbatch_interval = 0.2\n")
    done = "Iceberg maintenance done"
    try:
        p.start()
        p.sql(
            "CREATE TABLE fast (id int PRIMARY KEY, v int); INSERT INTO fast VALUES (1, 0);"
            "CREATE TABLE slow (id int PRIMARY KEY, v int); INSERT INTO slow VALUES (1, 1)"
        )
        p.wait_caught_up(new_tables=True)
        after = [p.current_lsn()]  # after[i]: the WAL position after transaction i

        def step(slow: bool = False) -> None:
            with psycopg.connect(p.source_dsn, autocommit=True) as conn, conn.transaction():
                conn.execute("UPDATE fast SET v = %s", (len(after),))
                if slow:
                    conn.execute("UPDATE slow SET v = 2")
            after.append(p.current_lsn())
            time.sleep(0.25)

        for _ in range(30):  # longer than the retention: slow's first snapshot grows old
            step()
        step(slow=True)
        changed = len(after) - 1  # the transaction that changed slow
        p.wait_caught_up()
        maintained = _log_count(p, done)
        for _ in range(60):  # a few more, until maintenance ran after slow changed
            step()
            if len(after) - changed > 6 and _log_count(p, done) > maintained:
                break
        p.wait_caught_up()
        assert _log_count(p, done) > maintained, p.output()[-3000:]
        assert "maintenance failed" not in p.output(), p.output()[-3000:]

        cat = lake.open_catalog(str(tmp_path / "iceberg.sqlite"), str(tmp_path / "iceberg"))
        batches = lake.batches(cat, VIEW)
        positions = [b.checkpoint.commit_lsn for b in batches]
        assert positions[0] > after[1], "maintenance expired no batch"
        assert any(q < after[changed - 1] for q in positions), (
            "no retained batch before slow changed",
            [format_lsn(q) for q in positions],
            format_lsn(after[changed]),
        )
        wrong = []
        for pos in positions:
            try:
                con, _read = lake.reading_connection(cat, VIEW, pos)
                try:
                    row = con.execute(
                        "SELECT (SELECT v FROM public.fast), (SELECT v FROM public.slow)"
                    ).fetchone()
                finally:
                    con.close()
            except Exception as e:
                wrong.append((format_lsn(pos), str(e).splitlines()[0]))
                continue
            assert row is not None
            i, slow = int(row[0]), row[1]
            if not (0 < i < len(after) and after[i - 1] < pos < after[i]) or slow != (
                2 if i >= changed else 1
            ):
                wrong.append((format_lsn(pos), (i, slow)))
        assert not wrong, (
            f"retained batches (slow changed in transaction {changed}, at {format_lsn(after[changed])}) "
            f"that do not answer with the source's state: {wrong}"
        )
        # and as a user asks: the oldest retained batch
        r = p.cli("sql", VIEW, "--at", format_lsn(positions[0]), "--json", "SELECT v FROM public.slow")
        assert r.returncode == 0 and [json.loads(x)["v"] for x in r.stdout.splitlines()] == [1], (
            r.stdout + r.stderr
        )
        assert p.stop() == 0
        _assert_same(p.compare()[VIEW], {"public.fast": 1, "public.slow": 1})
    finally:
        p.close()


def _two_views(tmp_path: Path) -> Path:
    cfg = tmp_path / "two.toml"
    cfg.write_text(
        textwrap.dedent(
            f"""
            [source]
            dsn = "postgresql://nobody@127.0.0.1:1/x"
            [log]
            path = "{tmp_path / "log"}"
            [views.a]
            kind = "iceberg"
            catalog = "{tmp_path / "cat.sqlite"}"
            warehouse = "{tmp_path / "wh-a"}"
            [views.b]
            kind = "iceberg"
            catalog = "{tmp_path / "." / "cat.sqlite"}"
            warehouse = "{tmp_path / "wh-b"}"
            """
        )
    )
    return cfg


def test_two_views_on_one_catalog_are_refused(pg: PgCluster, tmp_path: Path) -> None:
    # in one config: refused at load, one line naming the other view
    r = subprocess.run(
        [sys.executable, "-m", "syncline", "status", "-c", str(_two_views(tmp_path))],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2, r.stdout + r.stderr
    assert "views.b" in r.stderr or "'b'" in r.stderr or " b " in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr

    # in two pipelines: the second one's view fails with one clear error naming the first
    first = Pipeline(pg, tmp_path / "first", views=(VIEW,))
    second = Pipeline(pg, tmp_path / "second", views=(VIEW,))
    try:
        first.start()
        first.sql("CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t VALUES (1, 'one')")
        first.wait_caught_up(new_tables=True)
        text = second.config_path.read_text()
        text = text.replace(str(tmp_path / "second" / "iceberg"), str(tmp_path / "first" / "iceberg"))
        second.config_path.write_text(text.replace("[views.iceberg]", "[views.other]"))
        second.cfg = load_config(second.config_path)
        second.sql("CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t VALUES (2, 'two')")
        second.start()
        assert second.wait_failed({"other"}) == ["other"], second.output()[-3000:]
        out = second.output()
        lines = [ln for ln in out.splitlines() if "one view per catalog" in ln]
        assert lines and all("'iceberg'" in ln for ln in lines), out[-3000:]
        r = second.cli("status")
        assert "one view per catalog" in r.stdout + r.stderr, r.stdout + r.stderr
        # the first view's tables are untouched
        first.sql("INSERT INTO t VALUES (3, 'three')")
        first.wait_caught_up()
        assert first.stop() == 0
        _assert_same(first.compare()[VIEW], {"public.t": 2})
    finally:
        second.close()
        first.close()

    # the view itself, opened on a catalog another view publishes to
    from syncline.core.config_models import ViewConfig
    from syncline.views.iceberg import create_view

    opts = {
        "catalog": str(tmp_path / "first" / "iceberg.sqlite"),
        "warehouse": str(tmp_path / "first" / "iceberg"),
    }
    other = create_view(ViewConfig(name="other", kind="iceberg", options=dict(opts)))
    with pytest.raises(ViewError, match="holds the tables of view 'iceberg'") as e:
        other.open()
    assert "one view per catalog" in str(e.value) and len(str(e.value).splitlines()) == 1
    mine = create_view(ViewConfig(name=VIEW, kind="iceberg", options=dict(opts)))
    try:
        assert mine.open().seq >= 1
    finally:
        mine.close()


DUCK_READER = textwrap.dedent(
    """
    import json, sys
    from syncline.views.iceberg import lake
    con = lake.extension_connection()
    loc = sys.argv[1].replace("'", "''")
    rows = con.execute(
        "SELECT id, v, CAST(n AS VARCHAR), epoch_ms(ts), b, tags FROM iceberg_scan('" + loc + "') ORDER BY id"
    ).fetchall()
    print(json.dumps([list(r) for r in rows]))
    """
)


def test_duckdb_reads_the_tables_with_plain_sql_in_another_process(pg: PgCluster, tmp_path: Path) -> None:
    p = Pipeline(pg, tmp_path, views=(VIEW,))
    try:
        p.start()
        p.sql(
            "CREATE TABLE t (id int PRIMARY KEY, v text, n numeric(10,2), ts timestamptz, b bool, tags text[])"
        )
        p.sql(
            "INSERT INTO t SELECT g, 'v' || g, g / 4.0, timestamptz '2024-01-01 00:00:00+00' + g * interval '1 minute',"
            " g % 3 = 0, ARRAY['a' || g, 'b'] FROM generate_series(1, 300) g"
        )
        p.wait_caught_up(new_tables=True)
        p.sql("UPDATE t SET v = NULL, b = NULL WHERE id % 7 = 0")
        p.sql("DELETE FROM t WHERE id % 10 = 0")
        p.sql("INSERT INTO t VALUES (1000, 'é ''quoted''', -1.5, NULL, true, '{}')")
        p.wait_caught_up()
        cat = lake.open_catalog(str(tmp_path / "iceberg.sqlite"), str(tmp_path / "iceberg"))
        loc = cat.load_table(("public", "t")).metadata_location
        r = subprocess.run(
            [sys.executable, "-c", DUCK_READER, str(loc)], capture_output=True, text=True, timeout=120
        )
        assert r.returncode == 0, r.stderr
        got = [tuple(row) for row in json.loads(r.stdout)]
        want = [
            tuple(row)
            for row in p.sql(
                "SELECT id, v, n::text, (extract(epoch FROM ts) * 1000)::bigint, b, tags FROM t ORDER BY id"
            )
        ]
        want = [(*w[:5], list(w[5])) for w in want]
        got = [(*g[:5], list(g[5])) for g in got]
        assert len(got) == 271 and got == want, [x for x in zip(got, want, strict=False) if x[0] != x[1]][:5]
        assert p.stop() == 0
        _assert_same(p.compare()[VIEW], {"public.t": 271})
    finally:
        p.close()


@pytest.mark.slow
def test_one_large_transaction_into_both_lakes(pg: PgCluster, tmp_path: Path) -> None:
    """300,000 rows in one transaction, then 30,000 of them updated in another, into a
    DuckLake and an Iceberg view (the conformance suite's million-row test runs on the
    other kinds): the working copy holds the open source transaction over several batches
    and publishes it in one commit per table."""
    rows = 300_000
    p = Pipeline(pg, tmp_path, views=("ducklake", "iceberg"))
    try:
        p.sql("CREATE TABLE big (id int PRIMARY KEY, v text, n int)")
        p.start()
        p.wait_caught_up()
        p.sql(f"INSERT INTO big SELECT g, md5(g::text), g FROM generate_series(1, {rows}) g")
        p.sql("UPDATE big SET n = -n WHERE id % 10 = 0")
        p.wait_caught_up(timeout=600)
        assert p.stop() == 0
        p.assert_equal()
        got = p.compare()
        assert {d.table: d.view_rows for d in got[VIEW]}.get("public.big") == rows
    finally:
        p.close()


def test_verify_repair_mends_a_table_changed_behind_syncline(pg: PgCluster, tmp_path: Path) -> None:
    """Someone writes the published Iceberg table with pyiceberg (the working copy is
    untouched): ``verify`` reads the warehouse, not the working copy, and finds the three
    keys; ``verify --repair`` publishes them again through the view."""
    import pyarrow as pa
    from pyiceberg.expressions import EqualTo, Or

    p = Pipeline(pg, tmp_path, views=(VIEW,))
    try:
        p.start()
        p.sql("CREATE TABLE t (id int PRIMARY KEY, v text)")
        p.sql("INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 300) g")
        p.wait_caught_up(new_tables=True)
        assert p.stop() == 0
        table = lake.open_catalog(str(tmp_path / "iceberg.sqlite"), str(tmp_path / "iceberg")).load_table(
            ("public", "t")
        )
        table.delete(Or(EqualTo("id", 7), EqualTo("id", 8)))
        schema = table.schema().as_arrow()
        table.append(pa.table({"id": [8, 9999], "v": ["wrong", "extra"]}, schema=schema))
        verify_finds_then_repairs(p, VIEW, "public.t", (["7"], ["8"], ["9999"]))
        p.start()
        p.wait_caught_up()
        assert p.stop() == 0
        _assert_same(p.compare()[VIEW], {"public.t": 300})
        r = p.cli("verify", "-q")
        assert r.returncode == 0, r.stdout + r.stderr
    finally:
        p.close()


def _until_dropped(p: Pipeline, tmp_path: Path, ident: tuple[str, str]) -> None:
    """Until both lakes have dropped a table dropped at the source (the capture learns of a
    drop from its catalogue poll, so ``wait_caught_up`` may return before it is logged)."""
    from syncline.views.ducklake import lake as duck

    deadline = time.monotonic() + 60
    while True:
        con = duck.connect(str(tmp_path / "lake.sqlite"), str(tmp_path / "lake"), read_only=True)
        try:
            in_lake = con.execute(
                "SELECT count(*) FROM information_schema.tables WHERE table_schema = ? AND table_name = ?",
                list(ident),
            ).fetchone()
        finally:
            con.close()
        cat = lake.open_catalog(str(tmp_path / "iceberg.sqlite"), str(tmp_path / "iceberg"))
        if in_lake == (0,) and not cat.table_exists(ident):
            return
        assert time.monotonic() < deadline, f"{ident} not dropped:\n{p.output()[-3000:]}"
        time.sleep(0.2)


def test_odd_schema_and_table_names_in_both_lakes(pg: PgCluster, tmp_path: Path) -> None:
    """Names PostgreSQL allows and catalogs and file systems treat specially: a schema with
    a dot (the Iceberg SQL catalog reads it back as a nested namespace), tables named
    ``..`` and ``.`` (directories of their own, not the parent), quotes, spaces, unicode."""
    p = Pipeline(pg, tmp_path, views=("ducklake", "iceberg"), tables="*.*")
    try:
        p.start()  # before the application creates its tables
        p.sql(
            'CREATE SCHEMA "odd.schema"; CREATE SCHEMA "Ünï cødé";'
            'CREATE TABLE "odd.schema"."Weird.Name" ("Col:1" int PRIMARY KEY, "sp ace" text);'
            'CREATE TABLE "odd.schema".".." (id int PRIMARY KEY, v text);'
            'CREATE TABLE public."." (id int PRIMARY KEY, v text);'
            'CREATE TABLE public."say ""hi""" (id int PRIMARY KEY, v text);'
            'CREATE TABLE "Ünï cødé"."tâble/x" (id int PRIMARY KEY, v text)'
        )
        names = ['"odd.schema"."Weird.Name"', '"odd.schema".".."', 'public."."', 'public."say ""hi"""']
        names.append('"Ünï cødé"."tâble/x"')
        for n in names:
            p.sql(f"INSERT INTO {n} SELECT g, 'v' || g FROM generate_series(1, 50) g")
        p.wait_caught_up(new_tables=True)
        for n in names:
            key = '"Col:1"' if "Weird" in n else "id"
            p.sql(
                f"UPDATE {n} SET {key} = {key} + 1000 WHERE {key} % 7 = 0; DELETE FROM {n} WHERE {key} % 5 = 0"
            )
        p.wait_caught_up()
        # a dropped table's files go with it: the directory of "." must not be its schema's
        p.sql('DROP TABLE public."."')
        names.remove('public."."')
        _until_dropped(p, tmp_path, ("public", "."))
        p.assert_verified()  # while run runs: both lakes read by their readers
        assert p.stop() == 0
        r = p.cli("verify", "--json", "-q")
        assert r.returncode == 0, r.stdout + r.stderr
        for view, got in json.loads(r.stdout)["views"].items():
            counts = {t: (v["status"], v["view_rows"]) for t, v in got["tables"].items()}
            assert sorted(counts.values()) == [("equal", 40)] * len(names), (view, counts)
        r = p.cli("sql", "iceberg", "-q", 'SELECT count(*) AS n FROM "odd.schema"."Weird.Name"')
        assert r.returncode == 0 and r.stdout.split() == ["n", "40"], r.stdout + r.stderr
    finally:
        p.close()


def test_a_reader_skips_a_table_dropped_while_it_lists_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A table dropped (its files deleted) between a reader's listing and its scan is left
    out of that read, not an error for the whole query (``sql`` and ``verify`` read every
    table of the view); a table still in the catalogue whose files are missing is an error."""
    import shutil

    import duckdb
    import pyarrow as pa

    cat = lake.open_catalog(str(tmp_path / "c.sqlite"), str(tmp_path / "wh"))
    cat.create_namespace(("public",))
    for name in ("a", "b"):
        t = cat.create_table(
            ("public", name),
            schema=pa.schema([("id", pa.int32())]),
            location=f"file://{tmp_path / 'wh' / name}",
            properties={lake.VIEW: VIEW},
        )
        t.append(pa.table({"id": pa.array([1, 2, 3], pa.int32())}))
    read = lake.consistent_read(cat, VIEW)
    assert set(read.tables) == {("public", "a"), ("public", "b")}
    cat.drop_table(("public", "b"))
    shutil.rmtree(tmp_path / "wh" / "b")
    monkeypatch.setattr(lake, "consistent_read", lambda *_a, **_k: read)  # listed before the drop
    con, _ = lake.reading_connection(cat, VIEW)
    try:
        assert con.execute("SELECT count(*) FROM public.a").fetchone() == (3,)
        with pytest.raises(duckdb.CatalogException):
            con.execute("SELECT * FROM public.b")
    finally:
        con.close()
    shutil.rmtree(tmp_path / "wh" / "a")  # in the catalogue, files gone: an error
    with pytest.raises(duckdb.IOException):
        lake.reading_connection(cat, VIEW)


def test_at_a_position_before_a_copy_on_write_the_rows_it_rewrote_are_there(
    pg: PgCluster, tmp_path: Path
) -> None:
    """A copy-on-write is two snapshots in one commit (the delete, then the append): both
    carry the batch's position, so the delete's is never taken for another writer's
    snapshot standing for the batch before (``--at`` that batch then missed the row)."""
    p = Pipeline(pg, tmp_path, views=(VIEW,))
    try:
        p.start()
        p.sql(
            "CREATE TABLE t (id int PRIMARY KEY, v int); INSERT INTO t SELECT g, 0 FROM generate_series(1, 100) g"
        )
        p.wait_caught_up(new_tables=True)
        before = sql(p.config_path, VIEW, "SELECT count(*), sum(v) FROM public.t")
        assert before.rows == [(100, 0)] and before.position is not None
        p.sql("UPDATE t SET v = 7 WHERE id = 5")
        p.wait_caught_up()
        assert sql(p.config_path, VIEW, "SELECT count(*), sum(v) FROM public.t").rows == [(100, 7)]
        got = sql(p.config_path, VIEW, "SELECT count(*), sum(v) FROM public.t", at=before.position)
        assert (got.position, got.rows) == (before.position, [(100, 0)])
        assert p.stop() == 0
    finally:
        p.close()
