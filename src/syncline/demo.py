"""``syncline demo``: a private PostgreSQL, a small shop, a concurrent workload through
``syncline run`` into an SQL replica and a DuckDB warehouse, then each view compared with
the source."""

from __future__ import annotations

import argparse
import random
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import psycopg

SCHEMA = """
CREATE TABLE categories (id serial PRIMARY KEY, name text NOT NULL);
CREATE TABLE products (
  id serial PRIMARY KEY, category_id int REFERENCES categories(id), name text NOT NULL,
  description text, price numeric(10,2) NOT NULL, tags text[], updated_at timestamptz DEFAULT now()
);
CREATE TABLE customers (
  id serial PRIMARY KEY, email text UNIQUE, name text, created_at timestamptz DEFAULT now()
);
CREATE TABLE orders (
  id bigserial PRIMARY KEY, customer_id int REFERENCES customers(id), status text NOT NULL,
  placed_at timestamptz DEFAULT now(), total numeric(12,2)
);
CREATE TABLE order_lines (
  order_id bigint REFERENCES orders(id) ON DELETE CASCADE, line int, product_id int,
  qty int, price numeric(10,2), PRIMARY KEY (order_id, line)
);
"""

ADJ = ["Sturdy", "Quiet", "Compact", "Classic", "Bright", "Nimble", "Rustic", "Silky"]
NOUN = ["kettle", "lamp", "backpack", "teapot", "blanket", "chair", "notebook", "headphones"]
CATS = ["Kitchen", "Home", "Outdoor", "Office", "Audio"]


def _seed(conn: psycopg.Connection[Any], rnd: random.Random) -> None:
    conn.execute(SCHEMA)
    for c in CATS:
        conn.execute("INSERT INTO categories (name) VALUES (%s)", (c,))
    for i in range(200):
        name = f"{rnd.choice(ADJ)} {rnd.choice(NOUN)} {i}"
        conn.execute(
            "INSERT INTO products (category_id, name, description, price, tags) VALUES (%s, %s, %s, %s, %s)",
            (
                rnd.randint(1, len(CATS)),
                name,
                f"A {name.lower()} that lasts.",
                round(rnd.uniform(3, 300), 2),
                [rnd.choice(NOUN), "demo"],
            ),
        )
    for i in range(100):
        conn.execute(
            "INSERT INTO customers (email, name) VALUES (%s, %s)", (f"user{i}@example.com", f"User {i}")
        )


def _worker(dsn: str, seed: int, stop: threading.Event, counts: list[int]) -> None:
    rnd = random.Random(seed)
    with psycopg.connect(dsn, autocommit=False) as conn:
        while not stop.is_set():
            r = rnd.random()
            try:
                if r < 0.5:
                    oid = conn.execute(
                        "INSERT INTO orders (customer_id, status) VALUES (%s, 'new') RETURNING id",
                        (rnd.randint(1, 100),),
                    ).fetchone()
                    assert oid is not None
                    for line in range(1, rnd.randint(2, 5)):
                        conn.execute(
                            "INSERT INTO order_lines SELECT %s, %s, id, %s, price FROM products"
                            " WHERE id = %s",
                            (oid[0], line, rnd.randint(1, 3), rnd.randint(1, 200)),
                        )
                    conn.execute(
                        "UPDATE orders SET total = (SELECT sum(qty * price) FROM order_lines"
                        " WHERE order_id = %s) WHERE id = %s",
                        (oid[0], oid[0]),
                    )
                elif r < 0.75:
                    conn.execute(
                        "UPDATE products SET price = round(price * %s::numeric, 2), updated_at = now()"
                        " WHERE id = %s",
                        (rnd.uniform(0.9, 1.1), rnd.randint(1, 200)),
                    )
                elif r < 0.9:
                    conn.execute(
                        "UPDATE orders SET status = 'shipped' WHERE id = "
                        "(SELECT max(id) FROM orders WHERE status = 'new')"
                    )
                else:
                    conn.execute(
                        "DELETE FROM orders WHERE id = (SELECT min(id) FROM orders WHERE status = 'shipped')"
                    )
                conn.commit()
                counts[0] += 1
            except psycopg.Error:  # deadlocks, races on the same order: the client retries
                conn.rollback()


def main(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from syncline.testing.harness import Pipeline
    from syncline.testing.pgcluster import PgBinariesMissing, PgCluster

    console = Console()
    root = Path(args.dir).resolve()
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    try:
        cluster = PgCluster(datadir=root / "pg" / "data")
    except PgBinariesMissing as e:
        console.print(f"[red]syncline demo needs PostgreSQL server binaries:[/red] {e}")
        return 2
    console.print(
        f"[bold]1.[/bold] private PostgreSQL {cluster.version} on port {cluster.port} "
        f"(wal_level=logical) in {root / 'pg'}"
    )
    cluster.init()
    cluster.start()
    try:
        p = Pipeline(cluster, root / "run")
        with psycopg.connect(p.source_dsn, autocommit=True) as conn:
            _seed(conn, random.Random(7))
        console.print(f"[bold]2.[/bold] shop schema in database {p.source_db}; config {p.config_path}")
        p.start()
        console.print(
            "[bold]3.[/bold] syncline run: snapshot, then streaming into "
            "[cyan]replica[/cyan] (PostgreSQL) and [cyan]warehouse[/cyan] (DuckDB)"
        )
        p.wait_caught_up(timeout=120)
        stop = threading.Event()
        counts = [0]
        threads = [threading.Thread(target=_worker, args=(p.source_dsn, i, stop, counts)) for i in range(4)]
        for t in threads:
            t.start()
        t0 = time.monotonic()
        while time.monotonic() - t0 < args.duration:
            time.sleep(1)
            console.print(f"   workload: {counts[0]} transactions by 4 concurrent clients")
        stop.set()
        for t in threads:
            t.join()
        p.wait_caught_up(timeout=120)
        p.stop()
        console.print("[bold]4.[/bold] every view compared with the source, row by row:")
        result = p.compare()
        table = Table("table", "source rows", "replica rows", "warehouse rows", "equal")
        ok = True
        diffs = {v: {d.table: d for d in ds} for v, ds in result.items()}
        for name in diffs["replica"]:
            r = diffs["replica"][name]
            w = diffs["warehouse"][name]
            eq = r.equal and w.equal
            ok &= eq
            table.add_row(
                name,
                str(r.source_rows),
                str(r.view_rows),
                str(w.view_rows),
                "[green]yes[/green]" if eq else "[red]NO[/red]",
            )
        console.print(table)
        console.print(
            "[green]all views equal the source[/green]" if ok else "[red]views differ from the source[/red]"
        )
        console.print(
            f"\nEverything is under {root}: the config {p.config_path}, the log {p.log_path},\n"
            f"the warehouse {p.workdir / 'wh.duckdb'}, the replica in database {p.replica_db} and\n"
            f"the source in {p.source_db} of the private server in {root / 'pg'} (stopped now).\n"
            "To run syncline on your own database: write a syncline.toml like the one above, then\n"
            "  syncline run -c syncline.toml      # Ctrl-C stops; running it again resumes\n"
            "  syncline status -c syncline.toml   # positions and lag of every view\n"
            "  syncline wait -c syncline.toml     # returns once views have your latest writes"
        )
        p.close()
        return 0 if ok else 1
    finally:
        cluster.stop()
