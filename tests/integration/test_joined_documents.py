"""Joined documents (issue 16 item 2): a Redis view holds one document per product with its
category's name and its tags, kept incrementally from syncline's own state while a random
workload renames and deletes categories, re-parents products, moves tags between products,
changes keys, and ``syncline run`` is killed (SIGKILL); every document is then compared with
a SQL join over the source."""

from __future__ import annotations

import json
import os
import random
import time
from pathlib import Path

import psycopg
import redis

from syncline.testing.harness import Pipeline
from syncline.testing.pgcluster import PgCluster

DOCUMENT = """
[views.cache.document]
root = "public.products"
parents = [{ table = "public.categories", column = "category_id", fields = { category = "name", category_rank = "rank" } }]
children = [{ table = "public.product_tags", column = "product_id", field = "tags", value = "tag" }]
"""

SCHEMA = """
CREATE TABLE categories (id int PRIMARY KEY, name text NOT NULL, rank int);
CREATE TABLE products (id int PRIMARY KEY, name text NOT NULL, category_id int, price numeric(10,2));
CREATE TABLE product_tags (id int PRIMARY KEY, product_id int, tag text NOT NULL);
CREATE TABLE other (id int PRIMARY KEY);
INSERT INTO categories SELECT g, 'cat' || g, g FROM generate_series(1, 10) g;
INSERT INTO products SELECT g, 'p' || g, 1 + g % 10, g FROM generate_series(1, 200) g;
INSERT INTO product_tags SELECT g, 1 + g % 200, 'tag' || g FROM generate_series(1, 400) g;
"""


def expected(dsn: str) -> dict[str, dict[str, object]]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT p.id, p.name, p.category_id, p.price::text, c.name, c.rank,"
            " coalesce((SELECT json_agg(t.tag ORDER BY t.id) FROM product_tags t WHERE t.product_id = p.id),"
            " '[]'::json)"
            " FROM products p LEFT JOIN categories c ON c.id = p.category_id"
        ).fetchall()
    out: dict[str, dict[str, object]] = {}
    for pid, name, cat, price, cname, crank, tags in rows:
        doc: dict[str, object] = {"id": str(pid), "name": name, "tags": tags}
        for k, v in (("category_id", cat), ("price", price), ("category", cname), ("category_rank", crank)):
            if v is not None:
                doc[k] = str(v)
        out[f"public.products:{pid}"] = doc
    return out


def got(url: str) -> dict[str, dict[str, object]]:
    r = redis.Redis.from_url(url, decode_responses=True)
    try:
        out: dict[str, dict[str, object]] = {}
        for k in r.scan_iter("public.products:*"):
            h: dict[str, object] = dict(r.hgetall(k))
            h["tags"] = json.loads(str(h.get("tags", "null")))
            out[k] = h
        return out
    finally:
        r.close()


def step(conn: psycopg.Connection[tuple[object, ...]], rnd: random.Random) -> None:
    x = rnd.random()
    pid, cid, tid = rnd.randint(1, 260), rnd.randint(1, 14), rnd.randint(1, 500)
    if x < 0.15:
        conn.execute("UPDATE categories SET name = name || 'x', rank = rank + 1 WHERE id = %s", (cid,))
    elif x < 0.2:
        conn.execute("DELETE FROM categories WHERE id = %s", (cid,))
    elif x < 0.25:
        conn.execute("INSERT INTO categories VALUES (%s, 'new' || %s, 0) ON CONFLICT DO NOTHING", (cid, cid))
    elif x < 0.4:
        conn.execute("UPDATE products SET category_id = %s WHERE id = %s", (cid, pid))  # re-parent
    elif x < 0.45:
        conn.execute(
            "INSERT INTO products VALUES (%s, 'n' || %s, %s, 1) ON CONFLICT (id) DO UPDATE SET price = 2",
            (pid, pid, cid),
        )
    elif x < 0.5:
        conn.execute("DELETE FROM products WHERE id = %s", (pid,))
    elif x < 0.53:  # a key that moves
        conn.execute(
            "UPDATE products SET id = id + 1000 WHERE id = %s AND NOT EXISTS"
            " (SELECT 1 FROM products WHERE id = %s + 1000)",
            (pid, pid),
        )
    elif x < 0.7:
        conn.execute("UPDATE product_tags SET product_id = %s WHERE id = %s", (pid, tid))  # moves a tag
    elif x < 0.8:
        conn.execute(
            "INSERT INTO product_tags VALUES (%s, %s, 't' || %s) ON CONFLICT (id) DO UPDATE SET tag = 'u'",
            (tid, pid, tid),
        )
    elif x < 0.88:
        conn.execute("DELETE FROM product_tags WHERE id = %s", (tid,))
    elif x < 0.9:
        conn.execute("UPDATE products SET category_id = NULL WHERE id = %s", (pid,))
    else:
        with conn.transaction():  # several tables in one transaction
            conn.execute("UPDATE categories SET name = 'T' || name WHERE id = %s", (cid,))
            conn.execute("UPDATE product_tags SET tag = tag || '!' WHERE product_id = %s", (pid,))
            conn.execute("INSERT INTO other VALUES (%s) ON CONFLICT DO NOTHING", (tid,))


