"""Joined documents (issue 16): how fast a view of documents keeps up, next to a plain
view in the same run.

One private PostgreSQL cluster; per run a fresh pipeline with one Redis view, 200
categories with 100 products each (20,000 products) and 2 tags per product. The workload is
written while ``syncline run`` is stopped, then ``run`` starts and the time until the view
has applied it all is measured (the backlog drained: capture and view, as in production
after a pause). Modes:

- *parent changes*: 3,000 category renames, in a document view (product + its category's
  name + its tags): each rename rebuilds its 100 products' documents;
- *child changes*: 60,000 tag updates (transactions of 50 tags of 50 products), in the same
  document view: each rebuilds one document;
- *plain view*: the same tag updates into a plain Redis view of the tags table.

Every mode's view takes batches of at most 100 events, so a batch never holds one category's
rename twice (the renames cycle through the 200): each rename rebuilds its 100 documents.

``--rounds`` rounds, the modes in rotated order; every run's view is compared with the
source (documents with a SQL join, the plain view row by row; a difference fails the
benchmark). Medians and ranges, written to ``docs/benchmarks-documents.md``.

    .venv/bin/python bench/documents.py                   # 3 rounds
    .venv/bin/python bench/documents.py --rounds 1 --no-report
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg
import redis

from syncline.testing.harness import Pipeline
from syncline.testing.pgcluster import running_cluster

MODES = ("parent changes", "child changes", "plain view")
DOCUMENT = """
[views.cache.document]
root = "public.products"
parents = [{ table = "public.categories", column = "category_id", fields = { category = "name" } }]
children = [{ table = "public.product_tags", column = "product_id", field = "tags", value = "tag" }]
"""
SCHEMA = """
CREATE TABLE categories (id int PRIMARY KEY, name text NOT NULL);
CREATE TABLE products (id int PRIMARY KEY, name text NOT NULL, category_id int, price numeric(10,2));
CREATE TABLE product_tags (id int PRIMARY KEY, product_id int, tag text NOT NULL);
INSERT INTO categories SELECT g, 'category ' || g FROM generate_series(1, 200) g;
INSERT INTO products SELECT g, 'product ' || g, 1 + (g - 1) / 100, g FROM generate_series(1, 20000) g;
INSERT INTO product_tags SELECT g, 1 + (g - 1) / 2, 'tag ' || g FROM generate_series(1, 40000) g;
"""
RENAMES = 3000
TAG_UPDATES = 60000


def documents_equal(p: Pipeline) -> bool:
    assert p.redis is not None
    with psycopg.connect(p.source_dsn) as conn:
        rows = conn.execute(
            "SELECT p.id, c.name, (SELECT json_agg(t.tag ORDER BY t.id) FROM product_tags t"
            " WHERE t.product_id = p.id) FROM products p LEFT JOIN categories c ON c.id = p.category_id"
        ).fetchall()
    r = redis.Redis.from_url(p.redis.url, decode_responses=True)
    try:
        pipe = r.pipeline(transaction=False)
        for pid, _, _ in rows:
            pipe.hmget(f"public.products:{pid}", ["category", "tags"])
        got = pipe.execute()
    finally:
        r.close()
    return all(
        g[0] == cat and json.loads(g[1] or "null") == (tags or [])
        for (_, cat, tags), g in zip(rows, got, strict=True)
    )


def one_run(pg: Any, root: Path, mode: str) -> dict[str, float]:
    p = Pipeline(pg, root, views=("redis",))
    try:
        # batches of at most 100 events in every mode: a batch never holds one category's
        # rename twice (they cycle through 200), so each rename rebuilds its 100 documents
        extra = "batch_events = 100\n" + (
            'tables = ["public.product_tags"]\n' if mode == "plain view" else ""
        )
        text = p.config_path.read_text()
        p.config_path.write_text(text.replace('kind = "redis"\n', 'kind = "redis"\n' + extra))
        if mode != "plain view":
            with p.config_path.open("a") as f:
                f.write(DOCUMENT)
        p.sql(SCHEMA)
        p.start()
        p.wait_caught_up(timeout=600)
        assert p.stop() == 0
        with psycopg.connect(p.source_dsn, autocommit=True) as conn:
            if mode == "parent changes":
                for i in range(RENAMES):
                    conn.execute("UPDATE categories SET name = name || '.' WHERE id = %s", (1 + i % 200,))
            else:
                for i in range(0, TAG_UPDATES, 50):  # 50 tags of 50 different products
                    lo = 1 + (2 * i) % 40000
                    conn.execute(
                        "UPDATE product_tags SET tag = tag || '.' WHERE id BETWEEN %s AND %s AND id %% 2 = 1",
                        (lo, lo + 99),
                    )
        p.start()
        t0 = time.monotonic()
        p.wait_caught_up(timeout=1200)
        took = time.monotonic() - t0
        assert p.stop() == 0
        if mode == "plain view":
            diffs = [
                str(d)
                for ds in p.compare().values()
                for d in ds
                if d.table == "public.product_tags" and not d.equal
            ]
            if diffs:
                raise SystemExit(f"{mode}: the view differs from the source: {diffs[0][:500]}")
        elif not documents_equal(p):
            raise SystemExit(f"{mode}: the documents differ from a SQL join over the source")
        changes = RENAMES if mode == "parent changes" else TAG_UPDATES
        docs = RENAMES * 100 if mode == "parent changes" else TAG_UPDATES
        return {"seconds": took, "changes_per_s": changes / took, "docs_per_s": docs / took}
    finally:
        p.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--no-report", action="store_true")
    args = ap.parse_args()
    got: dict[str, list[dict[str, float]]] = {m: [] for m in MODES}
    with running_cluster() as pg, tempfile.TemporaryDirectory(prefix="syncline-documents-bench-") as tmp:
        for r in range(args.rounds):
            order = MODES[r % 3 :] + MODES[: r % 3]
            for mode in order:
                res = one_run(pg, Path(tmp) / f"r{r}-{mode.replace(' ', '-')}", mode)
                got[mode].append(res)
                print(
                    f"round {r + 1}: {mode}: {res['seconds']:.1f} s, {res['changes_per_s']:,.0f} changes/s, "
                    f"{res['docs_per_s']:,.0f} documents (or rows)/s; checked equal",
                    flush=True,
                )

    def med(mode: str, k: str) -> str:
        v = [x[k] for x in got[mode]]
        return f"{statistics.median(v):,.0f} ({min(v):,.0f} to {max(v):,.0f})"

    plain = statistics.median(x["changes_per_s"] for x in got["plain view"])
    child = statistics.median(x["changes_per_s"] for x in got["child changes"])
    lines = [
        "# Joined documents benchmark",
        "",
        f"Written by `bench/documents.py` on {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC; "
        f"command: `{' '.join(['.venv/bin/python', *sys.argv])}`. {args.rounds} rounds, the modes in "
        "rotated order; 200 categories of 100 products, 2 tags each; the workload written while `run` "
        "was stopped, then the time until the Redis view applied it (capture and view). Every run "
        "checked: documents against a SQL join over the source, the plain view row by row.",
        "",
        "| mode | source row changes/s (median, range) | documents rebuilt (plain: rows written)/s |",
        "|---|---:|---:|",
    ]
    for mode in MODES:
        lines.append(f"| {mode} | {med(mode, 'changes_per_s')} | {med(mode, 'docs_per_s')} |")
    lines += [
        "",
        f"*parent changes*: {RENAMES:,} category renames, each rebuilding the 100 documents of its "
        f"products. *child changes*: {TAG_UPDATES:,} tag updates (transactions of 50 tags of 50 "
        "products), each rebuilding one document. *plain view*: the same tag updates into a plain "
        "view of the tags table. Every view takes batches of at most 100 events (`batch_events`), so "
        "no batch holds a category's rename twice: each rename rebuilds its 100 documents.",
        "",
        f"A child change in a document view runs at {100 * child / plain:.0f} % of the plain view's rate "
        "(medians).",
    ]
    print("\n".join(lines))
    if not args.no_report:
        out = Path(__file__).parent.parent / "docs" / "benchmarks-documents.md"
        out.write_text("\n".join(lines) + "\n")
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
