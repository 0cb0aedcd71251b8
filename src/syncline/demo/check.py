"""The demo's ending: one question to each view, then every view compared with the source
(per table: row counts, a checksum of the source rows, and a row-by-row comparison)."""

from __future__ import annotations

from dataclasses import dataclass, field

import psycopg
from rich.console import Console
from rich.table import Table
from rich.text import Text

from syncline.testing.compare import TableDiff, checksum, pg_rows, source_tables

SEARCH_QUERY = "wool blanket"
REVENUE_SQL = """
SELECT c.name AS category, count(DISTINCT o.id) AS orders, sum(l.qty * l.price) AS revenue
FROM public.order_lines l
JOIN public.orders o ON o.id = l.order_id
JOIN public.products p ON p.id = l.product_id
JOIN public.categories c ON c.id = p.category_id
GROUP BY c.name ORDER BY revenue DESC
"""


@dataclass(frozen=True)
class Targets:
    """Where each view of the demo keeps its data (None: the view is not configured)."""

    source_dsn: str
    replica_dsn: str
    warehouse: str
    """The DuckLake warehouse's catalog (SQLite)."""
    warehouse_data: str
    search: str
    search_tables: tuple[str, ...]
    cache_url: str | None
    cache_tables: tuple[str, ...]


@dataclass
class EndCheck:
    diffs: dict[str, list[TableDiff]] = field(default_factory=dict)
    checksums: dict[str, str] = field(default_factory=dict)

    @property
    def equal(self) -> bool:
        return all(d.equal for ds in self.diffs.values() for d in ds)


def ask_warehouse(console: Console, t: Targets) -> None:
    """Revenue per category from the DuckLake warehouse, which ``syncline run`` may be writing."""
    from syncline.views.ducklake import lake

    con = lake.connect(t.warehouse, t.warehouse_data, read_only=True)
    try:
        rows = con.execute(REVENUE_SQL).fetchall()
    finally:
        con.close()
    console.print(
        Text(
            "warehouse (DuckLake SQL, read while syncline run writes it): revenue per category", style="bold"
        )
    )
    console.print(Text(" ".join(REVENUE_SQL.split()), style="dim"))
    rt = Table()
    rt.add_column("category")
    rt.add_column("orders", justify="right")
    rt.add_column("revenue", justify="right")
    for cat, orders, revenue in rows:
        rt.add_row(str(cat), f"{orders:,}", f"{revenue:,.2f}")
    console.print(rt)


def ask_questions(console: Console, t: Targets) -> None:
    """A question to the search index, the cache and the replica."""
    from syncline.views.tantivy.view import search

    hits = search(t.search, SEARCH_QUERY, 3)
    console.print(Text(f'search (tantivy): syncline search search "{SEARCH_QUERY}"', style="bold"))
    st = Table()
    for c in ("score", "key", "name", "price"):
        st.add_column(c)
    for h in hits:
        st.add_row(
            f"{h['score']:.2f}", str(h["key"]), str(h["fields"].get("name")), str(h["fields"].get("price"))
        )
    console.print(st)

    if t.cache_url is not None:
        import redis

        key = f"public.products:{hits[0]['key']}" if hits else "public.products:1"
        client = redis.Redis.from_url(t.cache_url, decode_responses=True)
        try:
            cached: dict[str, str] = client.hgetall(key)  # type: ignore[assignment]
        finally:
            client.close()
        console.print(Text(f"cache (Redis): HGETALL {key}", style="bold"))
        ct = Table()
        ct.add_column("field")
        ct.add_column("value", overflow="fold")
        for k, v in cached.items():
            ct.add_row(k, v)
        console.print(ct)

    with psycopg.connect(t.replica_dsn, autocommit=True) as conn:
        counts = [
            (name, conn.execute(f"SELECT count(*) FROM public.{name}").fetchone())  # noqa: S608
            for name in ("categories", "products", "customers", "orders", "order_lines")
        ]
    console.print(Text("SQL replica (PostgreSQL): rows per table", style="bold"))
    pt = Table()
    pt.add_column("table")
    pt.add_column("rows", justify="right")
    for name, row in counts:
        pt.add_row(f"public.{name}", f"{row[0] if row else 0:,}")
    console.print(pt)


def end_check(t: Targets) -> EndCheck:
    """Every table of every view compared with the source, row by row, in text form."""
    from syncline.testing.compare import compare_ducklake, compare_postgres, compare_redis, compare_tantivy

    tables = source_tables(t.source_dsn)
    out = EndCheck()
    for q, cols in tables.items():
        schema, name = q.split(".", 1)
        out.checksums[q] = checksum(pg_rows(t.source_dsn, schema, name, cols))
    out.diffs["replica"] = compare_postgres(t.source_dsn, t.replica_dsn, tables)
    out.diffs["warehouse"] = compare_ducklake(t.source_dsn, t.warehouse, t.warehouse_data, tables)
    if t.cache_url is not None:
        sub = {q: c for q, c in tables.items() if q in t.cache_tables}
        out.diffs["cache"] = compare_redis(t.source_dsn, t.cache_url, sub)
    sub = {q: c for q, c in tables.items() if q in t.search_tables}
    # the search view holds products joined with their category's name
    cols = [*tables["public.products"], "category"]
    fields = ", ".join(f'p."{c}"::text' for c in tables["public.products"])  # names from the catalogue
    join = "public.products p LEFT JOIN public.categories c ON c.id = p.category_id"
    sql = f"SELECT {fields}, c.name FROM {join}"  # noqa: S608
    out.diffs["search"] = compare_tantivy(t.source_dsn, t.search, sub, {"public.products": (cols, sql)})
    return out


def print_end_check(console: Console, check: EndCheck) -> None:
    views = list(check.diffs)
    console.print(Text("every view compared with the source, row by row", style="bold"))
    t = Table()
    t.add_column("table")
    t.add_column("source rows", justify="right")
    t.add_column("checksum")
    for v in views:
        t.add_column(v, justify="right")
    by_view = {v: {d.table: d for d in ds} for v, ds in check.diffs.items()}
    for q, cs in check.checksums.items():
        cells: list[str] = []
        src_rows = "-"
        for v in views:
            d = by_view[v].get(q)
            if d is None:
                cells.append("[dim]not in view[/dim]")
                continue
            src_rows = f"{d.source_rows:,}"
            if d.equal:
                cells.append(f"[green]= {d.view_rows:,}[/green]")
            else:
                cells.append(f"[red]{d.view_rows:,}: {len(d.missing)} missing, {len(d.extra)} extra[/red]")
        t.add_row(q, src_rows, cs, *cells)
    console.print(t)
    if check.equal:
        console.print("[bold green]all views equal the source[/bold green]")
    else:
        console.print("[bold red]views differ from the source[/bold red]")
        for v, ds in check.diffs.items():
            for d in ds:
                if not d.equal:
                    console.print(f"  {v}: {d}")
