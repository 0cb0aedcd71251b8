"""Bad input gets one clear error and loses nothing."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from syncline.testing.harness import Pipeline
from syncline.testing.pgcluster import PgCluster, running_cluster


def run_once(config: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "syncline", "run", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_wal_level_not_logical(tmp_path: Path) -> None:
    with running_cluster(settings={"wal_level": "replica"}) as c:
        c.psql("CREATE TABLE t (id int PRIMARY KEY)")
        cfg = tmp_path / "s.toml"
        cfg.write_text(
            f'[source]\ndsn = "{c.dsn()}"\ntables = ["public.*"]\n[log]\npath = "{tmp_path}/log"\n'
        )
        r = run_once(cfg)
    assert r.returncode != 0
    assert "wal_level is 'replica'" in r.stderr and "wal_level = logical" in r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("syncline: error: wal_level is 'replica'")


def test_table_without_primary_key_or_identity(pg: PgCluster, tmp_path: Path) -> None:
    p = Pipeline(pg, tmp_path, views=(), tables=("public.nopk", "public.nothing", "public.fine"))
    try:
        p.sql(
            "CREATE TABLE nopk (a int); CREATE TABLE nothing (id int PRIMARY KEY);"
            " ALTER TABLE nothing REPLICA IDENTITY NOTHING; CREATE TABLE fine (id int PRIMARY KEY)"
        )
        r = run_once(p.config_path)
        assert r.returncode != 0
        assert "public.nopk has no primary key" in r.stderr
        assert "public.nothing has REPLICA IDENTITY NOTHING" in r.stderr
        # nothing was created on the server
        assert p.sql(f"SELECT count(*) FROM pg_replication_slots WHERE slot_name = '{p.slot}'")[0][0] == 0
    finally:
        p.close()


def test_missing_slot_after_use_fails_closed(pg: PgCluster, tmp_path: Path) -> None:
    p = Pipeline(pg, tmp_path, views=())
    try:
        p.sql("CREATE TABLE t (id int PRIMARY KEY)")
        p.start()
        p.wait_caught_up()
        assert p.stop() == 0
        p.sql(f"SELECT pg_drop_replication_slot('{p.slot}')")
        p.sql("INSERT INTO t VALUES (1)")
        r = run_once(p.config_path)
        assert r.returncode != 0
        assert f"replication slot '{p.slot}' is missing" in r.stderr
        assert "will not re-create it silently" in r.stderr
        assert p.sql(f"SELECT count(*) FROM pg_replication_slots WHERE slot_name = '{p.slot}'")[0][0] == 0
    finally:
        p.close()


def test_foreign_slot_is_not_taken_over(pg: PgCluster, tmp_path: Path) -> None:
    p = Pipeline(pg, tmp_path, views=())
    try:
        p.sql("CREATE TABLE t (id int PRIMARY KEY)")
        p.sql(f"SELECT pg_create_logical_replication_slot('{p.slot}', 'pgoutput')")
        r = run_once(p.config_path)
        assert r.returncode != 0
        assert "already exists but this log never used it" in r.stderr
    finally:
        p.close()


def test_slot_in_use_by_another_process(pg: PgCluster, tmp_path: Path) -> None:
    p = Pipeline(pg, tmp_path, views=())
    holder = None
    try:
        p.sql("CREATE TABLE t (id int PRIMARY KEY)")
        p.start()
        p.wait_caught_up()
        assert p.stop() == 0
        holder = subprocess.Popen(
            [
                str(pg.bindir / "pg_recvlogical"),
                "-d",
                p.source_dsn,
                "--slot",
                p.slot,
                "--start",
                "-o",
                "proto_version=1",
                "-o",
                f"publication_names=p_{p.slot[2:]}",
                "-f",
                "/dev/null",
            ],
        )
        time.sleep(1.0)
        p.start()
        time.sleep(4)
        assert p.stop() == 0
        assert "is in use by another process (pid" in p.output()
    finally:
        if holder is not None:
            holder.kill()
            holder.wait()
        p.close()


def test_unreachable_source_on_first_start_stops_with_one_line(tmp_path: Path) -> None:
    """A source never reached (wrong host or port) is a configuration error: one clear line,
    exit 1, no retrying forever, no password anywhere; ``status`` exits 1 too."""
    cfg = tmp_path / "s.toml"
    cfg.write_text(
        f'[source]\ndsn = "postgresql://app:hunter2secret@127.0.0.1:1/db"\n[log]\npath = "{tmp_path}/log"\n'
    )
    t0 = time.monotonic()
    r = run_once(cfg, timeout=60)
    assert r.returncode == 1, r.stdout + r.stderr
    assert time.monotonic() - t0 < 30
    assert "cannot connect to the source" in r.stderr and "check [source] dsn" in r.stderr
    assert "retrying in" not in r.stdout + r.stderr
    assert "hunter2secret" not in r.stdout + r.stderr
    st = subprocess.run(
        [sys.executable, "-m", "syncline", "status", "--json", "-c", str(cfg)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert st.returncode == 1
    assert "hunter2secret" not in st.stdout + st.stderr
    assert '"reachable": false' in st.stdout


def test_wrong_database_or_password_on_first_start(pg: PgCluster, tmp_path: Path) -> None:
    for dsn in (pg.dsn("no_such_database"), pg.dsn(user="no_such_role")):
        cfg = tmp_path / "s.toml"
        cfg.write_text(f'[source]\ndsn = "{dsn}"\n[log]\npath = "{tmp_path}/log-{len(dsn)}"\n')
        r = run_once(cfg, timeout=60)
        assert r.returncode == 1, r.stdout + r.stderr
        assert "check [source] dsn" in r.stderr
        lines = [ln for ln in r.stderr.splitlines() if ln.startswith("syncline: error")]
        assert len(lines) == 1, r.stderr


def test_source_lost_after_it_worked_is_retried(tmp_path: Path) -> None:
    """Transient retries are for a source that worked before: stop it, then bring it back."""
    with running_cluster() as c:
        p = Pipeline(c, tmp_path / "w", views=("postgres",))
        try:
            p.sql("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1)")
            p.start()
            p.wait_caught_up()
            c.stop()
            time.sleep(4)
            assert p.proc is not None and p.proc.poll() is None, p.output()
            c.start()
            p.sql("INSERT INTO t VALUES (2)")
            p.wait_caught_up(timeout=120)
            assert "retrying in" in p.output()
            assert p.stop() == 0
            p.assert_equal()
        finally:
            p.close()


def test_status_and_wait(pg: PgCluster, tmp_path: Path) -> None:
    p = Pipeline(pg, tmp_path, views=())
    try:
        p.sql("CREATE TABLE t (id int PRIMARY KEY)")
        p.start()
        p.wait_caught_up()
        p.sql("INSERT INTO t VALUES (1)")
        w = subprocess.run(
            [sys.executable, "-m", "syncline", "wait", "-c", str(p.config_path), "--timeout", "30"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert w.returncode == 0, w.stderr
        st = subprocess.run(
            [sys.executable, "-m", "syncline", "status", "--json", "-c", str(p.config_path)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert '"slot_exists": true' in st.stdout
        bad = subprocess.run(
            [
                sys.executable,
                "-m",
                "syncline",
                "wait",
                "-c",
                str(p.config_path),
                "--lsn",
                "FFFFFFFF/0",
                "--timeout",
                "0.5",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert bad.returncode == 1 and "timeout" in bad.stderr
    finally:
        p.close()


def test_idle_publication_still_advances_the_slot(pg: PgCluster, tmp_path: Path) -> None:
    p = Pipeline(pg, tmp_path, views=())
    try:
        p.sql(
            "CREATE TABLE t (id int PRIMARY KEY); CREATE SCHEMA other;"
            " CREATE TABLE other.unpublished (id int)"
        )
        p.start()
        p.wait_caught_up()
        for _ in range(50):  # busy database, idle publication
            p.sql("INSERT INTO other.unpublished SELECT generate_series(1, 1000)")
        target = p.current_lsn()
        deadline = time.monotonic() + 60
        confirmed = 0
        while time.monotonic() < deadline:
            row = p.sql(
                "SELECT (confirmed_flush_lsn - '0/0')::bigint FROM pg_replication_slots"
                f" WHERE slot_name = '{p.slot}'"
            )
            confirmed = int(row[0][0])  # type: ignore[call-overload]
            if confirmed >= target:
                break
            time.sleep(0.5)
        assert confirmed >= target
        assert p.stop() == 0
    finally:
        p.close()


def test_invalidated_slot_fails_closed(tmp_path: Path) -> None:
    with running_cluster(settings={"max_slot_wal_keep_size": "1MB", "min_wal_size": "32MB"}) as c:
        p = Pipeline(c, tmp_path, views=())
        try:
            p.sql("CREATE TABLE t (id int PRIMARY KEY, v text)")
            p.start()
            p.wait_caught_up()
            assert p.stop() == 0
            for i in range(5):
                p.sql(
                    f"INSERT INTO t SELECT g, md5(g::text) FROM generate_series({i * 50000 + 1}, {(i + 1) * 50000}) g"
                )
                p.sql("SELECT pg_switch_wal()")
            p.sql("CHECKPOINT")
            status = p.sql(f"SELECT wal_status FROM pg_replication_slots WHERE slot_name = '{p.slot}'")
            assert status == [("lost",)]
            r = run_once(p.config_path)
            assert r.returncode != 0
            assert "was invalidated by the server" in r.stderr
        finally:
            p.close()


def test_tables_without_key_matched_by_a_glob_are_left_out_with_a_warning(
    pg: PgCluster, tmp_path: Path
) -> None:
    p = Pipeline(pg, tmp_path, views=("postgres",))
    try:
        p.sql(
            "CREATE TABLE nopk (a int); INSERT INTO nopk VALUES (1); CREATE TABLE fine (id int PRIMARY KEY)"
        )
        p.start()
        p.wait_caught_up()
        assert "table public.nopk is not followed: it has no primary key" in p.output()
        p.sql("ALTER TABLE nopk REPLICA IDENTITY FULL")  # followed and copied from now on
        r = p.cli("wait", "--timeout", "60")
        assert r.returncode == 0, r.stderr
        assert p.sql("SELECT a FROM public.nopk", p.replica_db) == [(1,)]
        assert p.stop() == 0
    finally:
        p.close()


def test_verify_says_one_line_when_the_source_cannot_export_a_snapshot(tmp_path: Path) -> None:
    """wal_level = replica: no logical slot, so no exact snapshot (issue 13: it was a traceback
    and exit 1, "views differ")."""
    with running_cluster(settings={"wal_level": "replica"}) as c:
        cfg = tmp_path / "s.toml"
        cfg.write_text(f'[source]\ndsn = "{c.dsn()}"\n[log]\npath = "{tmp_path}/log"\n')
        r = subprocess.run(
            [sys.executable, "-m", "syncline", "verify", "-c", str(cfg)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("syncline: error: verify: cannot create a temporary")


def test_verify_reports_a_replica_it_may_not_read_as_an_error(tmp_path: Path, pg: PgCluster) -> None:
    """A replica role without SELECT: that view is an error (exit 2) with one line, not a
    traceback; the other views are still verified."""
    p = Pipeline(pg, tmp_path, views=("postgres", "redis"))
    try:
        p.sql("CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t VALUES (1, 'a')")
        p.start()
        p.wait_caught_up()
        assert p.stop() == 0
        p.sql("DROP ROLE IF EXISTS nosel; CREATE ROLE nosel LOGIN", p.replica_db)
        user = p.replica_dsn.split("://", 1)[1].split("@", 1)[0]
        text = p.config_path.read_text()
        assert text.count(p.replica_dsn) == 1
        p.config_path.write_text(
            text.replace(p.replica_dsn, p.replica_dsn.replace(f"://{user}@", "://nosel@"))
        )
        r = p.cli("verify")
    finally:
        p.close()
    assert r.returncode == 2, r.stdout + r.stderr
    assert "Traceback" not in r.stdout + r.stderr
    assert "permission denied" in r.stdout + r.stderr
    assert "cache (redis): equal" in r.stdout + r.stderr


def test_a_second_run_on_a_log_in_use_is_refused_at_once(pg: PgCluster, tmp_path: Path) -> None:
    """(issue 13) It used to reset the running views' rows, then wait on their locks forever."""
    p = Pipeline(pg, tmp_path, views=("redis",))
    try:
        p.sql("CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t VALUES (1, 'a')")
        p.start()
        p.wait_caught_up()
        before = p.cli("status", "--json").stdout
        started = time.monotonic()
        r = run_once(p.config_path, timeout=30)
        assert time.monotonic() - started < 20
        assert r.returncode == 2, r.stderr
        last = r.stderr.strip().splitlines()[-1]
        assert last.startswith("syncline: error: the log at ") and "in use by syncline" in last, last
        assert p.proc is not None and f"pid {p.proc.pid}" in last, last
        # the running instance is untouched: its view still running, still applying
        assert '"running"' in before and '"running"' in p.cli("status", "--json").stdout
        p.sql("INSERT INTO t VALUES (2, 'b')")
        p.wait_caught_up()
        assert not p.failed_views()
        assert p.stop() == 0
        p.assert_equal()
    finally:
        p.close()


