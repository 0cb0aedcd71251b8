"""Reading the postgres view back for ``syncline verify`` (see :mod:`syncline.verify.readers`)."""

from __future__ import annotations

from typing import Any

import psycopg

from syncline.core.config_models import ViewConfig
from syncline.sources.postgres.replication import session_conninfo
from syncline.verify.chunks import ChunkSums, TextRow
from syncline.verify.readers import VerifyError, option
from syncline.verify.source import TableSpec, pg_chunk_rows, pg_chunk_sums


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