def test_documents_follow_a_random_workload_with_kills(pg: PgCluster, tmp_path: Path) -> None:
    seed = int(os.environ.get("SYNCLINE_CRASH_SEED") or random.randrange(1 << 31))
    print(f"documents seed {seed}")
    rnd = random.Random(seed)
    p = Pipeline(pg, tmp_path, views=("redis",))
    assert p.redis is not None
    with p.config_path.open("a") as f:
        f.write(DOCUMENT)
    try:
        p.sql(SCHEMA)
        p.start()
        p.wait_caught_up()
        assert got(p.redis.url) == expected(p.source_dsn)  # the first copy
        with psycopg.connect(p.source_dsn, autocommit=True) as conn:
            for rnd_round in range(4):
                for _ in range(300):
                    step(conn, rnd)
                if rnd_round < 3:
                    time.sleep(rnd.uniform(0, 0.5))
                    p.kill()
                    p.start()
        p.wait_caught_up(timeout=120)
        assert not p.failed_views(), p.output()[-3000:]
        want, have = expected(p.source_dsn), got(p.redis.url)
        wrong = sorted(k for k in set(want) | set(have) if want.get(k) != have.get(k))
        assert not wrong, f"seed {seed}: {[(k, want.get(k), have.get(k)) for k in wrong[:3]]}"
        # TRUNCATE of a parent: every document loses its category
        p.sql("TRUNCATE categories")
        p.wait_caught_up()
        assert got(p.redis.url) == expected(p.source_dsn)
        assert p.stop() == 0, p.output()[-3000:]
    finally:
        p.close()


def test_a_wrong_document_declaration_is_one_clear_error(pg: PgCluster, tmp_path: Path) -> None:
    p = Pipeline(pg, tmp_path, views=("redis",))
    try:
        base = p.config_path.read_text()
        for doc, needle in (
            (DOCUMENT.replace('table = "public.categories"', 'table = "public.products"'), "appears twice"),
            (
                DOCUMENT.replace('root = "public.products"', 'root = "products"'),
                "expected one table as schema.table",
            ),
            (DOCUMENT.replace('field = "tags"', 'field = "category"'), "field category is named twice"),
        ):
            p.config_path.write_text(base + doc)
            r = p.cli("status")
            assert r.returncode == 2 and needle in r.stderr, (needle, r.stderr)
        # a column that is not there: the view stops naming it
        p.config_path.write_text(base + DOCUMENT.replace('value = "tag"', 'value = "label"'))
        p.sql(SCHEMA)
        p.start()
        deadline = time.monotonic() + 60
        while "cache" not in p.failed_views():
            assert time.monotonic() < deadline, p.output()[-3000:]
            time.sleep(0.3)
        st = p.cli("status")
        assert "public.product_tags has no column label" in st.stdout, st.stdout
    finally:
        p.close()