def test_a_log_path_that_is_a_file_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("")
    cfg = tmp_path / "s.toml"
    cfg.write_text(f'[source]\ndsn = "postgresql://u@127.0.0.1:1/db"\n[log]\npath = "{tmp_path}/afile"\n')
    r = run_once(cfg)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("syncline: error: log.path: cannot use")


def test_a_damaged_log_is_one_line(tmp_path: Path) -> None:
    """(issue 13) A log.db that is not a database: a traceback before."""
    (tmp_path / "lg").mkdir()
    (tmp_path / "lg" / "log.db").write_bytes(bytes(range(256)) * 200)
    cfg = tmp_path / "s.toml"
    cfg.write_text(f'[source]\ndsn = "postgresql://u@127.0.0.1:1/db"\n[log]\npath = "{tmp_path}/lg"\n')
    r = run_once(cfg)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("syncline: error: the log at ") and "is not a syncline log" in last, last


def test_a_view_of_a_log_that_was_reset_does_not_resume_after_the_new_snapshot(
    pg: PgCluster, tmp_path: Path
) -> None:
    """(issue 13, item 8) The log emptied and a new slot: the capture writes a new snapshot as
    record 1 again; a view whose store says "applied up to record 1" must not skip it."""
    import shutil

    p = Pipeline(pg, tmp_path, views=("postgres", "duckdb", "redis", "tantivy"))
    try:
        p.sql("CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t VALUES (1, 'old')")
        p.start()
        p.wait_caught_up()
        assert p.stop() == 0
        shutil.rmtree(p.log_path)
        p.sql(f"SELECT pg_drop_replication_slot('{p.slot}')")
        p.sql("UPDATE t SET v = 'new'; INSERT INTO t VALUES (2, 'two')")
        p.start()
        views = ["cache", "replica", "search", "warehouse"]
        assert p.wait_failed(set(views)) == views, p.output()[-3000:]
        out = p.output()
        assert "the log was reset" in out
        assert "Traceback" not in out
    finally:
        p.close()


def test_a_superuser_is_refused_when_asked_and_named_otherwise(pg: PgCluster, tmp_path: Path) -> None:
    """(issue 13) ``source.allow_superuser = false``: a superuser role stops the first start
    with one line, before a slot exists; unset, the start goes on with a warning naming the
    setting (a superuser stays accepted by default: existing setups connect as one)."""
    p = Pipeline(pg, tmp_path / "refused", views=(), extra_source="allow_superuser = false")
    try:
        p.sql("CREATE TABLE t (id int PRIMARY KEY)")
        rc, out = p.run_to_exit(timeout=60)
        assert rc == 1, out  # as every source the capture refuses at start
        last = out.strip().splitlines()[-1]
        assert last.startswith("syncline: error: role 'postgres' is a superuser and source.allow_superuser")
        assert not p.sql(f"SELECT 1 FROM pg_replication_slots WHERE slot_name = '{p.slot}'")
    finally:
        p.close()
    p = Pipeline(pg, tmp_path / "warned", views=("postgres",))
    try:
        p.sql("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1)")
        p.start()
        p.wait_caught_up()
        assert p.stop() == 0
        assert "role 'postgres' is a superuser; syncline needs only REPLICATION" in p.output()
        p.assert_equal()
    finally:
        p.close()
