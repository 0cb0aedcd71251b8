"""Read a view back per table in ``col::text`` form: chunk checksums and the rows of chosen
chunks. One reader per view kind; all stream rows (memory bounded by the chunks)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, Protocol

import psycopg

from syncline.core.config_models import ViewConfig
from syncline.core.errors import SynclineError
from syncline.sources.postgres.replication import session_conninfo
from syncline.verify.chunks import ChunkSums, TextRow, bucket, key_text, put_row
from syncline.verify.source import TableSpec, pg_chunk_rows, pg_chunk_sums


class VerifyError(SynclineError):
    """A view (or table) that cannot be verified now; the message says why."""


def option(vcfg: ViewConfig, name: str, default: str = "") -> str:
    v = vcfg.options.get(name, default)
    return str(getattr(v, "value", v))


class ViewReader(Protocol):
    def spec(self, spec: TableSpec) -> TableSpec:
        """The part of the table this view stores (columns)."""
        ...

    def chunk_sums(self, spec: TableSpec, n: int) -> ChunkSums: ...

    def chunk_rows(self, spec: TableSpec, n: int, chunks: set[int]) -> dict[str, TextRow]: ...

    def close(self) -> None: ...


class _RowReader:
    """Readers that produce (key text, row) pairs in Python."""

    def spec(self, spec: TableSpec) -> TableSpec:
        return spec

    def rows(self, spec: TableSpec) -> Iterator[tuple[str, TextRow]]:
        raise NotImplementedError

    def chunk_sums(self, spec: TableSpec, n: int) -> ChunkSums:
        out = ChunkSums(n)
        for k, row in self.rows(spec):
            out.add(k, row)
        return out

    def chunk_rows(self, spec: TableSpec, n: int, chunks: set[int]) -> dict[str, TextRow]:
        out: dict[str, TextRow] = {}
        if chunks:
            for k, r in self.rows(spec):
                if bucket(k, n) in chunks:
                    put_row(out, k, r)
        return out

    def close(self) -> None:
        pass


class PostgresReader:
    def __init__(self, vcfg: ViewConfig, conn: psycopg.Connection[Any] | None = None) -> None:
        """``conn``: read through this connection (inside its open transaction: a rebuild
        verifies what it has not committed yet); it is not closed."""
        self.borrowed = conn is not None
        if conn is not None:
            self.conn = conn
            return
        try:
            self.conn = psycopg.connect(session_conninfo(option(vcfg, "dsn")), autocommit=True)
        except psycopg.OperationalError as e:
            raise VerifyError(f"view {vcfg.name}: cannot connect to the replica: {e}") from None

    def spec(self, spec: TableSpec) -> TableSpec:
        return spec

    def chunk_sums(self, spec: TableSpec, n: int) -> ChunkSums:
        try:
            with self.conn.transaction():  # a savepoint on a borrowed connection
                return pg_chunk_sums(self.conn, spec, n, only=False)
        except psycopg.errors.UndefinedTable:
            return ChunkSums(n)
        except psycopg.errors.UndefinedColumn as e:
            raise VerifyError(f"{spec.qualified}: columns differ in the replica: {e}") from None

    def chunk_rows(self, spec: TableSpec, n: int, chunks: set[int]) -> dict[str, TextRow]:
        try:
            with self.conn.transaction():
                return pg_chunk_rows(self.conn, spec, n, chunks, only=False)
        except psycopg.errors.UndefinedTable:
            return {}

    def close(self) -> None:
        if not self.borrowed:
            self.conn.close()


class DuckdbReader(_RowReader):
    def __init__(self, vcfg: ViewConfig, con: Any = None) -> None:
        """``con``: read through this connection (a rebuild's own); it is not closed."""
        import duckdb

        from syncline.core.codec import relation_from_json

        self.borrowed = con is not None
        try:
            self.con: Any = con if con is not None else duckdb.connect(option(vcfg, "path"), read_only=True)
        except duckdb.Error as e:
            raise VerifyError(
                f"view {vcfg.name} (duckdb): cannot open the warehouse ({str(e).splitlines()[0]}). "
                "DuckDB allows one process per file and `syncline run` holds it: stop `run` to "
                "verify this view"
            ) from None
        self.rels = {}
        try:
            for (d,) in self.con.execute("SELECT relation FROM _syncline.relations").fetchall():
                rel = relation_from_json(d if isinstance(d, str | bytes) else str(d))
                self.rels[rel.qualified] = rel
        except duckdb.Error:
            pass  # an empty warehouse

    def rows(self, spec: TableSpec) -> Iterator[tuple[str, TextRow]]:
        from syncline.views.duckdb.compare import select_expr, table_types, to_pg_text
        from syncline.views.duckdb.values import quote_ident

        rel = self.rels.get(spec.qualified)
        if rel is None:
            return
        by_name = {c.name: c for c in rel.columns}
        missing = [c for c in spec.columns if c not in by_name]
        if missing:
            raise VerifyError(f"{spec.qualified}: the warehouse lacks columns {missing}")
        types = table_types(self.con, rel.schema, rel.name)
        cols = [by_name[c] for c in spec.columns]
        exprs = [select_expr(c, quote_ident(c.name), types.get(c.name)) for c in cols]
        kinds = [types.get(c.name) for c in cols]
        table = f"{quote_ident(rel.schema)}.{quote_ident(rel.name)}"
        cur = self.con.cursor()
        try:
            cur.execute(f"SELECT {', '.join(exprs)} FROM {table}")  # noqa: S608
            idx = spec.key_idx
            while True:
                batch = cur.fetchmany(10_000)
                if not batch:
                    break
                for r in batch:
                    row = tuple(to_pg_text(v, c, sql_type=t) for v, c, t in zip(r, cols, kinds, strict=True))
                    yield key_text(row, idx), row
        finally:
            cur.close()

    def close(self) -> None:
        if not self.borrowed:
            self.con.close()


class RedisReader(_RowReader):
    def __init__(self, vcfg: ViewConfig) -> None:
        import redis

        if option(vcfg, "mode", "hash") != "hash":
            raise VerifyError(f"view {vcfg.name} (redis): mode 'invalidate' stores no rows to verify")
        self.template = option(vcfg, "key", "{table}:{pk}")
        cols = vcfg.options.get("columns")
        self.columns = [str(c) for c in cols] if isinstance(cols, list) else None
        self.client: Any = redis.Redis.from_url(option(vcfg, "url"), decode_responses=True)

    def spec(self, spec: TableSpec) -> TableSpec:
        return spec.with_columns(self.columns) if self.columns else spec

    def rows(self, spec: TableSpec) -> Iterator[tuple[str, TextRow]]:
        esc = {s: fnmatch_escape(s) for s in (spec.qualified, spec.schema, spec.name)}
        pattern = self.template.format(
            table=esc[spec.qualified], schema=esc[spec.schema], name=esc[spec.name], pk="*"
        )
        keys: list[str] = []
        for k in self.client.scan_iter(match=pattern, count=1000):
            keys.append(k)
            if len(keys) >= 500:
                yield from self._hashes(keys, spec)
                keys = []
        yield from self._hashes(keys, spec)

    def _hashes(self, keys: list[str], spec: TableSpec) -> Iterator[tuple[str, TextRow]]:
        if not keys:
            return
        pipe = self.client.pipeline(transaction=False)
        for k in keys:
            pipe.hgetall(k)
        for h in pipe.execute():
            if h:
                row = tuple(None if h.get(c) is None else str(h[c]) for c in spec.columns)
                yield key_text(row, spec.key_idx), row

    def close(self) -> None:
        self.client.close()


def fnmatch_escape(s: str) -> str:
    """Escape Redis glob characters."""
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in s)


