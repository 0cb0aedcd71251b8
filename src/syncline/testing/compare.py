"""Row-by-row comparison of views with the source, in PostgreSQL text form.

Used by tests, the demo and benchmarks (``syncline verify`` will build on it)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from syncline.core.events import Relation
from syncline.sources.postgres.replication import session_conninfo
from syncline.views.duckdb.session import open_duckdb

TextRow = tuple[str | None, ...]


@dataclass
class TableDiff:
    table: str
    source_rows: int
    view_rows: int
    missing: list[TextRow] = field(default_factory=list)
    extra: list[TextRow] = field(default_factory=list)

    @property
    def equal(self) -> bool:
        return not self.missing and not self.extra

    def __str__(self) -> str:
        return (
            f"{self.table}: source {self.source_rows} rows, view {self.view_rows}; "
            f"missing {self.missing[:3]} extra {self.extra[:3]}"
        )


def pg_rows(dsn: str, schema: str, table: str, columns: list[str]) -> list[TextRow]:
    """The table's own rows (an inheritance parent's children are tables of their own; a
    partitioned table's partitions are its rows)."""
    with psycopg.connect(session_conninfo(dsn), autocommit=True) as conn:
        kind = conn.execute(
            "SELECT c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = %s AND c.relname = %s",
            (schema, table),
        ).fetchone()
        only = kind is not None and kind[0] != "p"
        q = sql.SQL("SELECT {} FROM {}{}").format(
            sql.SQL(", ").join(sql.SQL("{}::text").format(sql.Identifier(c)) for c in columns),
            sql.SQL("ONLY ") if only else sql.SQL(""),
            sql.Identifier(schema, table),
        )
        return sorted(conn.execute(q).fetchall(), key=_sort_key)


def _sort_key(row: TextRow) -> tuple[tuple[int, str], ...]:
    return tuple((0, "") if v is None else (1, v) for v in row)


def diff_rows(table: str, src: list[TextRow], view: list[TextRow]) -> TableDiff:
    from collections import Counter

    a, b = Counter(src), Counter(view)
    missing = sorted((a - b).elements(), key=_sort_key)
    extra = sorted((b - a).elements(), key=_sort_key)
    return TableDiff(table, len(src), len(view), missing, extra)


def checksum(rows: list[TextRow]) -> str:
    h = hashlib.sha256()
    for r in rows:
        h.update(repr(r).encode())
    return h.hexdigest()[:16]


def source_tables(dsn: str, schemas: tuple[str, ...] = ("public",)) -> dict[str, list[str]]:
    """schema.table -> column names, for ordinary and partitioned roots."""
    with psycopg.connect(session_conninfo(dsn), autocommit=True) as conn:
        rows = conn.execute(
            "SELECT n.nspname, c.relname, c.relkind,"
            " array_agg(a.attname::text ORDER BY a.attnum)"
            " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped"
            " WHERE c.relkind IN ('r','p') AND NOT c.relispartition AND n.nspname = ANY(%s)"
            " GROUP BY 1, 2, 3 ORDER BY 1, 2",
            (list(schemas),),
        ).fetchall()
    return {f"{s}.{t}": list(cols) for s, t, _k, cols in rows}


def compare_postgres(source_dsn: str, replica_dsn: str, tables: dict[str, list[str]]) -> list[TableDiff]:
    out = []
    for q, cols in tables.items():
        schema, name = q.split(".", 1)
        src = pg_rows(source_dsn, schema, name, cols)
        try:
            dst = pg_rows(replica_dsn, schema, name, cols)
        except psycopg.errors.UndefinedTable:
            dst = []
        except psycopg.errors.UndefinedColumn:
            dst = [("<columns differ>",)]
        out.append(diff_rows(q, src, dst))
    return out


def compare_duckdb(source_dsn: str, path: str, tables: dict[str, list[str]]) -> list[TableDiff]:
    return _compare_duck(source_dsn, open_duckdb(path, read_only=True), tables)


def compare_ducklake(
    source_dsn: str, catalog: str, data_path: str, tables: dict[str, list[str]]
) -> list[TableDiff]:
    """A DuckLake view (read-only, also while ``run`` writes it) vs the source."""
    from syncline.views.ducklake import lake

    return _compare_duck(source_dsn, lake.connect(catalog, data_path, read_only=True), tables)


def compare_iceberg(
    source_dsn: str, catalog: str, warehouse: str, tables: dict[str, list[str]], view: str = "iceberg"
) -> list[TableDiff]:
    """An Iceberg view (read by DuckDB's iceberg extension at the newest position every table
    holds, also while ``run`` writes it) vs the source."""
    from syncline.views.iceberg import lake

    con, _read = lake.reading_connection(lake.open_catalog(catalog, warehouse), view)
    return _compare_duck(source_dsn, con, tables)


def _compare_duck(source_dsn: str, con: Any, tables: dict[str, list[str]]) -> list[TableDiff]:
    from syncline.views.duckdb.compare import fetch_text_rows

    out = []
    try:
        rels: dict[str, Relation] = {}
        from syncline.core.codec import relation_from_json

        for (detail,) in con.execute("SELECT relation FROM _syncline.relations").fetchall():
            rel = relation_from_json(detail if isinstance(detail, (str, bytes)) else str(detail))
            rels[rel.qualified] = rel
        for q, cols in tables.items():
            schema, name = q.split(".", 1)
            src = pg_rows(source_dsn, schema, name, cols)
            found = rels.get(q)
            if found is None:
                out.append(diff_rows(q, src, []))
                continue
            if [c.name for c in found.columns] != cols:
                out.append(diff_rows(q, src, [("<columns differ>",)]))
                continue
            dst = sorted(fetch_text_rows(con, found), key=_sort_key)
            out.append(diff_rows(q, src, dst))
    finally:
        con.close()
    return out


