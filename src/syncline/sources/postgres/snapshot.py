"""The initial snapshot: every configured table read inside the slot's exported snapshot and
appended to the log as one synthetic transaction at the slot's consistent point."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg import sql

from syncline.core.events import Relation
from syncline.core.position import Position
from syncline.log.base import LogAppender
from syncline.sources.postgres.catalog import RelationCatalog, TableInfo, connect
from syncline.sources.postgres.columns import ExcludedColumns

log = logging.getLogger("syncline.snapshot")

Progress = Callable[[str, int, float], None]


def take_snapshot(
    dsn: str,
    snapshot_name: str,
    consistent_lsn: int,
    tables: list[TableInfo],
    writer: LogAppender,
    progress_every: float = 2.0,
    exclude: tuple[str, ...] = (),
) -> dict[str, int]:
    """Copy ``tables`` as of the exported snapshot into the log; return rows per table."""
    conn = connect(dsn, autocommit=False)
    counts: dict[str, int] = {}
    try:
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        conn.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot_name)))
        catalog = RelationCatalog(conn)
        excluded = ExcludedColumns(exclude, catalog.primary_key)
        now_us = int(time.time() * 1_000_000)
        writer.begin(0, Position(consistent_lsn), now_us, snapshot=True)
        started = time.monotonic()
        total = 0
        for t in tables:
            msg = excluded.relation(catalog.relation_message(t, generated=True))
            rel = catalog.relation(msg)
            writer.add_relation(rel)
            n = _copy_table(conn, t, rel, writer, progress_every, started, total)
            counts[t.qualified] = n
            total += n
        writer.commit(Position(consistent_lsn), Position(consistent_lsn), now_us)
        writer.sync()
        conn.rollback()
        elapsed = max(time.monotonic() - started, 1e-6)
        log.info(
            "snapshot done: %d tables, %d rows in %.1fs (%.0f rows/s)",
            len(tables),
            total,
            elapsed,
            total / elapsed,
        )
    finally:
        conn.close()
    return counts


def _copy_table(
    conn: psycopg.Connection[Any],
    t: TableInfo,
    rel: Relation,
    writer: LogAppender,
    progress_every: float,
    started: float,
    total_before: int,
) -> int:
    # COPY's text format prints each value with its type's output function: exactly what
    # pgoutput sends for the same value (``::text`` would differ for boolean, char(n), inet).
    cols = sql.SQL(", ").join(sql.Identifier(c.name) for c in rel.columns)
    only = sql.SQL("ONLY ") if t.relkind == "r" else sql.SQL("")
    query = sql.SQL("COPY (SELECT {} FROM {}{}) TO STDOUT").format(
        cols, only, sql.Identifier(t.schema, t.name)
    )
    n = 0
    t0 = time.monotonic()
    last = t0
    oid = rel.oid
    add = writer.add_insert
    with conn.cursor() as cur, cur.copy(query) as copy:
        for row in copy.rows():
            add(oid, row)
            n += 1
            if n & 0x3FFF == 0:
                now = time.monotonic()
                if now - last >= progress_every:
                    last = now
                    log.info(
                        "snapshot %s: %d rows (%.0f rows/s), %d rows in all",
                        t.qualified,
                        n,
                        n / (now - t0),
                        total_before + n,
                    )
    log.info("snapshot %s: %d rows", t.qualified, n)
    return n