class TantivyReader(_RowReader):
    def __init__(self, vcfg: ViewConfig) -> None:
        import tantivy

        try:
            self.index: Any = tantivy.Index.open(option(vcfg, "path"))
        except Exception as e:  # tantivy raises ValueError or OSError
            raise VerifyError(f"view {vcfg.name} (tantivy): cannot open the index: {e}") from None
        self.index.reload()
        self.tantivy: Any = tantivy

    def rows(self, spec: TableSpec) -> Iterator[tuple[str, TextRow]]:
        from syncline.views.tantivy.view import F_ROW, F_TABLE

        self.index.reload()
        searcher = self.index.searcher()
        query = self.tantivy.Query.term_query(self.index.schema, F_TABLE, spec.qualified)
        n = searcher.search(query, 1).count or 0
        for _score, addr in searcher.search(query, n).hits if n else []:
            d = searcher.doc(addr)
            raw = d.get_first(F_ROW)
            stored = json.loads(bytes(raw)) if raw is not None else None
            fields: dict[str, object] = dict(stored) if isinstance(stored, dict) else {}
            row = tuple(None if fields.get(c) is None else str(fields.get(c)) for c in spec.columns)
            yield key_text(row, spec.key_idx), row


def reader_on_view(vcfg: ViewConfig, view: Any) -> ViewReader | None:
    """A reader over an open view's own connection (PostgreSQL: inside its transaction;
    DuckDB: one process per file), or None when the kind reads through its own."""
    if vcfg.kind == "postgres":
        return PostgresReader(vcfg, conn=view.connection)
    if vcfg.kind == "duckdb":
        return DuckdbReader(vcfg, con=view.connection)
    return None


def open_reader(vcfg: ViewConfig) -> ViewReader:
    kinds: dict[str, type[Any]] = {
        "postgres": PostgresReader,
        "duckdb": DuckdbReader,
        "redis": RedisReader,
        "tantivy": TantivyReader,
    }
    cls = kinds.get(vcfg.kind)
    if cls is None:
        raise VerifyError(f"view {vcfg.name}: kind {vcfg.kind!r} cannot be verified")
    reader: ViewReader = cls(vcfg)
    return reader
