"""The source side of ``syncline verify``: a REPEATABLE READ snapshot at a known LSN, table
shapes, and chunk checksums computed by the server (only sums cross the wire)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import pq, sql

from syncline.core.errors import SourceError
from syncline.core.patterns import column_excluded
from syncline.sources.postgres import catalog as cat
from syncline.sources.postgres.follow import usable
from syncline.sources.postgres.replication import ReplicationConnection
from syncline.sources.registry import parse_position
from syncline.verify.chunks import ChunkSums, TextRow, key_text, put_row, sql_bucket, sql_digest, sql_row_text


@dataclass(frozen=True, slots=True)
class TableSpec:
    """What is compared of one table: its columns (``col::text`` form) and key columns."""

    schema: str
    name: str
    columns: tuple[str, ...]
    key: tuple[str, ...]
    partitioned: bool = False
    keyless: bool = False
    """No primary key (REPLICA IDENTITY FULL): compared as a multiset, all columns as key."""

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"

    @property
    def key_idx(self) -> tuple[int, ...]:
        return tuple(self.columns.index(k) for k in self.key)

    def with_columns(self, keep: Iterable[str]) -> TableSpec:
        wanted = set(keep) | set(self.key)
        cols = tuple(c for c in self.columns if c in wanted)
        return TableSpec(self.schema, self.name, cols, self.key, self.partitioned, self.keyless)


def _table(spec: TableSpec, only: bool) -> sql.Composable:
    return sql.SQL("{}{}").format(
        sql.SQL("ONLY ") if only else sql.SQL(""), sql.Identifier(spec.schema, spec.name)
    )


def _texts(conn: psycopg.Connection[Any], spec: TableSpec) -> tuple[list[str], str]:
    """``col::text`` SQL of each column and the key text SQL, quoted for ``conn``."""
    cols = [sql.SQL("{}::text").format(sql.Identifier(c)).as_string(conn) for c in spec.columns]
    keys = [f"coalesce({cols[i]}, '')" for i in spec.key_idx]
    return cols, " || ':' || ".join(keys) if keys else "''"


def pg_chunk_sums(conn: psycopg.Connection[Any], spec: TableSpec, n: int, only: bool = True) -> ChunkSums:
    """Chunk checksums of a PostgreSQL table (the source or a replica), one scan."""
    cols, key = _texts(conn, spec)
    row = sql_row_text(cols)
    q = sql.SQL("SELECT b, count(*), sum(d) FROM (SELECT {} AS b, {} AS d FROM {}) s GROUP BY b").format(
        sql.SQL(sql_bucket(key, n)), sql.SQL(sql_digest(row)), _table(spec, only and not spec.partitioned)
    )
    out = ChunkSums(n)
    for b, count, total in conn.execute(q):
        out.put(int(b), int(count), int(total))
    return out


def pg_chunk_rows(
    conn: psycopg.Connection[Any], spec: TableSpec, n: int, chunks: set[int], only: bool = True
) -> dict[str, TextRow]:
    """Rows of the given chunks by key text, ``col::text`` form."""
    if not chunks:
        return {}
    cols, key = _texts(conn, spec)
    q = sql.SQL("SELECT {} FROM {} WHERE {} = ANY(%s)").format(
        sql.SQL(", ".join(cols)), _table(spec, only and not spec.partitioned), sql.SQL(sql_bucket(key, n))
    )
    out: dict[str, TextRow] = {}
    with conn.cursor() as cur:
        for r in cur.execute(q, (sorted(chunks),)):
            row = tuple(None if v is None else str(v) for v in r)
            put_row(out, key_text(row, spec.key_idx), row)
    return out


class SourceSnapshot:
    """A read-only REPEATABLE READ transaction on the source whose position is exact: a
    temporary logical slot exports its snapshot, and ``lsn`` is the slot's consistent
    point. The snapshot sees exactly the transactions that committed before ``lsn``; a view
    that has applied every logged transaction committed before ``lsn`` must equal it."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        repl = ReplicationConnection(dsn)
        try:
            name = f"syncline_verify_{os.getpid()}_{uuid.uuid4().hex[:8]}"
            res = repl.conn.exec_(
                f'CREATE_REPLICATION_SLOT "{name}" TEMPORARY LOGICAL pgoutput EXPORT_SNAPSHOT'.encode()
            )
            if res.status != pq.ExecStatus.TUPLES_OK:
                raise SourceError(
                    f"verify: cannot create a temporary replication slot: {res.get_error_message().strip()}"
                )
            cp, snap = res.get_value(0, 1), res.get_value(0, 2)
            assert cp is not None and snap is not None
            self.lsn = parse_position(cp.decode())
            self.conn = cat.connect(dsn, autocommit=False)
            self.conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            self.conn.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snap.decode())))
        finally:
            repl.close()  # the snapshot stays imported; the temporary slot goes

    def tables(self, patterns: tuple[str, ...], exclude: tuple[str, ...] = ()) -> list[TableSpec]:
        """The followed tables' shapes, without the columns the capture leaves out
        (``source.exclude_columns``)."""
        out = []
        rc = cat.RelationCatalog(self.conn)
        for t in cat.discover_tables(self.conn, patterns):
            if not usable(t):
                continue  # never followed (no key): the capture warns about it
            cols = [
                str(r[0])
                for r in self.conn.execute(
                    "SELECT attname FROM pg_catalog.pg_attribute WHERE attrelid = %s AND attnum > 0"
                    " AND NOT attisdropped ORDER BY attnum",
                    (t.oid,),
                )
                if not column_excluded(exclude, t.schema, t.name, str(r[0]))
            ]
            key = rc.primary_key(t.oid) or tuple(cols)
            keyless = t.replident == "f" and not t.has_pk
            out.append(TableSpec(t.schema, t.name, tuple(cols), tuple(key), t.relkind == "p", keyless))
        return out

    def count(self, spec: TableSpec) -> int:
        q = sql.SQL("SELECT count(*) FROM {}").format(_table(spec, not spec.partitioned))
        row = self.conn.execute(q).fetchone()
        return int(row[0]) if row else 0

    def chunk_sums(self, spec: TableSpec, n: int) -> ChunkSums:
        return pg_chunk_sums(self.conn, spec, n)

    def chunk_rows(self, spec: TableSpec, n: int, chunks: set[int]) -> dict[str, TextRow]:
        return pg_chunk_rows(self.conn, spec, n, chunks)

    def output_rows(self, spec: TableSpec, keys: set[str]) -> dict[str, TextRow]:
        """Rows of ``keys`` in the types' output-function form (what pgoutput sends), by key
        text; ``spec`` must list every column of the table."""
        if not keys:
            return {}
        _cols, key = _texts(self.conn, spec)
        plain = sql.SQL(", ").join(sql.Identifier(c) for c in spec.columns)
        q = sql.SQL("COPY (SELECT {}, {} FROM {} WHERE {} = ANY({})) TO STDOUT").format(
            sql.SQL(key),
            plain,
            _table(spec, not spec.partitioned),
            sql.SQL(key),
            sql.Literal(sorted(keys)),
        )
        out: dict[str, TextRow] = {}
        with self.conn.cursor() as cur, cur.copy(q) as copy:
            for r in copy.rows():
                out[str(r[0])] = tuple(None if v is None else str(v) for v in r[1:])
        return out

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> SourceSnapshot:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
