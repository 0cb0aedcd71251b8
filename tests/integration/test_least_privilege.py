"""The least-privileged role syncline runs with (issue 13; README "Security"): LOGIN and
REPLICATION, SELECT on the captured tables, and either ownership of those tables or a
publication an administrator created for it. No superuser, no other grant. A table it may
not read is one clear error naming the GRANT to run."""

from __future__ import annotations

from pathlib import Path

from syncline.testing.harness import Pipeline
from syncline.testing.pgcluster import PgCluster


def _as_role(p: Pipeline, role: str) -> None:
    """Point the pipeline's source DSN at ``role`` (the replica stays the test's), with a
    superuser refused."""
    text = p.config_path.read_text()
    ours = p.source_dsn.replace("postgres@", f"{role}@")
    ours_line = f'dsn = "{ours}"\nallow_superuser = false'
    p.config_path.write_text(text.replace(f'dsn = "{p.source_dsn}"', ours_line, 1))


def test_replication_and_select_with_an_administrators_publication(pg: PgCluster, tmp_path: Path) -> None:
    p = Pipeline(pg, tmp_path, views=("postgres", "redis"), tables=("public.orders", "public.items"))
    role = f"cdc_{p.slot}"
    try:
        pub = p.cfg.source.publication
        p.sql(
            f"CREATE ROLE {role} LOGIN REPLICATION;"
            "CREATE TABLE orders (id int PRIMARY KEY, total numeric);"
            "CREATE TABLE items (order_id int, n int, sku text, PRIMARY KEY (order_id, n));"
            "CREATE TABLE payroll (id int PRIMARY KEY, salary int);"  # not granted, not captured
            "INSERT INTO orders SELECT g, g * 1.5 FROM generate_series(1, 200) g;"
            "INSERT INTO items SELECT g, 1, 'sku' || g FROM generate_series(1, 200) g;"
            f"GRANT SELECT ON orders, items TO {role};"
            f"CREATE PUBLICATION {pub} FOR TABLE orders, items WITH (publish_via_partition_root = true)"
        )
        assert p.sql(
            f"SELECT rolsuper, rolcreatedb, rolcreaterole FROM pg_roles WHERE rolname = '{role}'"
        ) == [(False, False, False)]
        _as_role(p, role)
        p.start()
        p.wait_caught_up()
        p.sql(
            "UPDATE orders SET total = total + 1 WHERE id % 3 = 0;"
            "DELETE FROM items WHERE order_id > 190;"
            "INSERT INTO orders VALUES (1000, 0);"
            "INSERT INTO payroll VALUES (1, 100)"
        )
        p.wait_caught_up()
        r = p.cli("verify")
        assert r.returncode == 0, r.stdout + r.stderr
        out = p.output()
        assert "ERROR" not in out, out[-3000:]
        # the slot is held by the role
        assert p.sql(
            "SELECT usename FROM pg_stat_replication r JOIN pg_replication_slots s ON s.active_pid = r.pid"
            f" WHERE s.slot_name = '{p.slot}'"
        ) == [(role,)]
    finally:
        p.close()
        pg.psql(f"DROP OWNED BY {role} CASCADE", dbname=p.source_db)
        pg.psql(f"DROP ROLE IF EXISTS {role}")


def test_a_table_it_may_not_read_is_one_clear_error(pg: PgCluster, tmp_path: Path) -> None:
    p = Pipeline(pg, tmp_path, views=("postgres",), tables="public.secret")
    role = f"cdc_{p.slot}"
    try:
        pub = p.cfg.source.publication
        p.sql(
            f"CREATE ROLE {role} LOGIN REPLICATION;"
            "CREATE TABLE secret (id int PRIMARY KEY);"
            f"CREATE PUBLICATION {pub} FOR TABLE secret"
        )
        _as_role(p, role)
        code, out = p.run_to_exit()
        assert code != 0, out
        assert "no SELECT privilege on table public.secret" in out, out
        assert "Traceback" not in out, out
        # nothing was created on its behalf
        assert p.sql(f"SELECT count(*) FROM pg_replication_slots WHERE slot_name = '{p.slot}'") == [(0,)]
    finally:
        p.close()
        pg.psql(f"DROP OWNED BY {role} CASCADE", dbname=p.source_db)
        pg.psql(f"DROP ROLE IF EXISTS {role}")