def primary_key(dsn: str, qualified: str) -> list[str]:
    with psycopg.connect(session_conninfo(dsn), autocommit=True) as conn:
        rows = conn.execute(
            "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid"
            " AND a.attnum = ANY((i.indkey::int2[])[0:i.indnkeyatts - 1])"
            " WHERE i.indrelid = (SELECT c.oid FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = %s)"
            " AND i.indisprimary ORDER BY array_position((i.indkey::int2[])[0:i.indnkeyatts - 1], a.attnum)",
            tuple(qualified.split(".", 1)),
        ).fetchall()
    return [str(r[0]) for r in rows]


def _esc(text: str, chars: str) -> str:
    """The contract's key escaping, written here apart from the view's (an oracle)."""
    return "".join("\\" + c if c in chars else c for c in text)


def key_table(schema: str, name: str) -> str:
    """``{table}`` of a Redis key / ``_table`` of a search document (interface.md)."""
    return _esc(schema, "\\:.") + "." + _esc(name, "\\:.")


def key_pk(values: list[str]) -> str:
    """``{pk}`` of a Redis key / ``_key`` of a search document (interface.md)."""
    return values[0] if len(values) == 1 else ":".join(_esc(v, "\\:") for v in values)


def compare_redis(source_dsn: str, url: str, tables: dict[str, list[str]]) -> list[TableDiff]:
    """Each row as the hash under ``{table}:{pk}`` (default key template, escaped as
    interface.md says), fields in ``col::text`` form, NULL columns absent; no other keys of
    the table."""
    import redis

    client = redis.Redis.from_url(url, decode_responses=True)
    out = []
    try:
        for q, cols in tables.items():
            schema, name = q.split(".", 1)
            pk = primary_key(source_dsn, q)
            src = pg_rows(source_dsn, schema, name, cols)
            idx = [cols.index(k) for k in pk]
            view: list[TextRow] = []
            seen = set()
            known = set(cols)
            for start in range(0, len(src), 2000):  # pipelined: one round trip per chunk
                keys = [
                    key_table(schema, name) + ":" + key_pk([str(row[i]) for i in idx])
                    for row in src[start : start + 2000]
                ]
                seen.update(keys)
                pipe = client.pipeline(transaction=False)
                for key in keys:
                    pipe.hgetall(key)
                for key, h in zip(keys, pipe.execute(), strict=True):
                    if h:
                        view.append(tuple(None if h.get(c) is None else str(h.get(c)) for c in cols))
                        view += [(f"<{key}: field {f} not in the source>",) for f in h if f not in known]
            glob = _esc(key_table(schema, name), "*?[]\\") + ":*"
            extra = [k for k in client.scan_iter(match=glob, count=1000) if k not in seen]
            view += [(f"<extra key {k}>",) for k in extra]
            out.append(diff_rows(q, src, sorted(view, key=_sort_key)))
    finally:
        client.close()
    return out


def compare_tantivy(
    source_dsn: str,
    index_path: str,
    tables: dict[str, list[str]],
    joined: dict[str, tuple[list[str], str]] | None = None,
) -> list[TableDiff]:
    """Each row as the document of ``_table`` = schema.table: its stored ``_row`` (columns in
    ``col::text`` form, NULL as null; a column added after the document was written may be
    absent), a ``_key`` that is the primary-key columns' text joined by ':', no column the
    source does not have. ``joined``: for a view of joined documents, per root table its
    documents' fields and the SQL over the source that gives them (each as text)."""
    import json

    import tantivy

    from syncline.views.tantivy.view import F_KEY, F_ROW, F_TABLE

    index: Any = tantivy.Index.open(index_path)
    index.reload()
    searcher = index.searcher()
    out = []
    for q, cols in tables.items():
        schema, name = q.split(".", 1)
        if joined and q in joined:
            cols, select = joined[q]
            with psycopg.connect(session_conninfo(source_dsn), autocommit=True) as conn:
                src = sorted(conn.execute(select.encode()).fetchall(), key=_sort_key)
        else:
            src = pg_rows(source_dsn, schema, name, cols)
        idx = [cols.index(k) for k in primary_key(source_dsn, q)]
        known = set(cols)
        query = tantivy.Query.term_query(index.schema, F_TABLE, key_table(schema, name))
        n = searcher.search(query, 1).count or 0
        view: list[TextRow] = []
        for _score, addr in searcher.search(query, n).hits if n else []:
            d = searcher.doc(addr)
            raw = d.get_first(F_ROW)
            stored = json.loads(bytes(raw)) if raw is not None else None
            fields: dict[str, object] = dict(stored) if isinstance(stored, dict) else {}
            row = tuple(None if fields.get(c) is None else str(fields.get(c)) for c in cols)
            key = d.get_first(F_KEY)
            unknown = sorted(set(fields) - known)
            if unknown:
                view.append((f"<key {key}: columns the source lacks {unknown}>",))
            elif idx and key != key_pk([str(row[i]) for i in idx]):
                view.append((f"<key {key} does not match the row {row}>",))
            else:
                view.append(row)
        out.append(diff_rows(q, src, sorted(view, key=_sort_key)))
    return out
